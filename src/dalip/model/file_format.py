"""The model file: one .safetensors holding the weights and, in its metadata, the
architecture (`DALIPModel.config()`), so loading runs no code. Written atomically.

A training checkpoint (`dalip train`'s `checkpoints/step_*.pt`, written by
`dalip.train.state.save_training_state`) holds a model too: `read_model_file` reads either.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dalip.atomic import atomic_write
from dalip.model.lora import merge_low_rank
from dalip.model.stored_config import check_model_config
from dalip.readers import load_json_text

FORMAT_NAME = "dalip"
FORMAT_VERSION = "1"


def save_model(model: torch.nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Save a DALIPModel's weights + `model.config()` as safetensors; `extra` goes into the metadata as JSON."""
    state = {
        name: tensor.detach().contiguous().cpu()
        for name, tensor in merge_low_rank(model.state_dict()).items()
    }
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
    """The stored architecture config of a dalip model file, or None for any other file.

    A file that says it is a dalip model but whose config is not one raises ValueError.
    """
    metadata = _metadata(path)
    if not metadata or metadata.get("format") != FORMAT_NAME or "config" not in metadata:
        return None
    try:
        config = load_json_text(metadata["config"])
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: its config metadata is not valid JSON ({error.msg})") from error
    except ValueError as error:  # nested too deep, too many values
        raise ValueError(f"{path}: its config metadata is refused: {error}") from error
    return check_model_config(config, os.fspath(path))


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
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:  # e.g. a file cut short
        raise ValueError(
            f"{path}: the checkpoint's tensors cannot be read ({error}); the file may be truncated"
        ) from error


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint written by `save_training_state` (no code runs on load)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and weights_only errors all mean "not ours"
        raise ValueError(
            f"{path} is not a dalip training checkpoint ({type(error).__name__}; "
            f"dalip loads tensors and plain data only)"
        ) from error
    if not isinstance(state, dict) or "dalip_config" not in state or "model" not in state:
        raise ValueError(f"{path} is not a dalip training checkpoint (no model or dalip_config)")
    check_model_config(state["dalip_config"], os.fspath(path))
    if not isinstance(state["model"], dict) or not all(
        isinstance(v, torch.Tensor) for v in state["model"].values()
    ):
        raise ValueError(f"{path} is not a dalip training checkpoint (its model entry is not a state dict)")
    return state


def is_training_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a dalip training checkpoint (checked without reading its tensors:
    an open_clip `.pt` weights file is not one)."""
    if not str(path).endswith(".pt") or not os.path.isfile(path):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format torch file of plain data: not ours
        return False
    return isinstance(state, dict) and "dalip_config" in state and "model" in state


def read_stored_config(path: str | os.PathLike) -> dict[str, Any]:
    """The stored architecture config of a dalip model file or training checkpoint, without
    reading its weights (a training checkpoint is memory-mapped)."""
    if str(path).endswith(".pt") and os.path.isfile(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # pickle, zip and weights_only errors all mean "not ours"
            raise ValueError(f"{path} is not a dalip training checkpoint ({type(error).__name__})") from error
        if not isinstance(state, dict) or "dalip_config" not in state:
            raise ValueError(f"{path} is not a dalip training checkpoint (no dalip_config)")
        return check_model_config(state["dalip_config"], os.fspath(path))
    return require_dalip_checkpoint(path)


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(stored config, weights on the CPU) of a dalip model file or training checkpoint;
    FileNotFoundError / ValueError naming the file otherwise."""
    if str(path).endswith(".pt") and os.path.isfile(path):
        training = load_training_state(path)  # a LoRA run's adapters merged into its weights
        return training["dalip_config"], merge_low_rank(training["model"])
    return require_dalip_checkpoint(path), read_state_dict(path)


def refuse_nonfinite_weights(state: dict[str, torch.Tensor], where: str) -> None:
    """ValueError naming the first floating-point tensor of `state` that holds NaN or inf: such
    a model (a diverged run, a damaged file) would evaluate and predict nonsense as if fine."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{where}: weight {name!r} holds NaN or infinite values; refusing a broken model "
                f"(a diverged run or a damaged file)"
            )
