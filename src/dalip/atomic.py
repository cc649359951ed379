"""Atomic file writes: a reader never sees half a file, a failed write leaves the old one,
and the finished file has the mode the user's umask gives (as `open()` would)."""

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
        # mkstemp creates 0600 (and a writer may replace the file): the finished file gets
        # the mode open() would have given it, so others can read it where the umask allows.
        os.chmod(temporary, file_mode())
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except OSError as error:  # name the file the user asked for, not our temporary one
        if error.filename == temporary or temporary in str(error):
            raise OSError(error.errno, error.strerror or str(error).replace(temporary, str(path)), str(path)) from error
        raise
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open()` gives a new file under the current umask (0o644 under 022)."""
    return 0o666 & ~current_umask()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> None:
    """Write `data` as indented JSON (with a final newline), atomically."""
    write_text(path, json.dumps(data, indent=indent) + "\n")
