"""The first-order model as one plain open_clip weights file (`dalip export --format open_clip`)."""

from __future__ import annotations

import os

import open_clip
import torch
from safetensors.torch import save_file

from dalip.atomic import atomic_write, save_torch


def export_open_clip(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Write the first-order model (`model.clip`) as a plain open_clip checkpoint.

    `open_clip.create_model_and_transforms(model.model_name, pretrained=path)` loads it
    (for our own architectures, after `import dalip` registers them). A `.safetensors`
    path writes safetensors, anything else a `torch.save` file of `{"state_dict": ...}`.
    The file is written atomically: complete or absent. A logit bias the architecture's
    registered config does not build (a CLIP start model tuned with the sigmoid loss) is left out,
    so open_clip loads the file strictly; the features are the same without it (a folder export,
    `open_clip-dir`, keeps it: its config builds it).
    """
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.clip.state_dict().items()}
    registered = open_clip.get_model_config(model.model_name) or {}
    if "logit_bias" in state and registered.get("init_logit_bias") is None:
        del state["logit_bias"]
    if str(path).endswith(".safetensors"):
        atomic_write(path, lambda temporary: save_file(state, temporary))
    else:
        atomic_write(path, lambda temporary: save_torch({"state_dict": state}, temporary))
