"""Building what a training run needs from its config: the model and the data stream."""

from __future__ import annotations

from typing import Any, Callable

import torch

from dalip.config import TrainConfig
from dalip.data import build_train_dataset
from dalip.model.dalip_model import DALIPModel
from dalip.model.factory import create_model
from dalip.model.registry import register_model_configs
from dalip.train.distributed import DistributedContext
from dalip.train.locks import apply_locks, freeze


def micro_batch_size(config: TrainConfig, world_size: int) -> int:
    """Samples per rank per forward pass: batch_size / (world_size x accumulation)."""
    parts = world_size * config.optim.accumulation
    if config.batch_size % parts:
        raise ValueError(
            f"batch_size: {config.batch_size} is not divisible by world size x optim.accumulation "
            f"= {world_size} x {config.optim.accumulation}"
        )
    return config.batch_size // parts


def build_training_model(
    config: TrainConfig, device: torch.device
) -> tuple[DALIPModel, Callable, Callable, Callable]:
    """The model (heads frozen for the plain CLIP loss), with locks and checkpointing applied."""
    model_config = config.model
    if model_config.config_file:
        register_model_configs(model_config.config_file)
    plain_clip = config.loss.kind == "clip"
    model, train_transform, val_transform, tokenizer = create_model(
        model_config.name,
        pretrained=model_config.pretrained,
        # A CLIP-loss run trains first order only; alpha = 1 makes its fused similarity first order.
        alpha=1.0 if plain_clip else model_config.alpha,
        image_size=model_config.image_size,
        context_length=model_config.context_length,
        separate_second_temperature=model_config.separate_second_temperature and not plain_clip,
        heads=model_config.heads,
        reduced_dim=model_config.reduced_dim,
        dropout=model_config.dropout,
        learnable_temperature=model_config.learnable_temperature,
    )
    if plain_clip:
        freeze(model.image_mbdc)
        freeze(model.text_mbdc)
    apply_locks(model, config.lock)
    if config.grad_checkpointing:
        model.clip.set_grad_checkpointing(True)
    return model.to(device), train_transform, val_transform, tokenizer


def build_data(
    config: TrainConfig, transform: Callable, tokenizer: Callable, context: DistributedContext
) -> Any:
    return build_train_dataset(
        config.data.sources, transform, tokenizer, seed=config.seed,
        rank=context.rank, world_size=context.world_size, num_samples=config.data.num_samples,
    )
