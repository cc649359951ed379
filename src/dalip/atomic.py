"""Atomic file writes: a reader never sees half a file, a failed write leaves the old one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(temporary_path)` then rename over `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> None:
    """Write `data` as indented JSON (with a final newline), atomically."""
    write_text(path, json.dumps(data, indent=indent) + "\n")
