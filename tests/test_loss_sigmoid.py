"""The sigmoid form of DALIPLoss (SigLIP's pairwise loss with a learned bias per order): exactly
open_clip's SigLipLoss at alpha 1, both combination rules, negatives from every rank, and the
training step with it (accumulation, resume, amp with the CPU grad scaler)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from open_clip.loss import SigLipLoss
from safetensors.torch import load_file
from test_loss_forms import matched_and_shuffled_features, random_features
from train_fixtures import step_gradients, write_config

import dalip
from dalip import DALIPLoss, Features
from dalip.cli import main
from dalip.config import load_train_config
from dalip.data.mixing import build_loader
from dalip.evaluation.contrastive import contrastive_loss
from dalip.inference.predict import label_probabilities
from dalip.train.distributed import DistributedContext
from dalip.train.loop import Trainer

SCALE, SCALE_SECOND = torch.tensor(10.0), torch.tensor(6.0)
BIAS, BIAS_SECOND = torch.tensor(-4.0), torch.tensor(-2.5)


def _sigmoid_loss(logits: torch.Tensor) -> torch.Tensor:
    """SigLIP by hand: -log sigmoid(+logit) for matching pairs, (-logit) for the rest, per image."""
    signs = 2 * torch.eye(len(logits)) - 1
    return -F.logsigmoid(signs * logits).sum() / len(logits)


def test_alpha_one_is_exactly_open_clip_siglip_loss():
    image, text = random_features()
    ours = DALIPLoss(alpha=1.0, form="sigmoid")(image, text, SCALE, logit_bias=BIAS)
    assert torch.equal(ours["loss"], SigLipLoss()(image.first, text.first, SCALE, BIAS))


def test_losses_combine_each_order_with_its_own_bias():
    image, text = random_features()
    out = DALIPLoss(alpha=0.3, form="sigmoid")(image, text, SCALE, SCALE_SECOND, BIAS, BIAS_SECOND)
    first = _sigmoid_loss(SCALE * image.first @ text.first.T + BIAS)
    second = _sigmoid_loss(SCALE_SECOND * image.second @ text.second.T + BIAS_SECOND)
    torch.testing.assert_close(out["first_order_loss"], first)
    torch.testing.assert_close(out["second_order_loss"], second)
    torch.testing.assert_close(out["loss"], 0.3 * first + 0.7 * second)


def test_similarity_combine_is_one_sigmoid_loss_on_the_fused_logits():
    image, text = random_features(requires_grad=True)
    bias, bias_second = BIAS.clone().requires_grad_(), BIAS_SECOND.clone().requires_grad_()
    out = DALIPLoss(alpha=0.25, combine="similarity", form="sigmoid")(
        image, text, SCALE, SCALE_SECOND, bias, bias_second
    )
    logits = 0.25 * (SCALE * image.first @ text.first.T + bias) + 0.75 * (
        SCALE_SECOND * image.second @ text.second.T + bias_second
    )
    torch.testing.assert_close(out["loss"], _sigmoid_loss(logits))
    out["loss"].backward()
    assert bias.grad is not None and bias_second.grad is not None
    assert not out["second_order_loss"].requires_grad


def test_matched_pairs_score_lower_than_shuffled_and_the_bias_is_required():
    image, text, shuffled = matched_and_shuffled_features()
    loss = DALIPLoss(form="sigmoid")
    scale = torch.tensor(20.0)
    assert (
        loss(image, text, scale, logit_bias=BIAS)["loss"]
        < loss(image, shuffled, scale, logit_bias=BIAS)["loss"]
    )
    with pytest.raises(ValueError, match="needs the model's logit bias"):
        loss(image, text, scale)
    with pytest.raises(ValueError, match="loss form"):
        DALIPLoss(form="hinge")


def _distributed_worker(rank, world_size, init_file, combine, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    image, text = random_features(batch=8, seed=5, requires_grad=True)
    part = slice(rank * 4, (rank + 1) * 4)
    local = Features(image.first[part], image.second[part]), Features(text.first[part], text.second[part])
    loss = DALIPLoss(alpha=0.4, combine=combine, rank=rank, world_size=world_size, form="sigmoid")
    out = loss(*local, SCALE, SCALE_SECOND, BIAS, BIAS_SECOND)
    total = out["loss"].detach().clone()
    dist.all_reduce(total)
    out["loss"].backward()  # gradients flow back through the exchange of text features
    grads = [tensor.grad.clone() for tensor in (image.first, image.second, text.first, text.second)]
    for grad in grads:
        dist.all_reduce(grad)
    results[rank] = (total / world_size).item(), grads
    dist.destroy_process_group()


@pytest.mark.parametrize("combine", ["losses", "similarity"])
def test_two_gloo_processes_match_one_process(tmp_path, combine):
    """Each rank's images meet every rank's texts (SigLipLoss's neighbour exchange): the mean of
    the ranks' losses, and their gradients averaged as DDP averages them, are the whole batch's."""
    results = mp.Manager().dict()
    mp.spawn(_distributed_worker, args=(2, tmp_path / "init", combine, results), nprocs=2)
    image, text = random_features(batch=8, seed=5, requires_grad=True)
    single = DALIPLoss(alpha=0.4, combine=combine, form="sigmoid")(
        image, text, SCALE, SCALE_SECOND, BIAS, BIAS_SECOND
    )["loss"]
    single.backward()
    for rank in (0, 1):
        assert abs(results[rank][0] - single.item()) < 1e-5
        for got, expected in zip(results[rank][1], (image.first, image.second, text.first, text.second)):
            torch.testing.assert_close(got / 2, expected.grad, rtol=0, atol=1e-6)


def _sigmoid_run(train_data, out, **fields):
    model = {"name": "dalip-tiny-sigmoid", "config_file": None, "heads": 2, "reduced_dim": 8, "dropout": 0.0}
    return write_config(train_data, out, model={**model, **fields.pop("model", {})}, **fields)


def test_accumulation_gives_the_whole_batch_gradient_in_the_sigmoid_form(train_data, tmp_path):
    gradients = []
    for accumulation in (1, 2):
        config = load_train_config(
            _sigmoid_run(train_data, tmp_path / f"acc{accumulation}", optim={"accumulation": accumulation})
        )
        trainer = Trainer(config, DistributedContext())
        assert trainer.task.loss.form == "sigmoid"
        trainer.dataset.set_epoch(0)
        images, texts = next(iter(build_loader(trainer.dataset, 8, 0)))
        size = 8 // accumulation
        micro = [(images[i : i + size], texts[i : i + size]) for i in range(0, 8, size)]
        gradients.append(step_gradients(trainer, micro)[0])
    assert gradients[0].keys() == gradients[1].keys() >= {"clip.logit_bias", "logit_bias_second"}
    for name, value in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], value, rtol=0, atol=2e-6, msg=name)


def test_a_sigmoid_run_resumes_to_the_same_weights_and_records_its_form(train_data, tmp_path):
    """As test_train's resume test: a 4-step run continued from its step-2 checkpoint to 6 steps
    ends with the weights of an uninterrupted 6-step run (biases and temperatures included)."""
    full = _sigmoid_run(train_data, tmp_path / "full", steps=6)
    assert main(["train", "--config", str(full)]) == 0
    part = _sigmoid_run(train_data, tmp_path / "part", steps=6)
    assert main(["train", "--config", str(part), "--set", "steps=4"]) == 0
    (tmp_path / "part" / "model.safetensors").unlink()
    (tmp_path / "part" / "checkpoints" / "step_000000004.pt").unlink()
    assert main(["train", "--config", str(part), "--resume", "latest", "--allow-change", "steps"]) == 0
    ours = load_file(str(tmp_path / "part/model.safetensors"))
    reference = load_file(str(tmp_path / "full/model.safetensors"))
    for name, value in reference.items():
        assert torch.equal(ours[name], value), name
    assert dalip.load_checkpoint(tmp_path / "full/model.safetensors").loss_form == "sigmoid"


def test_amp_with_the_cpu_grad_scaler_trains_a_timm_tower_in_the_sigmoid_form(train_data, tmp_path):
    out = tmp_path / "amp"
    assert main(["train", "--config", str(_sigmoid_run(train_data, out, precision="amp", steps=3))]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)


def test_softmax_form_on_a_siglip_start_freezes_its_unused_bias(train_data, tmp_path):
    config = load_train_config(_sigmoid_run(train_data, tmp_path / "run", loss={"form": "softmax"}))
    trainer = Trainer(config, DistributedContext())
    assert trainer.task.loss.form == "softmax" and trainer.model.loss_form == "softmax"
    assert not trainer.model.clip.logit_bias.requires_grad and trainer.model.logit_bias_second is None


def test_probabilities_and_held_out_loss_are_the_models_own_form(tmp_path):
    torch.manual_seed(0)
    model, _, _, _ = dalip.create_model("dalip-tiny", loss_form="sigmoid", heads=2, reduced_dim=8)
    with torch.no_grad():
        model.clip.logit_bias.fill_(-3.0)
        model.logit_bias_second.fill_(-1.0)
    image, text = random_features(batch=4, dim=128, seed=3)
    scale = model.clip.logit_scale.exp()
    first = scale * image.first @ text.first.T - 3.0
    second = scale * image.second @ text.second.T - 1.0
    torch.testing.assert_close(label_probabilities(model, image, text, "first"), first.sigmoid())
    torch.testing.assert_close(label_probabilities(model, image, text, "second"), second.sigmoid())
    fused = model.alpha * first + (1 - model.alpha) * second
    torch.testing.assert_close(label_probabilities(model, image, text, "fused"), fused.sigmoid())
    torch.testing.assert_close(
        label_probabilities(model, image, text, "fused", distribution=True), fused.softmax(1)
    )
    softmax = dalip.create_model("dalip-tiny", heads=2, reduced_dim=8)[0]
    rows = label_probabilities(softmax, image, text, "fused")
    torch.testing.assert_close(rows.sum(1), torch.ones(4))


def test_held_out_loss_of_a_sigmoid_model_is_siglips(train_data):
    torch.manual_seed(0)
    model, _, preprocess, tokenizer = dalip.create_model(
        "dalip-tiny", loss_form="sigmoid", heads=2, reduced_dim=8
    )
    model.eval()
    csv = train_data / "plant/test/captions.csv"
    result = contrastive_loss(model, csv, tokenizer, preprocess, modes=["first"], batch_size=4)
    assert result["form"] == "sigmoid"
    # by hand on the first batch of the same fixed order: SigLIP's loss of the model's logits
    assert result["modes"]["first"]["loss"] > 0 and result["batches"] == 2
