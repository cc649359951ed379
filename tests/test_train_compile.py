"""`compile: true`: the forward through torch.compile gives the eager model's loss and trains.

Compiling takes a minute or two on 2 CPU cores, so the comparison is marked slow; on a GPU it
pays for itself in long runs (benchmarks/RESULTS.md).
"""

import pytest
import torch
from train_fixtures import write_config

from dalip.cli import main
from dalip.config import load_train_config
from dalip.train.step import OptimizerStep
from dalip.train.task import TrainingTask


def batch():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 32, 32, generator=generator)
    texts = torch.randint(1, 1000, (8, 16), generator=generator)
    texts[:, 0], texts[:, 9], texts[:, 10:] = 49406, 49407, 0  # start, end of text, padding
    return images, texts


@pytest.fixture(params=["highest", "high"])
def matmul_precision(request):
    """IEEE float32 (the Gram inside the graph), or TF32 allowed as on a GPU (the Gram's
    precision switch runs eagerly between two graphs; on a CPU the products stay IEEE)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(request.param)
    yield request.param
    torch.set_float32_matmul_precision(previous)


@pytest.mark.slow
def test_compiled_forward_matches_eager_and_trains(train_data, tmp_path, matmul_precision):
    """Losses and every gradient of the compiled forward equal the eager model's (batchnorm
    weighting: the masked statistics, the token hooks, BDC's Gram); then the compiled task
    takes optimiser steps."""
    config = load_train_config(write_config(train_data, tmp_path / "run", model={"weighting": "batchnorm"}))
    torch.manual_seed(0)
    eager = TrainingTask.from_config(config)
    compiled = TrainingTask.from_config(config)
    compiled.model.load_state_dict(eager.model.state_dict())
    compiled.compile()
    assert compiled.model is not compiled.forward_module  # checkpoints and evaluation keep the plain module
    images, texts = batch()
    losses = {}
    for name, task in (("eager", eager), ("compiled", compiled)):
        task.model.train()
        losses[name] = task(images, texts)
        losses[name]["loss"].backward()
    for key in ("loss", "first_order_loss", "second_order_loss"):
        torch.testing.assert_close(losses["compiled"][key], losses["eager"][key], rtol=1e-5, atol=1e-6)
    named = dict(eager.model.named_parameters())
    for name, parameter in compiled.model.named_parameters():
        reference = named[name].grad
        assert (parameter.grad is None) == (reference is None), name
        if reference is not None:
            scale = reference.abs().max().clamp_min(1e-6)
            torch.testing.assert_close(parameter.grad / scale, reference / scale, rtol=0, atol=1e-4, msg=name)
    compiled.model.zero_grad(set_to_none=True)
    stepper = OptimizerStep(compiled, config, total_steps=10)
    results = [stepper([(images, texts)], index) for index in range(2)]
    assert all(bool(r.updated) and torch.isfinite(r.losses["loss"]) for r in results)
    assert results[1].losses["loss"] < results[0].losses["loss"]  # the same batch again: it learned


def test_compile_true_compiles_the_training_forward(train_data, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(TrainingTask, "compile", lambda self: compiled.append(self))
    config = write_config(train_data, tmp_path / "run", steps=1, compile=True)
    assert main(["train", "--config", str(config)]) == 0
    assert len(compiled) == 1
