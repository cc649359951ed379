"""Evaluation plumbing: where data comes from and how it is batched through the encoders.

`Runtime` holds batch size, workers, device, precision and the progress-bar switch;
`encode_dataset` / `encode_texts` run the model under `torch.no_grad()` (and bf16
autocast when asked) and return CPU float32 features. Image folders and labelled CSVs
are listed with `dalip.data.make_source` (its `samples` and `classes`); caption CSVs for
retrieval (several captions per image) and plain file lists are read here.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dalip.config import SourceConfig
from dalip.data import make_source
from dalip.data.captions import parse_caption_field
from dalip.data.skips import SkipCounter
from dalip.data.sources import decode_image, read_file
from dalip.model import SIMILARITY_MODES, Features

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")


def resolve_device(device: str | torch.device | None, model: Any = None) -> torch.device:
    """"auto" -> cuda when available else cpu; None -> the model's own device."""
    if device is None:
        parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        return parameter.device if parameter is not None else torch.device("cpu")
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    return torch.device(device)


@dataclass
class Runtime:
    """How an evaluation runs (not what it measures)."""

    batch_size: int = 64
    workers: int = 0
    device: str | torch.device | None = None
    precision: str = "fp32"
    progress: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.workers < 0:
            raise ValueError(f"batch size must be >= 1 and workers >= 0, got {self.batch_size}, {self.workers}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @contextlib.contextmanager
    def evaluating(self, model: Any) -> Iterator[None]:
        """Model on the device, in eval mode, gradients off; training mode restored after."""
        self.device = resolve_device(self.device, model)
        was_training = getattr(model, "training", False)
        if hasattr(model, "to"):
            model.to(self.device)  # outside no_grad/inference mode so parameters stay trainable
        if hasattr(model, "eval"):
            model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            if was_training:
                model.train()

    def autocast(self) -> contextlib.AbstractContextManager:
        device_type = torch.device(self.device or "cpu").type
        return torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.precision == "bf16")


def resolve_modes(model: Any, modes: Sequence[str] | str) -> list[str]:
    """Validate similarity modes; "all" means every mode the model supports."""
    modes = [modes] if isinstance(modes, str) else list(modes)
    has_second = getattr(model, "has_second_order", True)
    if "all" in modes:
        return list(SIMILARITY_MODES) if has_second else ["first"]
    for mode in modes:
        if mode not in SIMILARITY_MODES:
            raise ValueError(f"similarity mode must be one of {SIMILARITY_MODES} or 'all', got {mode!r}")
        if mode != "first" and not has_second:
            raise ValueError(f"similarity mode {mode!r} needs second-order features, which this model lacks; use 'first'")
    if not modes:
        raise ValueError("no similarity mode given")
    return modes


def _to_cpu(features: Features) -> Features:
    second = None if features.second is None else features.second.float().cpu()
    return Features(features.first.float().cpu(), second)


def _concat(parts: list[Features]) -> Features:
    first = torch.cat([p.first for p in parts])
    second = None if parts[0].second is None else torch.cat([p.second for p in parts])
    return Features(first, second)


class EncodedImages(NamedTuple):
    """Features (N, D) of the readable images, their labels (N,) and dataset indices (N,)."""

    features: Features
    labels: torch.Tensor
    indices: torch.Tensor
    images_per_second: float


class _Indexed(Dataset):
    """(image, label, index) per item of a dataset of (image, label); None stays None."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int, int] | None:
        item = self.dataset[index]
        return None if item is None else (item[0], int(item[1]), index)


def _collate(batch: list[Any]) -> Any:
    kept = [item for item in batch if item is not None]
    return torch.utils.data.default_collate(kept) if kept else None


def encode_dataset(model: Any, dataset: Dataset, runtime: Runtime, second_order: bool, desc: str = "images") -> EncodedImages:
    """Encode every readable image of a dataset of (image, label); call inside `runtime.evaluating`."""
    loader = DataLoader(
        _Indexed(dataset), batch_size=runtime.batch_size, num_workers=runtime.workers,
        collate_fn=_collate, pin_memory=torch.device(runtime.device).type == "cuda",
    )
    parts, labels, indices = [], [], []
    start = time.perf_counter()
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not runtime.progress):
        if batch is None:
            continue
        images, batch_labels, batch_indices = batch
        with runtime.autocast():
            parts.append(_to_cpu(model.encode_image(images.to(runtime.device), second_order=second_order)))
        labels.append(batch_labels)
        indices.append(batch_indices)
    elapsed = time.perf_counter() - start
    if not parts:
        raise ValueError(f"{desc}: none of the {len(dataset)} images could be read")
    count = sum(len(p.first) for p in parts)
    return EncodedImages(_concat(parts), torch.cat(labels), torch.cat(indices), count / max(elapsed, 1e-9))


def encode_texts(model: Any, tokenizer: Any, texts: Sequence[str], runtime: Runtime, second_order: bool) -> Features:
    """Texts -> Features (N, D), batched; call inside `runtime.evaluating`."""
    parts = []
    for start in range(0, len(texts), runtime.batch_size):
        tokens = tokenizer(list(texts[start:start + runtime.batch_size])).to(runtime.device)
        with runtime.autocast():
            parts.append(_to_cpu(model.encode_text(tokens, second_order=second_order)))
    return _concat(parts)


class ImageFileDataset(Dataset):
    """(transform(image), label) per image path (label 0 when none); None when unreadable."""

    def __init__(self, paths: Sequence[str], transform: Any, labels: Sequence[int] | None = None) -> None:
        self.paths = list(paths)
        self.labels = list(labels) if labels is not None else [0] * len(self.paths)
        self.transform = transform
        self.skip_counter = SkipCounter()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path = self.paths[index]
        image = decode_image(read_file(path), self.skip_counter, path)
        return None if image is None else (self.transform(image), self.labels[index])


def load_classification_dataset(
    source: str | os.PathLike | Dataset, transform: Any, class_names: Sequence[str] | None = None,
    label_key: str = "label", image_key: str = "filepath",
) -> tuple[Dataset, list[str], str]:
    """(dataset of (image, label), class names, description) from a folder, a CSV or a dataset."""
    if isinstance(source, Dataset):
        names = class_names or getattr(source, "classes", None)
        if not names:
            raise ValueError("a dataset passed for evaluation needs a `classes` attribute or class_names")
        return source, list(names), type(source).__name__
    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such image folder or labelled CSV")
    if os.path.isdir(path):
        config = SourceConfig(kind="folder", path=path)
    elif path.lower().endswith((".csv", ".tsv")):
        # captions are not read for classification; the label column stands in for them
        config = SourceConfig(kind="csv", path=path, image_key=image_key, caption_key=label_key, label_key=label_key)
    else:
        raise ValueError(f"{path}: expected an image folder (root/<class>/*.jpg) or a labelled .csv/.tsv file")
    source = make_source(config)  # only its listing (samples, classes) is used here
    names = list(class_names) if class_names else list(source.classes)
    labels = [label for _, label in source.samples]
    if min(labels) < 0 or max(labels) >= len(names):
        raise ValueError(f"{path}: labels run from {min(labels)} to {max(labels)} but {len(names)} class names are known")
    dataset = ImageFileDataset([p for p, _ in source.samples], transform, labels)
    return dataset, names, os.path.abspath(path)


def _cell_captions(cell: str) -> list[str]:
    """A caption cell -> its captions: plain text, a JSON list, or a JSON object of named captions."""
    text = (cell or "").strip()
    if text.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"caption cell is not a valid JSON list: {error}") from error
    else:
        values = list(parse_caption_field(text, "caption").values())
    flat = [v for value in values for v in (value if isinstance(value, list) else [value])]
    return [v.strip() for v in flat if isinstance(v, str) and v.strip()]


def read_caption_csv(path: str | os.PathLike, image_key: str = "filepath", caption_key: str = "caption") -> tuple[list[str], list[str], list[int]]:
    """(unique image paths, captions, owning image index per caption) from a CSV/TSV.

    Image paths are relative to the file; rows that repeat a path add captions to it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such caption CSV/TSV file")
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is no column
            reader = csv.DictReader(handle, delimiter=delimiter)
            missing = [key for key in (image_key, caption_key) if key not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing} (columns present: {reader.fieldnames})")
            rows = list(reader)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    except csv.Error as error:
        raise ValueError(f"{path}: not a valid CSV/TSV file ({error})") from error
    folder = os.path.dirname(os.path.abspath(path))
    paths: dict[str, int] = {}
    captions, owners = [], []
    for number, row in enumerate(rows, start=2):
        try:
            cell = _cell_captions(row[caption_key])
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: {error}") from error
        if not cell or not (row[image_key] or "").strip():
            logger.warning("%s, line %d: no %s; row ignored", path, number, "caption" if not cell else image_key)
            continue
        image = os.path.join(folder, row[image_key])
        owner = paths.setdefault(image, len(paths))
        captions += cell
        owners += [owner] * len(cell)
    if not captions:
        raise ValueError(f"{path}: no captions (expected columns {image_key!r} and {caption_key!r})")
    return list(paths), captions, owners


def list_image_files(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Image files named directly or found (recursively, sorted) in the given folders."""
    from dalip.data.files import IMAGE_EXTENSIONS

    found: list[str] = []
    for item in map(os.fspath, inputs):
        if os.path.isdir(item):
            inside = sorted(str(p) for p in Path(item).rglob("*")
                            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())  # no FIFOs: they block
            if not inside:
                raise ValueError(f"{item}: no images found (expected *{', *'.join(IMAGE_EXTENSIONS)} files)")
            found += inside
        elif os.path.isfile(item):
            found.append(item)
        elif os.path.exists(item):
            raise ValueError(f"{item}: not a regular file or folder (expected images)")
        else:
            raise FileNotFoundError(f"{item}: no such image file or folder")
    if not found:
        raise ValueError("no images given")
    return found
