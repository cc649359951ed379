"""DALIPLoss: contrastive losses on first- and second-order features.

Built on open_clip's ClipLoss, which also gathers features across ranks
(`local_loss`, `gather_with_grad`), so alpha = 1 is exactly OpenCLIP's CLIP loss.
"""

from __future__ import annotations

import typing

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch import nn

from dalip.config import DEFAULT_ALPHA, CombineMode
from dalip.model.features import Features

COMBINE_MODES = typing.get_args(CombineMode)


class DALIPLoss(nn.Module):
    """L = alpha * InfoNCE(first) + (1 - alpha) * InfoNCE(second).

    combine="losses" (default, the reference code) adds the two contrastive losses;
    combine="similarity" (the paper's figure) uses one contrastive loss over the fused
    similarity alpha * Sim(first) + (1 - alpha) * Sim(second).

    Args:
        alpha: weight of the first-order term, in [0, 1].
        combine: "losses" or "similarity".
        local_loss, gather_with_grad, cache_labels, rank, world_size: as open_clip's
            ClipLoss; with world_size > 1 both feature kinds are gathered across ranks.
    """

    def __init__(
        self,
        alpha: float = DEFAULT_ALPHA,
        combine: CombineMode = "losses",
        local_loss: bool = False,
        gather_with_grad: bool = False,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"loss alpha must be in [0, 1], got {alpha}")
        if combine not in COMBINE_MODES:
            raise ValueError(f"loss combine must be one of {COMBINE_MODES}, got {combine!r}")
        self.alpha = float(alpha)
        self.combine = combine
        self.clip_loss = ClipLoss(
            local_loss=local_loss,
            gather_with_grad=gather_with_grad,
            cache_labels=cache_labels,
            rank=rank,
            world_size=world_size,
        )

    def forward(
        self,
        image: Features,
        text: Features,
        logit_scale: torch.Tensor,
        logit_scale_second: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """image, text: Features with (B, D) tensors; logit_scale: exp'd temperature (scalar).

        logit_scale_second: optional separate temperature for the second-order branch.
        Returns {"loss", "first_order_loss", "second_order_loss"}; in "similarity" mode the
        branch losses are diagnostics without gradient.
        """
        scale_second = logit_scale if logit_scale_second is None else logit_scale_second
        first = self.clip_loss(image.first, text.first, logit_scale)
        if image.second is None or text.second is None:
            if self.alpha < 1.0:
                raise ValueError("DALIPLoss with alpha < 1 needs second-order features")
            return {"loss": first, "first_order_loss": first, "second_order_loss": torch.zeros_like(first)}
        if self.combine == "losses":
            second = self.clip_loss(image.second, text.second, scale_second)
            total = first if self.alpha == 1.0 else self.alpha * first + (1.0 - self.alpha) * second
            return {"loss": total, "first_order_loss": first, "second_order_loss": second}
        return self._fused_similarity_loss(image, text, logit_scale, scale_second, first)

    def _fused_similarity_loss(
        self,
        image: Features,
        text: Features,
        logit_scale: torch.Tensor,
        scale_second: torch.Tensor,
        first: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        # Logits are linear in the scale, so the fused logits are the sum of each kind's
        # logits at a scaled temperature; get_logits gathers across ranks for us.
        image_first, text_first = self.clip_loss.get_logits(image.first, text.first, logit_scale * self.alpha)
        image_second, text_second = self.clip_loss.get_logits(
            image.second, text.second, scale_second * (1.0 - self.alpha)
        )
        logits_image, logits_text = image_first + image_second, text_first + text_second
        labels = self.clip_loss.get_ground_truth(logits_image.device, logits_image.shape[0])
        total = (F.cross_entropy(logits_image, labels) + F.cross_entropy(logits_text, labels)) / 2
        with torch.no_grad():
            second = self.clip_loss(image.second, text.second, scale_second)
        return {"loss": total, "first_order_loss": first.detach(), "second_order_loss": second}
