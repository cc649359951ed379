"""Model folders and model files a user hands dalip: a tampered or hostile
`open_clip_config.json` (preprocessing fields, deep nesting), JSON read within the bounds of
dalip's YAML, and exports into a folder that cannot be written, each one line naming the file.
A folder whose preprocessing is not three channels is refused when predict loads it."""

from __future__ import annotations

import json
import os

import pytest
from cli_helpers import saved_checkpoint, user_error, write_safetensors
from conftest import TEST_MBDC
from PIL import Image

import dalip
from dalip.data.shards import _read_sizes
from dalip.export.folder import CONFIG_NAME, export_folder
from dalip.model.registry import register_config_file
from dalip.readers import MAX_YAML_DEPTH
from dalip.train.out_dir import truncate_metrics
from dalip.train.run_log import read_metrics

DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError in json.loads, unbounded


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A fused and a plain open_clip folder of one tiny model, and a photo to predict."""
    root = tmp_path_factory.mktemp("folders")
    path, _, _ = saved_checkpoint(root)
    model = dalip.load_checkpoint(path)
    export_folder(model, root / "fused", fused=True)
    export_folder(model, root / "plain")
    image = root / "leaf.png"
    Image.new("RGB", (32, 32), (20, 120, 40)).save(image)
    return {"root": root, "checkpoint": path, "image": image}


def _tampered(folders, tmp_path, kind: str, change) -> str:
    """A copy of the `kind` folder whose open_clip_config.json `change` edited (a dict in place)
    or replaced (a string); its model spec."""
    folder = tmp_path / kind
    folder.mkdir()
    for source in (folders["root"] / kind).iterdir():
        (folder / source.name).write_bytes(source.read_bytes())
    if isinstance(change, str):
        (folder / CONFIG_NAME).write_text(change)
    else:
        config = json.loads((folder / CONFIG_NAME).read_text())
        change(config)
        (folder / CONFIG_NAME).write_text(json.dumps(config))
    return f"local-dir:{folder}" if kind == "fused" else f"openclip:local-dir:{folder}"


PREPROCESS = [
    ("interpolation", "nearest", "bicubic, bilinear, random"),
    ("resize_mode", "stretch", "shortest, longest, squash"),
    ("mode", "CMYK", "RGB"),
    ("size", "big", "positive"),
    ("fill_color", [1, 2], "integer"),
    ("std", [0.2, 0.0, 0.2], "every std above 0"),
]


@pytest.mark.parametrize("kind", ["fused", "plain"])
@pytest.mark.parametrize(("field", "value", "expected"), PREPROCESS, ids=[p[0] for p in PREPROCESS])
def test_a_tampered_preprocess_field_is_one_line_naming_file_and_field(
    folders, tmp_path, capsys, kind, field, value, expected
):
    spec = _tampered(folders, tmp_path, kind, lambda config: config["preprocess_cfg"].update({field: value}))
    line = user_error(capsys, "predict", "-m", spec, "--labels", "oak,fern", folders["image"])
    assert f"{tmp_path / kind / CONFIG_NAME}" in line and f"preprocess_cfg.{field}" in line
    assert expected in line


def test_a_checkpoint_with_a_tampered_interpolation_is_one_line(folders, tmp_path, capsys):
    _, state, config = saved_checkpoint(tmp_path)
    config["preprocess_cfg"] = {**config["preprocess_cfg"], "interpolation": "lanczos"}
    crafted = write_safetensors(tmp_path / "crafted.safetensors", state, config)
    line = user_error(capsys, "predict", "-m", crafted, "--labels", "oak,fern", folders["image"])
    assert str(crafted) in line and "preprocess_cfg.interpolation" in line


@pytest.mark.parametrize("kind", ["fused", "plain"])
def test_a_deeply_nested_folder_config_is_one_line(folders, tmp_path, capsys, kind):
    spec = _tampered(folders, tmp_path, kind, DEEP)
    line = user_error(capsys, "predict", "-m", spec, "--labels", "oak,fern", folders["image"])
    assert str(tmp_path / kind / CONFIG_NAME) in line and f"nested more than {MAX_YAML_DEPTH} levels" in line


def test_a_folder_config_nested_past_the_bound_inside_a_field_is_refused(folders, tmp_path, capsys):
    deep = json.loads("[" * 100 + "]" * 100)  # parses, but deeper than dalip reads
    spec = _tampered(folders, tmp_path, "fused", lambda config: config.update({"notes": deep}))
    line = user_error(capsys, "predict", "-m", spec, "--labels", "oak,fern", folders["image"])
    assert CONFIG_NAME in line and f"nested more than {MAX_YAML_DEPTH} levels" in line


def test_a_checkpoint_whose_config_metadata_is_deeply_nested_is_one_line(tmp_path, capsys):
    _, state, _ = saved_checkpoint(tmp_path)
    crafted = write_safetensors(tmp_path / "deep.safetensors", state, None, raw_config=DEEP)
    line = user_error(capsys, "export", crafted, tmp_path / "plain.pt")
    assert str(crafted) in line and "nested more than" in line


def test_a_deeply_nested_architecture_file_is_refused(tmp_path):
    path = tmp_path / "my-arch.json"
    path.write_text(DEEP)
    with pytest.raises(ValueError, match=f"{path}: .*nested more than {MAX_YAML_DEPTH} levels"):
        register_config_file(path, "my-arch")


def test_the_bounded_json_reader_names_the_file(tmp_path):
    from dalip.readers import load_json_text, read_json

    assert load_json_text('{"a": [1, 2, {"b": null}]}') == {"a": [1, 2, {"b": None}]}
    path = tmp_path / "x.json"
    for text, expected in [
        ("{broken", "not valid JSON"),
        (DEEP, "nested more than"),
        ("[" + "0," * 200_000 + "0]", "more than 100,000 values"),
        (" " * 2_000_001, "at most 1,000,000"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=expected) as caught:
            read_json(path, "settings file")
        assert str(caught.value).startswith(f"{path}: ")
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match="not UTF-8"):
        read_json(path, "settings file")
    with pytest.raises(FileNotFoundError, match="settings file not found"):
        read_json(tmp_path / "missing.json", "settings file")


def test_onnx_export_into_an_unwritable_folder_names_the_output_folder(
    folders, tmp_path, capsys, monkeypatch
):
    import dalip.export.onnx as onnx_export

    monkeypatch.setattr(onnx_export, "_require_exporter", lambda: None)  # the folder fails before any encoder
    out = tmp_path / "onnx"
    out.mkdir()
    if os.geteuid() == 0:  # root ignores permissions: refuse the staging folder as a read-only folder would
        import dalip.export.files as files

        def refused(prefix: str = "", dir: str = "") -> str:
            raise PermissionError(13, "Permission denied", os.path.join(dir, f"{prefix}k2x9q"))

        monkeypatch.setattr(files.tempfile, "mkdtemp", refused)
    else:
        out.chmod(0o555)
    try:
        line = user_error(capsys, "export", folders["checkpoint"], out, "--format", "onnx")
    finally:
        out.chmod(0o755)
    assert line == f"dalip export: error: {out}: permission denied"
    assert not list(out.iterdir())


def test_the_other_json_files_dalip_reads_are_bounded_too(tmp_path, capsys):
    sizes = tmp_path / "shards" / "sizes.json"
    sizes.parent.mkdir()
    sizes.write_text('{"00000.tar": ' + DEEP + "}")
    with pytest.raises(ValueError, match=f"{sizes}: the shard sizes file is refused: nested more than 64"):
        _read_sizes(str(sizes))
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1}\n' + DEEP + "\n")
    with pytest.raises(ValueError, match="nested more than 64"):
        read_metrics(metrics)
    assert truncate_metrics(metrics, 5) == 1  # a line no run wrote is dropped, not a traceback
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "results.json").write_text(DEEP)
    argv = ["frontier", "--sweep", f"clip@0={sweep}", "--sweep", f"dalip@0={sweep}", "--out", tmp_path / "f"]
    line = user_error(capsys, *argv)
    assert f"{sweep / 'results.json'}: the sweep results is refused: nested more than 64" in line


def test_a_folder_whose_preprocessing_is_not_three_channels_is_refused(tmp_path, capsys):
    from dalip.export.folder import export_folder

    model, *_ = dalip.create_model("test-tiny", **TEST_MBDC)
    folder = tmp_path / "fused"
    export_folder(model, folder, fused=True)
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["preprocess_cfg"]["mean"] = [0.5, 0.5]
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    image = tmp_path / "leaf.png"
    Image.new("RGB", (32, 32), (20, 120, 40)).save(image)
    line = user_error(capsys, "predict", "-m", f"local-dir:{folder}", "--labels", "oak,fern", image)
    assert "preprocess_cfg" in line and "3 numbers each" in line
