"""What `dalip train` reads besides its config: the metadata of the checkpoint it resumes from."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from guard_helpers import save_stopped_by_ctrl_c, user_error
from train_fixtures import write_config

import dalip.train.state
from dalip.cli import main
from dalip.config import load_train_config
from dalip.experiments import train_stage
from dalip.train.state import stop_grace_seconds

TAMPERED = {
    "world_size 0": ({"world_size": 0}, "world_size=0: expected a whole number of processes >= 1"),
    "world_size -3": ({"world_size": -3}, "world_size=-3: expected a whole number"),
    "world_size '8'": ({"world_size": "8"}, "world_size='8': expected a whole number"),
    "world_size 2, one rng": ({"world_size": 2}, "rng: expected one RNG state per process (2)"),
    "in a row 999": (
        {"position": {"nonfinite_in_row": 999}},
        "999 non-finite steps in a row and 0 in all at step 2",
    ),
    "step '2'": ({"position": {"step": "2"}}, "position step='2': expected whole numbers"),
    "epoch true": ({"position": {"epoch": True}}, "position epoch=True: expected whole numbers"),
    "extra field": ({"position": {"extra": 1}}, "position must hold step, epoch"),
    "last_epoch 10**6": (
        {"scheduler": {"last_epoch": 10**6}},
        "scheduler.last_epoch=1000000: expected the position's step 2",
    ),
}


@pytest.fixture(scope="module")
def trained(train_data, tmp_path_factory) -> Path:
    """A finished 4-step run with checkpoints at steps 2 and 4 (copied by each test)."""
    out = tmp_path_factory.mktemp("resume") / "run"
    assert main(["train", "--config", str(write_config(train_data, out))]) == 0
    return out


@pytest.mark.parametrize("change", TAMPERED, ids=list(TAMPERED))
def test_resume_checks_the_types_and_ranges_of_checkpoint_metadata(
    trained, train_data, tmp_path, capsys, change
):
    out = shutil.copytree(trained, tmp_path / "run")
    config = write_config(train_data, out)
    checkpoint = out / "checkpoints" / "step_000000002.pt"
    state = torch.load(checkpoint, weights_only=True)
    edits, expected = TAMPERED[change]
    for key, value in edits.items():
        state[key] = {**state[key], **value} if isinstance(value, dict) else value
    torch.save(state, checkpoint)
    line = user_error(capsys, "train", "--config", config, "--resume", checkpoint, alone=False)
    assert f"--resume: {checkpoint}: " in line and expected in line, line


def _stalled_run(train_data: Path, folder: Path, grace: str) -> tuple[subprocess.Popen, Path, Path]:
    """`dalip train` in a process of its own, its data reader stalled on a FIFO nobody writes to."""
    fifo, started = folder / "fifo", folder / "started"
    os.mkfifo(fifo)
    source = {"kind": "webdataset", "path": f"pipe:touch {started} && cat {fifo}", "num_samples": 64}
    config = write_config(train_data, folder / "run", data={"sources": [source]})
    env = {**os.environ, "DALIP_STOP_GRACE_SECONDS": grace}
    command = [sys.executable, "-m", "dalip.cli", "train", "--config", str(config)]
    with open(folder / "stderr.txt", "w") as stderr:  # a file: the stalled `cat` holds it open too
        process = subprocess.Popen(command, env=env, stderr=stderr)
    while not started.exists() and process.poll() is None:
        time.sleep(0.05)  # waiting for the reader to start, not timing anything
    return process, fifo, folder / "stderr.txt"


def _still_running(process: subprocess.Popen) -> bool:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=0.5)
    return process.poll() is None


def _release(fifo: Path) -> None:
    """Let the stalled `cat` end (it waits for a writer of the FIFO; gone already: nothing to do)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["second signal", "grace period"])
def test_a_stop_signal_the_step_cannot_honour_still_ends_the_process(train_data, tmp_path, how):
    process, fifo, stderr = _stalled_run(train_data, tmp_path, grace="1" if how == "grace period" else "600")
    try:
        process.send_signal(signal.SIGTERM)
        if how == "second signal":  # again until it ends: two signals sent at once may arrive as one
            while _still_running(process):
                process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
        _release(fifo)
    err = stderr.read_text()
    assert process.returncode == 128 + signal.SIGTERM, err
    last = err.strip().splitlines()[-1]
    expected = (
        "a second stop signal arrived" if how == "second signal" else "no step reached its end within 1 s"
    )
    assert last.startswith("dalip: stopped by signal 15 without a checkpoint: ") and expected in last, err
    assert "Traceback" not in err


def test_the_grace_period_must_be_a_positive_number(monkeypatch):
    monkeypatch.setenv("DALIP_STOP_GRACE_SECONDS", "soon")
    with pytest.raises(ValueError, match="DALIP_STOP_GRACE_SECONDS='soon': expected a number of seconds > 0"):
        stop_grace_seconds()
    monkeypatch.setenv("DALIP_STOP_GRACE_SECONDS", "2.5")
    assert stop_grace_seconds() == 2.5


def test_ctrl_c_inside_a_checkpoint_write_is_an_interrupt_not_a_traceback(
    train_data, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(dalip.train.state, "save_torch", save_stopped_by_ctrl_c)
    config = write_config(train_data, tmp_path / "run", steps=2)  # the last checkpoint: outside the loop
    capsys.readouterr()
    assert main(["train", "--config", str(config)]) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "dalip train: interrupted" and "Traceback" not in err, err


@pytest.mark.timeout(120)
def test_a_stage_killed_before_its_first_checkpoint_starts_again_on_a_rerun(train_data, tmp_path):
    """quickstart, mixlaw and the benchmarks rerun a stage with `train_stage`: the killed run's
    manifest must list its config.yaml and metrics.jsonl, or the folder is refused."""
    process, fifo, _ = _stalled_run(train_data, tmp_path, grace="600")
    try:
        process.kill()  # SIGKILL: config.yaml and metrics.jsonl are written, no checkpoint yet
        process.wait(timeout=60)
    finally:
        _release(fifo)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and not (run / "checkpoints").exists()
    with open(run / "metrics.jsonl", "a") as log:  # and the steps it logged before the kill
        log.write('{"step": 1, "loss": 3.0}\n')
    (run / "checkpoints").mkdir()  # and killed inside its first checkpoint's write
    (run / "checkpoints" / ".step_000000002.pt.k1ll3d00.tmp").write_bytes(b"half")
    train_stage(load_train_config(write_config(train_data, run, steps=2)), cacheable=True)
    assert (run / "model.safetensors").is_file()
