"""The training stream: several weighted sources mixed into one, and its DataLoader.

Each produced sample's source is drawn with probability proportional to its weight
(e.g. plant 10 : general 3 as in PlantMix). Draws come from a generator seeded by
(seed, epoch, rank, DataLoader worker), so a run is reproducible and workers differ.

Epoch length: with one source, an epoch is one pass over it (each sample once). With
several, it is `num_samples` samples (default: the sum of the sources' sizes), split
evenly over ranks and workers; a source that runs out is restarted with a new order,
so the weights hold. When a size is unknown, the mix ends when a source runs out.

A resampled webdataset source (`SourceConfig.resampled`, `dalip.data.shards`) never runs
out: every worker draws its shards with replacement, so it has a share on any number of
ranks x workers and the weights hold globally; a single resampled source is drawn like
a mix of one, `num_samples` per epoch. `resampling_notes` says which sources resample.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import DataLoader, IterableDataset, default_collate

from dalip.config import SourceConfig
from dalip.data.captions import Tokenizer
from dalip.data.make import check_source_config, make_source
from dalip.data.shards import WebDatasetSource
from dalip.data.skips import SharedEpoch, SkipCounter, log_skips, shared, subtract_counts
from dalip.data.sources import Sample, Source, StreamSplit, Transform, worker_quota

logger = logging.getLogger(__name__)

DRAW_BLOCK = 1024  # source choices drawn at once (one numpy call per block)


class MixedDataset(IterableDataset):
    """Weighted mix of sources as one `IterableDataset` of `(image, text)` samples.

    Attributes:
        num_samples: nominal samples per epoch over all ranks (None when unknown).
        skip_counter: skips of all sources, summed over workers (`skipped()`).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        weights: Sequence[float],
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_samples: int | None = None,
        skip_counter: SkipCounter | None = None,
    ) -> None:
        super().__init__()
        if not sources or len(sources) != len(weights):
            raise ValueError(
                f"need one weight per source, got {len(sources)} sources, {len(weights)} weights"
            )
        for source, weight in zip(sources, weights):
            if not weight > 0:
                raise ValueError(f"source {source.name}: weight must be > 0, got {weight}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.sources = list(sources)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        sizes = [source.num_samples for source in sources]
        known = all(size is not None for size in sizes)
        self.num_samples = num_samples if num_samples is not None else (sum(sizes) if known else None)
        self.skip_counter = skip_counter if skip_counter is not None else sources[0].skip_counter
        self.shared_epoch = SharedEpoch(0)
        # per source: 1 once a worker read a whole pass of it and every sample was bad
        self._unusable = shared(torch.zeros(len(self.sources), dtype=torch.int8), "the unusable-source flags")
        self._unusable_view = self._unusable.numpy()  # the same memory, read once per step without torch

    def unusable_source(self) -> ValueError | None:
        """The error naming a source of which a whole pass was unreadable (in any worker), or
        None; the training loop raises it, on every rank."""
        for index in self._unusable_view.nonzero()[0].tolist():
            skipped = ", ".join(f"{reason}={n}" for reason, n in sorted(self.skipped().items()))
            return ValueError(
                f"data.sources[{index}] ({self.sources[index].name}): every sample of a full pass "
                f"was skipped ({skipped or 'no readable sample'}); fix or remove this source"
            )
        return None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: new shard/sample order, caption draws and source draws."""
        self.shared_epoch.set(epoch)
        for source in self.sources:
            source.set_epoch(epoch)

    def skipped(self) -> dict[str, int]:
        """reason -> samples skipped so far, over all sources and worker processes."""
        return self.skip_counter.counts()

    def samples_per_worker(self, worker: int, num_workers: int) -> int | None:
        """How many samples worker `worker` of this rank produces per epoch (None: unknown): its
        quota of a mix, or its share of one pass over a single source."""
        if not self._draws_sources(num_workers):
            return self.sources[0].pass_size(StreamSplit(0, self.rank, self.world_size, worker, num_workers))
        if self.num_samples is None:
            return None
        return worker_quota(self.num_samples // self.world_size, worker, num_workers)

    def _draws_sources(self, num_workers: int) -> bool:
        """Whether each sample's source is drawn (`_mix`): several sources, or one that
        resamples (its stream has no end of its own); else one pass over the one source."""
        return len(self.sources) > 1 or self.sources[0].resamples(self.world_size, num_workers)

    def __iter__(self) -> Iterator[Sample]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        split = StreamSplit(self.shared_epoch.get(), self.rank, self.world_size, worker, workers)
        if self._draws_sources(workers):
            yield from self._mix(split)
        else:
            yield from self.sources[0].stream(split)
        logger.debug(
            "epoch %d rank %d worker %d done; skips so far %s", split.epoch, self.rank, worker, self.skipped()
        )

    def _mix(self, split: StreamSplit) -> Iterator[Sample]:
        """Draw each sample's source by weight until the quota (or, sizes unknown, a source that
        does not resample) runs out; an exhausted source restarts with the next `repeat`."""
        rng = np.random.default_rng([self.seed, split.epoch, split.rank, split.worker])
        quota = self.samples_per_worker(split.worker, split.num_workers)
        weights = self.weights.copy()
        repeats = [0] * len(self.sources)
        endless = [source.resamples(split.world_size, split.num_workers) for source in self.sources]
        streams = [iter(source.stream(split)) for source in self.sources]
        fresh = [True] * len(self.sources)  # no sample taken from the current pass yet
        produced, choices, pending = 0, iter(()), None
        while quota is None or produced < quota:
            choice, pending = (next(choices, None), None) if pending is None else (pending, None)
            if choice is None:
                choices = iter(rng.choice(len(weights), size=DRAW_BLOCK, p=weights / weights.sum()).tolist())
                continue
            sample = next(streams[choice], None)
            if sample is not None:
                fresh[choice] = False
                produced += 1
                yield sample
                continue
            if fresh[choice] and self.sources[choice].has_share(split):
                self._unusable[choice] = 1  # every sample it has was bad: the run stops
                return
            if quota is None and not endless[choice]:
                return  # sizes unknown: one pass of the first source to run out
            if fresh[choice]:  # this worker was given no part of the source (e.g. no shard)
                logger.info(
                    "%s has no share for rank %d worker %d; dropped from its mix",
                    self.sources[choice].name,
                    split.rank,
                    split.worker,
                )
                weights[choice] = 0.0
                if not weights.any():
                    return
                choices = iter(())
                continue
            repeats[choice] += 1
            fresh[choice] = True
            restart = StreamSplit(
                split.epoch, split.rank, split.world_size, split.worker, split.num_workers, repeats[choice]
            )
            streams[choice] = iter(self.sources[choice].stream(restart))
            pending = choice  # this draw takes its sample from the new pass (else small sources lose weight)


def build_train_dataset(
    sources: Sequence[SourceConfig],
    transform: Transform | None,
    tokenizer: Tokenizer | None,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_samples: int | None = None,
) -> MixedDataset:
    """Sources of a training run -> one `(image, text)` stream (see module docstring).

    Call `set_epoch(epoch)` before each epoch; `num_samples` overrides the epoch length.
    """
    if not sources:
        raise ValueError("data.sources: at least one source is needed")
    for index, config in enumerate(sources):  # every config, before any shard is opened
        check_source_config(config, f"data.sources[{index}]")
    counter = SkipCounter()
    built = []
    for index, config in enumerate(sources):
        source_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        built.append(
            make_source(
                config,
                transform,
                tokenizer,
                seed=source_seed,
                skip_counter=counter,
                rank=rank,
                world_size=world_size,
            )
        )
    weights = [config.weight for config in sources]
    return MixedDataset(built, weights, seed, rank, world_size, num_samples, counter)


def resampling_notes(dataset: MixedDataset, num_workers: int) -> list[str]:
    """Lines for the run log on how `dataset`'s webdataset sources are read with its
    `world_size` ranks x `num_workers` DataLoader workers: those that resample (or that
    should and were told not to), e.g. "data.sources[1] (general/{00000..00002}.tar): 3
    shards < 2 ranks x 2 workers: each worker draws shards with replacement (...)"."""
    notes = []
    for index, source in enumerate(dataset.sources):
        if isinstance(source, WebDatasetSource):
            note = source.resampling_note(dataset.world_size, num_workers)
            if note is not None:
                notes.append(f"data.sources[{index}] ({source.name}): {note}")
    return notes


def collate_skipping(batch: list[Any]) -> Any:
    """`default_collate` without the Nones map-style sources return for skipped samples;
    None when the whole batch was skipped (the loader then moves on)."""
    kept = [item for item in batch if item is not None]
    return default_collate(kept) if kept else None


class SkipReportingLoader(DataLoader):
    """A DataLoader that drops all-skipped batches and reports each epoch's skip counts.

    After (or when abandoning) an epoch, `last_epoch_skips` holds reason -> count for it,
    and the counts are logged on `dalip.data.skips`'s logger.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_samples: int | None = None
        self.num_batches: int | None = None
        self.last_epoch_skips: dict[str, int] = {}

    def __iter__(self) -> Iterator[Any]:
        counter: SkipCounter | None = getattr(self.dataset, "skip_counter", None)
        before = counter.counts() if counter is not None else {}
        try:
            for batch in super().__iter__():
                if batch is not None:
                    yield batch
        finally:
            if counter is not None:
                self.last_epoch_skips = subtract_counts(counter.counts(), before)
                epoch = getattr(getattr(self.dataset, "shared_epoch", None), "get", lambda: 0)()
                log_skips(self.last_epoch_skips, f"data epoch {epoch}")


def build_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    workers: int,
    *,
    drop_last: bool | None = None,
    shuffle: bool = False,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    seed: int | None = None,
) -> SkipReportingLoader:
    """DataLoader yielding `(images (B, ...), texts (B, L))` batches, skips reported.

    `drop_last` defaults to True for iterable (training) datasets and False for map-style
    (evaluation) ones; `shuffle` only applies to map-style datasets. `num_batches` is set
    (nominal, per rank) when the dataset knows its size.
    """
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    iterable = isinstance(dataset, IterableDataset)
    drop = iterable if drop_last is None else drop_last
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    loader = SkipReportingLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and not iterable,
        num_workers=workers,
        collate_fn=collate_skipping,
        drop_last=drop,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and workers > 0,
        generator=generator,
    )
    loader.num_samples = getattr(dataset, "num_samples", None)
    loader.num_batches = _nominal_batches(dataset, batch_size, max(workers, 1), drop)
    return loader


def _nominal_batches(dataset: Any, batch_size: int, workers: int, drop_last: bool) -> int | None:
    """Batches per rank per epoch when the size is known (each worker batches its own samples)."""
    if isinstance(dataset, MixedDataset) and dataset.samples_per_worker(0, workers) is not None:
        per_worker = [dataset.samples_per_worker(w, workers) or 0 for w in range(workers)]
        return sum(n // batch_size if drop_last else -(-n // batch_size) for n in per_worker)
    total = getattr(dataset, "num_samples", None)
    if total is None:
        return None
    per_rank = total // getattr(dataset, "world_size", 1)
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)
