"""What the model hands to the loss and to evaluation: first- and second-order features."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Features(NamedTuple):
    """First-order (pooled token) and second-order (MBDC) features, each (B, D), L2-normalised."""

    first: torch.Tensor
    second: torch.Tensor | None
