"""Brownian distance covariance (BDC): pure tensor math, no model code.

For a token set X of M tokens with d channels (channel k is the column x_k):
    D[k, l] = sqrt(max(0, |x_k|^2 + |x_l|^2 - 2 x_k . x_l) / (2M) + eps)
    BDC     = D - rowmean(D) - colmean(D) + mean(D)
"""

from __future__ import annotations

import torch


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
    with torch.autocast(device_type=tokens.device.type, enabled=False):
        x = tokens.to(_compute_dtype(tokens.dtype))
        if mask is None:
            count = torch.full(x.shape[:-2], x.shape[-2], dtype=x.dtype, device=x.device)
        else:
            keep = mask.to(x.dtype)
            x = x * keep.unsqueeze(-1)  # masked tokens add nothing to norms or products
            count = keep.sum(-1).clamp_min(1.0)
        gram = x.transpose(-1, -2) @ x  # (..., d, d)
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
