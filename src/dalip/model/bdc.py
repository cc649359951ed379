"""Brownian distance covariance (BDC): pure tensor math, no model code.

For a token set X of M tokens with d channels (channel k is the column x_k):
    D[k, l] = sqrt(max(0, |x_k|^2 + |x_l|^2 - 2 x_k . x_l) / (2M) + eps)
    BDC     = D - rowmean(D) - colmean(D) + mean(D)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def tf32_matmul_allowed() -> bool:
    """Whether float32 matmuls may use TF32 tensor cores (`dalip.model.devices.configure_cuda`,
    or the process's own setting); torch's default is no."""
    try:
        return torch.get_float32_matmul_precision() != "highest"
    except RuntimeError:  # torch >= 2.9 when the legacy flag was set directly: read that one
        return bool(torch.backends.cuda.matmul.allow_tf32)


@contextlib.contextmanager
def ieee_float32_matmul() -> Iterator[None]:
    """Full IEEE float32 matmuls inside (TF32 keeps 10 mantissa bits and ignores autocast); the
    process's setting is restored after. Where TF32 is not allowed nothing is touched."""
    if not tf32_matmul_allowed():
        yield
        return
    try:
        previous = torch.get_float32_matmul_precision()
    except RuntimeError:  # the legacy flag, set directly: switch that one
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = True
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


class _ExactGram(torch.autograd.Function):
    """X (..., M, d) -> X^T X (..., d, d), forward and backward in IEEE float32, outside autocast."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        with ieee_float32_matmul(), torch.autocast(device_type=x.device.type, enabled=False):
            return torch.matmul(x.transpose(-1, -2), x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        with ieee_float32_matmul(), torch.autocast(device_type=x.device.type, enabled=False):
            return torch.matmul(x, grad + grad.transpose(-1, -2))  # d(X^T X) = X (G + G^T)


# Eager under torch.compile: the precision switch is Python state a graph cannot hold. (A custom
# operator would keep the graph whole, but torch 2.14's inductor then computed wrong gradients
# through the diagonal of its output; tests/test_train_compile.py compares compiled and eager steps.)
@torch.compiler.disable
def _exact_gram_switched(x: torch.Tensor) -> torch.Tensor:
    return _ExactGram.apply(x)


def exact_gram(x: torch.Tensor) -> torch.Tensor:
    """Channel Gram matrix X^T X (..., d, d) of token sets X (..., M, d), in full float32 (or
    float64) precision even where TF32 is on (`dalip.model.devices.configure_cuda`): BDC's
    distances are differences |x_k|^2 + |x_l|^2 - 2 x_k.x_l of its entries, and TF32's rounding
    of the products would swamp the small differences between channels. Where TF32 is off
    (CPUs, IEEE runs) it is the plain product, bit for bit what dalip 0.1 computed."""
    if tf32_matmul_allowed():
        return _exact_gram_switched(x)
    return x.transpose(-1, -2) @ x


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # bf16/fp16 distances lose the small differences BDC is made of; float64 stays float64.
    return torch.promote_types(dtype, torch.float32)


def brownian_distance_covariance(
    tokens: torch.Tensor,
    mask: torch.Tensor | None = None,
    eps: float = 1e-5,
    temperature: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Double-centred channel distance matrix of a token set.

    Args:
        tokens: (..., M, d) token features; any leading batch/head dimensions.
        mask: optional (..., M) bool, True for real tokens. Masked tokens are excluded
            exactly: the result equals BDC over the kept tokens only.
        eps: added under the square root, so gradients stay finite for equal channels.
        temperature: optional multiplier of the scaled squared distances (DeepBDC's
            learnable temperature, relative to the fixed 1/(2M)); None means 1.

    Returns:
        (..., d, d) symmetric matrix, in float32 (float64 for float64 input), even
        under autocast.
    """
    if tokens.dim() < 2:
        raise ValueError(f"tokens must have shape (..., M, d), got a {tokens.dim()}-d tensor")
    if mask is not None and mask.shape != tokens.shape[:-1]:
        raise ValueError(
            f"mask must have shape {tuple(tokens.shape[:-1])} (tokens without channels), "
            f"got {tuple(mask.shape)}"
        )
    # autocast has no meta device (shape-only builds of full-size models run on it)
    no_autocast = (
        contextlib.nullcontext()
        if tokens.device.type == "meta"
        else torch.autocast(device_type=tokens.device.type, enabled=False)
    )
    with no_autocast:
        x = tokens.to(_compute_dtype(tokens.dtype))
        if mask is None:
            count = torch.full(x.shape[:-2], x.shape[-2], dtype=x.dtype, device=x.device)
        else:
            keep = mask.to(x.dtype)
            x = x * keep.unsqueeze(-1)  # masked tokens add nothing to norms or products
            count = keep.sum(-1).clamp_min(1.0)
        gram = exact_gram(x)  # (..., d, d), never TF32
        norms = gram.diagonal(dim1=-2, dim2=-1)  # (..., d)
        squared = (norms.unsqueeze(-1) + norms.unsqueeze(-2) - 2 * gram).clamp_min(0.0)
        scale = 1.0 / (2.0 * count)  # (...)
        if temperature is not None:
            scale = scale * temperature
        distance = torch.sqrt(squared * scale[..., None, None] + eps)
        return (
            distance
            - distance.mean(dim=-1, keepdim=True)
            - distance.mean(dim=-2, keepdim=True)
            + distance.mean(dim=(-2, -1), keepdim=True)
        )


def upper_triangle_indices(size: int, device: torch.device | None = None) -> torch.Tensor:
    """Flat indices of the upper triangle (diagonal included) of a (size, size) matrix.

    Compute once (e.g. as a module buffer) and pass to `vectorize_upper_triangle`.
    Returns a (size * (size + 1) / 2,) long tensor.
    """
    rows, cols = torch.triu_indices(size, size, device=device)
    return rows * size + cols


def vectorize_upper_triangle(matrix: torch.Tensor, flat_indices: torch.Tensor) -> torch.Tensor:
    """(..., d, d) symmetric matrices -> (..., d(d+1)/2) upper-triangle vectors."""
    if matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"expected square matrices (..., d, d), got {tuple(matrix.shape)}")
    return matrix.flatten(-2).index_select(-1, flat_indices)
