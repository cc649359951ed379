"""What `dalip eval` (and `predict`) read besides the model: suite files, class lists
(classes.txt), label and template files, and linear-probe and few-shot inputs. Each mistake is
one line naming the file or field, exit status 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_helpers import saved_checkpoint, user_error, write_safetensors
from data_fixtures import jpeg_bytes

import dalip
from dalip.evaluation.probe import read_splits


def _eval_folder(train_data: Path, folder: Path, classes: str | None = None) -> Path:
    """A copy of the tiny test split, with `classes` as its classes.txt when given."""
    shutil.copytree(train_data / "plant/test", folder, ignore=shutil.ignore_patterns("shards", "*.csv"))
    if classes is not None:
        (folder / "classes.txt").write_text(classes)
    return folder


def _folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


@pytest.mark.parametrize(
    "text, expected",
    [
        ("- just\n- a list of words\n", "datasets[0]: expected a mapping"),
        ("42\n", "expected a mapping with a 'datasets' list"),
        ("datasets: [\n", "not valid YAML"),
        ("batch_size: abc\ndatasets:\n  - {name: a, task: zeroshot, path: x}\n", "batch_size: expected int"),
        (
            "workers: -2\ndatasets:\n  - {name: a, task: zeroshot, path: x}\n",
            "workers: expected an integer >= 0",
        ),
        (
            "datasets:\n  - {name: a, task: fewshot, train: x, test: y, folds: 0}\n",
            "datasets[0].folds: expected an integer >= 1",
        ),
        (
            "datasets:\n  - {name: a, task: fewshot, train: x, test: y, shots: [0]}\n",
            "shots[0]: expected an integer >= 1",
        ),
        ("datasets:\n  - {name: ../../escape, task: zeroshot, path: x}\n", "plain name"),
        ("modes: [best]\ndatasets:\n  - {name: a, task: zeroshot, path: x}\n", "modes[0]: expected one of"),
    ],
)
def test_suite_mistakes_are_one_line_naming_the_file(tmp_path, capsys, text, expected):
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    message = user_error(
        capsys, "eval", "-m", tmp_path / "m.safetensors", "--suite", suite, "--out", tmp_path / "o"
    )
    assert "suite.yaml" in message and expected in message
    assert not (tmp_path / "o").exists()


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
