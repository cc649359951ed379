"""A run's data on one rank: its share of the weighted source mix, the optimiser steps in
an epoch, each step's micro-batches on the device, and the end-of-epoch checks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch

from dalip.config import TrainConfig
from dalip.data import MixedDataset, build_train_dataset
from dalip.train.distributed import DistributedContext
from dalip.train.state import all_ranks_agree
from dalip.train.step import MicroBatches
from dalip.train.task import TrainingTask

logger = logging.getLogger(__name__)


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
    needs `steps`); ValueError, blaming what makes it so, when one epoch holds less than one step."""
    batches = loader.num_batches
    if batches is None:
        if config.steps is None:
            raise ValueError(
                "steps: the data's epoch length is unknown (webdataset without "
                "num_samples); set steps or data.num_samples"
            )
        return None
    steps = batches // config.optim.accumulation
    if steps >= 1:
        return steps
    workers = max(config.data.workers, 1)
    per_worker = [loader.dataset.samples_per_worker(w, workers) or 0 for w in range(workers)]
    samples = sum(per_worker)
    names = ", ".join(source.path for source in config.data.sources)
    if samples == 0:
        raise ValueError(
            f"data.sources: {names} declare no samples for this rank (a sizes.json of zeros, or "
            f"data.num_samples smaller than the number of ranks); check the sizes"
        )
    per_step = micro_batch * config.optim.accumulation
    if samples < per_step:
        raise ValueError(
            f"batch_size: {config.batch_size} ({per_step} samples per rank per step) is larger than "
            f"one epoch of data ({samples} samples per rank)"
        )
    raise ValueError(  # enough samples, but each worker batches only its own share
        f"data.workers: {workers} workers each batch their own share of the {samples} samples per "
        f"rank (at most {max(per_worker)} each), too few for {config.optim.accumulation} "
        f"micro-batch(es) of {micro_batch} a step; use fewer workers or a smaller batch_size"
    )


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


class EpochCheck:
    """The checks after each epoch of a run: every rank stops when a source was unusable on
    any rank (the error that rank saw); an epoch that produced no batch is a ValueError
    naming the sources; and an epoch that ran out of data before the steps its declared
    size promises (a sizes.json or num_samples larger than the data, or many skipped
    samples) is a warning, once per run, with the numbers."""

    def __init__(
        self,
        dataset: MixedDataset,
        config: TrainConfig,
        micro_batch: int,
        steps_per_epoch: int | None,
        device: torch.device,
        is_main: bool = True,
    ) -> None:
        self.dataset, self.config, self.micro_batch = dataset, config, micro_batch
        self.steps_per_epoch, self.device, self.is_main = steps_per_epoch, device, is_main
        self.warned = False

    def __call__(self, epoch: int, produced: int, run_done: bool) -> None:
        """After epoch `epoch`, which gave `produced` steps; `run_done`: it ended because the
        run reached its last step (not because the data ran out)."""
        unusable = self.dataset.unusable_source()
        if not all_ranks_agree(
            unusable is None, self.device
        ):  # every rank stops, not only the one that saw it
            raise unusable or ValueError("data.sources: a source was unreadable on another rank (see rank 0)")
        names = ", ".join(source.path for source in self.config.data.sources)
        skipped = self.dataset.skipped() or "none"
        if produced == 0:
            raise ValueError(
                f"data: an epoch produced no batch of {self.micro_batch} samples from {names}; "
                f"check data.sources (skipped: {skipped})"
            )
        expected = self.steps_per_epoch
        if run_done or expected is None or produced >= expected or self.warned:
            return
        self.warned = True
        if self.is_main:
            samples = self.micro_batch * self.config.optim.accumulation
            logger.warning(
                "data: epoch %d ran out after %d of its %d steps (%d of %d samples per rank): %s "
                "delivered less than its declared size (sizes.json or num_samples; skipped: %s); "
                "each epoch stops there, so the run makes more epochs to reach its steps",
                epoch,
                produced,
                expected,
                produced * samples,
                expected * samples,
                names,
                skipped,
            )
