"""One output-folder policy: commands delete only what an earlier run of theirs listed,
refuse folders they did not write, and keep out of a folder another command is using.
Output files and folders of embed and eval follow the `--force` rule, and an `--out` path that
cannot be resolved (a symlink loop) is a user error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import files_under, saved_checkpoint, user_error
from data_fixtures import TINY_DATASET
from eval_fixtures import make_workspace

from dalip.cli import main
from dalip.outputs import LOCK_NAME, MANIFEST_NAME, OutputFolder, check_output_file, read_manifest


def _user_folder(root):
    """A folder holding a user's work under the names dalip's outputs use."""
    for relative in (
        "figures/mine.png",
        "wiseft-clip/notes.md",
        "data/plant/photo.jpg",
        "start/model.safetensors",
        "plant/train/keep.csv",
        "general/readme.txt",
    ):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(f"user file {relative}")
    return files_under(root)


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_quickstart_never_touches_a_folder_it_did_not_write(tmp_path, capsys, force):
    before = _user_folder(tmp_path)
    message = user_error(capsys, "quickstart", "--out", tmp_path, "--budget", "test", *force)
    assert str(tmp_path) in message and "not empty" in message
    assert files_under(tmp_path) == before
    assert all((tmp_path / f).read_text() == f"user file {f}" for f in before if (tmp_path / f).is_file())


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_make_dataset_never_touches_a_folder_it_did_not_write(tmp_path, capsys, force):
    before = _user_folder(tmp_path)
    user_error(capsys, "make-dataset", "--out", tmp_path, *TINY_DATASET, *force)
    assert files_under(tmp_path) == before


def test_make_dataset_force_deletes_only_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["make-dataset", "--out", str(out), *TINY_DATASET]) == 0
    written = set(read_manifest(out)["files"])
    assert "manifest.json" in written and any(f.endswith(".jpg") for f in written)
    (out / "plant" / "train" / "mine.txt").write_text("added by the user")
    (out / "general" / "notes").mkdir()
    (out / "general" / "notes" / "a.txt").write_text("added by the user")
    assert main(["make-dataset", "--out", str(out), *TINY_DATASET, "--force", "--seed", "1"]) == 0
    assert (out / "plant" / "train" / "mine.txt").read_text() == "added by the user"
    assert (out / "general" / "notes" / "a.txt").exists()
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1
    assert "plant/train/mine.txt" not in read_manifest(out)["files"]


def test_force_never_follows_a_manifest_outside_the_folder(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "photo.jpg").write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(tmp_path / "elsewhere", out / "linked")
    (out / "ours.txt").write_text("x")
    (out / MANIFEST_NAME).write_text(
        json.dumps(
            {"command": "eval", "files": ["../outside.txt", str(outside), "linked/photo.jpg", "ours.txt"]}
        )
    )
    with OutputFolder(out, "eval", force=True):
        pass
    assert outside.read_text() == "precious" and (tmp_path / "elsewhere" / "photo.jpg").exists()
    assert not (out / "ours.txt").exists()


def test_output_of_another_command_is_refused(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"command": "eval", "files": ["results.json"]}))
    with pytest.raises(FileExistsError, match="dalip eval"):
        OutputFolder(tmp_path, "interpolate", force=True).open()
    assert (tmp_path / "results.json").exists()


def test_a_live_lock_keeps_a_second_command_out(tmp_path):
    with (
        OutputFolder(tmp_path, "eval"),
        pytest.raises(FileExistsError, match="in use by another dalip command"),
    ):
        OutputFolder(tmp_path, "eval", force=True).open()
    with OutputFolder(tmp_path, "eval", force=True):  # released: the next command gets it
        pass


HOLD_LOCK = """
import sys, time
from dalip.outputs import OutputFolder
folder = OutputFolder(sys.argv[1], "train")
folder.open()
print("holding", flush=True)
time.sleep(60)
"""


def test_a_killed_holders_lock_is_free_and_a_live_ones_respected(tmp_path):
    """The lock is the kernel's: a process that holds it keeps others out; killed (SIGKILL,
    no clean-up at all), it holds nothing, and a leftover lock file of dalip 0.1 is no lock."""
    (tmp_path / LOCK_NAME).write_text(
        json.dumps({"pid": 999999, "host": socket.gethostname(), "command": "train"})
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(FileExistsError, match="in use by another dalip command"):
            OutputFolder(tmp_path, "train").open()
    finally:
        holder.kill()
        holder.wait()
    with OutputFolder(tmp_path, "train", resume=True):
        pass


RACE = """
import os, sys, time
from dalip.outputs import OutputFolder
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):  # every racer imported; then all go at once
    time.sleep(0.001)
try:
    with OutputFolder(sys.argv[1], "eval"):
        print("won", flush=True)
        time.sleep(1.0)
except FileExistsError:
    print("refused", flush=True)
"""


@pytest.mark.slow  # 29 s of racing processes; the lock's single-process cases stay in the default suite
def test_processes_racing_for_a_stale_lock_cannot_both_win(tmp_path):
    """A stale lock file (dalip 0.1's record of a process that is gone) and six processes
    starting at the same instant: exactly one takes the folder, the others are refused while it
    holds it (dalip 0.1's own lock let several take over a stale lock at once)."""
    folder, go = tmp_path / "out", tmp_path / "go"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(
        json.dumps({"pid": 999999, "host": socket.gethostname(), "command": "eval"})
    )
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(folder), str(go)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    for racer in racers:  # imports take seconds on a busy machine; the race itself does not wait
        assert racer.stdout.readline().strip() == "ready"
    go.write_text("")
    outcomes = sorted(racer.communicate(timeout=120)[0].strip() for racer in racers)
    assert outcomes == ["refused"] * 5 + ["won"]


def test_eval_and_interpolate_refuse_a_folder_they_did_not_write(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("years of work")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-inputs"
    elsewhere.mkdir()
    suite, model = elsewhere / "suite.yaml", elsewhere / "m.safetensors"
    suite.write_text("datasets:\n  - {name: a, task: zeroshot, path: x}\n")
    model.write_bytes(b"")  # never read: the folder is refused first
    for argv in (
        ["eval", "-m", model, "--suite", suite, "--out", tmp_path, "--force"],
        ["interpolate", "--start", model, "--tuned", model, "--suite", suite, "--out", tmp_path, "--force"],
    ):
        assert "not empty" in user_error(capsys, *argv)
    assert files_under(tmp_path) == {"thesis.tex"}


def test_output_files_need_force_and_never_replace_a_folder(tmp_path):
    target = tmp_path / "features.npz"
    check_output_file(target, force=False)
    target.write_text("old")
    with pytest.raises(FileExistsError, match="--force"):
        check_output_file(target, force=False)
    check_output_file(target, force=True)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_output_file(tmp_path, force=True)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("inputs"))


def test_embed_and_eval_outputs_follow_the_force_rule(workspace, tmp_path, capsys):
    out = tmp_path / "features.npz"
    out.write_bytes(b"earlier")
    argv = ["embed", "-m", str(workspace["start"]), "--texts", "a leaf", "--out", str(out), "-q"]
    assert "--force" in user_error(capsys, *argv)
    assert out.read_bytes() == b"earlier"
    assert main(argv + ["--force"]) == 0 and np.load(out)["first"].shape[0] == 1
    assert "is a folder" in user_error(
        capsys, "embed", "-m", workspace["start"], "--texts", "x", "--out", tmp_path
    )
    eval_argv = [
        "eval",
        "-m",
        str(workspace["start"]),
        "--zeroshot",
        str(workspace["test"]),
        "--out",
        str(tmp_path / "eval"),
        "-q",
    ]
    assert main(eval_argv) == 0
    assert "pass --force" in user_error(capsys, *eval_argv)
    assert main(eval_argv + ["--force"]) == 0
    assert "results.json" in files_under(tmp_path / "eval")
    assert "not a folder" in user_error(capsys, *eval_argv[:-3], "--out", str(out), "-q")


def test_a_symlink_loop_in_out_is_a_user_error(train_data, tmp_path, capsys):
    path, _, _ = saved_checkpoint(tmp_path)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    line = user_error(capsys, "eval", "--model", path, "--zeroshot", train_data / "plant/test", "--out",
                      tmp_path / "loop" / "ev")  # fmt: skip
    assert "loop" in line
