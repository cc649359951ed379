"""Checkpoints for users: load any dalip checkpoint, export the first-order model to open_clip.

The model file format lives with the model (`dalip.model.file_format`, `model.save`), the
training checkpoint with the loop (`dalip.train.state`); this module reads either.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file, save_file

from dalip.atomic import atomic_write
from dalip.model.dalip_model import DALIPModel
from dalip.model.factory import build_model
from dalip.model.file_format import require_dalip_checkpoint
from dalip.train.state import load_training_state


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> DALIPModel:
    """Rebuild a saved DALIPModel, weights loaded, in eval mode, ready for inference.

    Accepts a model file (`model.save`, `.safetensors`) or a training checkpoint
    (`dalip train`'s `checkpoints/step_*.pt`).
    """
    if str(path).endswith(".pt") and os.path.isfile(path):
        training = load_training_state(path)
        config, state = training["dalip_config"], training["model"]
    else:
        config = require_dalip_checkpoint(path)
        state = load_file(str(path), device="cpu")
    model = build_model(config)
    model.load_state_dict(state)
    return model.to(device).eval()


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
