"""The model file: one .safetensors holding the weights and, in its metadata, the
architecture (`DALIPModel.config()`), so loading runs no code. Written atomically.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dalip.atomic import atomic_write

FORMAT_NAME = "dalip"
FORMAT_VERSION = "1"


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
    """The stored architecture config of a dalip model file, or None for any other file."""
    metadata = _metadata(path)
    if not metadata or metadata.get("format") != FORMAT_NAME or "config" not in metadata:
        return None
    return json.loads(metadata["config"])


def require_dalip_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The stored config of a dalip model file; FileNotFoundError / ValueError otherwise."""
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


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a dalip model file, on the CPU."""
    require_dalip_checkpoint(path)
    return load_file(str(path), device="cpu")
