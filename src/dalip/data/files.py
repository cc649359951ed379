"""Sources backed by files on disk: CSV/TSV tables and image folders.

`classes.txt` (optional, in an image-folder root or next to a CSV) lists the classes in
label order, one per line: ``folder_name<TAB>readable name``. A line without a tab is a
folder name whose readable name is the folder name with "_" replaced by spaces. Blank
lines and lines starting with "#" are ignored.
"""

from __future__ import annotations

import csv
import logging
import os
from typing import Any, Mapping

from dalip.config import SourceConfig
from dalip.data.captions import (
    DEFAULT_TEMPLATES,
    CaptionError,
    check_template,
    fill_template,
    parse_caption_field,
)
from dalip.data.sources import MapSource, Sample, SampleBuilder, check_path_exists

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
CLASSES_FILE = "classes.txt"


def read_classes_file(path: str) -> list[tuple[str, str]]:
    """`classes.txt` -> [(folder name, readable name)] in label order (format above)."""
    entries: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            folder, _, readable = line.partition("\t")
            folder = folder.strip()
            entries.append((folder, readable.strip() or folder.replace("_", " ")))
    if not entries:
        raise ValueError(f"{path}: no classes listed (expected 'folder<TAB>readable name' lines)")
    return entries


class ImageFolderSource(MapSource):
    """`root/<class>/*.{jpg,jpeg,png,webp}`; captions from templates and class names.

    Attributes:
        classes: readable class names in label order.
        samples: [(image path, label)], sorted by class then file name.
    """

    def __init__(self, config: SourceConfig, builder: SampleBuilder, seed: int = 0) -> None:
        root = check_path_exists(config.path, "image folder")
        if not os.path.isdir(root):
            raise NotADirectoryError(f"{config.path}: expected a folder of class sub-folders")
        folders, self.classes = self._class_folders(root)
        items = [
            (os.path.join(root, folder, name), label)
            for label, folder in enumerate(folders)
            for name in self._images_in(os.path.join(root, folder))
        ]
        if not items:
            raise ValueError(
                f"{config.path}: no images found (expected {root}/<class>/*{{{','.join(IMAGE_EXTENSIONS)}}})"
            )
        self.templates = list(config.templates) if config.templates else list(DEFAULT_TEMPLATES)
        for template in self.templates:
            check_template(template, config.path)  # fail early, not at the first sample
        super().__init__(config.path, items, builder, seed)

    @staticmethod
    def _images_in(folder: str) -> list[str]:
        if not os.path.isdir(folder):
            return []
        return sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))

    def _class_folders(self, root: str) -> tuple[list[str], list[str]]:
        """(folder names, readable names) in label order: classes.txt order when present,
        otherwise the sorted sub-folders that hold at least one image."""
        listing = os.path.join(root, CLASSES_FILE)
        if os.path.exists(listing):
            entries = read_classes_file(listing)
            for folder, _ in entries:
                if not self._images_in(os.path.join(root, folder)):
                    logger.warning("%s: class folder %r has no images", root, folder)
            return [f for f, _ in entries], [r for _, r in entries]
        folders = sorted(
            name for name in os.listdir(root) if self._images_in(os.path.join(root, name))
        )
        return folders, [name.replace("_", " ") for name in folders]

    def captions(self, index: int) -> Mapping[str, Any]:
        # One template per caption choice; `choose_caption` picks among list entries.
        name = self.classes[self.samples[index][1]]
        return {"caption": [fill_template(t, name) for t in self.templates]}


class CsvSource(MapSource):
    """A CSV or TSV table (tab-delimited when the file ends in .tsv).

    Columns: `config.image_key` (path, relative to the table's folder), `config.caption_key`
    (a caption, or a JSON object of named captions), optional `config.label_key`.

    Attributes:
        samples: [(image path, label)] in file order (label -1 without a label column).
        classes: readable class names when a label column is used (from `classes.txt` next
            to the file, else the sorted label names, else the label numbers).
    """

    def __init__(self, config: SourceConfig, builder: SampleBuilder, seed: int = 0) -> None:
        path = check_path_exists(config.path, "CSV/TSV file")
        folder = os.path.dirname(path)
        rows = self._read_rows(path, config)
        self.caption_cells = [row[config.caption_key] for row in rows]
        labels, self.classes = self._labels(rows, config.label_key, folder)
        items = [
            (os.path.join(folder, row[config.image_key]), label) for row, label in zip(rows, labels)
        ]
        if not items:
            raise ValueError(f"{config.path}: no rows (expected a header line and one row per image)")
        super().__init__(config.path, items, builder, seed)

    @staticmethod
    def _read_rows(path: str, config: SourceConfig) -> list[dict[str, str]]:
        try:
            return CsvSource._parse(path, config)
        except UnicodeDecodeError as error:
            raise ValueError(f"{config.path}: not UTF-8 text ({error.reason} at byte {error.start})") from error

    @staticmethod
    def _parse(path: str, config: SourceConfig) -> list[dict[str, str]]:
        delimiter = "\t" if path.lower().endswith(".tsv") else ","
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            present = list(reader.fieldnames or [])
            wanted = [config.image_key, config.caption_key] + ([config.label_key] if config.label_key else [])
            for column in wanted:
                if column not in present:
                    raise ValueError(
                        f"{config.path}: missing column {column!r} (columns present: {present}); "
                        "set image_key / caption_key / label_key to the right names"
                    )
            return list(reader)

    @staticmethod
    def _labels(rows: list[dict[str, str]], label_key: str | None, folder: str) -> tuple[list[int], list[str]]:
        """Integer labels per row and readable class names (see class docstring)."""
        if label_key is None:
            return [-1] * len(rows), []
        raw = [row[label_key].strip() for row in rows]
        listing = os.path.join(folder, CLASSES_FILE)
        listed = [r for _, r in read_classes_file(listing)] if os.path.exists(listing) else None
        if all(value.lstrip("-").isdigit() for value in raw):
            labels = [int(value) for value in raw]
            count = max(labels, default=-1) + 1
            return labels, listed or [str(i) for i in range(count)]
        names = sorted(set(raw))
        index = {name: i for i, name in enumerate(names)}
        return [index[value] for value in raw], names

    def captions(self, index: int) -> Mapping[str, Any]:
        return parse_caption_field(self.caption_cells[index], "caption")

    def load(self, index: int, epoch: int, repeat: int = 0) -> Sample | None:
        # A JSON cell that does not parse is this sample's fault only: skip and count it.
        try:
            return super().load(index, epoch, repeat)
        except CaptionError as error:
            self.skip_counter.add(error.reason)
            logger.debug("skipped row %d of %s: %s", index, self.name, error)
            return None
