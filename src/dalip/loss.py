"""DALIPLoss: contrastive losses on first- and second-order features, in CLIP's softmax form
or SigLIP's sigmoid form.

Built on open_clip's ClipLoss, which also gathers features across ranks (`local_loss`,
`gather_with_grad`), and on its SigLipLoss, which exchanges text features with the other ranks
so every image meets every rank's texts as negatives: alpha = 1 is exactly OpenCLIP's CLIP loss,
or its SigLIP loss.
"""

from __future__ import annotations

import typing

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss
from torch import nn

from dalip.config import DEFAULT_ALPHA, CombineMode, LossForm
from dalip.model.features import Features

COMBINE_MODES = typing.get_args(CombineMode)
LOSS_FORMS = typing.get_args(LossForm)


class DALIPLoss(nn.Module):
    """L = alpha * C(first) + (1 - alpha) * C(second), C the contrastive loss of `form`.

    form="softmax": C is InfoNCE (open_clip's ClipLoss); form="sigmoid": C is SigLIP's pairwise
    sigmoid loss (open_clip's SigLipLoss) with a learned logit bias per order.

    combine="losses" (default, the reference code) adds the two contrastive losses;
    combine="similarity" (the paper's figure) uses one contrastive loss over the fused
    logits alpha * logits(first) + (1 - alpha) * logits(second) (sigmoid: each order's
    scale * cos + bias, so the fused bias is alpha * b1 + (1 - alpha) * b2).

    Args:
        alpha: weight of the first-order term, in [0, 1].
        combine: "losses" or "similarity".
        local_loss: as open_clip's ClipLoss.
        gather_with_grad: as open_clip's ClipLoss.
        cache_labels: as open_clip's ClipLoss.
        rank: this process's rank.
        world_size: ranks; above 1 both feature kinds are gathered across ranks (the sigmoid
            form exchanges text features between neighbouring ranks, as SigLipLoss).
        form: "softmax" or "sigmoid".
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
        form: LossForm = "softmax",
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"loss alpha must be in [0, 1], got {alpha}")
        if combine not in COMBINE_MODES:
            raise ValueError(f"loss combine must be one of {COMBINE_MODES}, got {combine!r}")
        if form not in LOSS_FORMS:
            raise ValueError(f"loss form must be one of {LOSS_FORMS}, got {form!r}")
        self.alpha = float(alpha)
        self.combine = combine
        self.form = form
        # The sigmoid form's own loss; ClipLoss serves the softmax form and gathers features
        # for distillation in either form.
        self.sigmoid_loss = (
            SigLipLoss(cache_labels=cache_labels, rank=rank, world_size=world_size)
            if form == "sigmoid"
            else None
        )
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
        logit_bias: torch.Tensor | None = None,
        logit_bias_second: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """image, text: Features with (B, D) tensors; logit_scale: exp'd temperature (scalar).

        logit_scale_second: optional separate temperature for the second-order branch.
        logit_bias, logit_bias_second: the sigmoid form's biases (first, second order).
        Returns {"loss", "first_order_loss", "second_order_loss"}; in "similarity" mode the
        branch losses are diagnostics without gradient.
        """
        scale_second = logit_scale if logit_scale_second is None else logit_scale_second
        if self.form == "sigmoid":
            return self._sigmoid(image, text, logit_scale, scale_second, logit_bias, logit_bias_second)
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

    def _sigmoid(
        self,
        image: Features,
        text: Features,
        scale: torch.Tensor,
        scale_second: torch.Tensor,
        bias: torch.Tensor | None,
        bias_second: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        if bias is None:
            raise ValueError(
                "the sigmoid loss needs the model's logit bias (a model built with loss_form sigmoid)"
            )
        loss = self.sigmoid_loss
        first = loss(image.first, text.first, scale, bias)
        if image.second is None or text.second is None:
            if self.alpha < 1.0:
                raise ValueError("DALIPLoss with alpha < 1 needs second-order features")
            return {"loss": first, "first_order_loss": first, "second_order_loss": torch.zeros_like(first)}
        bias_second = bias if bias_second is None else bias_second
        if self.combine == "losses":
            second = loss(image.second, text.second, scale_second, bias_second)
            total = first if self.alpha == 1.0 else self.alpha * first + (1.0 - self.alpha) * second
            return {"loss": total, "first_order_loss": first, "second_order_loss": second}
        # Fused logits alpha (s1 cos1 + b1) + (1 - alpha)(s2 cos2 + b2) are the dot products of
        # [sqrt(alpha s1) first, sqrt((1 - alpha) s2) second] plus one bias: one SigLipLoss (and
        # one exchange of text features between ranks) over the joined features.
        weight_first, weight_second = (self.alpha * scale).sqrt(), ((1.0 - self.alpha) * scale_second).sqrt()
        joined_image = torch.cat([weight_first * image.first, weight_second * image.second], dim=-1)
        joined_text = torch.cat([weight_first * text.first, weight_second * text.second], dim=-1)
        fused_bias = self.alpha * bias + (1.0 - self.alpha) * bias_second
        total = loss(joined_image, joined_text, torch.ones_like(scale), fused_bias)
        with torch.no_grad():
            second = loss(image.second, text.second, scale_second, bias_second)
        return {"loss": total, "first_order_loss": first.detach(), "second_order_loss": second}
