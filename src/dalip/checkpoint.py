"""Checkpoints for users: load any dalip checkpoint (exports live in `dalip.export`).

The model file format lives with the model (`dalip.model.file_format`, `model.save`), the
training checkpoint with the loop (`dalip.train.state`); this module reads either.
"""

from __future__ import annotations

import os

import torch

from dalip.model.dalip_model import DALIPModel
from dalip.model.factory import build_model
from dalip.model.file_format import read_state_dict, require_dalip_checkpoint
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
        state = read_state_dict(path)
    model = build_model(config, os.fspath(path))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # weights of another shape or names than the stored config
        raise ValueError(f"{path}: its weights do not match its stored config "
                         f"({str(error).strip().splitlines()[-1].strip()})") from error
    return model.to(device).eval()

