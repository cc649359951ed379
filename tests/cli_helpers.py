"""Helpers of the command-line tests: run `dalip` in-process and check how it fails."""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TEST_MBDC
from safetensors.torch import save_file

import dalip
from dalip.cli import main


def user_error(capsys: pytest.CaptureFixture, *argv: str, alone: bool = True) -> str:
    """Run `dalip ARGV`; assert exit status 2 and one error line (the only stderr line
    unless `alone` is False, which allows warnings before it); return that line."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, f"exit {status}, stderr: {err}"
    assert lines and (len(lines) == 1 or not alone), f"expected one line, got: {err}"
    assert lines[-1].startswith(f"dalip {argv[0]}: error: "), lines[-1]
    assert sum(": error: " in line for line in lines) == 1, err
    assert "Traceback" not in err and "weights_only" not in err
    return lines[-1]


def files_under(folder: str | os.PathLike) -> set[str]:
    """Every path below `folder`, relative to it."""
    root = Path(folder)
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def write_safetensors(path: Path, state: dict[str, Any], config: Any, raw_config: str | None = None) -> Path:
    """A .safetensors file with dalip's metadata and a config of the test's choosing."""
    text = raw_config if raw_config is not None else json.dumps(config)
    metadata = {"format": "dalip", "format_version": "1", "config": text, "extra": "{}"}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


def saved_checkpoint(folder: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A real test-tiny checkpoint in `folder`: (path, state dict, stored config)."""
    torch.manual_seed(0)
    model, *_ = dalip.create_model("test-tiny", **TEST_MBDC)
    path = folder / "model.safetensors"
    model.save(path)
    return path, model.state_dict(), model.config()


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """No file of this process grows beyond `limit` bytes inside the block."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


class _StoppedHandle(io.FileIO):
    """A file whose third write meets Ctrl-C (torch's writer turns it into a RuntimeError)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        if self.writes > 2:
            raise KeyboardInterrupt
        return super().write(data)


def save_stopped_by_ctrl_c(state: Any, path: str | os.PathLike) -> None:
    """A stand-in for `dalip.atomic.save_torch` that Ctrl-C interrupts inside torch.save."""
    with _StoppedHandle(path, "wb") as handle:
        torch.save(state, handle)
