"""Image-text sources: the shared machinery (`make_source` in `dalip.data.make` builds one).

Every source yields `(image, text)` samples: `image` is `transform(PIL RGB image)` (the
PIL image itself when `transform` is None), `text` is `tokenizer([caption])[0]`, a
`(L,)` LongTensor (the caption string when `tokenizer` is None). A sample that cannot be
read is skipped and counted in the source's `SkipCounter` (see `dalip.data.skips`).

Two access patterns share one implementation:
- `stream(split)` yields the samples one rank/worker should see in one epoch, each
  sample once; the training mix (`dalip.data.mixing`) is built on it;
- map-style sources (CSV, image folders) also support `len()` and `source[i]`, which
  returns the sample or None when it was skipped (`build_loader`'s collate drops Nones).

Concrete sources: `CsvSource`, `ImageFolderSource` (`dalip.data.files`) and
`WebDatasetSource` (`dalip.data.shards`).
"""

from __future__ import annotations

import abc
import io
import logging
import os
import stat
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch.utils.data
from PIL import Image, UnidentifiedImageError

from dalip.data.captions import CaptionError, Tokenizer, choose_caption, tokenize_caption
from dalip.data.skips import SharedEpoch, SkipCounter

logger = logging.getLogger(__name__)

Transform = Callable[[Image.Image], Any]
MAX_PIXELS_VARIABLE = "DALIP_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
Sample = tuple[Any, Any]  # (image, text)


@dataclass(frozen=True)
class StreamSplit:
    """Which part of an epoch one iterator produces: rank `rank` of `world_size`,
    DataLoader worker `worker` of `num_workers` (0 of 1 in the main process)."""

    epoch: int = 0
    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1
    repeat: int = 0  # pass number when a mix restarts an exhausted source in one epoch

    def take(self, items: Sequence[Any]) -> list[Any]:
        """This split's share of `items`: by rank first, then by worker (disjoint, complete)."""
        per_rank = islice(items, self.rank, None, self.world_size)
        return list(islice(per_rank, self.worker, None, self.num_workers))

    def share(self, total: int) -> int:
        """How many of `total` items `take` gives this split (without listing them)."""
        per_rank = len(range(self.rank, total, self.world_size))
        return len(range(self.worker, per_rank, self.num_workers))

    def quota(self, total: int) -> int:
        """This split's share of an epoch of `total` samples over all ranks."""
        return worker_quota(total // self.world_size, self.worker, self.num_workers)


def worker_quota(total: int, worker: int, num_workers: int) -> int:
    """Worker `worker`'s share of `total` samples (shares differ by at most one)."""
    return total // num_workers + (1 if worker < total % num_workers else 0)


def max_image_pixels() -> int:
    """The largest image (width x height) dalip decodes: `DALIP_MAX_IMAGE_PIXELS`, default
    64 megapixels (a larger one is skipped as `too_large` instead of taking gigabytes)."""
    raw = os.environ.get(MAX_PIXELS_VARIABLE)
    if raw is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(
            f"{MAX_PIXELS_VARIABLE}={raw!r}: expected a positive number of pixels, e.g. 64000000"
        )
    return value


def decode_image(read: Callable[[], bytes], counter: SkipCounter, where: str) -> Image.Image | None:
    """Read and fully decode an RGB image, or count why not and return None.

    `read` returns the encoded bytes (a file read or a shard member).
    """
    limit = max_image_pixels()
    try:
        with warnings.catch_warnings():  # our own limit applies, not Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(read())) as image:
                if image.width * image.height > limit:
                    raise Image.DecompressionBombError(f"{image.width} x {image.height} pixels")
                return to_rgb(image)  # forces the full decode here, not in the transform
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        reason = "missing_file"
    except Image.DecompressionBombError:
        reason = "too_large"
    except UnidentifiedImageError:
        reason = "not_an_image"
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        truncated = isinstance(error, EOFError) or "truncated" in str(error).lower()
        reason = "truncated_image" if truncated else "not_an_image"
    counter.add(reason)
    logger.debug("skipped %s: %s", where, reason)
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy; 16-bit grayscale is scaled to 8 bits (Pillow would clip it to white)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.float64)
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0  # 65535 -> 255
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")


def read_file(path: str) -> Callable[[], bytes]:
    """A `decode_image` reader for a file on disk (only regular files: a FIFO would block)."""

    def read() -> bytes:
        # Opened without waiting (a FIFO's open waits for a writer), then checked on the open
        # file itself: nothing can be swapped in between a check and the read.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        with open(os.open(path, flags), "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise OSError(f"{path}: not a regular file")
            return handle.read()

    return read


class SampleBuilder:
    """Turns (image reader, named captions) into a finished `(image, text)` sample."""

    def __init__(
        self,
        transform: Transform | None,
        tokenizer: Tokenizer | None,
        caption_weights: Mapping[str, float] | None,
        counter: SkipCounter,
    ) -> None:
        self.transform = transform
        self.tokenizer = tokenizer
        self.caption_weights = caption_weights
        self.counter = counter

    def caption(self, captions: Mapping[str, Any], rng: np.random.Generator, where: str) -> str | None:
        """One caption drawn from `captions`, or None (counted) when there is none."""
        try:
            return choose_caption(captions, self.caption_weights, rng)
        except CaptionError as error:
            self.counter.add(error.reason)
            logger.debug("skipped %s: %s", where, error.reason)
            return None

    def image(self, image: Image.Image, rng: np.random.Generator | None = None) -> Any:
        if self.transform is None:
            return image
        if rng is None:  # evaluation: deterministic transforms
            return self.transform(image)
        # Random augmentation draws from a seed taken from the sample's own generator, so
        # a sample's image depends only on (seed, epoch, sample): not on the worker count
        # nor on what ran before in the process. Resumed runs replay it exactly. Only the
        # CPU generator is seeded: torch.manual_seed would also queue a CUDA seeding, which
        # records a stack trace per call when CUDA is not initialised (a third of the
        # sample's cost on CPU).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(rng.integers(2**63 - 1)))
            return self.transform(image)

    def build(
        self,
        read: Callable[[], bytes],
        captions: Mapping[str, Any],
        rng: np.random.Generator,
        where: str,
    ) -> Sample | None:
        """The sample, or None when its caption or image is unusable (the caption is checked
        first because it is cheaper; one reason is counted per skipped sample)."""
        caption = self.caption(captions, rng, where)
        if caption is None:
            return None
        image = decode_image(read, self.counter, where)
        if image is None:
            return None
        return self.image(image, rng), tokenize_caption(caption, self.tokenizer)


class Source(abc.ABC):
    """Base of all sources: a name, a nominal size, a seed and a skip counter."""

    name: str
    num_samples: int | None

    def __init__(self, name: str, seed: int, counter: SkipCounter | None) -> None:
        self.name = name
        self.seed = int(seed)
        self.skip_counter = counter if counter is not None else SkipCounter()
        self.shared_epoch = SharedEpoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch used by `source[i]` and by `iter(source)` (shuffle, captions)."""
        self.shared_epoch.set(epoch)

    def skipped(self) -> dict[str, int]:
        """reason -> number of samples skipped so far (all processes)."""
        return self.skip_counter.counts()

    @abc.abstractmethod
    def stream(self, split: StreamSplit) -> Iterator[Sample]:
        """Samples of one epoch for one rank/worker."""

    def has_share(self, split: StreamSplit) -> bool:
        """Whether `split` is given any samples to read (a worker may get no shard)."""
        return True

    def pass_size(self, split: StreamSplit) -> int | None:
        """Samples one pass over the source gives `split` (before skips; None when unknown):
        its `take` of the source's samples."""
        return None if self.num_samples is None else split.share(self.num_samples)

    def resamples(self, world_size: int, num_workers: int) -> bool:
        """Whether each worker draws with replacement, so that its stream never runs out for
        good (only webdataset sources can; the others read each sample once per pass)."""
        return False


class MapSource(Source, torch.utils.data.Dataset):
    """A source with an index: `items[i]` is `(path, label)`; subclasses provide captions."""

    def __init__(self, name: str, items: list[tuple[str, int]], builder: SampleBuilder, seed: int) -> None:
        Source.__init__(self, name, seed, builder.counter)
        if not items:
            raise ValueError(f"{name}: no samples found (expected at least one image)")
        self.samples = items
        self.builder = builder
        self.num_samples = len(items)

    def __len__(self) -> int:
        return len(self.samples)

    @abc.abstractmethod
    def captions(self, index: int) -> Mapping[str, Any]:
        """Named captions of sample `index`."""

    def load(self, index: int, epoch: int, repeat: int = 0) -> Sample | None:
        """Sample `index` as seen in `epoch` (its caption draw depends on both), or None."""
        path = self.samples[index][0]
        rng = np.random.default_rng([self.seed, epoch, index, repeat])
        return self.builder.build(read_file(path), self.captions(index), rng, path)

    def __getitem__(self, index: int) -> Sample | None:
        return self.load(index, self.shared_epoch.get())

    def has_share(self, split: StreamSplit) -> bool:
        return bool(split.take(range(len(self.samples))))

    def stream(self, split: StreamSplit) -> Iterator[Sample]:
        # The same permutation on every rank and worker, so their shares are disjoint.
        rng = np.random.default_rng([self.seed, split.epoch, split.repeat])
        for index in split.take(rng.permutation(len(self.samples)).tolist()):
            sample = self.load(index, split.epoch, split.repeat)
            if sample is not None:
                yield sample

    def __iter__(self) -> Iterator[Sample]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        return self.stream(StreamSplit(self.shared_epoch.get(), 0, 1, worker, workers))


def check_path_exists(path: str, what: str) -> str:
    """`path` made absolute, or FileNotFoundError naming it and what was expected there."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such {what}")
    return os.path.abspath(path)
