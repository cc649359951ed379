"""A run's data on one rank: its share of the weighted source mix, the optimiser steps in
an epoch, each step's micro-batches on the device, and the end-of-epoch checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from dalip.config import TrainConfig
from dalip.data import MixedDataset, build_train_dataset
from dalip.train.distributed import DistributedContext
from dalip.train.state import all_ranks_agree
from dalip.train.step import MicroBatches
from dalip.train.task import TrainingTask


def build_data(config: TrainConfig, task: TrainingTask, context: DistributedContext) -> MixedDataset:
    """This rank's share of the run's weighted source mix, in the task's input format."""
    transform = task.preprocess_train if config.data.augment else task.preprocess_val
    return build_train_dataset(
        config.data.sources,
        transform,
        task.tokenizer,
        seed=config.seed,
        rank=context.rank,
        world_size=context.world_size,
        num_samples=config.data.num_samples,
    )


def steps_per_epoch(loader: Any, config: TrainConfig, micro_batch: int) -> int | None:
    """Optimiser steps in one epoch of `loader` (None: the epoch length is unknown, which
    needs `steps`); ValueError when one epoch holds less than one step."""
    batches = loader.num_batches
    if batches is None:
        if config.steps is None:
            raise ValueError(
                "steps: the data's epoch length is unknown (webdataset without "
                "num_samples); set steps or data.num_samples"
            )
        return None
    steps = batches // config.optim.accumulation
    if steps < 1:
        raise ValueError(
            f"batch_size: {config.batch_size} is larger than one epoch of data "
            f"({batches * micro_batch} samples per rank)"
        )
    return steps


def take_micro_batches(
    batches: Iterator[Any], accumulation: int, device: torch.device
) -> MicroBatches | None:
    """The next step's `accumulation` micro-batches on the device (None: the epoch ended)."""
    micro = []
    for _ in range(accumulation):
        batch = next(batches, None)
        if batch is None:
            return None
        images, texts = batch
        micro.append((images.to(device, non_blocking=True), texts.to(device, non_blocking=True)))
    return micro


def check_epoch_data(
    dataset: MixedDataset, config: TrainConfig, produced: int, micro_batch: int, device: torch.device
) -> None:
    """After an epoch: every rank stops when a source was unusable on any rank (the error that
    rank saw), and an epoch that produced no batch is a ValueError naming the sources."""
    unusable = dataset.unusable_source()
    if not all_ranks_agree(unusable is None, device):  # every rank stops, not only the one that saw it
        raise unusable or ValueError("data.sources: a source was unreadable on another rank (see rank 0)")
    if produced == 0:
        names = ", ".join(source.path for source in config.data.sources)
        raise ValueError(
            f"data: an epoch produced no batch of {micro_batch} samples from {names}; "
            f"check data.sources (skipped: {dataset.skipped() or 'none'})"
        )
