"""Model files are untrusted input: a crafted checkpoint never writes a file, and a broken
or foreign one is one line naming it, exit status 2. A stored option of the wrong type names
the field it is stored in."""

from __future__ import annotations

import json
import os
import pickle
import tempfile

import pytest
import torch
from cli_helpers import saved_checkpoint, user_error, write_safetensors
from conftest import TEST_MBDC
from PIL import Image

import dalip
from dalip.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real test-tiny checkpoint: (path, state dict, stored config)."""
    return saved_checkpoint(tmp_path_factory.mktemp("saved"))


def _commands(checkpoint, tmp_path, images):
    """The four commands that load a checkpoint, each writing only under tmp_path/out."""
    out = tmp_path / "out"
    return [
        ("export", checkpoint, out / "plain.pt"),
        ("predict", images, "-m", checkpoint, "--labels", "a,b", "-q"),
        ("embed", "-m", checkpoint, "--texts", "a leaf", "--out", out / "e.npz", "-q"),
        ("eval", "-m", checkpoint, "--zeroshot", images, "--out", out / "eval", "-q"),
    ]


def _images(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "images" / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (10, 200, 30)).save(tmp_path / "images" / name / "0.png")
    return tmp_path / "images"


def test_crafted_model_name_writes_nothing_outside_a_temporary_folder(saved, tmp_path, capsys):
    _, state, config = saved
    victim = tmp_path / "x" / "victim"
    victim.parent.mkdir()
    # a name that climbs from dalip's temporary folder to tmp_path/x/victim
    name = os.path.relpath(victim, os.path.join(tempfile.gettempdir(), "dalip-config-abc"))
    assert name.startswith("..")
    crafted = write_safetensors(tmp_path / "crafted.safetensors", state, {**config, "model_name": name})
    images = _images(tmp_path)
    for argv in _commands(crafted, tmp_path, images):
        message = user_error(capsys, *argv)
        assert "crafted.safetensors" in message and "model_name" in message
        assert list(victim.parent.iterdir()) == []
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["hf-hub:someone/model", "local-dir:/etc", "a/b", "..", "x\\..\\y", ""])
def test_model_names_that_reach_outside_the_registry_are_refused(saved, tmp_path, capsys, name):
    _, state, config = saved
    crafted = write_safetensors(tmp_path / "c.safetensors", state, {**config, "model_name": name})
    assert "model_name" in user_error(capsys, "export", crafted, tmp_path / "plain.pt")
    assert not (tmp_path / "plain.pt").exists()


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("{}", "empty"),
        ("[]", "JSON list"),
        ('["test-tiny"]', "JSON list"),
        ("", "not valid JSON"),
        ("{not json", "not valid JSON"),
        ("null", "null"),
    ],
)
def test_checkpoint_with_empty_or_list_shaped_config_is_one_line(saved, tmp_path, capsys, raw, expected):
    _, state, _ = saved
    path = write_safetensors(tmp_path / "m.safetensors", state, None, raw_config=raw)
    message = user_error(capsys, "export", path, tmp_path / "plain.pt")
    assert "m.safetensors" in message and expected in message


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"mbdc": {**TEST_MBDC, "heads": 4}}, "do not match"),
        ({"alpha": "half"}, "alpha"),
        ({"alpha": 7}, "alpha"),
        ({"mbdc": [2, 8]}, "mbdc"),
        ({"mbdc": {"heads": 2, "reduced_dim": 8, "colour": "red"}}, "unknown field 'mbdc.colour'"),
        ({"image_size": -3}, "image_size"),
        ({"context_length": "long"}, "context_length"),
        ({"open_clip_config": ["embed_dim", 32]}, "open_clip_config"),
        ({"open_clip_config": {"embed_dim": 32, "text_cfg": {"hf_tokenizer_name": "x/y"}}}, "hf_"),
        (
            {
                "model_name": "new-arch",
                "open_clip_config": {"embed_dim": "wide", "vision_cfg": {}, "text_cfg": {}},
            },
            "cannot be built",
        ),
        ({"mbdc": {**TEST_MBDC, "reduced_dim": 5000}}, "parameters"),  # memory, not a file write
        ({"image_size": 10**7}, "parameters"),
    ],
)
def test_checkpoint_with_mismatched_config_is_one_line(saved, tmp_path, capsys, change, expected):
    _, state, config = saved
    path = write_safetensors(tmp_path / "m.safetensors", state, {**config, **change})
    message = user_error(capsys, "export", path, tmp_path / "plain.pt")
    assert "m.safetensors" in message and expected in message


def _bad_weight_files(saved, folder):
    """A pickle that would run code, random bytes, and a checkpoint cut short."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {folder / 'pwned'}",))

    pickled = folder / "pickled.pt"
    pickled.write_bytes(pickle.dumps({"state_dict": Payload()}))
    random_bytes = folder / "random.bin"
    random_bytes.write_bytes(os.urandom(4096))
    truncated = folder / "truncated.safetensors"
    data = saved[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return {"pickle": pickled, "random": random_bytes, "truncated": truncated}


@pytest.mark.parametrize("kind", ["pickle", "random", "truncated"])
def test_unreadable_weights_as_a_model_spec_are_one_line(saved, tmp_path, capsys, kind):
    bad = _bad_weight_files(saved, tmp_path)[kind]
    for spec in (str(bad), f"openclip:test-tiny:{bad}"):
        message = user_error(capsys, "embed", "-m", spec, "--texts", "a leaf", "--out", tmp_path / "e.npz")
        assert bad.name in message
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "e.npz").exists()


@pytest.mark.parametrize("kind", ["pickle", "random", "truncated"])
def test_unreadable_weights_as_model_pretrained_are_one_line(saved, tmp_path, capsys, kind, monkeypatch):
    bad = _bad_weight_files(saved, tmp_path)[kind]
    (tmp_path / "img").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "img" / "0.png")
    (tmp_path / "data.csv").write_text("filepath,caption\nimg/0.png,a leaf\n")
    monkeypatch.chdir(tmp_path)
    message = user_error(
        capsys,
        "train",
        "--set",
        "model.name=test-tiny",
        "--set",
        f"model.pretrained={bad}",
        "--set",
        "data.sources=[{kind: csv, path: data.csv}]",
        "--set",
        "batch_size=1",
        "--set",
        "out_dir=run",
        "--set",
        "data.workers=0",
    )
    assert bad.name in message
    assert not (tmp_path / "pwned").exists()


def test_training_checkpoint_with_a_list_config_is_one_line(saved, tmp_path, capsys):
    path = tmp_path / "step_000000001.pt"
    torch.save({"model": saved[1], "dalip_config": ["test-tiny"]}, path)
    message = user_error(capsys, "export", path, tmp_path / "plain.pt")
    assert "step_000000001.pt" in message


@pytest.mark.parametrize(
    "section, expected",
    [
        ({"model_name": "../../escape"}, "model_name"),
        ({"mbdc": {"heads": 2, "reduced_dim": 8, "colour": "red"}}, "unknown field 'mbdc.colour'"),
        ({"alpha": float("nan")}, "alpha"),
        (["test-tiny"], "'dalip' section"),
    ],
)
def test_fused_folder_with_a_crafted_dalip_section_is_one_line(saved, tmp_path, capsys, section, expected):
    folder = tmp_path / "fused"
    assert main(["export", str(saved[0]), str(folder), "--format", "fused-dir"]) == 0
    config_path = folder / "open_clip_config.json"
    config = json.loads(config_path.read_text())
    config["dalip"] = {**config["dalip"], **section} if isinstance(section, dict) else section
    config_path.write_text(json.dumps(config))
    message = user_error(
        capsys, "embed", "-m", f"local-dir:{folder}", "--texts", "a leaf", "--out", tmp_path / "e.npz"
    )
    assert "fused" in message and expected in message
    assert not (tmp_path / "e.npz").exists()


def test_a_model_with_non_finite_weights_is_refused_by_every_loader(tmp_path, capsys):
    """A diverged or damaged model is one line naming the tensor, exit 2, for every command
    and loader: not an evaluation at 4% top-1 or predictions of `nan%`."""
    import dalip
    from dalip.export.open_clip_file import export_open_clip
    from dalip.inference.specs import load_model

    path, state, config = saved_checkpoint(tmp_path)
    model = dalip.load_checkpoint(path)
    with torch.no_grad():
        model.clip.visual.conv1.weight[0, 0, 0, 0] = float("nan")
    broken = tmp_path / "broken.safetensors"
    model.save(broken)
    image = tmp_path / "leaf.png"
    Image.new("RGB", (32, 32), (20, 120, 40)).save(image)
    line = user_error(capsys, "predict", "-m", broken, "--labels", "oak,fern", image)
    assert str(broken) in line and "'clip.visual.conv1.weight' holds NaN or infinite values" in line
    assert "holds NaN" in user_error(capsys, "export", broken, tmp_path / "out.safetensors")
    with pytest.raises(ValueError, match="'clip.visual.conv1.weight' holds NaN"):  # as model.pretrained
        dalip.create_model("test-tiny", pretrained=str(broken), **TEST_MBDC)
    open_clip_file = tmp_path / "plain.safetensors"
    export_open_clip(model, open_clip_file)
    with pytest.raises(ValueError, match="'visual.conv1.weight' holds NaN"):
        load_model(f"openclip:test-tiny:{open_clip_file}")


def test_a_stored_head_option_of_the_wrong_type_names_the_field(tmp_path):
    path, state, config = saved_checkpoint(tmp_path)
    for bad, message in [
        ({"heads": "4"}, "expected int, got str '4'"),
        ({"heads": 0}, "expected an integer >= 1"),
    ]:
        broken = write_safetensors(
            tmp_path / "bad.safetensors", state, {**config, "mbdc": {**config["mbdc"], **bad}}
        )
        with pytest.raises(ValueError, match="mbdc.heads: ") as caught:
            dalip.load_checkpoint(broken)
        assert str(broken) in str(caught.value) and message in str(caught.value)
