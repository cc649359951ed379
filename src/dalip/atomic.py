"""Atomic file writes, the one way dalip writes a file: a reader never sees half a file, a
failed write leaves the old one (and no temporary file), and the finished file has the mode
the user's umask gives (as `open()` would).

`atomic_write` hands a writer a temporary path (torch.save, safetensors); `AtomicFile` is a
file written in steps (a CSV row by row, a tar shard member by member) and published at once.
`durable=False` skips the fsync, for bulk data whose loss in a power cut only means writing it
again (dataset images)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _temporary_beside(path: Path) -> str:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:  # e.g. a read-only mount: name the file asked for, not our temporary
        ours = error.filename is None or os.path.basename(str(error.filename)).startswith(f".{path.name}.")
        raise write_error(error, path, error.filename if ours else None) or error from error
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


def write_error(
    error: BaseException, path: str | os.PathLike, temporary: str | None = None
) -> OSError | None:
    """`error` as an OSError naming `path` when it is a failure to write (a full disk, a
    file-size limit, a read-only mount), found in the error itself, in what it was raised
    from (torch's writer), or in a library's "os error N" text (safetensors); None when it
    is something else. An OSError that names another file than `temporary` stays as it is."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError):
        if cause.errno is None or cause.filename not in (None, temporary, str(path)):
            return cause if cause is not error else None
        number, text = cause.errno, cause.strerror or os.strerror(cause.errno)
    else:
        match = re.search(r"os error (\d+)", str(error))
        if match is None:
            return None
        number = int(match.group(1))
        text = os.strerror(number)
    return OSError(number, text, str(path))  # OSError(errno, ...) is the errno's subclass


@contextlib.contextmanager
def naming_failures(path: str | os.PathLike, temporary: str | None = None) -> Iterator[None]:
    """Re-raise a failure to write inside the block (`write_error`) as an OSError naming
    `path` (instead of `temporary`, or of nothing)."""
    try:
        yield
    except Exception as error:
        named = write_error(error, path, temporary)
        if named is None or named is error:
            raise
        raise named from error


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], durable: bool = True) -> None:
    """Call `write(temporary_path)` then rename over `path`: readers never see half a file.
    A failure to write is an OSError naming `path` (`write_error`)."""
    path = Path(path)
    temporary = _temporary_beside(path)
    try:
        with naming_failures(path, temporary):
            write(temporary)
            _publish(temporary, path, durable)
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
            with naming_failures(self.path, self._temporary):
                self.handle.close()
                _publish(self._temporary, self.path, self.durable)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # what is still buffered may not fit on a full disk
            self.handle.close()
        if os.path.exists(self._temporary):
            os.unlink(self._temporary)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, *_: Any) -> None:
        if error is None:
            self.commit()
            return
        self.discard()
        with naming_failures(self.path, self._temporary):
            raise error


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open()` gives a new file under the current umask (0o644 under 022)."""
    return 0o666 & ~current_umask()


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` through a Python file, so a failed write keeps its OSError (written to
    a path, torch's C++ writer reports only "unexpected pos")."""
    import torch

    with open(path, "wb") as handle:
        torch.save(obj, handle)


def write_text(path: str | os.PathLike, text: str, durable: bool = True) -> None:
    """Write UTF-8 text atomically."""
    atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"), durable)


def write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write bytes atomically."""
    atomic_write(path, lambda temporary: Path(temporary).write_bytes(data), durable)


def write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> None:
    """Write `data` as indented JSON (with a final newline), atomically."""
    write_text(path, json.dumps(data, indent=indent) + "\n")
