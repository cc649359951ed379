"""Images to encode: the files a command names (`list_image_files`) and a dataset that reads
them (`ImageFileDataset`: an unreadable image is None and counted, never an exception)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from dalip.data.files import IMAGE_EXTENSIONS, is_image_entry
from dalip.data.skips import SkipCounter
from dalip.data.sources import decode_image, read_file


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


def list_image_files(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Image files named directly or found (recursively, sorted) in the given folders."""
    found: list[str] = []
    for item in map(os.fspath, inputs):
        if os.path.isdir(item):
            # a FIFO is listed too: the reader skips it unopened, and it is reported unreadable
            inside = sorted(str(p) for p in Path(item).rglob("*") if is_image_entry(p))
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
