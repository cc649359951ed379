"""Where and in which precision a model runs, shared by training and evaluation."""

from __future__ import annotations

import contextlib
import typing

import torch

from dalip.config import Precision
from dalip.schema import check_choice

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "amp": torch.float16}


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """ "auto": this rank's GPU when CUDA is available, else cpu; "cuda": this rank's GPU;
    anything else as given. This rank's GPU is cuda:<local_rank>, or cuda:0 when the process
    sees a single GPU (a scheduler that gives each task its own CUDA_VISIBLE_DEVICES).
    ValueError when CUDA is asked for but not available."""
    if str(device) == "auto":
        return _own_gpu(local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use cpu or auto")
    return _own_gpu(local_rank) if str(device) == "cuda" else torch.device(device)


def _own_gpu(local_rank: int) -> torch.device:
    visible = torch.cuda.device_count()
    if local_rank < visible:
        return torch.device(f"cuda:{local_rank}")
    if visible == 1:
        return torch.device("cuda:0")
    raise ValueError(
        f"LOCAL_RANK={local_rank} but this process sees {visible} GPUs; give each process "
        f"its own GPU (CUDA_VISIBLE_DEVICES) or at least LOCAL_RANK + 1 GPUs"
    )


def configure_cuda(tf32: bool = True) -> None:
    """Start-up settings for CUDA, as open_clip_train's: TF32 tensor cores for float32 matmuls
    and convolutions (Ampere and newer; several times faster than IEEE float32), and cuDNN's
    autotuner for the fixed input sizes of a run. Code that must stay exact says so where it
    runs (`dalip.model.bdc`'s Gram matrix). `tf32=False`: IEEE float32 everywhere (debugging).

    Uses `torch.set_float32_matmul_precision`, which keeps torch's legacy and new TF32 flags
    consistent (torch >= 2.9 refuses to read a mix of the two)."""
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    cudnn = torch.backends.cudnn
    conv = getattr(cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        conv.fp32_precision = "tf32" if tf32 else "ieee"
    else:
        cudnn.allow_tf32 = tf32
    cudnn.benchmark = True


def autocast(precision: Precision, device_type: str) -> contextlib.AbstractContextManager:
    """fp32: no autocast; bf16: bfloat16 autocast; amp: float16 autocast (train it with a
    gradient scaler). Raises ValueError for another precision."""
    check_choice("precision", precision, typing.get_args(Precision))
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=_AUTOCAST_DTYPES[precision])
