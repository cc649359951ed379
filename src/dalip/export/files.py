"""Writing a set of files into an output folder: each file complete or absent, nothing
else in the folder touched, modes from the user's umask."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from dalip.atomic import file_mode, write_error

STAGING_PREFIX = ".dalip-export-"


def check_output_folder(folder: str | os.PathLike, names: list[str], force: bool) -> Path:
    """The output folder as a Path; FileExistsError when it holds files we would replace
    (without `force`) or is a file."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder; give a new folder name")
    clashes = [name for name in names if (folder / name).exists()]
    if clashes and not force:
        raise FileExistsError(f"{folder} already holds {', '.join(clashes)}; use --force to overwrite")
    return folder


def write_files(
    folder: str | os.PathLike, writers: Mapping[str, Callable[[Path], None]], force: bool = False
) -> list[Path]:
    """Call each `writer(staging_folder)` (it writes its file(s) there), then move the staged
    files into `folder`. `writers` maps the main file name of each writer to the writer;
    a writer may add companion files (ONNX external data). Returns the written paths."""
    folder = check_output_folder(folder, list(writers), force)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as error:  # e.g. a read-only folder: name the folder, not our staging one
        ours = os.path.basename(str(error.filename or "")).startswith(STAGING_PREFIX)
        raise write_error(error, folder, error.filename if ours else None) or error from error
    try:
        for name, write in writers.items():
            try:
                write(staging)
            except Exception as error:  # a full disk: one line naming the file, not the staged one
                named = write_error(error, folder / name, str(staging / name))
                if named is None or named is error:
                    raise
                raise named from error
        staged = sorted(staging.iterdir())
        clashes = [p.name for p in staged if (folder / p.name).exists() and p.name not in writers]
        if clashes and not force:
            raise FileExistsError(f"{folder} already holds {', '.join(clashes)}; use --force to overwrite")
        mode = file_mode()
        for path in staged:
            os.chmod(path, mode)
            os.replace(path, folder / path.name)
        return [folder / path.name for path in staged]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):  # a folder made for a failed export goes again
            for made in created:
                made.rmdir()  # only while empty
