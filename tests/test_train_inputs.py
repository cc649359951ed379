"""What `dalip train` reads besides its config: the metadata of the checkpoint it resumes from.
The command's guards: values out of range are refused before anything runs, one out_dir holds
one run at a time, a resume continues the run it belongs to (its world size, position and start
weights checked), an epoch too short for a step names its cause, and a run whose data or weights
went bad stops."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import (
    files_under,
    save_stopped_by_ctrl_c,
    saved_checkpoint,
    user_error,
    write_safetensors,
)
from train_fixtures import write_config

import dalip
import dalip.train.state
from dalip.cli import main
from dalip.config import load_train_config
from dalip.experiments import train_stage
from dalip.outputs import LOCK_NAME
from dalip.train.run_log import read_metrics
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


@pytest.mark.parametrize(
    "override, field",
    [
        ("optim.lr=.nan", "optim.lr"),
        ("optim.lr=.inf", "optim.lr"),
        ("optim.lr=-1e-3", "optim.lr"),
        ("optim.grad_clip=-1", "optim.grad_clip"),
        ("optim.mbdc_lr=-1e-4", "optim.mbdc_lr"),
        ("optim.weight_decay=-0.1", "optim.weight_decay"),
        ("optim.warmup_steps=-5", "optim.warmup_steps"),
        ("optim.min_lr_ratio=1.5", "optim.min_lr_ratio"),
        ("eval_every=-1", "eval_every"),
        ("lock.image_unlocked_groups=-1", "lock.image_unlocked_groups"),
        ("lock.text_unlocked_layers=-2", "lock.text_unlocked_layers"),
        ("optim.beta1=2", "optim.beta1"),
        ("optim.eps=0", "optim.eps"),
        ("model.image_size=0", "model.image_size"),
        ("model.context_length=0", "model.context_length"),
        ("data.num_samples=-5", "data.num_samples"),
        ("model.dropout=1.5", "model.dropout"),
        ("model.alpha=.nan", "model.alpha"),
        ("seed=-1", "seed"),
        ("device=tpu", "device"),
        ("loss.combine=product", "loss.combine"),
        ("data.workers=-1", "data.workers"),
    ],
)
def test_out_of_range_values_are_refused_before_anything_runs(train_data, tmp_path, capsys, override, field):
    config = write_config(train_data, tmp_path / "run")
    message = user_error(capsys, "train", "--config", config, "--set", override)
    assert f"error: {field}: expected" in message
    assert not (tmp_path / "run").exists()


def test_an_infinite_source_weight_is_refused(train_data, tmp_path, capsys):
    path = train_data / "plant/train/captions.csv"
    config = write_config(
        train_data,
        tmp_path / "run",
        data={"sources": [{"kind": "csv", "path": str(path), "weight": float("inf")}]},
    )
    assert "data.sources[0].weight: expected a finite number > 0, got inf" in user_error(
        capsys, "train", "--config", config
    )


def test_broken_yaml_in_an_override_and_scalar_sections(train_data, tmp_path, capsys):
    config = write_config(train_data, tmp_path / "run")
    assert "'optim.lr=[1,'" in user_error(capsys, "train", "--config", config, "--set", "optim.lr=[1,")
    scalar = tmp_path / "scalar.yaml"
    for section in ("data", "model"):
        scalar.write_text(f"{section}: 3\n")
        message = user_error(capsys, "train", "--config", scalar)
        assert "scalar.yaml" in message and f"{section!r}" in message
    scalar.write_bytes("model: {name: caf\xe9}\n".encode("latin-1"))
    assert "scalar.yaml: not UTF-8" in user_error(capsys, "train", "--config", scalar)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(train_data, tmp_path, capsys):
    config = write_config(train_data, tmp_path / "run")
    message = user_error(capsys, "train", "--config", config, "--set", "device=cuda")
    assert "device 'cuda'" in message and "not available" in message


def test_relative_paths_in_a_config_are_relative_to_the_file(train_data, tmp_path, monkeypatch, capsys):
    (tmp_path / "configs").mkdir()
    (tmp_path / "cwd").mkdir()
    config = tmp_path / "configs" / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "name": "test-tiny",
                    "config_file": "../model.json",
                    "pretrained": "../start.safetensors",
                },
                "data": {"sources": [{"kind": "csv", "path": "../data.csv"}]},
                "out_dir": "../runs/x",
            }
        )
    )
    for name in ("model.json", "start.safetensors", "data.csv"):
        (tmp_path / name).write_text("{}")
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["train", "--config", str(config), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["out_dir"] == str(tmp_path / "runs" / "x")
    assert printed["model"]["config_file"] == str(tmp_path / "model.json")
    assert printed["model"]["pretrained"] == str(tmp_path / "start.safetensors")
    assert printed["data"]["sources"][0]["path"] == str(tmp_path / "data.csv")


def test_the_shipped_tiny_config_writes_inside_the_checkout(monkeypatch, tmp_path, capsys):
    checkout = tmp_path / "checkout"
    (checkout / "configs").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml", checkout / "configs")
    data = checkout / "data" / "synthetic"
    for folder in ("plant/train", "general/train", "plant/val"):
        (data / folder).mkdir(parents=True)
    (data / "plant/train/captions.csv").write_text("filepath,caption\n")
    monkeypatch.chdir(checkout)  # as README runs it: from the checkout
    assert main(["train", "--config", "configs/tiny-cpu.yaml", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["out_dir"] == str(checkout / "runs" / "tiny-dalip")
    assert printed["data"]["val"] == str(data / "plant/val")


def test_a_folder_in_use_by_a_running_train_is_refused(train_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    hold = (
        "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
        "print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(out / LOCK_NAME)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        message = user_error(capsys, "train", "--config", write_config(train_data, out))
        assert "in use by another dalip command" in message and LOCK_NAME in message
    finally:
        holder.kill()
        holder.wait()
    assert files_under(out) == {LOCK_NAME}


def test_a_folder_of_someone_else_is_refused(train_data, tmp_path, capsys):
    out = tmp_path / "home"
    out.mkdir()
    (out / "config.yaml").write_text("mine: true\n")
    assert "not empty" in user_error(capsys, "train", "--config", write_config(train_data, out))
    assert files_under(out) == {"config.yaml"} and (out / "config.yaml").read_text() == "mine: true\n"


def test_resume_refuses_changed_fields_and_applies_allowed_ones(train_data, tmp_path, capsys):
    out = tmp_path / "run"
    config = write_config(train_data, out, steps=4, checkpoint_every=2)
    assert main(["train", "--config", str(config), "--set", "steps=2"]) == 0
    before = {name: (out / name).read_text() for name in ("config.yaml", "metrics.jsonl")}
    message = user_error(
        capsys, "train", "--config", config, "--resume", "latest", "--set", "batch_size=4", "--set", "seed=3"
    )
    for field in ("batch_size: 8 -> 4", "seed: 0 -> 3", "steps: 2 -> 4", "--allow-change steps"):
        assert field in message
    assert {name: (out / name).read_text() for name in before} == before
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--resume",
                "latest",
                "--set",
                "optim.lr=2e-3",
                "--allow-change",
                "steps",
                "--allow-change",
                "optim.lr",
            ]
        )
        == 0
    )
    records = read_metrics(out / "metrics.jsonl")
    change = next(r for r in records if "resumed_with_changes" in r)
    assert change["step"] == 2 and change["resumed_with_changes"]["optim.lr"] == [1e-3, 2e-3]
    # 4-step cosine after 2 warmup steps: step 3 runs at the new peak lr
    lr = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert lr[3] == pytest.approx(2e-3 * 0.5 * (1 + __import__("math").cos(__import__("math").pi * 0.5)))
    state = torch.load(out / "checkpoints" / "step_000000004.pt", weights_only=True)
    assert state["resume_changes"][0]["changed"]["steps"] == [2, 4]


def test_resume_tidies_half_written_files_and_repeated_steps(train_data, tmp_path):
    out = tmp_path / "run"
    config = write_config(train_data, out, steps=4, checkpoint_every=2)
    assert main(["train", "--config", str(config)]) == 0
    (out / "checkpoints" / "step_000000004.pt").unlink()  # as if killed between step 3 and 4's checkpoint
    (out / "model.safetensors").unlink()
    leftovers = [out / "checkpoints" / ".step_000000004.pt.k2j3.tmp", out / ".model.safetensors.a8x.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 5, "lo')
    assert main(["train", "--config", str(config), "--resume", "latest"]) == 0
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3, 4]
    assert not any(path.exists() for path in leftovers)


def test_force_starts_over_keeping_files_it_did_not_write(train_data, tmp_path, capsys):
    out = tmp_path / "run"
    config = write_config(train_data, out, steps=2, epochs=1, data={"num_samples": 8})
    assert main(["train", "--config", str(config), "--set", "steps=null", "--set", "epochs=2"]) == 0
    quiet = capsys.readouterr().err  # a clean from-scratch run over two epochs says nothing of that
    assert "initialized randomly" not in quiet and "no samples skipped" not in quiet, quiet
    config = write_config(train_data, out, steps=2)
    (out / "notes.txt").write_text("mine")
    assert "--resume latest" in user_error(capsys, "train", "--config", config)
    assert main(["train", "--config", str(config), "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [1, 2]


def test_weights_that_went_non_finite_are_never_saved_as_a_result(train_data, tmp_path, monkeypatch, capsys):
    original = torch.optim.AdamW.step

    def poisoning_step(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoning_step)
    out = tmp_path / "run"
    assert main(["train", "--config", str(write_config(train_data, out, steps=2, max_nonfinite=5))]) == 1
    assert "not finite" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists()


def test_a_source_whose_every_sample_is_bad_stops_the_run(train_data, tmp_path, capsys):
    bad = tmp_path / "broken.csv"
    bad.write_text("filepath,caption\n" + "".join(f"missing/{i}.jpg,a leaf\n" for i in range(8)))
    good = train_data / "plant/train/captions.csv"
    sources = [
        {"kind": "csv", "path": str(good), "weight": 1},
        {"kind": "csv", "path": str(bad), "weight": 1},
    ]
    config = write_config(train_data, tmp_path / "run", steps=50, data={"sources": sources})
    message = user_error(capsys, "train", "--config", config, alone=False)  # after the skip counts
    assert "data.sources[1]" in message and "broken.csv" in message and "missing_file" in message
    assert not (tmp_path / "run" / "model.safetensors").exists()


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
