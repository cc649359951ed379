"""`dalip export --format open_clip-dir | fused-dir | onnx`, `local-dir:` and `hf-hub:` model
specs (a Hugging Face cache laid out by the test; offline), and file modes from the umask."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import open_clip
import pytest
import torch
from conftest import TEST_MBDC

import dalip
from dalip.cli import main
from dalip.inference.specs import load_model

CAPTIONS = ["a serrate ovate leaf", "two blue squares", "a fern"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    model, *_ = dalip.create_model("test-tiny", alpha=0.4, **TEST_MBDC)
    path = tmp_path_factory.mktemp("export") / "model.safetensors"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(4)
    return torch.rand(3, 3, 32, 32), open_clip.get_tokenizer("test-tiny")(CAPTIONS)


def _features(model, inputs):
    with torch.no_grad():
        return model.encode_image(inputs[0]), model.encode_text(inputs[1])


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_open_clip_dir_loads_in_plain_open_clip(checkpoint, inputs, tmp_path):
    out = tmp_path / "plain"
    assert main(["export", str(checkpoint), str(out), "--format", "open_clip-dir"]) == 0
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"]["image_size"] == 32
    assert set(config["preprocess_cfg"]) >= {"size", "mean", "std", "interpolation", "resize_mode"}
    assert sorted(p.name for p in out.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]
    clip, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    image, text = _features(dalip.load_checkpoint(checkpoint), inputs)
    with torch.no_grad():
        plain_image = torch.nn.functional.normalize(clip.eval().encode_image(inputs[0]), dim=-1)
        tokens = open_clip.get_tokenizer(f"local-dir:{out}")(CAPTIONS)
        plain_text = torch.nn.functional.normalize(clip.encode_text(tokens), dim=-1)
    torch.testing.assert_close(plain_image, image.first)
    torch.testing.assert_close(plain_text, text.first)
    assert load_model(f"local-dir:{out}").has_second_order is False


def test_fused_dir_is_the_whole_model_for_dalip_and_first_order_for_open_clip(checkpoint, inputs, tmp_path):
    out = tmp_path / "fused"
    assert main(["export", str(checkpoint), str(out), "--format", "fused-dir"]) == 0
    loaded = load_model(f"local-dir:{out}")
    assert loaded.has_second_order and loaded.model.alpha == pytest.approx(0.4) and loaded.name == "fused"
    image, text = _features(dalip.load_checkpoint(checkpoint), inputs)
    got_image, got_text = _features(loaded.model, inputs)
    torch.testing.assert_close(loaded.model.fused_embedding(got_image), loaded.model.fused_embedding(image))
    torch.testing.assert_close(got_text.second, text.second)
    plain = load_model(f"openclip:local-dir:{out}")  # the same folder, first order only
    assert plain.has_second_order is False
    torch.testing.assert_close(_features(plain.model, inputs)[0].first, image.first)


def test_hf_hub_spec_reads_an_offline_cache(checkpoint, inputs, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    exported = tmp_path / "fused"
    assert main(["export", str(checkpoint), str(exported), "--format", "fused-dir"]) == 0
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--dalip-tiny"
    shutil.copytree(exported, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    loaded = load_model("hf-hub:someone/dalip-tiny")
    assert loaded.has_second_order and loaded.name == "dalip-tiny"
    image, _ = _features(dalip.load_checkpoint(checkpoint), inputs)
    torch.testing.assert_close(_features(loaded.model, inputs)[0].second, image.second)
    with pytest.raises(OSError, match="hf-hub:someone/missing: could not fetch open_clip_config.json"):
        load_model("hf-hub:someone/missing")


def test_folder_specs_and_exports_fail_in_one_line(checkpoint, tmp_path, capsys):
    argv = [
        "eval",
        "-m",
        f"local-dir:{tmp_path / 'nowhere'}",
        "--zeroshot",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "model folder not found" in capsys.readouterr().err
    out = tmp_path / "taken"
    out.mkdir()
    (out / "open_clip_config.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(checkpoint), str(out), "--format", "open_clip-dir"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "open_clip_config.json" in error[0] and "--force" in error[0]
    assert main(["export", str(checkpoint), str(out), "--format", "open_clip-dir", "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine"  # not written by the export, left alone
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_follow_the_umask(checkpoint, tmp_path, umask):
    old = os.umask(umask)
    try:
        model = dalip.load_checkpoint(checkpoint)
        model.save(tmp_path / "saved.safetensors")
        assert main(["export", str(checkpoint), str(tmp_path / "dir"), "--format", "fused-dir"]) == 0
        assert main(["export", str(checkpoint), str(tmp_path / "plain.pt")]) == 0
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    written = [tmp_path / "saved.safetensors", tmp_path / "plain.pt", *(tmp_path / "dir").iterdir()]
    assert {path.name: _mode(path) for path in written} == {path.name: expected for path in written}


@pytest.mark.slow  # the torch.export-based exporter takes about half a minute on 2 cores
def test_onnx_encoders_match_pytorch(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "onnx"
    assert main(["export", str(checkpoint), str(out), "--format", "onnx"]) == 0
    info = json.loads((out / "dalip_onnx.json").read_text())
    assert info["alpha"] == pytest.approx(0.4) and info["outputs"] == {"first": 32, "second": 32, "fused": 64}
    model = dalip.load_checkpoint(checkpoint)
    tokenizer = open_clip.get_tokenizer("test-tiny")
    torch.manual_seed(5)
    for batch in (1, 5):  # the files were traced with a batch of 2
        images, texts = torch.rand(batch, 3, 32, 32), tokenizer((CAPTIONS * 2)[:batch])
        for name, value, encode in (
            ("image_encoder.onnx", images, model.encode_image),
            ("text_encoder.onnx", texts, model.encode_text),
        ):
            session = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
            first, second, fused = session.run(
                ["first", "second", "fused"], {session.get_inputs()[0].name: value.numpy()}
            )
            with torch.no_grad():
                expected = encode(value)
            np.testing.assert_allclose(first, expected.first.numpy(), atol=1e-4)
            np.testing.assert_allclose(second, expected.second.numpy(), atol=1e-4)
            np.testing.assert_allclose(fused, model.fused_embedding(expected).numpy(), atol=1e-4)
