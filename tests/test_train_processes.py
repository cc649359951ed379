"""Training across real processes: SIGKILL + resume, SIGTERM, and torchrun with gloo."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from cli_helpers import saved_checkpoint
from safetensors.torch import load_file
from train_fixtures import run_cli, write_config

import dalip
from dalip.model.file_format import read_checkpoint_config
from dalip.train.run_log import read_metrics


def wait_for(predicate, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def checkpoints(out):
    folder = out / "checkpoints"
    return sorted(folder.glob("step_*.pt")) if folder.exists() else []


def assert_same_weights(a, b, atol=0.0):
    ours, theirs = load_file(str(a)), load_file(str(b))
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        if atol:
            torch.testing.assert_close(ours[name], value, rtol=0, atol=atol, msg=name)
        else:
            assert torch.equal(ours[name], value), name


@pytest.mark.slow  # 37 s; in-process resumes equal uninterrupted runs in the default suite (test_train.py)
def test_sigkill_then_resume_equals_uninterrupted(train_data, tmp_path):
    settings = dict(
        steps=40,
        checkpoint_every=3,
        keep_last=2,
        data={"workers": 2, "augment": True},
        model={"dropout": 0.1},
    )
    reference = tmp_path / "reference"
    done = run_cli("train", "--config", str(write_config(train_data, reference, **settings)))
    assert done.wait(timeout=300) == 0, done.stderr.read()

    killed = tmp_path / "killed"
    config = write_config(train_data, killed, **settings)
    process = run_cli("train", "--config", str(config))
    assert wait_for(lambda: len(checkpoints(killed)) >= 1, process), process.stderr.read()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"
    assert int(checkpoints(killed)[-1].stem.split("_")[1]) < 40

    resumed = run_cli("train", "--config", str(config), "--resume", "latest")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert_same_weights(killed / "model.safetensors", reference / "model.safetensors")


def test_sigterm_saves_a_loadable_checkpoint(train_data, tmp_path):
    out = tmp_path / "term"
    process = run_cli(
        "train", "--config", str(write_config(train_data, out, steps=400, checkpoint_every=1000))
    )
    logged = out / "metrics.jsonl"  # created when the run starts; a record once a step ran
    assert wait_for(lambda: logged.exists() and logged.stat().st_size > 0, process), process.stderr.read()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    assert "checkpoint saved; continue with --resume latest" in process.stderr.read()
    saved = checkpoints(out)
    assert len(saved) == 1
    model = dalip.load_checkpoint(saved[0])
    assert model.encode_image(torch.randn(1, 3, 32, 32)).second.shape == (1, 32)


def free_port():
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def torchrun(config, nproc=2):
    """`dalip train --config CONFIG` under torchrun with `nproc` gloo processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "dalip.cli",
        "train",
        "--config",
        str(config),
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def assert_two_processes_match_one(train_data, tmp_path, settings, split=None):
    """Train `settings` in one process and under torchrun with 2 gloo ranks (`split`: settings
    for the 2-rank run, default the same); both must end with the same weights. Returns the
    2-rank run's folder."""
    single, double = tmp_path / "single", tmp_path / "double"
    one = run_cli("train", "--config", str(write_config(train_data, single, **settings)))
    assert one.wait(timeout=300) == 0, one.stderr.read()
    result = torchrun(write_config(train_data, double, **(split or settings)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_weights(double / "model.safetensors", single / "model.safetensors", atol=1e-5)
    return double


# accumulation 2 under two processes: 24 s, run in CI (`slow`); 1 stays in the default suite
@pytest.mark.parametrize("accumulation", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_two_gloo_processes_match_one_process(train_data, tmp_path, accumulation):
    """The global batch is the same however it is split: 2 ranks x `accumulation` micro-batches
    train to the weights of one process taking the whole batch at once."""
    settings = dict(steps=3, optim={"lr": 1e-4, "warmup_steps": 1}, device="cpu")
    split = {**settings, "optim": {**settings["optim"], "accumulation": accumulation}}
    double = assert_two_processes_match_one(train_data, tmp_path, settings, split)
    assert len(checkpoints(double)) == 2  # only rank 0 wrote: step 2 and the final step 3


@pytest.mark.slow
@pytest.mark.parametrize("combine", ["losses", "similarity"])
def test_two_gloo_processes_match_one_process_with_the_sigmoid_loss(train_data, tmp_path, combine):
    """A SigLIP-style timm model tuned with the DALIP-sigmoid loss: every rank's texts are each
    image's negatives, so 2 ranks train to the weights of one process taking the whole batch."""
    model = {"name": "dalip-tiny-sigmoid", "config_file": None}
    settings = dict(
        steps=3, optim={"lr": 1e-4, "warmup_steps": 1}, device="cpu", model=model, loss={"combine": combine}
    )
    double = assert_two_processes_match_one(train_data, tmp_path, settings)
    assert dalip.load_checkpoint(double / "model.safetensors").loss_form == "sigmoid"


@pytest.mark.slow
def test_retention_under_two_gloo_processes_matches_one_process(train_data, tmp_path):
    """LoRA, L2-SP and distillation (whose similarities are gathered across ranks as the
    loss's are) give the weights of one process taking the whole batch."""
    start, _, _ = saved_checkpoint(tmp_path)
    settings = dict(
        steps=3,
        optim={"lr": 1e-4, "warmup_steps": 1},
        device="cpu",
        model={"pretrained": str(start)},
        lora={"rank": 2, "targets": ["q", "v", "mlp"]},
        l2sp={"coefficient": 0.1},
        distill={"coefficient": 1.0},
    )
    assert_two_processes_match_one(train_data, tmp_path, settings)


@pytest.mark.slow  # 24 s of two processes
def test_alpha_one_with_the_dalip_loss_trains_under_ddp(train_data, tmp_path):
    """alpha 1 gives the second-order term no weight: the heads take no part in the loss, so
    they are frozen (DDP would otherwise wait for their gradients); the run matches one process."""
    settings = dict(steps=3, optim={"lr": 1e-4, "warmup_steps": 1}, device="cpu", model={"alpha": 1.0})
    double = assert_two_processes_match_one(train_data, tmp_path, settings)
    trained = load_file(str(double / "model.safetensors"))
    torch.manual_seed(0)
    start, *_ = dalip.create_model("test-tiny", heads=2, reduced_dim=8, dropout=0.0, alpha=1.0)
    for name, value in start.state_dict().items():
        if "_mbdc." in name:
            assert torch.equal(trained[name], value), name


@pytest.mark.slow  # 25 s of two processes
def test_the_answer_mode_choice_under_two_gloo_processes_matches_one_process(train_data, tmp_path):
    """Rank 0 alone scores the val folders at the end of the run (the other rank waits at the
    barrier, the RNG is forked): 2 ranks store the mode, the val figures and the weights of one."""
    data = {"val": str(train_data / "plant/val"), "val_general": str(train_data / "general/val")}
    settings = dict(steps=3, optim={"lr": 1e-4, "warmup_steps": 1}, device="cpu", data=data)
    double = assert_two_processes_match_one(train_data, tmp_path, settings)
    choices = []
    for run in (tmp_path / "single", double):
        records = [r["answer_mode"] for r in read_metrics(run / "metrics.jsonl") if "answer_mode" in r]
        assert len(records) == 1, run  # written once, by rank 0
        stored = read_checkpoint_config(run / "model.safetensors")["answer_mode"]
        assert (
            stored == records[0]["chosen"]
            and dalip.load_checkpoint(checkpoints(run)[-1]).answer_mode == stored
        )
        choices.append(records[0])
    assert choices[0]["chosen"] == choices[1]["chosen"]
    for mode, scores in choices[0]["val"].items():
        assert choices[1]["val"][mode] == pytest.approx(scores, abs=1e-6), mode
