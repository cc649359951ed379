"""Checkpoint files: atomic writes, model save/load without executing code on load."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dalip.model import DALIPModel

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
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def save_model(model: DALIPModel, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Save weights + architecture config as safetensors; `extra` goes into the metadata as JSON."""
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
    _require_dalip_checkpoint(path)
    return load_file(str(path), device="cpu")


def _require_dalip_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
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


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> DALIPModel:
    """Rebuild a saved DALIPModel, weights loaded, in eval mode, ready for inference."""
    from dalip.factory import build_model

    config = _require_dalip_checkpoint(path)
    model = build_model(config)
    model.load_state_dict(load_file(str(path), device="cpu"))
    return model.to(device).eval()


def export_open_clip(model: DALIPModel, path: str | os.PathLike) -> None:
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
