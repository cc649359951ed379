"""Meta-Album Mini folders annotated as BioCLIP's evaluation reads them (`layout: metadata_csv`
in a suite): a folder holding `metadata.csv` and the images it lists.

    FOLDER/metadata.csv     columns `filepath` (relative to FOLDER) and `class`; others, such as
                            pandas' unnamed index column, are ignored
    FOLDER/<class>/*.jpg    the images, wherever `filepath` points inside FOLDER

Class names are the `class` column's distinct values, sorted, made readable (underscores read
as spaces: "Lamium_galeobdolon" -> "Lamium galeobdolon"). BioCLIP 2's own evaluation feeds
the column as it is (its `--text_type asis`); docs/datasets.md says so. Every listed image must
exist: a missing one would silently change the published figure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dalip.data.files import few, read_table
from dalip.evaluation.zero_shot import zero_shot
from dalip.inference.images import ImageFileDataset
from dalip.inference.labels import check_class_names
from dalip.inference.runtime import Runtime
from dalip.inference.specs import LoadedModel

METADATA_FILE = "metadata.csv"
IMAGE_COLUMN = "filepath"
CLASS_COLUMN = "class"


def readable_class_name(raw: str) -> str:
    """A `class` cell as a prompt reads it: underscores as spaces, runs of spaces as one."""
    return " ".join(raw.replace("_", " ").split())


def read_metadata_folder(folder: str | os.PathLike) -> tuple[list[str], list[int], list[str]]:
    """(image paths, label per image, class names) of a folder with a metadata.csv.
    FileNotFoundError / ValueError naming the metadata.csv: missing, a column missing, an
    empty cell, listed images that are not there."""
    folder = Path(folder)
    table = folder / METADATA_FILE
    rows = read_table(
        table,
        [IMAGE_COLUMN, CLASS_COLUMN],
        "metadata.csv",
        hint="BioCLIP's Meta-Album annotations name them filepath and class",
    )
    if not rows:
        raise ValueError(f"{table}: no rows (expected a header line and one row per image)")
    empty = [
        number
        for number, row in enumerate(rows, start=2)
        if not (row[IMAGE_COLUMN] or "").strip() or not (row[CLASS_COLUMN] or "").strip()
    ]
    if empty:
        more = f" (and {len(empty) - 1:,} more rows)" if len(empty) > 1 else ""
        raise ValueError(f"{table}, line {empty[0]}: empty {IMAGE_COLUMN} or {CLASS_COLUMN} cell{more}")
    names = [readable_class_name(row[CLASS_COLUMN]) for row in rows]
    classes = sorted(set(names))
    check_class_names(classes, str(table))
    index = {name: label for label, name in enumerate(classes)}
    paths = [str(folder / row[IMAGE_COLUMN].strip()) for row in rows]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        shown = [os.path.relpath(path, folder) for path in missing]
        raise FileNotFoundError(
            f"{table}: {len(missing):,} of {len(paths):,} listed images not found ({few(shown)}); "
            f"{IMAGE_COLUMN} is read relative to {folder}"
        )
    return paths, [index[name] for name in names], classes


def evaluate_metadata_csv(
    loaded: LoadedModel,
    folder: str | os.PathLike,
    modes: Sequence[str],
    runtime: Runtime | None = None,
    templates: Any = "plant",
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Zero-shot classification of a metadata.csv folder with a loaded model: the result of
    `zero_shot`, its `dataset` the metadata.csv. `class_names` replaces the readable names
    (one per class, in sorted order of the class column)."""
    paths, labels, classes = read_metadata_folder(folder)
    table = str(Path(folder) / METADATA_FILE)
    if class_names is not None and len(class_names) != len(classes):
        raise ValueError(
            f"{table}: class_names has {len(class_names)} names for {len(classes)} classes "
            f"(the class column's distinct values)"
        )
    names = list(class_names) if class_names is not None else classes
    check_class_names(names, table)
    images = ImageFileDataset(paths, loaded.preprocess, labels)
    result = zero_shot(
        loaded.model,
        images,
        loaded.tokenizer,
        loaded.preprocess,
        templates=templates,
        modes=modes,
        runtime=runtime,
        class_names=names,
    )
    result["dataset"] = table
    return result
