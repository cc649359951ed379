"""Weighted mixing, reproducibility, worker seeding, and exactly-once shard epochs."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from data_fixtures import FakeSource, captioned_shards, to_tensor

from dalip.config import SourceConfig
from dalip.data import MixedDataset, build_loader, build_train_dataset


def _mix(seed: int, sizes=(6000, 6000), weights=(10.0, 3.0), num_samples=20_000) -> MixedDataset:
    sources = [FakeSource(i, size) for i, size in enumerate(sizes)]
    return MixedDataset(sources, list(weights), seed=seed, num_samples=num_samples)


@pytest.mark.parametrize("sizes", [(6000, 6000), (50, 30_000)], ids=["equal", "tiny-plant-source"])
def test_mixing_shares_follow_weights(sizes):
    samples = list(_mix(seed=0, sizes=sizes))
    assert len(samples) == 20_000
    share = Counter(ident for ident, _ in samples)[0] / len(samples)
    assert abs(share - 10 / 13) < 0.02  # a small source is restarted, the weight still holds


def test_mixing_is_reproducible_and_seeded():
    first, again, other = (list(_mix(seed=s)) for s in (5, 5, 6))
    assert first == again
    assert first != other


def test_set_epoch_changes_the_draws():
    mix = _mix(seed=0, num_samples=2000)
    epoch0 = list(mix)
    mix.set_epoch(1)
    assert list(mix) != epoch0


def test_workers_get_distinct_streams_and_split_the_epoch():
    mix = _mix(seed=0, num_samples=4000)
    loader = build_loader(mix, batch_size=100, workers=2)
    batches = [torch.stack(pair, dim=1) for pair in loader]  # (100, 2) each
    assert loader.num_batches == len(batches) == 40
    # DataLoader alternates workers: even batches come from worker 0, odd from worker 1
    worker0 = torch.cat(batches[0::2])[:, 0].tolist()
    worker1 = torch.cat(batches[1::2])[:, 0].tolist()
    assert worker0 != worker1  # same seed for both workers would give equal draws
    again = [torch.stack(pair, dim=1) for pair in build_loader(mix, batch_size=100, workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    # each worker takes its own share of each source: no sample repeated across workers
    pairs = [tuple(row) for batch in batches for row in batch.tolist()]
    assert len(set(pairs)) == len(pairs)


def test_bad_weight_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="weight must be > 0"):
        MixedDataset([FakeSource(0, 10)], [0.0], seed=0)


@pytest.fixture
def shard_pattern(tmp_path):
    captions = captioned_shards(tmp_path / "shards", shards=5, per_shard=7)
    return str(tmp_path / "shards/{00000..00004}.tar"), captions


def test_two_workers_read_every_shard_sample_exactly_once(shard_pattern):
    pattern, captions = shard_pattern
    dataset = build_train_dataset(
        [SourceConfig("webdataset", pattern, num_samples=35)], to_tensor, None, seed=1
    )
    orders = []
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        loader = build_loader(dataset, batch_size=4, workers=2, drop_last=False)
        seen = [text for images, texts in loader for text in texts]
        assert sorted(seen) == captions  # every sample once: no repeats, none lost
        orders.append(seen)
    assert orders[0] != orders[1]  # shards and samples reshuffled per epoch


def test_ranks_split_the_shards(shard_pattern):
    pattern, captions = shard_pattern
    seen = []
    for rank in (0, 1):
        dataset = build_train_dataset(
            [SourceConfig("webdataset", pattern)], to_tensor, None, seed=1, rank=rank, world_size=2
        )
        seen.append(
            [text for _, texts in build_loader(dataset, 4, workers=2, drop_last=False) for text in texts]
        )
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == captions


def test_mixed_real_sources_batch_shapes(shard_pattern, tmp_path):
    pattern, _ = shard_pattern
    folder = tmp_path / "general" / "circle"
    folder.mkdir(parents=True)
    from data_fixtures import jpeg_bytes

    for i in range(5):
        (folder / f"{i}.jpg").write_bytes(jpeg_bytes(100 + i))
    configs = [
        SourceConfig("webdataset", pattern, weight=10, num_samples=35),
        SourceConfig("folder", str(tmp_path / "general"), weight=3),
    ]
    tokenizer = lambda texts: torch.tensor([[len(texts[0]), 1, 2, 0]])  # noqa: E731
    dataset = build_train_dataset(configs, to_tensor, tokenizer, seed=0)
    assert dataset.num_samples == 40
    images, texts = next(iter(build_loader(dataset, batch_size=8, workers=0)))
    assert images.shape == (8, 3, 8, 8) and texts.shape == (8, 4) and texts.dtype == torch.long


@pytest.mark.parametrize("workers, world_size", [(2, 1), (3, 1), (2, 2)])
def test_one_source_counts_the_batches_its_workers_yield(workers, world_size):
    """One source is one pass split over ranks and workers, each worker batching its own share:
    100 samples, batch 32, 2 workers give 50 + 50 samples and 2 full batches, not 100 // 32 = 3."""
    for rank in range(world_size):
        mix = MixedDataset([FakeSource(0, 100)], [1.0], seed=0, rank=rank, world_size=world_size)
        loader = build_loader(mix, batch_size=32 // world_size, workers=workers)
        assert loader.num_batches == len(list(loader))
        shares = [mix.samples_per_worker(worker, workers) for worker in range(workers)]
        assert sum(shares) == len(range(rank, 100, world_size))
