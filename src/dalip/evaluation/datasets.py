"""Evaluation data: labelled images (folders, CSVs, datasets), caption CSVs, image lists.

Image folders and tables are read with `dalip.data.files` (`list_image_folder`, `read_table`),
the same rules as the training sources; caption CSVs for retrieval (several captions per
image) and plain file lists are assembled here. Every dataset yields `(image, label)`, or
None for an unreadable image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from dalip.data.captions import parse_caption_field
from dalip.data.files import (
    complete_rows,
    list_image_folder,
    read_table,
    table_labels,
)
from dalip.inference.images import ImageFileDataset, list_image_files  # noqa: F401 (list_image_files: its home before 0.6)
from dalip.readers import load_json_text

logger = logging.getLogger(__name__)


def load_classification_dataset(
    source: str | os.PathLike | Dataset,
    transform: Any,
    class_names: Sequence[str] | None = None,
    label_key: str = "label",
    image_key: str = "filepath",
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
        listing = list_image_folder(path)
        samples, classes = listing.samples, listing.classes
    elif path.lower().endswith((".csv", ".tsv")):
        samples, classes = _labelled_rows(path, image_key, label_key)
    else:
        raise ValueError(
            f"{path}: expected an image folder (root/<class>/*.jpg) or a labelled .csv/.tsv file"
        )
    names = list(class_names) if class_names else list(classes)
    labels = [label for _, label in samples]
    if min(labels) < 0 or max(labels) >= len(names):
        raise ValueError(
            f"{path}: labels run from {min(labels)} to {max(labels)} but {len(names)} class names are known"
        )
    dataset = ImageFileDataset([p for p, _ in samples], transform, labels)
    return dataset, names, os.path.abspath(path)


def _labelled_rows(path: str, image_key: str, label_key: str) -> tuple[list[tuple[str, int]], list[str]]:
    """[(image path, label)] and class names of a labelled CSV/TSV (paths relative to it)."""
    rows = read_table(path, [image_key, label_key], hint="set image_key / label_key to the right names")
    rows, _ = complete_rows(rows, [image_key, label_key], path)
    if not rows:
        raise ValueError(f"{path}: no rows (expected a header line and one row per image)")
    folder = os.path.dirname(os.path.abspath(path))
    labels, classes = table_labels(rows, label_key, folder)
    return [(os.path.join(folder, row[image_key]), label) for row, label in zip(rows, labels)], classes


def _cell_captions(cell: str) -> list[str]:
    """A caption cell -> its captions: plain text, a JSON list, or a JSON object of named captions."""
    text = (cell or "").strip()
    if text.startswith("["):
        try:
            values = load_json_text(text)
        except ValueError as error:  # broken, or nested deeper than dalip reads
            raise ValueError(f"caption cell is not a valid JSON list: {error}") from error
    else:
        values = list(parse_caption_field(text, "caption").values())
    flat = [v for value in values for v in (value if isinstance(value, list) else [value])]
    return [v.strip() for v in flat if isinstance(v, str) and v.strip()]


def read_caption_csv(
    path: str | os.PathLike, image_key: str = "filepath", caption_key: str = "caption"
) -> tuple[list[str], list[str], list[int]]:
    """(unique image paths, captions, owning image index per caption) from a CSV/TSV.

    Image paths are relative to the file; rows that repeat a path add captions to it.
    """
    path = os.fspath(path)
    rows = read_table(path, [image_key, caption_key], "caption CSV/TSV file")
    folder = os.path.dirname(os.path.abspath(path))
    paths: dict[str, int] = {}
    captions, owners = [], []
    for number, row in enumerate(rows, start=2):
        try:
            cell = _cell_captions(row[caption_key])
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: {error}") from error
        if not cell or not (row[image_key] or "").strip():
            logger.warning(
                "%s, line %d: no %s; row ignored", path, number, "caption" if not cell else image_key
            )
            continue
        image = os.path.join(folder, row[image_key])
        owner = paths.setdefault(image, len(paths))
        captions += cell
        owners += [owner] * len(cell)
    if not captions:
        raise ValueError(f"{path}: no captions (expected columns {image_key!r} and {caption_key!r})")
    return list(paths), captions, owners
