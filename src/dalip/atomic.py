"""Atomic file writes, the one way dalip writes a file: a reader never sees half a file, a
failed write leaves the old one (and no temporary file), and the finished file has the mode
the user's umask gives (as `open()` would).

`atomic_write` hands a writer a temporary path (torch.save, safetensors); `AtomicFile` is a
file written in steps (a CSV row by row, a tar shard member by member) and published at once.
`durable=False` skips the fsync, for bulk data whose loss in a power cut only means writing it
again (dataset images)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _temporary_beside(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return temporary


def _publish(temporary: str, path: Path, durable: bool) -> None:
    # mkstemp creates 0600 (and a writer may replace the file): the finished file gets
    # the mode open() would have given it, so others can read it where the umask allows.
    os.chmod(temporary, file_mode())
    if durable:
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
    os.replace(temporary, path)


def _naming_the_target(error: OSError, temporary: str, path: Path) -> OSError:
    """The error with the file the user asked for instead of our temporary one."""
    if error.filename == temporary or temporary in str(error):
        return OSError(error.errno, error.strerror or str(error).replace(temporary, str(path)), str(path))
    return error


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], durable: bool = True) -> None:
    """Call `write(temporary_path)` then rename over `path`: readers never see half a file."""
    path = Path(path)
    temporary = _temporary_beside(path)
    try:
        write(temporary)
        _publish(temporary, path, durable)
    except OSError as error:  # name the file the user asked for, not our temporary one
        named = _naming_the_target(error, temporary, path)
        if named is error:
            raise
        raise named from error
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


class AtomicFile:
    """A file written in steps and published at once (see module docstring).

    `handle` is the open temporary file; `commit()` closes it and renames it over `path`,
    `discard()` closes and removes it. As a context manager: commit on success, discard on an
    exception.

        with AtomicFile(folder / "captions.csv", "w", newline="") as table:
            csv.writer(table.handle).writerow(...)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        mode: str = "w",
        *,
        encoding: str | None = None,
        newline: str | None = None,
        durable: bool = True,
    ) -> None:
        self.path, self.durable = Path(path), durable
        self._temporary = _temporary_beside(self.path)
        text = "b" not in mode
        self.handle: IO[Any] = open(  # noqa: SIM115 (the handle outlives this call: commit/discard close it)
            self._temporary,
            mode,
            encoding=(encoding or "utf-8") if text else None,
            newline=newline if text else None,
        )

    def commit(self) -> None:
        try:
            self.handle.close()
            _publish(self._temporary, self.path, self.durable)
        except OSError as error:
            self.discard()
            named = _naming_the_target(error, self._temporary, self.path)
            if named is error:
                raise
            raise named from error

    def discard(self) -> None:
        self.handle.close()
        if os.path.exists(self._temporary):
            os.unlink(self._temporary)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open()` gives a new file under the current umask (0o644 under 022)."""
    return 0o666 & ~current_umask()


def write_text(path: str | os.PathLike, text: str, durable: bool = True) -> None:
    """Write UTF-8 text atomically."""
    atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"), durable)


def write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write bytes atomically."""
    atomic_write(path, lambda temporary: Path(temporary).write_bytes(data), durable)


def write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> None:
    """Write `data` as indented JSON (with a final newline), atomically."""
    write_text(path, json.dumps(data, indent=indent) + "\n")
