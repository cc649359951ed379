"""The reproducibility record of an evaluation: versions, hashes, seeds, data and sizes."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from dalip import __version__
from dalip.inference.specs import file_sha256

_SIZE_KEYS = ("num_images", "num_texts", "num_classes", "skipped", "train_size", "test_size")
_PATH_KEYS = ("dataset", "train", "test", "splits_file")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def source_revision() -> str | None:
    """The git commit of dalip's source when it runs from a checkout (`pip install -e`), with
    "+modified" when the checkout has uncommitted changes; None for an installed release."""
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            # read only: a plain `git status` may rewrite the index (and leave index.lock behind
            # when it cannot), under the user's own git commands
            ["git", "--no-optional-locks", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+modified" if dirty else commit


def reproducibility_record(results: dict[str, Any], suite: Any) -> dict[str, Any]:
    """Versions, checkpoint hashes, seeds, modes, templates, class names, data paths and sizes."""
    datasets: dict[str, Any] = {}
    for entry in results["models"].values():
        for name, result in entry["datasets"].items():
            described = datasets.setdefault(name, {"task": result["task"], "domain": result["domain"]})
            described.update({k: result[k] for k in _PATH_KEYS + _SIZE_KEYS if k in result})
            for key in ("template_set", "templates", "class_names", "features", "chosen_C", "shots", "folds"):
                if key in result:
                    described[key] = result[key]
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "dalip": __version__,
            "dalip_source": source_revision(),
            "open_clip_torch": _version("open_clip_torch"),
            "torch": _version("torch"),
            "numpy": _version("numpy"),
            "scikit-learn": _version("scikit-learn"),
            "python": sys.version.split()[0],
        },
        "platform": platform.platform(),
        "command": sys.argv,
        "suite_file": suite.source,
        "suite_sha256": file_sha256(suite.source) if suite.source else None,
        "seed": suite.seed,
        "similarity_modes": {name: entry["modes"] for name, entry in results["models"].items()},
        "checkpoints": {
            name: {"spec": e["spec"], "sha256": e["sha256"]} for name, e in results["models"].items()
        },
        "datasets": datasets,
    }
