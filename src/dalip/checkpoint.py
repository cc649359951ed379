"""Checkpoints for users: load any dalip checkpoint (exports live in `dalip.export`).

Both files are read by `dalip.model.file_format.read_model_file`: the model file
(`model.save`) and the training checkpoint (written by `dalip.train.state`).
"""

from __future__ import annotations

import os

import torch

from dalip.model.dalip_model import DALIPModel
from dalip.model.factory import build_model
from dalip.model.file_format import read_model_file, refuse_nonfinite_weights


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> DALIPModel:
    """Rebuild a saved DALIPModel, weights loaded, in eval mode, ready for inference.

    Accepts a model file (`model.save`, `.safetensors`) or a training checkpoint
    (`dalip train`'s `checkpoints/step_*.pt`).
    """
    config, state = read_model_file(path)
    refuse_nonfinite_weights(state, os.fspath(path))
    model = build_model(config, os.fspath(path))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # weights of another shape or names than the stored config
        raise ValueError(
            f"{path}: its weights do not match its stored config "
            f"({str(error).strip().splitlines()[-1].strip()})"
        ) from error
    return model.to(device).eval()
