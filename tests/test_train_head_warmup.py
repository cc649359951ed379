"""optim.head_warmup_steps: the first N steps train only the MBDC heads and temperatures."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from train_fixtures import write_config

from dalip.config import load_train_config
from dalip.train.loop import train
from dalip.train.state import seed_everything
from dalip.train.task import TrainingTask


def _run(train_data, tmp_path, steps, warmup):
    out = tmp_path / f"run-{steps}-{warmup}"
    path = write_config(
        train_data,
        out,
        steps=steps,
        checkpoint_every=steps,
        optim={"lr": 1e-2, "warmup_steps": 1, "head_warmup_steps": warmup},
    )
    config = load_train_config(path)
    seed_everything(config.seed)  # as the trainer does: the run's initial weights
    initial = {
        k: v.clone()
        for k, v in TrainingTask.from_config(config, torch.device("cpu")).model.state_dict().items()
    }
    train(config)
    return initial, load_file(str(out / "model.safetensors"))


def test_towers_hold_still_during_the_head_warmup_and_move_after(train_data, tmp_path):
    initial, warm = _run(train_data, tmp_path, steps=2, warmup=2)
    tower = [name for name in warm if name.startswith("clip.") and name != "clip.logit_scale"]
    heads = [name for name in warm if not name.startswith("clip.")]
    assert all(torch.equal(warm[name], initial[name]) for name in tower)
    assert any(not torch.equal(warm[name], initial[name]) for name in heads)
    _, after = _run(train_data, tmp_path, steps=3, warmup=2)
    assert any(not torch.equal(after[name], initial[name]) for name in tower)
