"""Where and in which precision a model runs, shared by training and evaluation."""

from __future__ import annotations

import contextlib
import typing

import torch

from dalip.config import Precision
from dalip.schema import check_choice

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "amp": torch.float16}


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """"auto": cuda:<local_rank> when CUDA is available, else cpu; "cuda": cuda:<local_rank>;
    anything else as given. ValueError when CUDA is asked for but not available."""
    if str(device) == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use cpu or auto")
    return torch.device(f"cuda:{local_rank}" if str(device) == "cuda" else device)


def autocast(precision: Precision, device_type: str) -> contextlib.AbstractContextManager:
    """fp32: no autocast; bf16: bfloat16 autocast; amp: float16 autocast (train it with a
    gradient scaler). Raises ValueError for another precision."""
    check_choice("precision", precision, typing.get_args(Precision))
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=_AUTOCAST_DTYPES[precision])
