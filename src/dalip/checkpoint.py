"""Checkpoint files: atomic writes, the model file format, training states, export.

Pure file handling: nothing here builds a model (`dalip.factory.load_checkpoint` does),
so every module can import this one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file


FORMAT_NAME = "dalip"
FORMAT_VERSION = "1"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(temporary_path)` then rename over `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        # mkstemp creates 0600 (and a writer may replace the file): the finished file gets
        # the mode open() would have given it.
        os.chmod(temporary, 0o666 & ~current_umask())
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_model(model: torch.nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Save a DALIPModel's weights + `model.config()` as safetensors; `extra` goes into the metadata as JSON."""
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config()),
        "extra": json.dumps(extra or {}),
    }
    atomic_write(path, lambda temporary: save_file(state, temporary, metadata=metadata))


def _metadata(path: str | os.PathLike) -> dict[str, str] | None:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The stored architecture config of a dalip checkpoint, or None for any other file."""
    metadata = _metadata(path)
    if not metadata or metadata.get("format") != FORMAT_NAME or "config" not in metadata:
        return None
    return json.loads(metadata["config"])


def read_extra(path: str | os.PathLike) -> dict[str, Any]:
    """The `extra` metadata saved with a dalip checkpoint ({} when none)."""
    metadata = _metadata(path) or {}
    return json.loads(metadata.get("extra", "{}"))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a dalip checkpoint, on the CPU."""
    require_dalip_checkpoint(path)
    return load_file(str(path), device="cpu")


def require_dalip_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; expected a dalip checkpoint file (.safetensors)")
    config = read_checkpoint_config(path)
    if config is None:
        raise ValueError(
            f"{path} is not a dalip checkpoint (expected a .safetensors file written by "
            f"dalip's model.save or `dalip train`)"
        )
    return config


def export_open_clip(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Write the first-order model as a plain open_clip checkpoint.

    `open_clip.create_model_and_transforms(model.model_name, pretrained=path)` loads it
    (for our own architectures, after `import dalip` registers them). A `.safetensors`
    path writes safetensors, anything else a `torch.save` file of `{"state_dict": ...}`.
    """
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.clip.state_dict().items()}
    if str(path).endswith(".safetensors"):
        atomic_write(path, lambda temporary: save_file(state, temporary))
    else:
        atomic_write(path, lambda temporary: torch.save({"state_dict": state}, temporary))


# Training checkpoints: a torch file of tensors and plain data only, so it loads with
# `torch.load(..., weights_only=True)`.
TRAINING_PATTERN = "step_*.pt"


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (model, optimiser, scheduler, RNG, position...)."""
    atomic_write(path, lambda temporary: torch.save(state, temporary))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint written by `save_training_state` (no code runs on load)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and weights_only errors all mean "not ours"
        raise ValueError(f"{path} is not a dalip training checkpoint ({type(error).__name__})") from error
    if not isinstance(state, dict) or "dalip_config" not in state or "model" not in state:
        raise ValueError(f"{path} is not a dalip training checkpoint (no model or dalip_config)")
    return state


def training_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Training checkpoints in `folder`, oldest step first."""
    return sorted(Path(folder).glob(TRAINING_PATTERN))


def prune_training_checkpoints(folder: str | os.PathLike, keep_last: int) -> None:
    for old in training_checkpoints(folder)[:-keep_last]:
        old.unlink(missing_ok=True)


def resolve_resume(resume: str, checkpoint_folder: str | os.PathLike) -> Path:
    """`latest` -> the newest training checkpoint in the run's folder; else the path itself."""
    if resume == "latest":
        found = training_checkpoints(checkpoint_folder)
        if not found:
            raise FileNotFoundError(f"--resume latest: no checkpoint in {checkpoint_folder}")
        return found[-1]
    if not os.path.isfile(resume):
        raise FileNotFoundError(f"--resume: checkpoint not found: {resume}")
    return Path(resume)
