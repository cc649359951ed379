"""A full disk: every command that writes turns a failed write into one line naming the file
it was writing (exit status 1), and leaves no temporary file, no folder it made for nothing and
no file its manifest does not list; make-dataset lists its files before it writes them, so
`--force` recovers a folder after a full disk or a kill.

A per-process file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) stands in for the full
disk: every writer (Python files, torch, safetensors, PIL, numpy) then fails with EFBIG
exactly where a full disk fails with ENOSPC, and the limit needs no mount."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from cli_helpers import file_size_limit, files_under, saved_checkpoint
from data_fixtures import TINY_DATASET
from train_fixtures import write_config

import dalip.data.synthetic.generator as generator
from dalip.cli import main
from dalip.outputs import LOCK_NAME, MANIFEST_NAME, OutputFolder


def _commands(tmp_path: Path, train_data: Path, model: Path) -> dict[str, tuple[list[str], Path]]:
    """name -> (argv, the output it names)."""
    out = tmp_path / "out"
    images = [str(p) for p in sorted((train_data / "plant/test").rglob("*.jpg"))[:2]]
    return {
        "make-dataset": (["make-dataset", "--out", str(out), *TINY_DATASET], out),
        "train": (["train", "--config", str(write_config(train_data, out, steps=2))], out),
        "eval": (
            ["eval", "--model", str(model), "--zeroshot", str(train_data / "plant/test")]
            + ["--out", str(out), "--quiet"],
            out,
        ),  # fmt: skip
        "embed": (
            ["embed", "--model", str(model), "--images", *images, "--out", str(out) + ".npz", "-q"],
            out,
        ),
        "export-pt": (["export", str(model), str(out) + ".pt"], out),
        "export-safetensors": (["export", str(model), str(out) + ".safetensors"], out),
        "export-fused-dir": (["export", "--format", "fused-dir", str(model), str(out)], out),
    }


def _failed_write(capsys: pytest.CaptureFixture, argv: list[str], limit: int) -> str:
    """Run `dalip ARGV` under the limit; assert exit 1 and one error line; return that line.
    The limit would also stop torch's shared memory (files in /dev/shm), which a full output
    disk leaves alone: with 0 workers nothing is shared, so sharing is made a no-op."""
    capsys.readouterr()
    with file_size_limit(limit), pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.Tensor, "share_memory_", lambda tensor: tensor)
        status = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert status == 1, f"exit {status}: {err}"
    assert len(lines) == 1 and "Traceback" not in err and "Errno" not in err, err
    return lines[0]


_CASES = [
    *(
        (command, 0)
        for command in ("make-dataset", "train", "eval", "embed", "export-pt", "export-fused-dir")
    ),
    *(
        (command, 4096)
        for command in ("make-dataset", "train", "eval", "export-safetensors", "export-fused-dir")
    ),
]  # 0: nothing fits; 4096: the small files (manifest, config, log) fit, the big ones do not


@pytest.mark.parametrize(("command", "limit"), _CASES)
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_behind(
    command, limit, train_data, tmp_path, capsys
):
    model, _, _ = saved_checkpoint(tmp_path)
    argv, out = _commands(tmp_path, train_data, model)[command]
    before = files_under(tmp_path)
    line = _failed_write(capsys, argv, limit)
    named = line.split(": error: ", 1)[1].rsplit(": ", 1)
    assert named[1] == "file too large", line
    assert named[0].startswith(str(out)) and ".tmp" not in named[0] and "dalip-export" not in named[0], line
    left = files_under(tmp_path) - before
    assert not [name for name in left if name.endswith(".tmp")], left
    if not out.is_dir() or not (out / MANIFEST_NAME).exists():
        assert left <= {"out"}, f"{command} left {sorted(left)}"  # at most the folder it was given
        assert not out.exists() or not any(out.iterdir()), sorted(left)
        return
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["complete"] is False
    written = {path for path in files_under(out) if (out / path).is_file()} - {MANIFEST_NAME, LOCK_NAME}
    assert written <= set(manifest["files"]), written - set(manifest["files"])


def test_make_dataset_recovers_with_force_after_a_full_disk(tmp_path, capsys):
    out = tmp_path / "data"
    argv = ["make-dataset", "--out", str(out), *TINY_DATASET]
    _failed_write(capsys, argv, 4096)  # images fit, the shards do not
    assert list(out.rglob("*.jpg")), "the test needs a half-written dataset"
    assert main([*argv, "--force"]) == 0
    assert json.loads((out / MANIFEST_NAME).read_text())["complete"] is True
    assert not list(out.rglob("*.tmp"))


def test_make_dataset_recovers_with_force_after_a_kill(tmp_path, monkeypatch):
    """A kill runs no cleanup: the folder keeps half-written temporaries and files written
    since the manifest was last updated; `--force` must still clear and rewrite it."""
    out = tmp_path / "data"
    written = 0

    def killed_after_five(path, data, durable=True):
        nonlocal written
        if written == 5:
            raise SystemExit("killed")
        written += 1
        Path(path).write_bytes(data)

    with monkeypatch.context() as patch:
        patch.setattr("dalip.data.synthetic.writers.write_bytes", killed_after_five)
        patch.setattr(OutputFolder, "close", lambda self, complete=True: self._release_lock())
        patch.setattr(generator.SplitWriter, "abort", lambda self: None)  # nothing cleans up
        with pytest.raises(SystemExit):
            generator.make_dataset(str(out), species=2, image_size=24, train_per_class=4, samples_per_shard=2)
    assert len(list(out.rglob("*.jpg"))) == 5 and list(out.rglob(".*.tmp")), files_under(out)
    manifest = generator.make_dataset(
        str(out), species=2, image_size=24, train_per_class=4, samples_per_shard=2, force=True
    )
    assert manifest["counts"]["plant/train"] == 8
    assert not list(out.rglob("*.tmp"))
    listed = set(json.loads((out / MANIFEST_NAME).read_text())["files"])
    assert listed == {p for p in files_under(out) if (out / p).is_file()} - {MANIFEST_NAME, LOCK_NAME}


def test_a_read_only_target_names_the_output_not_the_temporary_file(tmp_path, capsys, monkeypatch):
    """As root a test cannot make a folder read-only, so the temporary file's creation fails
    as it does on a read-only mount (EROFS, naming the temporary path)."""
    model, _, _ = saved_checkpoint(tmp_path)

    def read_only(*args, prefix="", dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(dir or "", f"{prefix}abcd1234.tmp"))

    monkeypatch.setattr("dalip.atomic.tempfile.mkstemp", read_only)
    capsys.readouterr()
    assert main(["export", str(model), str(tmp_path / "out.safetensors")]) == 1
    line = capsys.readouterr().err.strip()
    assert line == f"dalip export: error: {tmp_path / 'out.safetensors'}: read-only file system", line
