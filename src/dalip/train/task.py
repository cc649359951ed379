"""The training step as an object: `TrainingTask` owns the model, the loss, whether the
second order is on, and the temperature clamp; `task(images, texts)` returns the losses.

The loop (`loop.py`) orchestrates around it (data, accumulation, optimiser, schedule,
checkpoints, logging); tests and `benchmarks/bench_step.py` run this same step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from dalip.config import Precision, TrainConfig
from dalip.loss import DALIPLoss
from dalip.model.dalip_model import DALIPModel
from dalip.model.devices import autocast
from dalip.model.factory import create_model
from dalip.model.features import Features
from dalip.model.lora import add_low_rank_adapters
from dalip.model.registry import register_config_file
from dalip.train.locks import apply_locks, freeze
from dalip.train.retention import Retention

MAX_LOGIT_SCALE = math.log(100.0)  # as OpenCLIP: temperature never below 0.01


class TrainingTask:
    """Model + loss + second order on/off + temperature clamp: one training step's computation.

    `second_order=False` is the plain OpenCLIP baseline (`loss.kind: clip`): MBDC is
    skipped in the forward pass and the loss is first order only (alpha 1).

    Attributes set by `from_config`: `preprocess_train`, `preprocess_val` and `tokenizer`,
    what the data needs to feed this model (None when the task is built directly).
    """

    def __init__(
        self,
        model: DALIPModel,
        loss: DALIPLoss,
        second_order: bool = True,
        precision: Precision = "fp32",
        retention: Retention | None = None,
    ) -> None:
        if not second_order and loss.alpha < 1.0:
            raise ValueError(f"a first-order-only task needs a loss with alpha 1, got {loss.alpha}")
        self.model = model
        self.loss = loss
        self.second_order = second_order
        self.precision = precision
        self.forward_module: torch.nn.Module = (
            model  # the model, or its DDP and compiled wrappers: what `encode` calls
        )
        self.retention = retention if retention is not None and retention.active else None
        self.preprocess_train: Callable | None = None
        self.preprocess_val: Callable | None = None
        self.tokenizer: Callable | None = None

    @classmethod
    def from_config(
        cls, config: TrainConfig, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1
    ) -> TrainingTask:
        """Build the model (weights, heads, locks, checkpointing) and the loss a run asks for."""
        second_order = config.loss.kind == "dalip"
        model, preprocess_train, preprocess_val, tokenizer = _create_model(config, second_order)
        # a mode set in the config is stored with the model; "auto" is chosen at the run's end
        model.answer_mode = None if config.model.answer_mode == "auto" else config.model.answer_mode
        if model.alpha == 1.0:  # the CLIP baseline, or a DALIP loss without its second-order term
            freeze_second_order(model)
        freeze_unused(model)
        apply_locks(model, config.lock)
        if config.grad_checkpointing:
            model.clip.set_grad_checkpointing(True)
        loss = DALIPLoss(
            alpha=model.alpha,
            combine=config.loss.combine,
            local_loss=config.loss.local_loss,
            gather_with_grad=config.loss.gather_with_grad,
            cache_labels=True,
            rank=rank,
            world_size=world_size,
            form=model.loss_form,
        )
        model.to(device)
        retention = Retention(model, config, loss.clip_loss)
        retention.freeze_teacher()  # the start model itself, before any adapter
        if config.lora.rank:
            lora = config.lora
            add_low_rank_adapters(model.clip, lora.targets, lora.rank, lora.alpha, lora.dropout)
        retention.start_here()
        task = cls(model, loss, second_order, config.precision, retention)
        task.preprocess_train, task.preprocess_val, task.tokenizer = (
            preprocess_train,
            preprocess_val,
            tokenizer,
        )
        return task

    def distribute(self, device: torch.device) -> None:
        """Run the model's forward through DistributedDataParallel (gradients averaged over ranks).
        MBDC's "batchnorm" weighting normalises over the global batch by itself (any backend)."""
        ids = [device.index] if device.type == "cuda" else None
        self.forward_module = DistributedDataParallel(self.model, device_ids=ids)

    def compile(self) -> None:
        """Compile the forward (both towers and the MBDC heads) with `torch.compile`, around the
        DDP wrapper when there is one (so DDP's buckets split the graph). `self.model` stays the
        plain module: checkpoints, evaluation and exports are unchanged. With TF32 on, the graph
        breaks around BDC's Gram matrix (`dalip.model.bdc.exact_gram` runs eagerly)."""
        self.forward_module = torch.compile(self.forward_module)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context of the forward pass (`amp`: float16 with a grad scaler)."""
        return autocast(self.precision, self.model.clip.logit_scale.device.type)

    def encode(self, images: torch.Tensor, texts: torch.Tensor) -> dict[str, Any]:
        """images (B, 3, H, W), texts (B, L) -> features and exponentiated temperatures."""
        return self.forward_module(images, texts, second_order=self.second_order)

    def teacher_features(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[Features, Features] | None:
        """The distillation teacher's features of a batch (None without `distill`)."""
        return None if self.retention is None else self.retention.teacher_features(images, texts)

    def losses(
        self,
        output: dict[str, Any],
        image: Features | None = None,
        text: Features | None = None,
        teacher: tuple[Features, Features] | None = None,
        penalty: bool = True,
    ) -> dict[str, torch.Tensor]:
        """The loss terms of `encode`'s output; `image` / `text` replace its features (e.g. by
        those of the whole accumulated batch), `teacher` is `teacher_features` of the same
        images; `penalty` False leaves the batch-independent L2-SP term out of "loss"."""
        image = output["image_features"] if image is None else image
        text = output["text_features"] if text is None else text
        losses = self.loss(
            image,
            text,
            output["logit_scale"],
            output.get("logit_scale_second"),
            output.get("logit_bias"),
            output.get("logit_bias_second"),
        )
        if self.retention is None:
            return losses
        return self.retention.add_to(losses, image, text, teacher, penalty)

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"loss" (differentiable), "first_order_loss", "second_order_loss"} of a batch, and
        the retention terms ("l2sp_loss", "distill_loss") a run uses."""
        return self.losses(self.encode(images, texts), teacher=self.teacher_features(images, texts))

    __call__ = forward

    def clamp_temperatures(self) -> None:
        """Keep every learnable temperature within OpenCLIP's bound (call after each update)."""
        with torch.no_grad():
            self.model.clip.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            if self.model.logit_scale_second is not None:
                self.model.logit_scale_second.clamp_(0, MAX_LOGIT_SCALE)


def freeze_second_order(model: DALIPModel) -> None:
    """At alpha 1 the second-order term has no weight in the loss: the MBDC heads (and their own
    temperature) take no part in training, so they are frozen; AdamW then neither moves nor
    decays them, and DDP does not wait for their gradients. Their loss is still logged."""
    freeze(model.image_mbdc)
    freeze(model.text_mbdc)
    for parameter in (model.logit_scale_second, model.logit_bias_second):
        if parameter is not None:
            parameter.requires_grad_(False)


def freeze_unused(model: DALIPModel) -> None:
    """Freeze what the contrastive loss never reaches, so that AdamW leaves it alone and DDP does
    not wait for its gradients: CoCa's caption decoder (dalip tunes the contrastive towers) and
    the logit bias of a SigLIP start model tuned with the softmax form."""
    decoder = getattr(model.clip, "text_decoder", None)
    if decoder is not None:
        freeze(decoder)
    if model.loss_form == "softmax" and getattr(model.clip, "logit_bias", None) is not None:
        model.clip.logit_bias.requires_grad_(False)


def _create_model(config: TrainConfig, second_order: bool) -> tuple[DALIPModel, Callable, Callable, Callable]:
    model_config = config.model
    if model_config.config_file:
        register_config_file(model_config.config_file, model_config.name)
    return create_model(
        model_config.name,
        pretrained=model_config.pretrained,
        # A first-order run has alpha 1, so its fused similarity is its first order.
        alpha=model_config.alpha if second_order else 1.0,
        image_size=model_config.image_size,
        context_length=model_config.context_length,
        separate_second_temperature=model_config.separate_second_temperature and second_order,
        mbdc=model_config.mbdc,
        loss_form=config.loss.form,
    )
