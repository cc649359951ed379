"""The embedded dataset of an experiment, and the general concepts its tuning mix keeps."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from dalip.atomic import write_text
from dalip.data.files import CLASSES_FILE, read_classes_file, read_table
from dalip.data.synthetic import make_dataset
from dalip.experiments.budgets import Budget
from dalip.readers import MAX_DATA_JSON_CHARACTERS, MAX_DATA_JSON_VALUES, read_json

logger = logging.getLogger(__name__)


def generate_data(out: Path, budget: Budget, seed: int) -> Path:
    """The embedded dataset under out/data, reused when its options match."""
    root = out / "data"
    options = dict(
        species=budget.species,
        image_size=budget.image_size,
        train_per_class=budget.train_per_class,
        val_per_class=max(2, budget.test_per_class // 2),
        test_per_class=budget.test_per_class,
        general_classes=budget.general_classes,
    )
    manifest = root / "manifest.json"
    if manifest.exists():
        stored = read_json(manifest, "dataset manifest", MAX_DATA_JSON_CHARACTERS, MAX_DATA_JSON_VALUES)
        stored_options = stored.get("options") if isinstance(stored, dict) else None
        same = isinstance(stored_options, dict) and all(
            stored_options.get(k) == v for k, v in options.items()
        )
        if same and stored.get("seed") == seed:
            logger.info("reusing the dataset in %s", root)
            return root
    logger.info("writing the embedded dataset to %s", root)
    make_dataset(str(root), seed=seed, force=True, **options)
    return root


def tuning_subset(data: Path, budget: Budget) -> Path:
    """A captions CSV of the general training split restricted to every other concept
    (`budget.general_tune_classes` of them), beside the split's own captions.csv."""
    split = data / "general" / "train"
    folders = [folder for folder, _ in read_classes_file(split / CLASSES_FILE)]
    kept = set(folders[::2][: budget.general_tune_classes])
    rows = read_table(split / "captions.csv", ["filepath", "caption"])
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]), lineterminator="\n")  # as make-dataset writes it
    writer.writeheader()
    writer.writerows(row for row in rows if row["filepath"].split("/", 1)[0] in kept)
    path = split / "captions-tuning.csv"
    if not path.is_file() or path.read_text() != table.getvalue():  # a reused folder stays untouched
        write_text(path, table.getvalue())
    return path
