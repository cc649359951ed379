"""Reliability round 3, the minor items: input that was silently accepted and messages that
did not name the field or file, or blamed the wrong thing. Each is one line naming the file
or field (exit status 2), or a warning where the input is legitimate but surprising."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from data_fixtures import jpeg_bytes, to_tensor
from guard_helpers import saved_checkpoint, user_error, write_safetensors
from train_fixtures import write_config

import dalip
from dalip.cli import main
from dalip.config import SourceConfig
from dalip.data import build_loader, build_train_dataset
from dalip.evaluation.probe import read_splits


def _eval_folder(train_data: Path, folder: Path, classes: str | None = None) -> Path:
    """A copy of the tiny test split, with `classes` as its classes.txt when given."""
    shutil.copytree(train_data / "plant/test", folder, ignore=shutil.ignore_patterns("shards", "*.csv"))
    if classes is not None:
        (folder / "classes.txt").write_text(classes)
    return folder


def _folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def test_an_extra_tensor_in_the_start_weights_is_reported(tmp_path, caplog):
    path, state, config = saved_checkpoint(tmp_path)
    extra = write_safetensors(tmp_path / "extra.safetensors", {**state, "clip.stray": torch.ones(3)}, config)
    with caplog.at_level("WARNING", logger="dalip"):
        dalip.create_model("test-tiny", pretrained=str(extra), heads=2, reduced_dim=8)
    assert any(
        "1 tensor(s) that test-tiny does not have were ignored: 'clip.stray'" in m for m in caplog.messages
    )


def test_a_checkpoint_of_another_world_size_resumes_with_a_warning(train_data, tmp_path, capsys):
    out = tmp_path / "run"
    config = write_config(train_data, out)
    assert main(["train", "--config", str(config)]) == 0
    checkpoint = out / "checkpoints" / "step_000000002.pt"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "world_size": 8, "rng": state["rng"] * 8}, checkpoint)  # as 8 processes write it
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--resume", str(checkpoint)]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {checkpoint} was written by 8 process(es), this run has 1" in err
    assert "not an exact resume" in err


def test_a_config_file_that_is_no_architecture_is_refused(train_data, tmp_path, capsys):
    for name, text, message in [
        (
            "test-tiny.json",
            '{"seed": 1}',
            "not an open_clip model config (expected a JSON object with embed_dim",
        ),
        ("other.json", (train_data / "test-tiny.json").read_text(), "describes the architecture 'other'"),
    ]:
        (tmp_path / name).write_text(text)
        config = write_config(train_data, tmp_path / "run", model={"config_file": str(tmp_path / name)})
        line = user_error(capsys, "train", "--config", config)
        assert f"model.config_file {tmp_path / name}: " in line and message in line


def test_names_that_differ_only_in_case_are_refused(train_data, tmp_path, capsys):
    path, _, _ = saved_checkpoint(tmp_path)
    image = next((train_data / "plant/test").rglob("*.jpg"))
    line = user_error(capsys, "predict", "--model", path, "--labels", "Oak,oak", image)
    assert "'Oak' and 'oak' differ only in case or spacing" in line
    folder = _eval_folder(train_data, tmp_path / "same")
    first, second, *rest = _folders(folder)
    listing = "".join([f"{first}\tQuercus rubra\n", f"{second}\tquercus  Rubra\n", *(f"{f}\n" for f in rest)])
    (folder / "classes.txt").write_text(listing)
    line = user_error(
        capsys, "eval", "--model", path, "--zeroshot", folder, "--out", tmp_path / "ev", alone=False
    )
    assert (
        "'Quercus rubra' and 'quercus Rubra' differ only in case or spacing" in line
    )  # one line: spaces collapsed
    (folder / "classes.txt").write_text(listing.replace("quercus  Rubra", "Quercus rubra"))
    line = user_error(
        capsys, "eval", "--model", path, "--zeroshot", folder, "--out", tmp_path / "ev", alone=False
    )
    assert "the class name 'Quercus rubra' is given to 2 classes" in line


def test_a_class_list_without_tabs_is_named(train_data, tmp_path, capsys):
    path, _, _ = saved_checkpoint(tmp_path)
    folder = _eval_folder(train_data, tmp_path / "notabs")
    (folder / "classes.txt").write_text("".join(f"{name} Readable name\n" for name in _folders(folder)))
    line = user_error(
        capsys, "eval", "--model", path, "--zeroshot", folder, "--out", tmp_path / "ev", alone=False
    )
    assert f"{folder / 'classes.txt'}: lists '" in line and "is the TAB missing?" in line


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


def test_files_that_are_not_what_they_should_be_are_named(tmp_path, capsys):
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(ValueError, match=f"{passwd}: not a few-shot splits file"):
        read_splits(passwd)
    path, _, _ = saved_checkpoint(tmp_path)
    image = tmp_path / "leaf.jpg"
    image.write_bytes(jpeg_bytes(0))
    line = user_error(capsys, "predict", "--model", path, "--labels-file", "/dev/zero", image)
    assert "/dev/zero: the label file is not a regular file" in line
    line = user_error(
        capsys, "predict", "--model", path, "--labels", "a,b", "--templates", "/dev/zero", image
    )
    assert "/dev/zero: the template file is not a regular file" in line


def test_interpolation_weights_are_bounded(tmp_path, capsys):
    argv = ["interpolate", "--start", "a", "--tuned", "b", "--suite", "s.yaml", "--out", str(tmp_path / "o")]
    line = user_error(capsys, *argv, "--weights", "0,1e308")
    assert "interpolation weights (--weights): expected numbers in [-10, 10]" in line and "1e+308" in line


def test_a_one_class_linear_probe_and_a_zero_std_are_named(train_data, tmp_path, capsys):
    path, state, config = saved_checkpoint(tmp_path)
    one = _eval_folder(train_data, tmp_path / "one")
    for extra in _folders(one)[1:]:
        shutil.rmtree(one / extra)
    (one / "classes.txt").unlink()
    argv = [
        "eval",
        "--model",
        path,
        "--linear-probe",
        one,
        one,
        "--out",
        tmp_path / "ev",
    ]
    assert "training images are all of one class; it needs 2 or more" in user_error(
        capsys, *argv, alone=False
    )
    zero_std = {**config, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}}
    broken = write_safetensors(tmp_path / "std.safetensors", state, zero_std)
    with pytest.raises(ValueError, match="every std above 0"):
        dalip.load_checkpoint(broken)


def test_a_member_named_twice_in_a_shard_is_counted_as_such(tmp_path):
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as archive:
        for name, payload in [("a.jpg", jpeg_bytes(1)), ("a.txt", b"a leaf"), ("a.txt", b"again")]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    dataset = build_train_dataset([SourceConfig("webdataset", str(shard))], to_tensor, None, seed=0)
    list(build_loader(dataset, batch_size=1, workers=0, drop_last=False))
    assert dataset.skipped() == {"duplicate_member": 1}


def test_a_symlink_loop_in_out_is_a_user_error(train_data, tmp_path, capsys):
    path, _, _ = saved_checkpoint(tmp_path)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    line = user_error(capsys, "eval", "--model", path, "--zeroshot", train_data / "plant/test", "--out",
                      tmp_path / "loop" / "ev")  # fmt: skip
    assert "loop" in line


def test_a_huge_shard_count_gives_a_short_message(tmp_path):
    from dalip.evaluation.clip_benchmark import _shards

    (tmp_path / "nshards.txt").write_text("1000000")
    with pytest.raises(FileNotFoundError) as caught:
        _shards(tmp_path)
    assert len(str(caught.value)) < 300 and "and 999,995 more missing (1,000,000 named" in str(caught.value)
    (tmp_path / "nshards.txt").write_text("10000000000")
    with pytest.raises(ValueError, match="from 1 to 1,000,000"):
        _shards(tmp_path)


def test_the_source_revision_is_read_without_touching_the_index():
    from dalip.evaluation.record import source_revision

    index = Path(dalip.__file__).resolve().parents[2] / ".git" / "index"
    if not index.exists():
        pytest.skip("dalip does not run from a git checkout here")
    before = index.stat().st_mtime_ns
    source_revision()
    assert index.stat().st_mtime_ns == before
    assert json.dumps(source_revision())  # a string (or None), recorded in results.json
