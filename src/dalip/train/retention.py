"""What a run adds to its loss to keep what the start model knew: L2-SP, a pull of the towers'
trainable weights toward their start values (Li et al. 2018), and distillation to the frozen
start model on each batch (as LwF / ZSCL: its image-text similarity distributions are soft
targets for the tuned model's first-order ones). LoRA, the third retention option, changes
the model instead (`dalip.model.lora`)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from dalip.config import TrainConfig
from dalip.model.dalip_model import DALIPModel
from dalip.model.features import Features
from dalip.train.locks import NOT_TOWERS


class Retention:
    """The retention terms of a run (`l2sp`, `distill`), built before any step so that the
    start weights are those of `model.pretrained`. `active` is False when both are off."""

    def __init__(self, model: DALIPModel, config: TrainConfig, clip_loss: ClipLoss) -> None:
        self.model, self.clip_loss = model, clip_loss
        self.l2sp, self.distill = config.l2sp.coefficient, config.distill.coefficient
        self.temperature = config.distill.temperature
        self.start: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        self.teacher: DALIPModel | None = None
        self.active = self.l2sp > 0 or self.distill > 0

    def start_here(self) -> None:
        """Take the start weights and the teacher from the model as it is now (call after
        loading `model.pretrained`, after LoRA is added for L2-SP, before any step)."""
        if self.l2sp > 0:
            self.start = [
                (parameter, parameter.detach().clone())
                for name, parameter in self.model.named_parameters()
                if parameter.requires_grad and name.startswith("clip.") and name not in NOT_TOWERS
            ]

    def freeze_teacher(self) -> None:
        """Keep a frozen copy of the model as the distillation teacher (call before LoRA)."""
        if self.distill > 0:
            self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)

    def teacher_features(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[Features, Features] | None:
        """The teacher's first-order features of a batch (no gradient), or None without distill."""
        if self.teacher is None:
            return None
        with torch.no_grad():
            return (
                self.teacher.encode_image(images, second_order=False),
                self.teacher.encode_text(texts, second_order=False),
            )

    def add_to(
        self,
        losses: dict[str, torch.Tensor],
        image: Features,
        text: Features,
        teacher: tuple[Features, Features] | None,
        penalty: bool = True,
    ) -> dict[str, torch.Tensor]:
        """`losses` with the terms added to "loss" and each logged on its own ("l2sp_loss",
        "distill_loss", unweighted); `penalty` False leaves L2-SP out (it does not depend on
        the batch: with accumulation it is added on one micro-batch only)."""
        total = losses["loss"]
        if self.distill > 0 and teacher is not None:
            distill = self.distillation(image, text, *teacher)
            total = total + self.distill * distill
            losses = {**losses, "distill_loss": distill}
        if self.l2sp > 0 and penalty:  # a step's other micro-batches skip it: nothing is added there
            squares = (
                sum(((p - p0) ** 2).sum() for p, p0 in self.start) if self.start else total.new_zeros(())
            )
            total = total + 0.5 * self.l2sp * squares
            losses = {**losses, "l2sp_loss": squares}
        return {**losses, "loss": total}

    def distillation(
        self, image: Features, text: Features, teacher_image: Features, teacher_text: Features
    ) -> torch.Tensor:
        """KL(teacher || student) of the image->text and text->image similarity distributions
        over the batch (gathered across ranks as the contrastive loss gathers them), at the
        teacher's temperature divided by `temperature`, times temperature^2 (Hinton et al.)."""
        assert self.teacher is not None
        scale = self.teacher.clip.logit_scale.exp() / self.temperature
        student = self.clip_loss.get_logits(image.first, text.first, scale)
        target = self.clip_loss.get_logits(teacher_image.first, teacher_text.first, scale)
        terms = [
            F.kl_div(
                F.log_softmax(s.float(), -1),
                F.log_softmax(t.float(), -1),
                log_target=True,
                reduction="batchmean",
            )
            for s, t in zip(student, target)
        ]
        return (terms[0] + terms[1]) / 2 * self.temperature**2
