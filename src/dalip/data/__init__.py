"""Data: image-text sources, weighted mixing, skip accounting and the synthetic generator.

Training code calls `build_train_dataset(...)` then `build_loader(...)`; evaluation code
uses `make_source(...)` (an `ImageFolderSource` / `CsvSource` with `classes` and
`samples`). `make_dataset(...)` writes the embedded plant dataset.
"""

from dalip.data.captions import DEFAULT_CAPTION_KEYS, DEFAULT_TEMPLATES
from dalip.data.files import CsvSource, ImageFolderSource, read_classes_file
from dalip.data.make import make_source
from dalip.data.mixing import (
    MixedDataset,
    build_loader,
    build_train_dataset,
    collate_skipping,
    resampling_notes,
)
from dalip.data.shards import WebDatasetSource
from dalip.data.skips import SKIP_REASONS, SkipCounter
from dalip.data.sources import Source, StreamSplit
from dalip.data.synthetic import make_dataset

__all__ = [
    "DEFAULT_CAPTION_KEYS",
    "DEFAULT_TEMPLATES",
    "SKIP_REASONS",
    "CsvSource",
    "ImageFolderSource",
    "MixedDataset",
    "SkipCounter",
    "Source",
    "StreamSplit",
    "WebDatasetSource",
    "build_loader",
    "build_train_dataset",
    "collate_skipping",
    "make_dataset",
    "make_source",
    "read_classes_file",
    "resampling_notes",
]
