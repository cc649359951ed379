"""Label lists given by the user (`--labels FILE`, a Python list): one label per line, stripped,
none repeated."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

from dalip.data.files import few, read_text_lines, repeated_names
from dalip.readers import quoted


def check_labels(labels: Sequence[str], where: str = "labels") -> list[str]:
    """Stripped labels; ValueError when none are given or one is repeated."""
    labels = [label.strip() for label in labels if label.strip()]
    if not labels:
        raise ValueError(f"{where}: no labels given")
    repeated = repeated_names(labels)
    if repeated:
        raise ValueError(f"{where}: duplicate label(s) [{few(repeated)}]; each label must appear once")
    check_distinct_texts(labels, where)
    return labels


def check_distinct_texts(names: Sequence[str], where: str) -> None:
    """ValueError when two names differ only in case or spacing: CLIP's tokenizer lowercases
    and collapses spaces, so they would get identical text features and tied scores."""
    seen: dict[str, str] = {}
    for name in names:
        key = " ".join(name.lower().split())
        if key in seen and seen[key] != name:
            raise ValueError(
                f"{where}: {quoted(seen[key])} and {quoted(name)} differ only in case or spacing; the "
                f"tokenizer lowercases text, so they would get the same text features (rename one)"
            )
        seen.setdefault(key, name)


def read_label_file(path: str | os.PathLike) -> list[str]:
    """One label per line (blank lines and "#" comments ignored); duplicates are an error."""
    lines = [line for line in read_text_lines(path, "label file") if not line.lstrip().startswith("#")]
    return check_labels(lines, os.fspath(path))


def check_class_names(names: Sequence[str], where: str) -> None:
    """ValueError when two classes of a zero-shot dataset share a readable name (or names that
    differ only in case or spacing): their text features would be identical and every image of
    either would be a tie."""
    counts = Counter(names)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise ValueError(
            f"{where}: the class name {quoted(repeated[0])} is given to {counts[repeated[0]]} classes; "
            f"zero-shot would give them identical text features (make the names distinct, e.g. in classes.txt)"
        )
    check_distinct_texts(names, where)
