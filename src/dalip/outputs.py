"""Where dalip commands write, and what they may replace or delete.

One policy for every command that writes (train, quickstart, make-dataset, eval, frontier,
interpolate, embed, export):
- output goes only into the folder or file the user named;
- a folder is used when it is new or empty, or when it holds the manifest of an earlier
  run of the same command (`.dalip-output.json`: the files that run wrote); any other
  non-empty folder is refused, with or without `--force`;
- an earlier run's output is replaced only with `--force`, and then only the files its
  manifest lists are deleted (files added by anyone else stay);
- a lock keeps two commands out of one folder at once: `filelock`'s lock on `.dalip-lock`
  (the kernel's `flock`, so it is released when its process ends, however it ends, and two
  processes can never both hold it); the empty file stays in a folder the command used (a
  refused folder, or one it created and left empty, keeps none);
- an existing output *file* is replaced only with `--force`.

Two writers keep rules of their own, as the Guarantees page of the docs says: `dalip export` to a folder
writes a known set of files beside whatever else is there (`dalip.export.files`), and
`dalip serve` keeps an index cache (`dalip.serve.gallery`). Every file goes through
`dalip.atomic`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from dalip.atomic import write_text
from dalip.readers import MAX_DATA_JSON_CHARACTERS, MAX_DATA_JSON_VALUES, read_json

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".dalip-output.json"
LOCK_NAME = ".dalip-lock"
_OWN_FILES = (MANIFEST_NAME, LOCK_NAME)


class OutputFolder:
    """The folder one command writes into: lock, manifest and `--force` (module docstring).

    Use as a context manager: entering checks and locks the folder (deleting an earlier
    run's files with `force`), leaving records what was written and unlocks it.
    `resume`: continue an earlier run of the same command in place (nothing is deleted);
    `legacy` is a glob that marks such a run written before manifests existed.
    `keep`: top-level names whose files `force` leaves for the command to reuse.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        command: str,
        *,
        force: bool = False,
        resume: bool = False,
        keep: Sequence[str] = (),
        legacy: str | None = None,
    ) -> None:
        self.root = Path(path)
        self.command = command
        self.force, self.resume = force, resume
        self.keep, self.legacy = tuple(keep), legacy
        self.foreign: set[str] = set()
        self._lock: FileLock | None = None
        self._created: list[Path] = []  # folders this command made, innermost first
        self._expected: set[str] = set()  # files announced by `expect`, listed before they exist

    def __enter__(self) -> OutputFolder:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(complete=exc[0] is None)

    def open(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"{self.root}: exists and is not a folder; expected an output folder")
        self._created = [p for p in (self.root, *self.root.parents) if not p.exists()]
        self.root.mkdir(parents=True, exist_ok=True)
        had_lock_file = (self.root / LOCK_NAME).exists()
        self._take_lock()
        try:
            self._check_and_clear()
        except BaseException:  # refused: a folder that is not ours keeps no file of ours
            if not had_lock_file:
                (self.root / LOCK_NAME).unlink(missing_ok=True)
            self._release_lock()
            self._remove_created()
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
            raise FileExistsError(
                f"{self.root}: holds the output of `dalip {manifest.get('command')}`; "
                f"choose another folder for `dalip {self.command}`"
            )
        if present and not self.resume:
            if not self.force:
                raise FileExistsError(
                    f"{self.root}: folder is not empty: it holds an earlier `dalip "
                    f"{self.command}` output; pass --force to replace it"
                )
            remove_listed(self.root, listed, keep=self.keep)
            present = list_files(self.root)
        self.foreign = set(present) - listed
        self.record(complete=False)

    def _legacy_run(self) -> bool:
        return self.legacy is not None and any(self.root.glob(self.legacy))

    def expect(self, files: Iterable[str]) -> None:
        """Announce files this command is about to write (relative, "/"-separated): the
        manifest lists them before they exist, so after a kill or a full disk `--force`
        still removes them (and their half-written temporaries)."""
        self._expected.update(files)
        self.record()

    def record(self, complete: bool = False) -> None:
        """Rewrite the manifest with every file now in the folder that this command wrote
        (and, while the run is not complete, the files it announced)."""
        present = set(list_files(self.root)) - self.foreign
        files = sorted(present if complete else present | self._expected)
        manifest = {"command": self.command, "complete": complete, "files": files}
        write_text(self.root / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")

    def close(self, complete: bool = True) -> None:
        """Record what was written and unlock; a folder this command created and left
        empty (it failed before writing) is removed again."""
        if self._lock is None:
            return
        try:
            try:
                self.record(complete)
            except OSError as error:  # a failed run (a full disk): its own error is the one to report
                if complete:
                    raise
                logger.debug("could not update %s: %s", self.root / MANIFEST_NAME, error)
            abandoned = bool(self._created) and not list_files(self.root)
            if abandoned:  # the lock's file goes while it is still held
                (self.root / MANIFEST_NAME).unlink(missing_ok=True)
                (self.root / LOCK_NAME).unlink(missing_ok=True)
        finally:
            self._release_lock()
        if abandoned:
            self._remove_created()

    def _remove_created(self) -> None:
        """Remove the folders this command made, innermost first, while they are empty."""
        with contextlib.suppress(OSError):  # stops at the first folder that is not empty
            for folder in self._created:
                folder.rmdir()

    # -- the lock ---------------------------------------------------------------------
    def _take_lock(self) -> None:
        path = self.root / LOCK_NAME
        lock = FileLock(path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise FileExistsError(
                f"{self.root}: in use by another dalip command (it holds {path}); wait for it to finish"
            ) from None
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def list_files(root: str | os.PathLike) -> list[str]:
    """Files below `root` (relative, "/"-separated, symbolic links not followed), without
    the folder's own manifest and lock."""
    root = str(root)
    found = []
    for folder, _, names in os.walk(root):
        relative = os.path.relpath(folder, root)
        for name in names:
            path = name if relative == "." else f"{relative.replace(os.sep, '/')}/{name}"
            if path not in _OWN_FILES and not _is_manifest_temporary(path):
                found.append(path)
    return sorted(found)


def _is_manifest_temporary(path: str) -> bool:
    """A manifest being written (`dalip.atomic`'s temporary name), or dalip <= 0.1's."""
    return path == f"{MANIFEST_NAME}.tmp" or (path.startswith(f".{MANIFEST_NAME}.") and path.endswith(".tmp"))


def read_manifest(root: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's manifest, or None when there is none; ValueError when it is not one."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = read_json(path, "output manifest", MAX_DATA_JSON_CHARACTERS, MAX_DATA_JSON_VALUES)
    except ValueError as error:  # not JSON, not UTF-8, nested too deep, too large
        reason = str(error).removeprefix(f"{path}: ")
        raise ValueError(
            f"{path}: not a dalip output manifest ({reason}); move it away to use this folder"
        ) from error
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ValueError(f"{path}: not a dalip output manifest (expected a 'files' list)")
    return manifest


def remove_listed(root: str | os.PathLike, files: Sequence[str] | set[str], keep: Sequence[str] = ()) -> None:
    """Delete the listed files of `root` (not those under a `keep` name), then the folders
    that this leaves empty. A listed path that leads outside `root` is never touched."""
    base = os.path.realpath(root)
    emptied: dict[str, set[str]] = {}  # folder -> the listed names in it
    for relative in sorted(files):
        if relative.split("/")[0] in keep or not _inside(base, relative):
            continue
        path = os.path.join(base, *relative.split("/"))
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        emptied.setdefault(os.path.dirname(path), set()).add(os.path.basename(path))
    for folder, names in emptied.items():  # what a killed writer left of a listed file
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            if _temporary_of(name) in names and os.path.isfile(os.path.join(folder, name)):
                os.unlink(os.path.join(folder, name))
    for folder in sorted(emptied, key=len, reverse=True):
        while folder != base and folder.startswith(base + os.sep):
            try:
                os.rmdir(folder)  # only succeeds when empty
            except OSError:
                break
            folder = os.path.dirname(folder)


def _temporary_of(name: str) -> str | None:
    """The file a `dalip.atomic` temporary (".NAME.<8 random characters>.tmp") was to become, else None."""
    if not (name.startswith(".") and name.endswith(".tmp")) or "." not in name[1:-4]:
        return None
    return name[1:-4].rsplit(".", 1)[0]


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
