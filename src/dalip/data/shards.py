"""WebDataset tar shards as img2dataset writes them, read with the `webdataset` package.

A sample is the tar members sharing one key: an image (`jpg|jpeg|png|webp`) and a
caption (`txt`, and/or `json` holding named captions). The epoch length comes from
`SourceConfig.num_samples`, else from a `sizes.json` next to the shards
({shard file name: sample count}, as `dalip make-dataset` and OpenCLIP use).

Two ways to read an epoch, chosen per source by `SourceConfig.resampled`:
- split (the default with at least `world_size * num_workers` shards): shards are
  shuffled per epoch with a seed shared by all ranks and workers, then split by rank and
  by DataLoader worker, so every sample is read exactly once per epoch;
- resampled (auto with fewer shards than that, as OpenCLIP's `--dataset-resampled`):
  each worker draws shards with replacement, seeded by (seed, epoch, rank, worker,
  repeat), until it has its share of the epoch length (endless when that is unknown).
  Every worker then reads the source, so the mix's weights hold on any number of ranks.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterator
from typing import Any

import braceexpand
import numpy as np
import torch.utils.data
import webdataset as wds
from webdataset.shardlists import envsubst

from dalip.config import SourceConfig
from dalip.data.captions import CaptionError, parse_caption_field
from dalip.data.sources import Sample, SampleBuilder, Source, StreamSplit
from dalip.data.tar_stream import ShardErrorHandler, guarded_tar_samples
from dalip.data.taxonomy import TaxonTexts, shard_class_folders
from dalip.readers import MAX_DATA_JSON_CHARACTERS, MAX_DATA_JSON_VALUES, read_json

logger = logging.getLogger(__name__)

IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")
SIZES_FILE = "sizes.json"


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


MAX_SHARDS = 1_000_000  # LAION-5B's ~231,000 shards fit four times over


_INT_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?$")
_CHAR_RANGE = re.compile(r"^([A-Za-z])\.\.([A-Za-z])(?:\.\.-?(\d+))?$")


def _expansion_bound(pattern: str) -> int:
    """An upper bound on the names a brace pattern expands to: the product over its brace
    groups (any depth) of a range's length or a list's items (braceexpand materialises each
    group, so a group must be bounded before it is expanded). Stops once past MAX_SHARDS."""
    bound, openings = 1, []
    for position, character in enumerate(pattern):
        if character == "{":
            openings.append(position)
        elif character == "}" and openings:
            body = pattern[openings.pop() + 1 : position]
            ranged = _INT_RANGE.match(body) or _CHAR_RANGE.match(body)
            if ranged:
                first, last, step = ranged.groups()
                span = (
                    abs(int(first) - int(last))
                    if first.lstrip("-").isdigit()
                    else abs(ord(first) - ord(last))
                )
                bound *= span // max(1, int(step or 1)) + 1
            else:
                bound *= body.count(",") + 1
            if bound > MAX_SHARDS:
                return bound
    return bound


def _bounded_expansion(pattern: str) -> list[str]:
    """webdataset's expansion ("::", WDS_ variables, braces), refused past MAX_SHARDS names
    (`{0000000000..9999999999}` would be 10^10 strings in memory)."""
    urls: list[str] = []
    for part in pattern.split("::"):
        for _ in range(10):  # nested WDS_ variables, as webdataset expands them
            expanded = envsubst(part)
            if expanded == part:
                break
            part = expanded
        if len(urls) + _expansion_bound(part) > MAX_SHARDS:
            raise ValueError(f"{pattern[:200]}: expands to more than {MAX_SHARDS:,} shard names")
        urls.extend(braceexpand.braceexpand(part))
    return urls


def expand_shards(pattern: str) -> list[str]:
    """Brace pattern (``shards/{00000..00009}.tar``, "::" joins patterns) -> shard list.

    Local shards that do not exist are left out with a warning; ValueError when none is left.
    """
    urls = _bounded_expansion(pattern)
    present = [url for url in urls if not _is_local(url) or os.path.isfile(url)]
    if not present:
        raise ValueError(f"{pattern}: no shards match (expected tar files, e.g. shards/{{00000..00009}}.tar)")
    if len(present) < len(urls):
        logger.warning("%s: %d of %d shards are missing", pattern, len(urls) - len(present), len(urls))
    return present


def read_shard_sizes(urls: list[str]) -> int | None:
    """Total sample count from `sizes.json` files next to the shards, or None if unknown."""
    total, tables = 0, {}
    for url in urls:
        if not _is_local(url):
            return None
        folder = os.path.dirname(os.path.abspath(url))
        if folder not in tables:
            path = os.path.join(folder, SIZES_FILE)
            tables[folder] = {}
            if os.path.exists(path):
                tables[folder] = _read_sizes(path)
        count = tables[folder].get(os.path.basename(url))
        if count is None:
            return None
        total += count
    return total


def _read_sizes(path: str) -> dict[str, int]:
    """A sizes.json: {shard file name: sample count}; ValueError naming it otherwise."""
    expected = 'expected a JSON object {"00000.tar": sample count, ...}'
    try:
        sizes = read_json(path, "shard sizes file", MAX_DATA_JSON_CHARACTERS, MAX_DATA_JSON_VALUES)
    except ValueError as error:
        raise ValueError(f"{error}; {expected}") from error
    if not isinstance(sizes, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes.values()
    ):
        raise ValueError(f"{path}: {expected}")
    return sizes


class WebDatasetSource(Source, torch.utils.data.IterableDataset):
    """An iterable `(image, text)` source over tar shards (see module docstring).

    Iterated directly it uses the `rank`/`world_size` given here and the DataLoader worker
    it runs in; the training mix calls `stream(split)` with its own split.
    """

    def __init__(
        self,
        config: SourceConfig,
        builder: SampleBuilder,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 256,
        texts: TaxonTexts | None = None,
    ) -> None:
        Source.__init__(self, config.path, seed, builder.counter)
        self.urls = expand_shards(config.path)
        self.texts, self.class_folders = texts, shard_class_folders(config.path) if texts else None
        self.builder = builder
        self.rank, self.world_size = rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.num_samples = config.num_samples if config.num_samples else read_shard_sizes(self.urls)
        self.resampled = config.resampled

    def resamples(self, world_size: int, num_workers: int) -> bool:
        """Whether each worker draws shards with replacement: `resampled` when set, else
        (auto) when there are fewer shards than ranks x workers (0 workers count as 1)."""
        if self.resampled is not None:
            return self.resampled
        return len(self.urls) < world_size * max(num_workers, 1)

    def resampling_note(self, world_size: int, num_workers: int) -> str | None:
        """One line on how this source is read by `world_size` ranks x `num_workers` DataLoader
        workers, when that is not the plain split; None otherwise."""
        workers = max(num_workers, 1)
        shards = _count(len(self.urls), "shard")
        readers = f"{_count(world_size, 'rank')} x {_count(workers, 'worker')}"
        draws = "each worker draws shards with replacement"
        if self.resampled is None and self.resamples(world_size, num_workers):
            return f"{shards} < {readers}: {draws} (resampled: false turns this off)"
        if self.resampled:
            return f"resampled: true ({shards}, {readers}): {draws}"
        if self.resampled is False and len(self.urls) < world_size * workers:
            return (
                f"{shards} < {readers} with resampled: false: some workers read none of it, so the "
                f"mixing weights do not hold (remove resampled: false to resample)"
            )
        return None

    def has_share(self, split: StreamSplit) -> bool:
        return self.resamples(split.world_size, split.num_workers) or bool(split.take(self.urls))

    def pass_size(self, split: StreamSplit) -> int | None:
        """The split's share of the shards times the mean shard size (exact for equal shards;
        which shards a worker reads changes each epoch)."""
        if self.num_samples is None:
            return None
        return self.num_samples * split.share(len(self.urls)) // len(self.urls)

    def stream(self, split: StreamSplit) -> Iterator[Sample]:
        if self.resamples(split.world_size, split.num_workers):
            return self._resampled_stream(split)
        return self._split_stream(split)

    def _split_stream(self, split: StreamSplit) -> Iterator[Sample]:
        """This split's share of the shards, each sample once (module docstring)."""
        order = np.random.default_rng([self.seed, split.epoch, split.repeat]).permutation(len(self.urls))
        shards = split.take([self.urls[i] for i in order])
        if not shards:
            logger.warning(
                "%s: rank %d worker %d gets no shard (%d shards < %d ranks x %d workers, resampled: false)",
                self.name,
                split.rank,
                split.worker,
                len(self.urls),
                split.world_size,
                split.num_workers,
            )
            return
        rng = np.random.default_rng([self.seed, split.epoch, split.repeat, split.rank, split.worker])
        yield from self._read(shards, rng, ShardErrorHandler(self.skip_counter, shards))

    def _resampled_stream(self, split: StreamSplit) -> Iterator[Sample]:
        """Shards drawn with replacement, a pass of `len(urls)` draws at a time, until this
        split's quota of the epoch; endless when the size is unknown. It ends early only when
        every shard has been drawn in passes that gave no usable sample (a wholly bad source)."""
        quota = None if self.num_samples is None else split.quota(self.num_samples)
        seeds = np.random.SeedSequence([self.seed, split.epoch, split.rank, split.worker, split.repeat])
        draws, rng = (np.random.default_rng(child) for child in seeds.spawn(2))
        handler = ShardErrorHandler(self.skip_counter, self.urls)
        produced, fruitless = 0, set[str]()  # shards of the passes since the last one with a usable sample
        while quota is None or produced < quota:
            shards = [self.urls[i] for i in draws.integers(len(self.urls), size=len(self.urls))]
            before = produced
            for sample in self._read(shards, rng, handler):
                yield sample
                produced += 1
                if produced == quota:
                    return
            fruitless = fruitless | set(shards) if produced == before else set()
            if fruitless == set(self.urls):
                return

    def _read(
        self, shards: list[str], rng: np.random.Generator, handler: ShardErrorHandler
    ) -> Iterator[Sample]:
        """The usable samples of `shards`, read in this order through the shuffle buffer."""
        stages: list[Any] = [wds.SimpleShardList(shards), guarded_tar_samples(handler)]
        if self.shuffle_buffer > 1:
            shuffle_rng = random.Random(int(rng.integers(2**31)))
            stages.append(wds.shuffle(self.shuffle_buffer, self.shuffle_buffer // 4, rng=shuffle_rng))
        for raw in wds.DataPipeline(*stages):
            sample = self._build(raw, rng)
            if sample is not None:
                yield sample

    def _build(self, raw: dict[str, Any], rng: np.random.Generator) -> Sample | None:
        """One webdataset sample dict (member suffix -> bytes) -> `(image, text)` or None."""
        where = f"{raw.get('__url__')}:{raw.get('__key__')}"
        image_member = next((key for key in IMAGE_MEMBERS if key in raw), None)
        if image_member is None or ("txt" not in raw and "json" not in raw):
            self.skip_counter.add("incomplete_sample")
            logger.debug("skipped %s: incomplete_sample (members %s)", where, sorted(raw))
            return None
        captions = self._captions(raw, where)
        if captions is None:
            return None
        payload = raw[image_member]
        return self.builder.build(lambda: payload, captions, rng, where)

    def _captions(self, raw: dict[str, Any], where: str) -> dict[str, Any] | None:
        """Named captions from the `json` member plus the `txt` member under "txt"."""
        captions: dict[str, Any] = {}
        if "json" in raw:
            try:
                captions.update(parse_caption_field(raw["json"], "json"))
            except CaptionError as error:
                if "txt" not in raw:  # the plain caption, when there is one, still serves
                    self.skip_counter.add(error.reason)
                    logger.debug("skipped %s: %s", where, error)
                    return None
        if "txt" in raw:
            captions["txt"] = raw["txt"].decode("utf-8", errors="replace")
        if self.texts is not None:  # text types by the sample's class; "caption" is its own
            key = self._taxon_key(raw)
            if key is None:
                self.skip_counter.add("no_taxon")
                logger.debug("skipped %s: no_taxon (class %r)", where, raw.get("cls"))
                return None
            captions.update({"caption": captions.get("txt", ""), **self.texts(key)})
        return captions

    def _taxon_key(self, raw: dict[str, Any]) -> str | None:
        """The taxonomy label of a sample: its `.cls`, through `classes.txt` when numeric."""
        value = raw.get("cls", b"").decode("utf-8", errors="replace").strip()
        if value.isdigit() and self.class_folders and int(value) < len(self.class_folders):
            value = self.class_folders[int(value)]
        return value if value in self.texts.taxonomy.taxa else None

    def __iter__(self) -> Iterator[Sample]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        split = StreamSplit(self.shared_epoch.get(), self.rank, self.world_size, worker, workers)
        return self.stream(split)
