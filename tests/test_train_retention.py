"""The retention options of `dalip train`, each tested for its defining property: LoRA
(only adapters, heads and temperatures get gradients; the merged model is the adapted one),
L2-SP (no penalty at the start, a gradient back toward it), distillation (no loss while the
student is the teacher); all three through gradient accumulation and resume."""

from __future__ import annotations

import pytest
import torch
from cli_helpers import saved_checkpoint, user_error
from conftest import TEST_MBDC
from safetensors.torch import load_file
from train_fixtures import step_gradients, write_config

import dalip
from dalip.cli import main
from dalip.config import load_train_config
from dalip.data import build_loader
from dalip.model.file_format import read_model_file
from dalip.model.lora import add_low_rank_adapters
from dalip.train.distributed import DistributedContext
from dalip.train.loop import Trainer

RETAIN = {"l2sp": {"coefficient": 0.5}, "distill": {"coefficient": 1.0, "temperature": 2.0}}


@pytest.fixture(scope="module")
def start_model(tmp_path_factory) -> str:
    path, _, _ = saved_checkpoint(tmp_path_factory.mktemp("start"))
    return str(path)


def _trainer(train_data, out, start_model, **fields) -> Trainer:
    config = write_config(train_data, out, model={"pretrained": start_model}, **fields)
    trainer = Trainer(load_train_config(config), DistributedContext())
    trainer.dataset.set_epoch(0)
    return trainer


def _batch(trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(build_loader(trainer.dataset, 8, 0)))


def test_lora_trains_only_adapters_heads_and_temperatures(train_data, tmp_path, start_model):
    trainer = _trainer(
        train_data, tmp_path / "run", start_model, lora={"rank": 2, "targets": ["q", "v", "mlp"]}
    )
    trained = set(step_gradients(trainer, [_batch(trainer)])[0])
    assert trained == {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    towers = {name for name in trained if name.startswith("clip.") and name != "clip.logit_scale"}
    assert towers and all(".lora_a." in name or ".lora_b." in name for name in towers)
    assert any(".attn.parametrizations.in_proj_weight.0.lora_a.1" in name for name in towers)  # q and v
    assert any(".mlp.c_fc.parametrizations.weight." in name for name in towers)
    assert not any("out_proj" in name for name in towers)
    assert {name for name in trained if not name.startswith("clip.")} == set(
        trainer.model.mbdc_parameter_names()
    )


def test_a_lora_model_is_saved_merged_and_equals_the_adapted_one(train_data, tmp_path, start_model):
    trainer = _trainer(
        train_data, tmp_path / "run", start_model, lora={"rank": 2, "targets": ["q", "k", "v", "out"]}
    )
    model = trainer.model.eval()
    images, texts = _batch(trainer)
    start = model.encode_image(images).first
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_b." in name:
                parameter.normal_(std=0.05)  # as if trained
    adapted_image, adapted_text = model.encode_image(images), model.encode_text(texts)
    assert not torch.allclose(adapted_image.first, start)
    model.save(tmp_path / "merged.safetensors")
    assert not any(
        "lora" in name or "parametrizations" in name for name in load_file(tmp_path / "merged.safetensors")
    )
    merged = dalip.load_checkpoint(tmp_path / "merged.safetensors").eval()
    for ours, theirs in [
        (merged.encode_image(images), adapted_image),
        (merged.encode_text(texts), adapted_text),
    ]:
        torch.testing.assert_close(ours.first, theirs.first, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.second, theirs.second, rtol=0, atol=1e-5)


def test_a_lora_training_checkpoint_reads_as_the_merged_model(train_data, tmp_path, start_model):
    out = tmp_path / "run"
    config = write_config(
        train_data, out, model={"pretrained": start_model}, lora={"rank": 2}, optim={"lr": 0.05}
    )
    assert main(["train", "--config", str(config)]) == 0
    _, state = read_model_file(out / "checkpoints" / "step_000000004.pt")
    final = load_file(out / "model.safetensors")
    assert state.keys() == final.keys()
    for name, value in final.items():
        assert torch.equal(state[name], value), name
    start = load_file(start_model)
    assert not torch.equal(final["clip.visual.transformer.resblocks.0.attn.in_proj_weight"],
                           start["clip.visual.transformer.resblocks.0.attn.in_proj_weight"])  # fmt: skip
    torch.testing.assert_close(
        final["clip.visual.conv1.weight"], start["clip.visual.conv1.weight"], rtol=0, atol=0
    )


def test_lora_refuses_a_tower_it_cannot_adapt():
    class OwnAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = torch.nn.Linear(8, 24)
            self.logit_scale = torch.nn.Parameter(torch.zeros(()))

    with pytest.raises(
        ValueError, match=r"the image tower \(none\) has no layer that lora.targets \['q'\] adapt"
    ):
        add_low_rank_adapters(OwnAttention(), ["q"], rank=2, alpha=1.0)


def test_l2sp_is_zero_at_the_start_and_pulls_back_toward_it(train_data, tmp_path, start_model):
    trainer = _trainer(train_data, tmp_path / "run", start_model, l2sp={"coefficient": 0.5})
    retention, model = trainer.task.retention, trainer.model
    images, texts = _batch(trainer)
    output = trainer.task.encode(images, texts)
    losses = trainer.task.losses(output)
    assert losses["l2sp_loss"].item() == 0.0
    weight = model.clip.visual.conv1.weight
    with torch.no_grad():
        weight.add_(0.01 * torch.randn_like(weight))
    start = next(p0 for p, p0 in retention.start if p is weight)
    penalty = retention.add_to(
        {"loss": torch.zeros(())}, output["image_features"], output["text_features"], None
    )
    penalty["loss"].backward()
    torch.testing.assert_close(weight.grad, 0.5 * (weight.detach() - start))  # d/dw c/2 ||w - w0||^2
    assert not any(p is model.clip.logit_scale for p, _ in retention.start)


def test_distillation_is_zero_while_the_student_is_the_teacher(train_data, tmp_path, start_model):
    trainer = _trainer(train_data, tmp_path / "run", start_model, distill={"coefficient": 1.0})
    trainer.model.eval()  # the same forward as the teacher's (no dropout)
    images, texts = _batch(trainer)
    losses = trainer.task(images, texts)
    assert abs(losses["distill_loss"].item()) < 1e-6
    with torch.no_grad():
        trainer.model.clip.visual.proj.add_(0.05 * torch.randn_like(trainer.model.clip.visual.proj))
    assert trainer.task(images, texts)["distill_loss"].item() > 1e-4
    assert all(not p.requires_grad for p in trainer.task.retention.teacher.parameters())


def test_retention_gradients_are_the_same_however_the_batch_is_split(train_data, tmp_path, start_model):
    gradients = []
    for accumulation in (1, 2):
        out = tmp_path / f"acc{accumulation}"
        trainer = _trainer(train_data, out, start_model, optim={"accumulation": accumulation}, **RETAIN)
        with torch.no_grad():  # move away from the start, so that both terms have a gradient
            proj = trainer.model.clip.visual.proj
            proj.add_(0.05 * torch.randn(proj.shape, generator=torch.Generator().manual_seed(0)))
        images, texts = _batch(trainer)
        size = 8 // accumulation
        micro = [(images[i : i + size], texts[i : i + size]) for i in range(0, 8, size)]
        step, losses = step_gradients(trainer, micro)
        assert losses["l2sp_loss"] > 0 and losses["distill_loss"] > 0
        gradients.append(step)
    assert gradients[0].keys() == gradients[1].keys()
    for name, value in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], value, rtol=0, atol=1e-6, msg=name)


def test_retention_options_are_checked(train_data, tmp_path, capsys):
    for fields, message in [
        ({"l2sp": {"coefficient": 0.1}}, "l2sp.coefficient: needs model.pretrained"),
        ({"distill": {"coefficient": 1.0}}, "distill.coefficient: needs model.pretrained"),
        ({"lora": {"rank": 2, "targets": ["qkv"]}}, "lora.targets[0]: expected one of q, k, v, out, mlp"),
        ({"distill": {"temperature": 0}}, "distill.temperature: expected a finite number > 0"),
    ]:
        config = write_config(train_data, tmp_path / "run", **fields)
        assert message in user_error(capsys, "train", "--config", config)
    assert TEST_MBDC  # the start model's heads are the test configs' (conftest)
