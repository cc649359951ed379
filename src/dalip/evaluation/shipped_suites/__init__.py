"""The suites dalip ships, named on the command line (`dalip eval --suite dalip-paper
--dataset-root DIR`) or in Python (`load_suite("dalip-paper", data_root=DIR)`).

`dalip-paper.yaml` is the DALIP paper's evaluation: zero-shot top-1 on five general and five
plant datasets in their published layouts (docs/datasets.md). Its halves are the same file's
`general` and `plant` domains, so each dataset's folder name is written in one place. The
relative paths of a shipped suite are read under the data root the caller gives.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dalip.readers import read_yaml

SUITE_FOLDER = Path(__file__).parent
# name -> (file in this folder, the domain it keeps; None keeps every dataset)
SHIPPED_SUITES: dict[str, tuple[str, str | None]] = {
    "dalip-paper": ("dalip-paper.yaml", None),
    "dalip-paper-general": ("dalip-paper.yaml", "general"),
    "dalip-paper-plants": ("dalip-paper.yaml", "plant"),
}
FILE_SUFFIXES = (".yaml", ".yml", ".json")


def is_suite_name(text: str | os.PathLike) -> bool:
    """Whether `--suite TEXT` names a shipped suite rather than a file: no folder in it, no
    YAML/JSON suffix, and no such file here."""
    text = os.fspath(text)
    return (
        bool(text)
        and "/" not in text
        and os.sep not in text
        and not text.lower().endswith(FILE_SUFFIXES)
        and not os.path.exists(text)
    )


def shipped_suite(name: str) -> tuple[dict[str, Any], Path]:
    """(the suite's data, its file) for a shipped suite's name; ValueError listing the
    shipped names for any other."""
    if name not in SHIPPED_SUITES:
        raise ValueError(
            f"suite {name!r}: no such file, and dalip ships no suite of that name "
            f"(shipped: {', '.join(SHIPPED_SUITES)})"
        )
    file, domain = SHIPPED_SUITES[name]
    data = read_yaml(SUITE_FOLDER / file, "suite file")
    if domain is not None:
        kept = [entry for entry in data["datasets"] if entry.get("domain", data.get("domain")) == domain]
        data = {**data, "name": name, "datasets": kept}
    return data, SUITE_FOLDER / file
