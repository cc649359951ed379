"""Writing a set of files into an output folder: each file complete or absent, nothing
else in the folder touched, modes from the user's umask."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from dalip.atomic import file_mode


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
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".dalip-export-", dir=folder))
    try:
        for write in writers.values():
            write(staging)
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
