"""Helpers for training tests: a tiny generated dataset and run configs that use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TEST_CONFIGS, TEST_MBDC

from dalip.data.synthetic import make_dataset


@pytest.fixture(scope="session")
def train_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train-data")
    make_dataset(
        str(root),
        seed=0,
        species=4,
        image_size=32,
        train_per_class=8,
        val_per_class=2,
        test_per_class=2,
        general_classes=2,
        samples_per_shard=8,
    )
    (root / "test-tiny.json").write_text(json.dumps(TEST_CONFIGS["test-tiny"]))
    return root


def write_config(root: Path, out: Path, **fields) -> Path:
    """A run config for the tiny test model on the tiny dataset; `fields` override sections."""
    config = {
        "model": {
            "name": "test-tiny",
            "config_file": str(root / "test-tiny.json"),
            **TEST_MBDC,
            "dropout": 0.0,
        },
        "data": {
            "sources": [{"kind": "csv", "path": str(root / "plant/train/captions.csv")}],
            "workers": 0,
            "augment": False,
        },
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "batch_size": 8,
        "steps": 4,
        "checkpoint_every": 2,
        "log_every": 1,
        "out_dir": str(out),
        "tensorboard": False,
        "progress": False,
    }
    for key, value in fields.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(*args: str, **kwargs) -> subprocess.Popen:
    """`python -m dalip.cli ARGS` in a fresh process (for kill/resume and torchrun tests)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "dalip.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def step_gradients(trainer, micro) -> tuple[dict, dict]:
    """Take one optimiser step of `trainer` on `micro` (a list of (images, texts)) and return the
    gradients the optimiser was given (after unscaling and clipping) and the step's losses."""
    gradients: dict = {}
    names = {id(p): n for n, p in trainer.model.named_parameters()}

    def capture(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    gradients[names[id(p)]] = p.grad.detach().clone()

    handle = trainer.optimizer.register_step_pre_hook(capture)
    try:
        result = trainer.stepper.step(micro, 0)
    finally:
        handle.remove()
    return gradients, result.losses
