"""Reliability round 3: small inputs that asked for unbounded memory, recursion or work, and
wrong runs reported as success. Each is one line naming the field or file, exit status 2."""

from __future__ import annotations

import json
import shutil
import struct
import zlib

import pytest
import torch
import yaml
from conftest import TEST_MBDC
from guard_helpers import user_error
from PIL import Image
from train_fixtures import write_config

import dalip
from dalip.cli import main
from dalip.data.files import read_table
from dalip.readers import MAX_QUOTED, load_yaml_text


def _alias_bomb(levels: int) -> str:
    """A few hundred bytes whose last key expands to 9**levels scalars."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    lines.append(f"seed: [{', '.join([f'*l{levels - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path, capsys):
    config = tmp_path / "bomb.yaml"
    config.write_text(_alias_bomb(9))  # 9**9 values: gigabytes once expanded
    assert len(config.read_text()) < 1000
    line = user_error(capsys, "train", "--config", config, "--print-config")
    assert "more than 100,000 values once its aliases are expanded" in line and len(line) < 300
    line = user_error(capsys, "train", "--print-config", "--set", f"seed={_alias_bomb(6)}")
    assert "override of seed" in line and len(line) < 300


def test_deep_nesting_is_refused_in_files_and_overrides(tmp_path, capsys):
    config = tmp_path / "deep.yaml"
    config.write_text("seed: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert "nested more than 64 levels deep" in user_error(capsys, "train", "--config", config)
    deep = ".".join(["model"] * 50_000)
    assert "more than 64 levels of sections" in user_error(capsys, "train", "--set", f"{deep}=1")
    with pytest.raises(ValueError, match="nested more than 64"):
        load_yaml_text("a: " + "{b: " * 100 + "1" + "}" * 100)


def test_a_key_given_twice_is_refused_not_overwritten(tmp_path, capsys):
    config = tmp_path / "twice.yaml"
    config.write_text("optim:\n  lr: 1e-3\n  lr: 1e-1\n")
    line = user_error(capsys, "train", "--config", config, "--print-config")
    assert str(config) in line and "key 'lr' appears twice" in line
    assert load_yaml_text("<<: {a: 1}\na: 2\n") == {"a": 2}  # a merge key may be overridden


def test_long_values_are_quoted_short_in_errors(tmp_path, capsys):
    line = user_error(capsys, "train", "--print-config", "--set", "loss.kind=" + "x" * 100_000)
    assert "loss.kind: expected one of dalip, clip" in line and len(line) < MAX_QUOTED + 200


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.image_size=100000", "model.image_size: expected an integer >= 1 and <= 2048"),
        ("model.context_length=10000000", "model.context_length: expected an integer >= 1 and <= 1024"),
        (f"seed={2**70}", "seed: expected an integer >= 0 and <= 4.29497e+09, got 1180591620717411303424"),
    ],
)
def test_sizes_that_would_exhaust_memory_are_refused(capsys, override, message):
    assert message in user_error(capsys, "train", "--print-config", "--set", override)


def test_make_dataset_refuses_more_species_than_it_can_make(tmp_path, capsys):
    line = user_error(capsys, "make-dataset", "--species", "1100", "--out", tmp_path / "data")
    assert "species: expected an integer >= 2 and <= 360" in line
    assert not (tmp_path / "data").exists()
    from dalip.data.synthetic.plants import MAX_SPECIES, make_species

    assert len(make_species(MAX_SPECIES, seed=3)) == MAX_SPECIES  # the bound itself is reachable


def test_a_crafted_training_position_is_refused_on_resume(train_data, tmp_path, capsys):
    out = tmp_path / "run"
    config = write_config(train_data, out)
    assert main(["train", "--config", str(config)]) == 0
    checkpoint = out / "checkpoints" / "step_000000002.pt"
    state = torch.load(checkpoint, weights_only=True)
    for step in (-5, 10**9):  # trained 21 steps of a 16-step run / reported "done, 10**9 steps"
        torch.save({**state, "position": {**state["position"], "step": step}}, checkpoint)
        line = user_error(capsys, "train", "--config", config, "--resume", checkpoint, alone=False)
        assert f"checkpoint {checkpoint} is at step {step} (this run has 4)" in line


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


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels (1 bit, grey) and holds one empty row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [20_000, 9_000])
def test_a_huge_upload_is_a_413_not_a_500(side):
    """20000 x 20000 trips Pillow's own bomb check at open; 9000 x 9000 only dalip's limit."""
    from dalip.serve.uploads import RequestError, read_image

    with pytest.raises(RequestError) as caught:
        read_image(_png_header(side, side), "big.png", 20 * 2**20)
    assert caught.value.status == 413 and "the limit is 64,000,000 pixels" in str(caught.value)


def test_a_column_named_twice_in_a_header_is_refused(tmp_path):
    table = tmp_path / "pairs.csv"
    table.write_text("filepath,caption,caption\na.jpg,one,two\n")
    with pytest.raises(ValueError, match=r"column\(s\) \['caption'\] appear twice"):
        read_table(table, ["filepath", "caption"])


def test_yaml_stays_safe_and_reads_what_it_read(tmp_path):
    assert load_yaml_text("a: [1, {b: 2e-3}]\nc: null\n") == yaml.safe_load("a: [1, {b: 2e-3}]\nc: null\n")
    with pytest.raises(yaml.YAMLError):
        load_yaml_text("!!python/object/apply:os.system ['echo hi']")


def test_a_brace_pattern_is_bounded_before_it_expands(tmp_path):
    """`{0000000000..9999999999}.tar` is 10^10 names: refused from the pattern, not expanded."""
    from dalip.data.shards import MAX_SHARDS, _expansion_bound, expand_shards

    for pattern in ("{0000000000..9999999999}.tar", "{a,b}" * 30, "{{0..999}{0..9999},x}.tar"):
        with pytest.raises(ValueError, match="expands to more than 1,000,000 shard names"):
            expand_shards(str(tmp_path / pattern))
    assert _expansion_bound("shards/{00000..41455}.tar") == 41456 <= MAX_SHARDS
    (tmp_path / "a1.tar").write_bytes(b"")
    assert expand_shards(str(tmp_path / "a{1..3}.tar")) == [
        str(tmp_path / "a1.tar")
    ]  # the others are missing


def test_a_source_smaller_than_its_declared_size_warns_once_with_the_numbers(train_data, tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    shutil.copy(train_data / "plant/train/shards/00000.tar", shards)  # 8 samples
    (shards / "sizes.json").write_text(json.dumps({"00000.tar": 40}))  # claims 40
    source = {"kind": "webdataset", "path": str(shards / "00000.tar")}
    out = tmp_path / "run"
    config = write_config(train_data, out, data={"sources": [source]}, steps=None, epochs=1)
    assert main(["train", "--config", str(config)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "ran out" in line]
    assert len(warnings) == 1, warnings  # once, though every epoch of this run runs out
    assert "epoch 0 ran out after 1 of its 5 steps (8 of 40 samples per rank)" in warnings[0]
    assert str(shards / "00000.tar") in warnings[0]


def test_an_epoch_too_short_for_a_step_blames_what_makes_it_so(train_data, tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    shutil.copy(train_data / "plant/train/shards/00000.tar", shards)
    (shards / "sizes.json").write_text(json.dumps({"00000.tar": 0}))
    zeros = {"sources": [{"kind": "webdataset", "path": str(shards / "00000.tar")}]}
    cases = [  # the 32-sample CSV unless data says otherwise; batch_size 8 unless given
        ({"data": zeros}, "data.sources: " + str(shards / "00000.tar") + " declare no samples"),
        (
            {"batch_size": 64},
            "batch_size: 64 (64 samples per rank per step) is larger than one epoch of data (32",
        ),
        ({"data": {"workers": 8}}, "data.workers: 8 workers each batch their own share of the 32 samples"),
    ]
    for fields, message in cases:
        config = write_config(train_data, tmp_path / "run", **fields)
        assert message in user_error(capsys, "train", "--config", config, alone=False)
