"""Label lists given by the user (`--labels FILE`, a Python list): one label per line, stripped,
none repeated."""

from __future__ import annotations

import os
from collections.abc import Sequence

from dalip.data.files import read_text_lines


def check_labels(labels: Sequence[str], where: str = "labels") -> list[str]:
    """Stripped labels; ValueError when none are given or one is repeated."""
    labels = [label.strip() for label in labels if label.strip()]
    if not labels:
        raise ValueError(f"{where}: no labels given")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"{where}: duplicate label(s) {repeated}; each label must appear once")
    return labels


def read_label_file(path: str | os.PathLike) -> list[str]:
    """One label per line (blank lines and "#" comments ignored); duplicates are an error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label file not found: {path}")
    lines = [line for line in read_text_lines(path, "label file") if not line.lstrip().startswith("#")]
    return check_labels(lines, os.fspath(path))
