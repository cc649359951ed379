"""What the model hands to the loss and to evaluation: first- and second-order features,
and the `Encoder` protocol evaluation relies on."""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import torch


class Features(NamedTuple):
    """First-order (pooled token) and second-order (MBDC) features, each (B, D), L2-normalised."""

    first: torch.Tensor
    second: torch.Tensor | None


class Encoder(Protocol):
    """What evaluation needs from a model: `DALIPModel`, or a plain open_clip model wrapped by
    `dalip.inference.specs.OpenCLIPModel` (first order only, `has_second_order` False)."""

    has_second_order: bool
    default_mode: str  # the similarity mode a caller that names none gets

    def encode_image(self, images: torch.Tensor, second_order: bool = True) -> Features:
        """images (B, 3, H, W) -> Features; second is None when `second_order` is False."""
        ...

    def encode_text(self, texts: torch.Tensor, second_order: bool = True) -> Features:
        """texts (B, L) token ids -> Features."""
        ...

    def similarity(self, image: Features, text: Features, mode: str | None = None) -> torch.Tensor:
        """(N_image, N_text) scores in the given mode (fused, first, second; None: default_mode)."""
        ...


def concat_features(parts: list[Features]) -> Features:
    """Features of several batches stacked along the batch dimension, (sum of B, D)."""
    first = torch.cat([p.first for p in parts])
    second = None if parts[0].second is None else torch.cat([p.second for p in parts])
    return Features(first, second)


def fuse(first: torch.Tensor, second: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B, D) and (B, D2) unit rows -> (B, D + D2) unit rows whose dot products are
    `alpha * cos(first) + (1 - alpha) * cos(second)`."""
    return torch.cat([math.sqrt(alpha) * first, math.sqrt(1.0 - alpha) * second], dim=-1)
