"""Helpers shared by the data tests: tiny images, CSVs, tar shards, a cheap fake source.

Everything is built in the test's tmp_path; nothing is downloaded. Functions used inside
DataLoader workers live at module level so they pickle under any start method.
"""

from __future__ import annotations

import csv
import io
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dalip.data.skips import SkipCounter
from dalip.data.sources import Source, StreamSplit
from dalip.data.synthetic import make_dataset

# `dalip make-dataset` flags for the smallest dataset it writes (2 species, 24 px, a few images)
TINY_DATASET = [
    "--species",
    "2",
    "--image-size",
    "24",
    "--train-per-class",
    "2",
    "--val-per-class",
    "1",
    "--test-per-class",
    "1",
    "--general-classes",
    "1",
]

TINY_OPTIONS = dict(
    species=4,
    image_size=32,
    train_per_class=3,
    val_per_class=2,
    test_per_class=2,
    general_classes=2,
    samples_per_shard=4,
)


def generate_tiny(out: Path, seed: int = 0) -> dict:
    """A tiny generated dataset: 4 species x 3 train images in 3 shards, 2 general classes."""
    return make_dataset(str(out), seed=seed, **TINY_OPTIONS)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(root, manifest) of one tiny generated dataset shared by a test module."""
    root = tmp_path_factory.mktemp("generated")
    return root, generate_tiny(root)


def jpeg_bytes(seed: int, size: int = 16) -> bytes:
    """A small random JPEG."""
    pixels = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def to_tensor(image: Image.Image) -> torch.Tensor:
    """Test transform: PIL image -> `(3, 8, 8)` float tensor."""
    array = np.asarray(image.resize((8, 8)), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


def write_csv(path: Path, rows: Sequence[dict[str, object]], delimiter: str = ",") -> Path:
    """A CSV/TSV with the rows' keys as header (its folder made when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=list(rows[0]) if rows else ["filepath", "caption"], delimiter=delimiter
        )
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    """A tar shard: for each (key, {suffix: payload}) the members key.suffix in order."""
    with tarfile.open(path, "w") as archive:
        for key, members in samples:
            for suffix, payload in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    return path


def truncate_inside_member(path: Path, member: str) -> None:
    """Cut the shard in the middle of `member`'s data (a download that stopped early)."""
    with tarfile.open(path) as archive:
        info = archive.getmember(member)
    data = path.read_bytes()
    path.write_bytes(data[: info.offset_data + info.size // 2])


def insert_lying_member(path: Path, before: str, claimed: int = 10**15) -> None:
    """Put a member `lie.jpg` before `before` whose pax header claims `claimed` bytes (it holds 4)."""
    with tarfile.open(path) as archive:
        offset = archive.getmember(before).offset
    pax = tarfile.TarInfo._create_pax_generic_header({"size": str(claimed)}, tarfile.XHDTYPE, "utf-8")
    info = tarfile.TarInfo("lie.jpg")
    info.size = 4
    lie = pax + info.tobuf(tarfile.USTAR_FORMAT) + b"lie!".ljust(tarfile.BLOCKSIZE, b"\0")
    data = path.read_bytes()
    path.write_bytes(data[:offset] + lie + data[offset:])


def captioned_shards(folder: Path, shards: int, per_shard: int) -> list[str]:
    """`shards` shards of `per_shard` samples captioned "sample-<n>"; returns the captions."""
    folder.mkdir(parents=True, exist_ok=True)
    captions = []
    for shard in range(shards):
        samples = []
        for i in range(per_shard):
            n = shard * per_shard + i
            captions.append(f"sample-{n:04d}")
            samples.append((f"{n:06d}", {"jpg": jpeg_bytes(n), "txt": captions[-1].encode()}))
        write_shard(folder / f"{shard:05d}.tar", samples)
    return captions


class FakeSource(Source):
    """A cheap source: sample i of source `ident` is the pair (ident, i)."""

    def __init__(self, ident: int, size: int, counter: SkipCounter | None = None) -> None:
        super().__init__(f"fake-{ident}", seed=ident, counter=counter)
        self.ident = ident
        self.num_samples = size

    def stream(self, split: StreamSplit) -> Iterator[tuple[int, int]]:
        for i in split.take(range(self.num_samples)):
            yield self.ident, i
