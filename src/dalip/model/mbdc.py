"""Multi-head Brownian Distance Covariance (MBDC): the second-order feature of a token set."""

from __future__ import annotations

from typing import Any, get_args

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dalip.config import PAPER_MBDC, DropoutKind, Weighting
from dalip.model.bdc import brownian_distance_covariance, upper_triangle_indices, vectorize_upper_triangle

_COSINE_EPS = 1e-8  # F.cosine_similarity's default
WEIGHTINGS = get_args(Weighting)
DROPOUT_KINDS = get_args(DropoutKind)


class MBDC(nn.Module):
    """Second-order representation of a token set, as in DALIP.

    Steps (DESIGN.md "The method, precisely"): a linear map on the tokens; per head,
    tokens weighted by a softmax over tokens of their cosine with the summary token;
    a channel reduction shared by all heads and dropout; BDC over the tokens of each
    head, upper-triangle vectorised and concatenated; LayerNorm, two linear maps; L2
    normalisation.

    Where the token weights meet the reduction (`weighting`):
        "after_norm": reduce with linear, LayerNorm, ReLU, then scale each token;
        "batchnorm": the authors' image branch: weighted tokens through a linear map
            without bias, BatchNorm over batch x tokens (real tokens only), ReLU;
        "none": uniform weights (no summary attention), reduction as "after_norm";
        "before_norm": dalip 0.1: weights applied before the reduction's per-token
            LayerNorm, which divides them out (kept so old checkpoints keep their meaning).

    All heads go through one batched pass; any token count works.

    Args:
        dim: token width (the CLIP embedding dimension).
        heads: number of heads; must divide `dim`.
        reduced_dim: channels per head after reduction (r); the BDC vector of a head
            has r(r+1)/2 values.
        out_dim: output width (default `dim`).
        dropout: dropout rate after the reduction.
        dropout_kind: "element" (single values) or "channel" (whole reduced channels of
            a sample's head, as the authors' Dropout2d).
        weighting: see above.
        in_dim: token width when it differs from `dim` (a tower whose tokens have no projection
            into the embedding, e.g. a ResNet's 2048 channels): a learned input projection
            `in_dim -> dim` runs first; the summary is `dim` wide either way.
        learnable_temperature: scale squared distances by a learned factor (DeepBDC),
            initialised so the scale starts at the fixed 1/(2M).
        eps: BDC's epsilon under the square root.
    """

    def __init__(
        self,
        dim: int,
        heads: int = PAPER_MBDC.heads,
        reduced_dim: int = PAPER_MBDC.reduced_dim,
        out_dim: int | None = None,
        dropout: float = PAPER_MBDC.dropout,
        learnable_temperature: bool = PAPER_MBDC.learnable_temperature,
        eps: float = 1e-5,
        dropout_kind: DropoutKind = PAPER_MBDC.dropout_kind,
        weighting: Weighting = PAPER_MBDC.weighting,
        in_dim: int | None = None,
    ) -> None:
        super().__init__()
        if heads < 1 or dim % heads != 0:
            raise ValueError(f"MBDC heads must divide the width: dim={dim}, heads={heads}")
        if reduced_dim < 1:
            raise ValueError(f"MBDC reduced_dim must be >= 1, got {reduced_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MBDC dropout must be in [0, 1), got {dropout}")
        if dropout_kind not in DROPOUT_KINDS:
            raise ValueError(f"MBDC dropout_kind must be one of {list(DROPOUT_KINDS)}, got {dropout_kind!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"MBDC weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")
        self.weighting = weighting
        self.dropout_kind = dropout_kind
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.reduced_dim = reduced_dim
        self.out_dim = out_dim or dim
        self.in_dim = in_dim or dim
        self.eps = eps
        self.vector_dim = heads * reduced_dim * (reduced_dim + 1) // 2

        self.input_proj = nn.Linear(self.in_dim, dim) if self.in_dim != dim else None
        self.token_proj = nn.Linear(dim, dim)
        if weighting == "batchnorm":
            norm: nn.Module = nn.BatchNorm1d(reduced_dim)
            self.reduce = nn.Sequential(nn.Linear(self.head_dim, reduced_dim, bias=False), norm, nn.ReLU())
        else:
            self.reduce = nn.Sequential(
                nn.Linear(self.head_dim, reduced_dim), nn.LayerNorm(reduced_dim), nn.ReLU()
            )
        self.dropout = nn.Dropout(dropout) if dropout_kind == "element" else nn.Dropout1d(dropout)
        self.norm = nn.LayerNorm(self.vector_dim)
        self.mix = nn.Linear(self.vector_dim, self.vector_dim)
        self.out_proj = nn.Linear(self.vector_dim, self.out_dim)
        self.log_temperature = nn.Parameter(torch.zeros(())) if learnable_temperature else None
        self.register_buffer("triu_indices", upper_triangle_indices(reduced_dim), persistent=False)

    def forward(
        self,
        tokens: torch.Tensor,
        summary: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args: tokens (B, M, in_dim); summary (B, dim); mask (B, M) bool, True = real token.

        Returns: (B, out_dim), L2-normalised.
        """
        self._check_inputs(tokens, summary, mask)
        batch, count, _ = tokens.shape
        if self.input_proj is not None:
            tokens = self.input_proj(tokens)  # (B, M, dim)
        # Heads stay in the last dimensions, (B, M, H, c), so element-wise work runs on
        # contiguous memory. The cosine is a dot product with the unit summary over each
        # token's norm: F.cosine_similarity would normalise a copy of every token, which
        # dominated forward + backward time.
        x = self.token_proj(tokens).view(batch, count, self.heads, self.head_dim)  # (B, M, H, c)
        s = self.token_proj(summary).view(batch, self.heads, self.head_dim)  # (B, H, c)
        s = F.normalize(s, dim=-1, eps=_COSINE_EPS)
        dot = (x * s[:, None]).sum(-1)  # (B, M, H)
        cosine = dot / x.norm(dim=-1).clamp_min(_COSINE_EPS)  # (B, M, H), as F.cosine_similarity
        head_mask = None
        if mask is not None:
            head_mask = mask[:, None, :].expand(batch, self.heads, count)  # (B, H, M)
        x = self._reduce(x, self._token_weights(cosine, mask), mask).transpose(1, 2)  # (B, H, M, r)
        temperature = None if self.log_temperature is None else self.log_temperature.exp()
        bdc = brownian_distance_covariance(x, head_mask, self.eps, temperature)  # (B, H, r, r)
        vector = vectorize_upper_triangle(bdc, self.triu_indices)  # (B, H, r(r+1)/2)
        vector = vector.flatten(1)  # (B, H * r(r+1)/2)
        if vector.device.type == "meta" or not torch.is_autocast_enabled(vector.device.type):
            vector = vector.to(self.norm.weight.dtype)  # BDC ran in float32; match the weights
        vector = self.out_proj(self.mix(self.norm(vector)))  # (B, out_dim)
        return F.normalize(vector, dim=-1)

    def _token_weights(self, cosine: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, M, H) softmax-over-tokens weights scaled to average 1 over the real tokens,
        so the reduction's bias and BDC's eps do not swamp tokens shrunk by 1/M."""
        if mask is not None:
            cosine = cosine.masked_fill(~mask[:, :, None], float("-inf"))
            real = mask.sum(-1).clamp_min(1).to(cosine.dtype)[:, None, None]  # (B, 1, 1)
        else:
            real = cosine.shape[1]
        if self.weighting == "none":
            return (
                torch.ones_like(cosine)
                if mask is None
                else mask[:, :, None].expand_as(cosine).to(cosine.dtype)
            )
        return torch.softmax(cosine, dim=1) * real

    def _reduce(self, x: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, M, H, c) tokens and (B, M, H) weights -> (B, M, H, r) reduced, weighted, dropped out."""
        linear, norm, activation = self.reduce
        weights = weights.unsqueeze(-1)  # (B, M, H, 1)
        if self.weighting == "before_norm":
            # A token's weight is a scalar, so it is applied after the linear map, on r
            # channels instead of c (same values as weighting the input, less work).
            x = activation(norm(F.linear(x, linear.weight) * weights + linear.bias))
        elif self.weighting == "batchnorm":
            x = activation(self._batch_norm(linear(x) * weights, mask))
        else:
            x = activation(norm(linear(x))) * weights
        if self.dropout_kind == "channel":  # whole channels of a sample's head: (B*H, r, M)
            batch, count, heads, reduced = x.shape
            dropped = self.dropout(x.permute(0, 2, 3, 1).reshape(batch * heads, reduced, count))
            return dropped.view(batch, heads, reduced, count).permute(0, 3, 1, 2)
        return self.dropout(x)

    def _batch_norm(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """BatchNorm over batch x tokens x heads per reduced channel; padding tokens take
        no part in the statistics (and stay zero). See `masked_batch_norm`."""
        return masked_batch_norm(x, self.reduce[1], mask)

    def _check_inputs(self, tokens: torch.Tensor, summary: torch.Tensor, mask: torch.Tensor | None) -> None:
        if tokens.dim() != 3 or tokens.shape[-1] != self.in_dim:
            raise ValueError(f"MBDC tokens must have shape (B, M, {self.in_dim}), got {tuple(tokens.shape)}")
        if summary.shape != (tokens.shape[0], self.dim):
            raise ValueError(
                f"MBDC summary must have shape ({tokens.shape[0]}, {self.dim}), got {tuple(summary.shape)}"
            )
        if mask is not None and (mask.shape != tokens.shape[:2] or mask.dtype != torch.bool):
            raise ValueError(
                f"MBDC mask must be a bool tensor of shape {tuple(tokens.shape[:2])}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, in_dim={self.in_dim}, heads={self.heads}, reduced_dim={self.reduced_dim}, "
            f"vector_dim={self.vector_dim}, out_dim={self.out_dim}, weighting={self.weighting}, "
            f"dropout_kind={self.dropout_kind}"
        )


def masked_batch_norm(
    x: torch.Tensor, norm: nn.BatchNorm1d, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """BatchNorm of x (B, M, H, r) per channel r, over the real tokens of all heads, with `norm`'s
    parameters and running statistics; padding tokens (mask (B, M) False) take no part and stay
    zero. The same as `norm` applied to the real tokens only, without boolean indexing (no host
    sync; any graph compiles). In training under torch.distributed the statistics are those of
    the global batch, on any backend, as SyncBatchNorm's (the reduction is differentiable).
    Statistics and output are at least float32 (BatchNorm's precision under autocast)."""
    values = x.to(torch.promote_types(x.dtype, torch.float32))
    keep = None if mask is None else mask[:, :, None, None].to(values.dtype)  # (B, M, 1, 1)
    if norm.training or not norm.track_running_stats:
        kept = values if keep is None else values * keep
        count = values[..., 0].numel() if keep is None else keep.sum() * x.shape[2]  # real tokens x heads
        sums = _global_sum(
            torch.cat(
                [kept.sum((0, 1, 2)), torch.as_tensor(count, device=x.device, dtype=values.dtype).view(1)]
            )
        )
        count = sums[-1]
        mean = sums[:-1] / count  # (r,)
        squares = (values - mean) ** 2
        variance = _global_sum((squares if keep is None else squares * keep).sum((0, 1, 2))) / count  # biased
        if norm.training and norm.track_running_stats:
            _update_running_stats(norm, mean.detach(), variance.detach(), count.detach())
    else:
        mean, variance = norm.running_mean, norm.running_var
    out = (values - mean) * torch.rsqrt(variance + norm.eps)
    if norm.affine:
        out = out * norm.weight + norm.bias
    return out if keep is None else out * keep


def _global_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (differentiable) when torch.distributed runs several; else `values`."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _SumOverRanks.apply(values)
    return values


class _SumOverRanks(torch.autograd.Function):
    """y = sum of x over ranks; every rank's loss depends on y, so x's gradient is the sum of
    y's gradients over ranks (torch.distributed.nn's all_reduce, which torch 2.14 deprecates)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


@torch.no_grad()
def _update_running_stats(
    norm: nn.BatchNorm1d, mean: torch.Tensor, variance: torch.Tensor, count: torch.Tensor
) -> None:
    """As nn.BatchNorm1d: momentum average (cumulative when momentum is None) of the batch mean
    and of the unbiased batch variance."""
    norm.num_batches_tracked.add_(1)
    momentum = norm.momentum
    factor = 1.0 / norm.num_batches_tracked if momentum is None else momentum
    unbiased = variance * count / (count - 1).clamp_min(1)
    norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), factor)
    norm.running_var.lerp_(unbiased.to(norm.running_var.dtype), factor)
