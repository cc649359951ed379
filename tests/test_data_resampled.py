"""Resampled WebDataset sources: shards drawn with replacement per worker (`SourceConfig.resampled`).

Shards are tiny tar files built in tmp_path; each sample's caption names its source
("plant-0003", "general-0001"), so a produced sample's source is read off its text.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
from data_fixtures import FakeSource, jpeg_bytes, to_tensor, write_csv, write_shard

from dalip.config import SourceConfig
from dalip.data import MixedDataset, build_loader, build_train_dataset, make_source, resampling_notes
from dalip.data.sources import StreamSplit
from dalip.schema import from_dict

PER_SHARD = 8


def labelled_shards(
    folder: Path, label: str, shards: int, *, sizes: bool = True, readable: bool = True
) -> str:
    """`shards` shards of PER_SHARD samples captioned "<label>-<n>", with a sizes.json when
    `sizes`; unreadable ones hold captions only. Returns their brace pattern."""
    folder.mkdir(parents=True)
    for shard in range(shards):
        samples = []
        for i in range(PER_SHARD):
            n = shard * PER_SHARD + i
            members = {"txt": f"{label}-{n:04d}".encode()}
            if readable:
                members["jpg"] = jpeg_bytes(n, size=8)
            samples.append((f"{n:06d}", members))
        write_shard(folder / f"{shard:05d}.tar", samples)
    if sizes:
        table = {f"{shard:05d}.tar": PER_SHARD for shard in range(shards)}
        (folder / "sizes.json").write_text(json.dumps(table))
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def captions(stream) -> list[str]:
    return [text for _, text in stream]


def realised_sources(
    configs: list[SourceConfig], num_samples: int, world_size: int = 2, workers: int = 2
) -> Counter:
    """Source label -> samples produced over all `world_size` ranks, each with `workers` loader workers."""
    seen: Counter = Counter()
    for rank in range(world_size):
        dataset = build_train_dataset(
            configs, to_tensor, None, seed=0, rank=rank, world_size=world_size, num_samples=num_samples
        )
        for _, texts in build_loader(dataset, batch_size=8, workers=workers):
            seen.update(text.split("-")[0] for text in texts)
    return seen


@pytest.fixture
def plant_and_general(tmp_path: Path) -> tuple[str, str]:
    """A plant source of 4 shards (as many as 2 ranks x 2 workers) and a general one of 1."""
    return labelled_shards(tmp_path / "plant", "plant", 4), labelled_shards(
        tmp_path / "general", "general", 1
    )


@pytest.mark.parametrize("resampled", [None, False])
def test_mix_weights_hold_over_ranks_only_when_resampled(plant_and_general, resampled):
    """plant 3 : general 1 over 2 ranks x 2 workers, with 1 general shard for 4 readers.

    The two ranks are simulated by building each rank's dataset with rank=r, world_size=2:
    which samples a rank reads depends only on those arguments, not on torch.distributed,
    so no process group is needed. Resampled (auto, as 1 shard < 4 readers), every worker
    mixes general in: 800 draws with p = 1/4 give general ~ Binomial(800, 1/4), mean 200 and
    standard deviation sqrt(800 * 1/4 * 3/4) ~ 12.2, so +-4 sd (+-49) fails by chance with
    probability ~6e-5 (the draws are seeded, so the result is fixed anyway). Not resampled
    (false), only rank 0's worker 0 holds the shard and the others drop general from their
    mix: expected 200 * 1/4 = 50 general samples, far below the band.
    """
    plant, general = plant_and_general
    configs = [
        SourceConfig("webdataset", plant, weight=3),
        SourceConfig("webdataset", general, weight=1, resampled=resampled),
    ]
    seen = realised_sources(configs, num_samples=800)
    assert sum(seen.values()) == 800
    mean, sd = 800 / 4, math.sqrt(800 * 1 / 4 * 3 / 4)
    if resampled is None:
        assert abs(seen["general"] - mean) <= 4 * sd
    else:
        assert seen["general"] < mean - 4 * sd


@pytest.mark.parametrize(
    ("world_size", "workers", "expected"),
    [
        (1, 0, False),
        (1, 4, False),
        (2, 2, False),
        (4, 1, False),  # 4 shards for at most 4 readers: split
        (5, 1, True),
        (2, 3, True),
        (1, 5, True),
        (3, 2, True),  # more readers than shards: resampled
    ],
)
def test_auto_resamples_exactly_when_shards_are_fewer_than_readers(tmp_path, world_size, workers, expected):
    source = make_source(SourceConfig("webdataset", labelled_shards(tmp_path / "s", "plant", 4)))
    assert source.resamples(world_size, workers) is expected
    last = StreamSplit(0, world_size - 1, world_size, max(workers, 1) - 1, max(workers, 1))
    assert source.has_share(last)  # the last reader: a drawn share, or a shard of its own


def test_explicit_setting_overrides_auto(tmp_path):
    pattern = labelled_shards(tmp_path / "s", "plant", 4)
    always = make_source(SourceConfig("webdataset", pattern, resampled=True))
    never = make_source(SourceConfig("webdataset", pattern, resampled=False))
    assert always.resamples(1, 1) and not never.resamples(8, 8)
    assert not never.has_share(StreamSplit(0, 7, 8, 7, 8))  # split as before: worker 63 of 64 gets no shard


def test_auto_split_still_reads_each_sample_once(tmp_path):
    """With as many shards as readers, auto keeps the split: every sample exactly once."""
    source = make_source(SourceConfig("webdataset", labelled_shards(tmp_path / "s", "plant", 4)))
    seen = [
        text
        for rank in range(2)
        for worker in range(2)
        for text in captions(source.stream(StreamSplit(0, rank, 2, worker, 2)))
    ]
    assert sorted(seen) == [f"plant-{n:04d}" for n in range(4 * PER_SHARD)]


def test_resampled_stream_is_seeded_by_epoch_rank_worker_and_repeat(tmp_path):
    pattern = labelled_shards(tmp_path / "s", "plant", 3)
    config = SourceConfig("webdataset", pattern, num_samples=960, resampled=True)
    source = make_source(config, seed=5)
    split = StreamSplit(epoch=1, rank=1, world_size=2, worker=1, num_workers=2)
    first = captions(source.stream(split))
    assert first == captions(source.stream(split))  # a resumed run replays the same stream
    rebuilt = make_source(config, seed=5)
    assert first == captions(rebuilt.stream(split))
    others = [
        StreamSplit(0, 1, 2, 1, 2),
        StreamSplit(1, 0, 2, 1, 2),
        StreamSplit(1, 1, 2, 0, 2),
        StreamSplit(1, 1, 2, 1, 2, repeat=1),
    ]
    for other in others:
        assert captions(source.stream(other)) != first, other
    # 240 samples = 10 passes of 3 shard draws; without replacement each sample would come
    # exactly 10 times, with it the counts differ (all equal has probability (2/9)^10 ~ 3e-7).
    assert len(first) == 240 and len(set(Counter(first).values())) > 1


def test_resampled_stream_gives_each_worker_its_share_of_a_known_size(tmp_path):
    source = make_source(
        SourceConfig("webdataset", labelled_shards(tmp_path / "s", "plant", 2), resampled=True)
    )
    assert source.num_samples == 16  # from sizes.json
    lengths = [
        len(captions(source.stream(StreamSplit(0, rank, 2, worker, 3))))
        for rank in range(2)
        for worker in range(3)
    ]
    assert lengths == [3, 3, 2, 3, 3, 2]  # 8 per rank, split over 3 workers


def test_one_resampled_source_gives_the_epoch_length_per_rank(tmp_path):
    """A single source with 1 shard for 2 ranks x 2 workers (auto): 30 samples an epoch, 15
    per rank (8 + 7 per worker), whatever the 8 samples of the shard."""
    pattern = labelled_shards(tmp_path / "s", "plant", 1)
    totals = []
    for rank in range(2):
        dataset = build_train_dataset(
            [SourceConfig("webdataset", pattern, num_samples=30)],
            to_tensor,
            None,
            seed=0,
            rank=rank,
            world_size=2,
        )
        loader = build_loader(dataset, batch_size=1, workers=2)
        texts = [text for _, batch in loader for text in batch]
        assert loader.num_batches == len(texts) == 15
        assert all(text.startswith("plant-") for text in texts)
        totals.append(len(texts))
    assert sum(totals) == 30


def test_resampled_stream_of_unknown_size_is_endless(tmp_path):
    source = make_source(
        SourceConfig("webdataset", labelled_shards(tmp_path / "s", "plant", 2, sizes=False), resampled=True)
    )
    assert source.num_samples is None
    assert len(captions(islice(source.stream(StreamSplit()), 100))) == 100  # the source holds 16


def test_unreadable_shards_are_skipped_and_a_wholly_bad_source_ends(tmp_path):
    good = labelled_shards(tmp_path / "good", "plant", 1)
    bad = labelled_shards(tmp_path / "bad", "broken", 2, readable=False)
    partly = make_source(SourceConfig("webdataset", f"{good}::{bad}", num_samples=40, resampled=True))
    texts = captions(partly.stream(StreamSplit()))
    assert len(texts) == 40 and all(text.startswith("plant-") for text in texts)
    wholly = make_source(SourceConfig("webdataset", bad, num_samples=40, resampled=True))
    assert captions(wholly.stream(StreamSplit())) == []  # ends: no endless loop over bad shards
    assert wholly.skipped()["incomplete_sample"] >= 2 * PER_SHARD
    dataset = build_train_dataset(
        [
            SourceConfig("webdataset", good, weight=1),
            SourceConfig("webdataset", bad, weight=1, resampled=True),
        ],
        None,
        None,
        seed=0,
    )
    list(dataset)
    assert "data.sources[1]" in str(dataset.unusable_source())


def test_resampling_notes_name_the_sources_that_resample(plant_and_general):
    plant, general = plant_and_general
    configs = [SourceConfig("webdataset", plant), SourceConfig("webdataset", general)]
    dataset = build_train_dataset(configs, None, None, seed=0, rank=0, world_size=2)
    assert resampling_notes(dataset, 2) == [
        (
            f"data.sources[1] ({general}): 1 shard < 2 ranks x 2 workers: each worker draws shards with "
            f"replacement (resampled: false turns this off)"
        )
    ]
    assert resampling_notes(build_train_dataset(configs, None, None, seed=0), 0) == []  # one reader: split
    configs[1].resampled = False
    [note] = resampling_notes(build_train_dataset(configs, None, None, seed=0, world_size=2), 2)
    assert note.startswith("data.sources[1]") and "mixing weights do not hold" in note


def test_resampled_true_on_a_csv_source_is_a_one_line_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(0))
    csv_path = write_csv(tmp_path / "pairs.csv", [{"filepath": "a.jpg", "caption": "a leaf"}])
    shards = labelled_shards(tmp_path / "s", "plant", 1)
    configs = [SourceConfig("webdataset", shards), SourceConfig("csv", str(csv_path), resampled=True)]
    with pytest.raises(ValueError, match=r"^data\.sources\[1\]\.resampled: only webdataset") as error:
        build_train_dataset(configs, None, None, seed=0)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"^source .*pairs\.csv: resampled: "):
        make_source(configs[1])
    configs[1].resampled = False  # false (never resample) is what a csv source does anyway
    assert build_train_dataset(configs, None, None, seed=0).num_samples == 9
    with pytest.raises(ValueError, match=r"data\.sources\[0\]\.resampled: expected bool"):
        from_dict(
            SourceConfig, {"kind": "webdataset", "path": shards, "resampled": "sometimes"}, "data.sources[0]"
        )


def test_a_restarted_source_keeps_its_weight():
    """A resampled source in a mix restarts after each short stream (its per-worker share of
    its own size); the draw that found the stream's end takes its sample from the new pass.
    Sources of 2 and 1000 samples at 1 : 1 over 20,000 draws: the small one's count is
    Binomial(20000, 1/2), sd ~71, so +-4 sd is +-283; losing a draw at each restart would
    give it 1/3 of its draws less (2 : 3 instead of 1 : 1, ~8,000)."""
    mix = MixedDataset([FakeSource(0, 2), FakeSource(1, 1000)], [1.0, 1.0], seed=0, num_samples=20_000)
    counts = Counter(ident for ident, _ in mix)
    assert abs(counts[0] - 10_000) <= 4 * math.sqrt(20_000 / 4)
