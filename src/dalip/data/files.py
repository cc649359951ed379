"""Files on disk: the one home for listing image folders and reading CSV/TSV tables, and the
training sources built on them (`ImageFolderSource`, `CsvSource`).

Evaluation, `dalip serve`, the quickstart report and the training sources all list image
folders with `list_image_folder` and read tables with `read_table`, so the rules are the same
everywhere: image names end in one of `IMAGE_EXTENSIONS` (any case), and everything but a folder
with such a name is listed (`is_image_entry`): a FIFO or socket `x.jpg` is then skipped and
counted as `not_an_image` by the reader, which never opens it (it would block); tables are UTF-8
(a byte-order mark dropped), tab-separated when the name ends in .tsv, comma-separated otherwise.

`classes.txt` (optional, in an image-folder root or next to a CSV) lists the classes in
label order, one per line: ``folder_name<TAB>readable name``. A line without a tab is a
folder name whose readable name is the folder name with "_" replaced by spaces. Blank
lines and lines starting with "#" are ignored.
"""

from __future__ import annotations

import csv
import logging
import os
import stat
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dalip.config import SourceConfig
from dalip.data.captions import (
    DEFAULT_TEMPLATES,
    CaptionError,
    check_template,
    fill_template,
    parse_caption_field,
)
from dalip.data.sources import MapSource, Sample, SampleBuilder, check_path_exists
from dalip.readers import quoted

if TYPE_CHECKING:  # taxonomy reads its tables with read_table
    from dalip.data.taxonomy import TaxonTexts

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
CLASSES_FILE = "classes.txt"


def is_image_name(name: str) -> bool:
    """Whether a file name has one of `IMAGE_EXTENSIONS` (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


MAX_TEXT_FILE_BYTES = 100_000_000  # a label, template or class list; more is no list of names
MAX_TABLE_COLUMNS = 10_000  # a header wider than this is no table of images and captions


def repeated_names(names: Sequence[str]) -> list[str]:
    """The names that appear more than once, sorted (linear in the number of names)."""
    return sorted(name for name, count in Counter(names).items() if count > 1)


def few(names: Sequence[str], shown: int = 10) -> str:
    """A list for an error message: the first `shown` names, then how many more."""
    text = ", ".join(quoted(name) for name in names[:shown])
    return text + (f" and {len(names) - shown:,} more" if len(names) > shown else "")


def is_image_entry(path: str | os.PathLike) -> bool:
    """Whether a folder entry is listed as an image: an image name, and there (a link followed)
    but not a folder. A FIFO is listed so that its skip is counted, not silent."""
    if not is_image_name(os.path.basename(path)):
        return False
    try:
        return not stat.S_ISDIR(os.stat(path).st_mode)  # one stat per entry, as isfile took
    except OSError:  # gone since the listing, or a broken link
        return False


def check_regular_file(path: str | os.PathLike, what: str) -> None:
    """FileNotFoundError when `path` does not exist; ValueError naming it when it is not a
    regular file (a device such as /dev/zero, a pipe: reading one would never end)."""
    if not os.path.isfile(path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{what} not found: {path}")
        raise ValueError(f"{path}: the {what} is not a regular file (expected a UTF-8 text file)")


def read_text_lines(path: str | os.PathLike, what: str) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark dropped). FileNotFoundError when
    there is none; ValueError naming the file when it is not a regular file (a device such
    as /dev/zero, a pipe), is larger than MAX_TEXT_FILE_BYTES or is not UTF-8."""
    check_regular_file(path, what)
    if os.path.getsize(path) > MAX_TEXT_FILE_BYTES:
        raise ValueError(f"{path}: the {what} is larger than {MAX_TEXT_FILE_BYTES:,} bytes")
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read().splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: the {what} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
        ) from error


def read_classes_file(path: str | os.PathLike) -> list[tuple[str, str]]:
    """`classes.txt` -> [(folder name, readable name)] in label order (format above)."""
    entries: list[tuple[str, str]] = []
    for line in read_text_lines(path, "class list"):
        if not line.strip() or line.startswith("#"):
            continue
        folder, _, readable = line.partition("\t")
        folder = folder.strip()
        entries.append((folder, readable.strip() or folder.replace("_", " ")))
    if not entries:
        raise ValueError(f"{path}: no classes listed (expected 'folder<TAB>readable name' lines)")
    return entries


# ---------------------------------------------------------------- image folders


@dataclass(frozen=True)
class ImageFolder:
    """The listing of `root/<class>/*.{jpg,jpeg,png,webp}`.

    Attributes:
        root: the folder, as given.
        folders: class folder names in label order.
        classes: readable class names in label order.
        samples: [(image path, label)], sorted by class then file name.
    """

    root: str
    folders: list[str]
    classes: list[str]
    samples: list[tuple[str, int]]


def list_image_folder(path: str | os.PathLike) -> ImageFolder:
    """List an image folder: its classes from `classes.txt` in that order when present (a listed
    folder without images is warned about), else the sorted sub-folders that hold images.
    FileNotFoundError / NotADirectoryError / ValueError name the folder when it is not one."""
    root = check_path_exists(os.fspath(path), "image folder")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{path}: expected a folder of class sub-folders")
    listing = os.path.join(root, CLASSES_FILE)
    if os.path.exists(listing):
        entries = read_classes_file(listing)
        for folder, _ in entries:
            if not os.path.isdir(os.path.join(root, folder)) and len(folder.split()) > 1:
                raise ValueError(
                    f"{listing}: lists {quoted(folder)}, which is no folder in {root}; lines are "
                    f"'folder<TAB>readable name' (is the TAB missing?)"
                )
            if not images_in(os.path.join(root, folder)):
                logger.warning("%s: class folder %r has no images", root, folder)
        folders, classes = [f for f, _ in entries], [r for _, r in entries]
    else:
        folders = sorted(name for name in os.listdir(root) if images_in(os.path.join(root, name)))
        classes = [name.replace("_", " ") for name in folders]
    samples = [
        (os.path.join(root, folder, name), label)
        for label, folder in enumerate(folders)
        for name in images_in(os.path.join(root, folder))
    ]
    if not samples:
        raise ValueError(
            f"{path}: no images found (expected {root}/<class>/*{{{','.join(IMAGE_EXTENSIONS)}}})"
        )
    return ImageFolder(os.fspath(path), folders, classes, samples)


def images_in(folder: str) -> list[str]:
    """Sorted names of the images in `folder` (none when it is not a folder): `is_image_entry`,
    so a FIFO or socket with an image name is in, for the reader to skip and count."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if is_image_entry(os.path.join(folder, n)))


# ---------------------------------------------------------------- tables


def read_table(
    path: str | os.PathLike, columns: Sequence[str], what: str = "CSV/TSV file", hint: str = ""
) -> list[dict[str, str]]:
    """The rows of a CSV/TSV table as {column: cell} (a short row leaves its missing cells None).
    ValueError naming the file: not UTF-8, not a table, or a column of `columns` missing (the
    message lists those present, then `hint`)."""
    path = os.fspath(path)
    check_regular_file(path, what)
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    try:
        # utf-8-sig: a byte-order mark is no column name
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            present = list(reader.fieldnames or [])
            if len(present) > MAX_TABLE_COLUMNS:
                raise ValueError(
                    f"{path}: the header has {len(present):,} columns; "
                    f"a {what} may have at most {MAX_TABLE_COLUMNS:,}"
                )
            repeated = repeated_names(present)
            if repeated:
                raise ValueError(
                    f"{path}: column(s) [{few(repeated)}] appear twice in the header; name each column once"
                )
            for column in columns:
                if column not in present:
                    raise ValueError(
                        f"{path}: missing column {column!r} (columns present: [{few(present)}])"
                        + (f"; {hint}" if hint else "")
                    )
            return list(reader)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: the {what} is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from error
    except csv.Error as error:
        raise ValueError(f"{path}: not a valid CSV/TSV file ({error})") from error


def complete_rows(
    rows: list[dict[str, str]], columns: Sequence[str], where: str
) -> tuple[list[dict[str, str]], int]:
    """(rows with a non-blank cell in every one of `columns`, how many were left out); the
    count is logged as a warning naming `where`."""
    kept = [row for row in rows if all((row.get(key) or "").strip() for key in columns)]
    dropped = len(rows) - len(kept)
    if dropped:
        logger.warning("%s: %d rows lack a %s cell; skipped", where, dropped, " or ".join(columns))
    return kept, dropped


def table_labels(rows: list[dict[str, str]], label_key: str, folder: str) -> tuple[list[int], list[str]]:
    """Integer labels per row and readable class names: numeric labels as they are (names from
    `classes.txt` next to the table, else the numbers); other labels numbered in sorted order."""
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


# ---------------------------------------------------------------- training sources


class ImageFolderSource(MapSource):
    """`root/<class>/*.{jpg,jpeg,png,webp}`; captions from templates and class names.

    Attributes:
        classes: readable class names in label order.
        samples: [(image path, label)], sorted by class then file name.
    """

    def __init__(
        self, config: SourceConfig, builder: SampleBuilder, seed: int = 0, texts: TaxonTexts | None = None
    ) -> None:
        listing = list_image_folder(config.path)
        self.classes, self.folders, self.texts = listing.classes, listing.folders, texts
        if texts is not None:
            texts.taxonomy.check_labels(self.folders, config.path)
        self.templates = list(config.templates) if config.templates else list(DEFAULT_TEMPLATES)
        for template in self.templates:
            check_template(template, config.path)  # fail early, not at the first sample
        super().__init__(config.path, listing.samples, builder, seed)

    def captions(self, index: int) -> Mapping[str, Any]:
        # One template per caption choice; `choose_caption` picks among list entries.
        label = self.samples[index][1]
        own = {"caption": [fill_template(t, self.classes[label]) for t in self.templates]}
        return own if self.texts is None else {**own, **self.texts(self.folders[label])}


class CsvSource(MapSource):
    """A CSV or TSV table (tab-delimited when the file ends in .tsv).

    Columns: `config.image_key` (path, relative to the table's folder), `config.caption_key`
    (a caption, or a JSON object of named captions), optional `config.label_key`.

    Attributes:
        samples: [(image path, label)] in file order (label -1 without a label column).
        classes: readable class names when a label column is used (from `classes.txt` next
            to the file, else the sorted label names, else the label numbers).
    """

    def __init__(
        self, config: SourceConfig, builder: SampleBuilder, seed: int = 0, texts: TaxonTexts | None = None
    ) -> None:
        path = check_path_exists(config.path, "CSV/TSV file")
        folder = os.path.dirname(path)
        needed = [config.image_key] + ([config.label_key] if config.label_key else [])
        columns = list(dict.fromkeys([config.image_key, config.caption_key, *needed]))
        rows = read_table(
            config.path, columns, hint="set image_key / caption_key / label_key to the right names"
        )
        rows, incomplete = complete_rows(rows, needed, config.path)
        if incomplete:  # a short row: csv leaves its missing cells None
            builder.counter.add("incomplete_sample", incomplete)
        self.caption_cells = [row[config.caption_key] for row in rows]
        labels, self.classes = (
            table_labels(rows, config.label_key, folder) if config.label_key else ([-1] * len(rows), [])
        )
        items = [(os.path.join(folder, row[config.image_key]), label) for row, label in zip(rows, labels)]
        if not items:
            raise ValueError(f"{config.path}: no rows (expected a header line and one row per image)")
        self.texts, self.taxon_keys = texts, []
        if texts is not None:
            self.taxon_keys = _taxon_keys(config, rows, labels, texts)
        super().__init__(config.path, items, builder, seed)

    def captions(self, index: int) -> Mapping[str, Any]:
        own = parse_caption_field(self.caption_cells[index], "caption")
        return own if self.texts is None else {**own, **self.texts(self.taxon_keys[index])}

    def load(self, index: int, epoch: int, repeat: int = 0) -> Sample | None:
        # A JSON cell that does not parse is this sample's fault only: skip and count it.
        try:
            return super().load(index, epoch, repeat)
        except CaptionError as error:
            self.skip_counter.add(error.reason)
            logger.debug("skipped row %d of %s: %s", index, self.name, error)
            return None


def _taxon_keys(
    config: SourceConfig, rows: list[dict[str, str]], labels: list[int], texts: TaxonTexts
) -> list[str]:
    """Each row's taxonomy label: its `label_key` cell, or for numeric labels the class folder
    name `classes.txt` gives it (as the embedded data's tables have); checked against the table."""
    if not config.label_key:
        raise ValueError(f"{config.path}: text_types need label_key, the column naming each row's class")
    keys = [row[config.label_key].strip() for row in rows]
    listing = os.path.join(os.path.dirname(config.path), CLASSES_FILE)
    if not set(keys) <= set(texts.taxonomy.taxa) and os.path.exists(listing):
        folders = [folder for folder, _ in read_classes_file(listing)]
        if all(0 <= label < len(folders) for label in labels):
            keys = [folders[label] for label in labels]
    texts.taxonomy.check_labels(keys, config.path)
    return keys
