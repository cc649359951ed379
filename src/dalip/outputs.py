"""Where dalip commands write, and what they may replace or delete.

One policy for every command that writes (train, quickstart, make-dataset, eval,
interpolate, embed, export):
- output goes only into the folder or file the user named;
- a folder is used when it is new or empty, or when it holds the manifest of an earlier
  run of the same command (`.dalip-output.json`: the files that run wrote); any other
  non-empty folder is refused, with or without `--force`;
- an earlier run's output is replaced only with `--force`, and then only the files its
  manifest lists are deleted (files added by anyone else stay);
- a lock file (`.dalip-lock`: process id and host) keeps two commands out of one folder at
  once; a lock whose process no longer runs on this host is taken over;
- an existing output *file* is replaced only with `--force`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".dalip-output.json"
LOCK_NAME = ".dalip-lock"
_OWN_FILES = (MANIFEST_NAME, LOCK_NAME)
_EMPTY_LOCK_GRACE_SECONDS = 60.0  # a lock file is written right after it is created


class OutputFolder:
    """The folder one command writes into: lock, manifest and `--force` (module docstring).

    Use as a context manager: entering checks and locks the folder (deleting an earlier
    run's files with `force`), leaving records what was written and unlocks it.
    `resume`: continue an earlier run of the same command in place (nothing is deleted);
    `legacy` is a glob that marks such a run written before manifests existed.
    `keep`: top-level names whose files `force` leaves for the command to reuse.
    """

    def __init__(self, path: str | os.PathLike, command: str, *, force: bool = False, resume: bool = False,
                 keep: Sequence[str] = (), legacy: str | None = None) -> None:
        self.root = Path(path)
        self.command = command
        self.force, self.resume = force, resume
        self.keep, self.legacy = tuple(keep), legacy
        self.foreign: set[str] = set()
        self._locked = False
        self._created: list[Path] = []  # folders this command made, innermost first

    def __enter__(self) -> "OutputFolder":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(complete=exc[0] is None)

    def open(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"{self.root}: exists and is not a folder; expected an output folder")
        self._created = [p for p in (self.root, *self.root.parents) if not p.exists()]
        self.root.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self._check_and_clear()
        except BaseException:
            self._release_lock()
            raise

    def _check_and_clear(self) -> None:
        present = list_files(self.root)
        manifest = read_manifest(self.root)
        listed = set(manifest["files"]) if manifest else set()
        if present and manifest is None and not (self.resume and self._legacy_run()):
            raise FileExistsError(
                f"{self.root}: folder is not empty and holds no earlier `dalip {self.command}` output "
                f"(no {MANIFEST_NAME}); choose a new or empty folder (--force never deletes files dalip did not write)"
            )
        if manifest is not None and manifest.get("command") != self.command:
            raise FileExistsError(f"{self.root}: holds the output of `dalip {manifest.get('command')}`; "
                                  f"choose another folder for `dalip {self.command}`")
        if present and not self.resume:
            if not self.force:
                raise FileExistsError(f"{self.root}: folder is not empty: it holds an earlier `dalip "
                                      f"{self.command}` output; pass --force to replace it")
            remove_listed(self.root, listed, keep=self.keep)
            present = list_files(self.root)
        self.foreign = set(present) - listed
        self.record(complete=False)

    def _legacy_run(self) -> bool:
        return self.legacy is not None and any(self.root.glob(self.legacy))

    def record(self, complete: bool = False) -> None:
        """Rewrite the manifest with every file now in the folder that this command wrote."""
        files = sorted(set(list_files(self.root)) - self.foreign)
        manifest = {"command": self.command, "complete": complete, "files": files}
        temporary = self.root / f"{MANIFEST_NAME}.tmp"
        temporary.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, self.root / MANIFEST_NAME)

    def close(self, complete: bool = True) -> None:
        """Record what was written and unlock; a folder this command created and left
        empty (it failed before writing) is removed again."""
        if not self._locked:
            return
        try:
            self.record(complete)
        finally:
            self._release_lock()
        if self._created and not list_files(self.root):
            (self.root / MANIFEST_NAME).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # stops at the first folder that is not empty
                for folder in self._created:
                    folder.rmdir()

    # -- the lock ---------------------------------------------------------------------
    def _take_lock(self) -> None:
        path = self.root / LOCK_NAME
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command})
        for _ in range(2):
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(path)
                if holder is not None and _is_stale(holder):
                    logger.info("%s: taking over the lock of process %s, which no longer runs", self.root, holder["pid"])
                    path.unlink(missing_ok=True)
                    continue
                who = f"`dalip {holder.get('command')}` (process {holder.get('pid')} on {holder.get('host')})" \
                    if holder else "another dalip command"
                raise FileExistsError(
                    f"{self.root}: in use by {who}; wait for it to finish, or delete {path} if no dalip "
                    f"command runs there") from None
            with os.fdopen(descriptor, "w") as handle:
                handle.write(record)
            self._locked = True
            return
        raise FileExistsError(f"{self.root}: could not take the lock {path}; another command took it first")

    def _release_lock(self) -> None:
        path = self.root / LOCK_NAME
        holder = _read_lock(path)
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            path.unlink(missing_ok=True)
        self._locked = False


def _read_lock(path: Path) -> dict[str, Any] | None:
    """The lock's record; a lock left empty for a while counts as dead ({"pid": None})."""
    try:
        text = path.read_text(encoding="utf-8")
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return {"pid": None, "host": socket.gethostname()}  # released meanwhile: take it
    except OSError:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {"pid": None, "host": socket.gethostname()} if age > _EMPTY_LOCK_GRACE_SECONDS else None
    return holder if isinstance(holder, dict) else None


def _is_stale(holder: dict[str, Any]) -> bool:
    """True when the lock's process is known to be gone (same host, no such process)."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if pid is None:
        return True
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False


def list_files(root: str | os.PathLike) -> list[str]:
    """Files below `root` (relative, "/"-separated, symbolic links not followed), without
    the folder's own manifest and lock."""
    root = str(root)
    found = []
    for folder, _, names in os.walk(root):
        relative = os.path.relpath(folder, root)
        for name in names:
            path = name if relative == "." else f"{relative.replace(os.sep, '/')}/{name}"
            if path not in _OWN_FILES and path != f"{MANIFEST_NAME}.tmp":
                found.append(path)
    return sorted(found)


def read_manifest(root: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's manifest, or None when there is none; ValueError when it is not one."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a dalip output manifest ({error}); move it away to use this folder") from error
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ValueError(f"{path}: not a dalip output manifest (expected a 'files' list)")
    return manifest


def remove_listed(root: str | os.PathLike, files: Sequence[str] | set[str], keep: Sequence[str] = ()) -> None:
    """Delete the listed files of `root` (not those under a `keep` name), then the folders
    that this leaves empty. A listed path that leads outside `root` is never touched."""
    base = os.path.realpath(root)
    emptied = set()
    for relative in sorted(files):
        if relative.split("/")[0] in keep or not _inside(base, relative):
            continue
        path = os.path.join(base, *relative.split("/"))
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
            emptied.add(os.path.dirname(path))
    for folder in sorted(emptied, key=len, reverse=True):
        while folder != base and folder.startswith(base + os.sep):
            try:
                os.rmdir(folder)  # only succeeds when empty
            except OSError:
                break
            folder = os.path.dirname(folder)


def _inside(base: str, relative: str) -> bool:
    parts = relative.split("/")
    if os.path.isabs(relative) or any(part in ("", ".", "..") for part in parts):
        return False
    parent = os.path.realpath(os.path.join(base, *parts[:-1]))
    return parent == base or parent.startswith(base + os.sep)


def remove_earlier_output(folder: str | os.PathLike, command: str) -> None:
    """Delete what an earlier `dalip COMMAND` run lists in `folder`'s manifest, if any."""
    manifest = read_manifest(folder) if Path(folder).is_dir() else None
    if manifest is not None and manifest.get("command") == command:
        remove_listed(folder, manifest["files"])
        (Path(folder) / MANIFEST_NAME).unlink(missing_ok=True)


def check_output_file(path: str | os.PathLike, force: bool, what: str = "--out") -> None:
    """An output file may be new, or replaced with `force`; a folder there is an error."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path}: is a folder; expected a file name")
    if path.exists() and not force:
        raise FileExistsError(f"{what} {path}: exists; pass --force to replace it")
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(f"{what} {path}: {path.parent} is not a folder")
