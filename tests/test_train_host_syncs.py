"""A training step never makes the host wait for the device outside log steps.

Counted on the CPU with `HostSyncCounter` (value reads, `nonzero`, boolean-mask indexing, ...
on any device): what a CPU run counts, a GPU run would wait for.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from cli_helpers import saved_checkpoint
from train_fixtures import write_config

from dalip.config import load_train_config
from dalip.train.distributed import DistributedContext
from dalip.train.host_syncs import HostSyncCounter
from dalip.train.loop import Trainer

STEPS, LOG_EVERY = 8, 4


def syncs_per_iteration(trainer: Trainer) -> dict[int, int]:
    """Run `trainer`; host syncs counted from the start of each step to the start of the next
    (the step, its bookkeeping, taking the next batch and agreeing on it), by step number."""
    marks: list[tuple[int, int]] = []
    original = trainer.stepper.step
    counter = HostSyncCounter()

    def counted_step(micro, index):
        marks.append((index + 1, counter.total))
        return original(micro, index)

    trainer.stepper.step = counted_step
    with counter:
        trainer.run(None)
    marks.append((None, counter.total))
    return {step: after - before for (step, before), (_, after) in zip(marks, marks[1:]) if step is not None}


def quiet_steps(counts: dict[int, int], steps_per_epoch: int) -> dict[int, int]:
    """Steps that neither log nor checkpoint nor end an epoch (a new epoch's DataLoader iterator
    draws its seeds on the CPU), so their iteration is the steady state of a run."""
    return {
        step: n for step, n in counts.items() if step % LOG_EVERY and step % steps_per_epoch and step < STEPS
    }


VARIANTS = {
    "dalip": {},
    "clip": {"loss": {"kind": "clip"}},
    "amp": {"precision": "amp"},
    "bf16-batchnorm": {"precision": "bf16", "model": {"weighting": "batchnorm"}},
    "accumulation": {"optim": {"accumulation": 2}},
    "head-warmup": {"optim": {"head_warmup_steps": 4}},
    # other tower families: a timm ViT with the sigmoid loss, open_clip's ResNet
    "timm-sigmoid": {"model": {"name": "dalip-tiny-sigmoid", "config_file": None}},
    "resnet": {"model": {"name": "dalip-tiny-resnet", "config_file": None}},
    "retention": {  # model.pretrained is added by the test: the start model they hold to
        "lora": {"rank": 2, "dropout": 0.25},
        "l2sp": {"coefficient": 0.1},
        "distill": {"coefficient": 1.0},
    },
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_host_sync_outside_log_steps(train_data, tmp_path, variant):
    # 1 loader worker: the batches are made in another process, as on a GPU node.
    settings = {
        "steps": STEPS,
        "log_every": LOG_EVERY,
        "checkpoint_every": 100,
        "data": {"workers": 1},
        **VARIANTS[variant],
    }
    if variant == "retention":
        settings["model"] = {"pretrained": str(saved_checkpoint(tmp_path)[0])}
    config = load_train_config(write_config(train_data, tmp_path / "run", **settings))
    trainer = Trainer(config, DistributedContext())
    counts = syncs_per_iteration(trainer)
    assert sorted(counts) == list(range(1, STEPS + 1))
    quiet = quiet_steps(counts, trainer.steps_per_epoch)
    assert len(quiet) >= 2 and all(n == 0 for n in quiet.values()), counts


RANK_SCRIPT = """
import json, os, sys
sys.path.insert(0, {tests!r})
import conftest, open_clip
from pathlib import Path
open_clip.add_model_config(Path({config_file!r}))
import test_train_host_syncs as t
from dalip.config import load_train_config
from dalip.train.distributed import context_from_environment, init_distributed
from dalip.train.loop import Trainer
config = load_train_config({config!r})
context = context_from_environment("cpu")
init_distributed(context)
trainer = Trainer(config, context)
counts = t.syncs_per_iteration(trainer)
Path({out!r}, f"rank{{context.rank}}.json").write_text(json.dumps([counts, trainer.steps_per_epoch]))
"""


def test_two_ranks_sync_at_most_once_per_step(train_data, tmp_path):
    """Under DDP (2 gloo processes) the one read per step is the ranks' agreement on the next
    batch and on stop signals, a CPU tensor on a gloo group (never a GPU wait)."""
    settings = {
        "steps": STEPS,
        "log_every": LOG_EVERY,
        "checkpoint_every": 100,
        "device": "cpu",
        "optim": {"accumulation": 2},
        "model": {"weighting": "batchnorm"},
        "data": {"workers": 1},
    }
    config = write_config(train_data, tmp_path / "run", **settings)
    script = tmp_path / "rank.py"
    tests = os.path.dirname(__file__)
    script.write_text(
        RANK_SCRIPT.format(
            tests=tests, config=str(config), out=str(tmp_path), config_file=str(train_data / "test-tiny.json")
        )
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(script),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        counts, steps_per_epoch = json.loads((tmp_path / f"rank{rank}.json").read_text())
        quiet = quiet_steps({int(k): v for k, v in counts.items()}, steps_per_epoch)
        assert len(quiet) >= 2 and all(n <= 1 for n in quiet.values()), (rank, counts)


def test_the_counter_sees_the_syncs_it_promises_to():
    x = torch.randn(8)
    mask = x > 0
    with HostSyncCounter() as syncs:
        x.sum().item()
        float(x.max())
        bool(mask.any())
        x.tolist()
        x[mask]
        x[mask] = 0.0
        torch.nonzero(mask)
        (x + 1).mul_(2)  # no sync
    assert dict(syncs.counts) == {"item": 3, "tolist": 1, "boolean_index": 2, "nonzero": 1}


def _free_port():
    import socket

    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]
