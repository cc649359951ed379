"""The gallery behind "similar photos": an image folder, its listing, and one vector index per model.

A gallery is an image folder in the usual layout (`root/<class>/*.jpg`, readable names
from an optional `root/classes.txt`), listed with `dalip.data.files.list_image_folder`. Each model
gets an index: one unit vector per readable gallery image, whose dot products with a
query's vector are the model's image-image similarity (the fused similarity for DALIP
models). Indexes are cached as `.npz` files, by default in `root/.dalip-index/`; a cache
file is used only when its key matches the gallery's files (paths, sizes, modification
times), the checkpoint's SHA-256 and the vector kind, otherwise it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dalip.atomic import atomic_write
from dalip.data.files import list_image_folder
from dalip.inference.images import ImageFileDataset
from dalip.inference.runtime import Runtime, encode_dataset
from dalip.inference.specs import LoadedModel
from dalip.model.features import Features

logger = logging.getLogger(__name__)

INDEX_FORMAT = 1
CACHE_FOLDER = ".dalip-index"
CHUNK_IMAGES = 256  # images encoded between two progress reports

Progress = Callable[[int, int], None]  # (images done, images in all)


@dataclass(frozen=True)
class Gallery:
    """The images of a gallery folder: `paths` relative to `root` (POSIX), their labels and class names."""

    root: Path
    paths: list[str]
    labels: list[int]
    classes: list[str]

    @classmethod
    def scan(cls, root: str | os.PathLike, flag: str = "--gallery") -> Gallery:
        """List `root/<class>/*`; FileNotFoundError / ValueError name the folder when it is not a gallery."""
        root = Path(root).resolve()
        try:
            listing = list_image_folder(root)
        except (FileNotFoundError, NotADirectoryError, ValueError) as error:
            raise type(error)(f"{flag}: {error}") from error
        inside = [(path, label) for path, label in listing.samples if is_inside(root, path)]
        if len(inside) < len(listing.samples):
            logger.warning(
                "%s: %d image(s) left out of the gallery: symbolic links to files outside it",
                root,
                len(listing.samples) - len(inside),
            )
        paths = [Path(path).relative_to(root).as_posix() for path, _ in inside]
        return cls(root, paths, [label for _, label in inside], list(listing.classes))

    def __len__(self) -> int:
        return len(self.paths)

    def fingerprint(self) -> str:
        """SHA-256 of the class names and of every image's path, size and modification time."""
        entries = []
        for relative in self.paths:
            stat = (self.root / relative).stat()
            entries.append([relative, stat.st_size, stat.st_mtime_ns])
        return _sha256({"classes": self.classes, "labels": self.labels, "files": entries})

    def label_of(self, index: int) -> str:
        return self.classes[self.labels[index]]


def is_inside(root: Path, path: str | os.PathLike) -> bool:
    """Whether `path`, its symbolic links followed, lies inside the folder `root` (resolved)."""
    return Path(os.path.realpath(path)).is_relative_to(root)


def _sha256(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def vector_kind(model: torch.nn.Module) -> str:
    """ "fused" for DALIP models whose fused similarity uses second order (alpha < 1) and that do
    not answer with the first order alone (`default_mode`), else "first"."""
    has_second = getattr(model, "has_second_order", True)
    answers_first = getattr(model, "default_mode", "fused") == "first"
    return "fused" if has_second and getattr(model, "alpha", 1.0) < 1.0 and not answers_first else "first"


def image_vectors(model: torch.nn.Module, features: Features, kind: str) -> torch.Tensor:
    """(N, D) or (N, D + D2) unit rows whose dot products are the model's `kind` similarity.

    fused: `DALIPModel.fused_embedding`, `[sqrt(alpha) * first, sqrt(1 - alpha) * second]`, so
    that `u . v = alpha * cos(first) + (1 - alpha) * cos(second)`, DALIP's fused similarity.
    """
    if kind == "first":
        return features.first
    return model.fused_embedding(features)


@dataclass
class NeighbourIndex:
    """Vectors (N, D) of the readable gallery images; `rows[i]` is vector i's gallery position."""

    vectors: torch.Tensor
    rows: torch.Tensor
    kind: str
    from_cache: bool

    def nearest(self, query: torch.Tensor, k: int) -> list[tuple[int, float]]:
        """The k gallery positions most similar to one query vector (D,), with their scores."""
        scores = self.vectors @ query  # (N,)
        top = scores.topk(min(k, len(scores)))
        return [(int(self.rows[i]), float(s)) for s, i in zip(top.values, top.indices)]


def cache_file(cache_dir: str | os.PathLike, model_name: str) -> Path:
    """Where a model's index is cached: one file per display name (unsafe characters replaced)."""
    return Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9._-]', '_', model_name)}.npz"


def index_key(gallery: Gallery, loaded: LoadedModel, kind: str) -> str:
    """What a cached index must match: gallery files, model weights (or spec), vector kind."""
    model = {"sha256": loaded.sha256} if loaded.sha256 else {"spec": loaded.spec}
    return _sha256({"format": INDEX_FORMAT, "gallery": gallery.fingerprint(), "model": model, "kind": kind})


def load_or_build_index(
    gallery: Gallery,
    loaded: LoadedModel,
    runtime: Runtime,
    cache_dir: str | os.PathLike | None,
    progress: Progress | None = None,
) -> NeighbourIndex:
    """The model's index from `cache_dir` when its key matches, otherwise built (and cached when possible)."""
    kind = vector_kind(loaded.model)
    key = index_key(gallery, loaded, kind)
    path = cache_file(cache_dir, loaded.name) if cache_dir is not None else None
    cached = _read_cache(path, key, kind) if path is not None else None
    if cached is not None:
        logger.info("%s: gallery index read from %s", loaded.name, path)
        return cached
    index = build_index(gallery, loaded, runtime, kind, progress)
    if path is not None:
        _write_cache(path, key, index)
    return index


def build_index(
    gallery: Gallery, loaded: LoadedModel, runtime: Runtime, kind: str, progress: Progress | None = None
) -> NeighbourIndex:
    """Encode every gallery image with the model (unreadable ones are left out and logged)."""
    vectors, rows = [], []
    with runtime.evaluating(loaded.model) as runtime:
        for start in range(0, len(gallery), CHUNK_IMAGES):
            paths = [str(gallery.root / p) for p in gallery.paths[start : start + CHUNK_IMAGES]]
            dataset = ImageFileDataset(paths, loaded.preprocess)
            try:
                encoded = encode_dataset(
                    loaded.model, dataset, runtime, kind == "fused", f"index {loaded.name}"
                )
            except ValueError:
                if dataset.skip_counter.total() < len(dataset):
                    raise
            else:
                vectors.append(image_vectors(loaded.model, encoded.features, kind))
                rows.append(encoded.indices + start)
            if dataset.skip_counter.total():
                logger.warning("gallery: %d unreadable image(s) left out", dataset.skip_counter.total())
            if progress is not None:
                progress(min(start + CHUNK_IMAGES, len(gallery)), len(gallery))
    if not vectors:
        raise ValueError(f"--gallery {gallery.root}: none of its {len(gallery)} images could be read")
    return NeighbourIndex(torch.cat(vectors), torch.cat(rows), kind, from_cache=False)


def _read_cache(path: Path, key: str, kind: str) -> NeighbourIndex | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["key"]) != key:
                return None
            return NeighbourIndex(
                torch.from_numpy(saved["vectors"]), torch.from_numpy(saved["rows"]), kind, True
            )
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        logger.warning("%s: unreadable index cache (%s); rebuilding", path, error)
        return None


def _write_cache(path: Path, key: str, index: NeighbourIndex) -> None:
    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, key=np.array(key), vectors=index.vectors.numpy(), rows=index.rows.numpy())

    try:
        atomic_write(path, write)
    except OSError as error:  # a read-only gallery still serves, from memory
        logger.warning(
            "could not cache the gallery index in %s (%s); it will be rebuilt next time", path.parent, error
        )
