"""One optimiser step as every caller takes it (the Trainer, `benchmarks/bench_step.py`, the
tests): `OptimizerStep.step` reads top to bottom, from the micro-batches' forward and backward
through the update (unscale, clip, step or skip) to the schedule and the temperature clamp.

The step never waits for the device. Whether the loss and the gradient norm were finite is a
device flag, agreed across ranks with one all_reduce; fused AdamW takes it as `found_inf` and
skips the update inside its kernel (as it does for a grad scaler), and `NonFiniteSteps` counts
skipped steps on the device. The loop reads losses and counts on log steps only. The one
exception is `optim.fused: false`: torch's for-each AdamW cannot skip on the device, so the
flag is read once per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dalip.config import TrainConfig
from dalip.model.features import concat_features
from dalip.train.locks import tower_parameters
from dalip.train.optim import create_optimizer, create_scheduler
from dalip.train.task import TrainingTask

MicroBatches = Sequence[tuple[torch.Tensor, torch.Tensor]]  # [(images (b, 3, H, W), texts (b, L))]


@dataclass
class StepResult:
    """What a step leaves on the device: the loss terms (detached scalars; over the whole
    batch, however it was split) and whether the weights were updated (a () bool tensor)."""

    losses: dict[str, torch.Tensor]
    updated: torch.Tensor


def step_unless_skipped(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """`optimizer.step()` when `finite` (a () bool device tensor) is true. A fused optimizer
    takes the flag as `found_inf`, the contract torch's GradScaler uses, and leaves weights,
    moments and step counts alone on the device; any other reads it on the host."""
    if optimizer.defaults.get("fused"):
        optimizer.grad_scale, optimizer.found_inf = None, (~finite).to(torch.float32)
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
    elif finite.item():  # the one host sync of a step with optim.fused: false
        optimizer.step()


class OptimizerStep:
    """A run's optimiser step: AdamW over the run's parameter groups, its schedule and the grad
    scaler (amp), driving a `TrainingTask`. `step(micro, index)` takes optimiser step `index`
    (0-based: the head warm-up holds the towers while `index < optim.head_warmup_steps`)."""

    def __init__(
        self, task: TrainingTask, config: TrainConfig, total_steps: int, distributed: bool = False
    ) -> None:
        self.task, self.config, self.distributed = task, config, distributed
        device_type = task.model.clip.logit_scale.device.type
        self.optimizer = create_optimizer(task.model, config.optim)
        self.scheduler = create_scheduler(self.optimizer, config.optim, total_steps)
        self.scaler = torch.amp.GradScaler(device_type, enabled=config.precision == "amp")
        self.towers = tower_parameters(task.model)

    def step(self, micro: MicroBatches, index: int) -> StepResult:
        """Optimiser step `index` (0-based) over one batch split into micro-batches, top to bottom:
        gradients of the whole batch (accumulation, no_sync, forward, losses, backward), the update
        (unscale, head warm-up, clip, step unless not finite on some rank), schedule and clamp."""
        task, optimizer, scaler, optim = self.task, self.optimizer, self.scaler, self.config.optim
        # 1. The gradient of the loss over the whole local batch, however it is split. With
        #    accumulation (as OpenCLIP) every micro-batch's features are first computed without
        #    gradients; each micro-batch is then recomputed with gradients and its loss taken
        #    against the others' cached features. Under DDP every backward but the last runs inside
        #    no_sync(), so gradients are all-reduced once per step.
        cached, teacher = features_without_grad(task, micro) if len(micro) > 1 else (None, None)
        for position, (images, texts) in enumerate(micro):
            last = position == len(micro) - 1
            sync = contextlib.nullcontext() if last or not self.distributed else task.forward_module.no_sync()
            with sync:  # the backward too: DDP reduces gradients only after the last micro-batch
                with task.autocast():
                    output = task.encode(images, texts)
                    if cached is None:  # the whole batch at once
                        losses = task.losses(output, teacher=task.teacher_features(images, texts))
                    else:
                        parts = [output if i == position else c for i, c in enumerate(cached)]
                        image = concat_features([p["image_features"] for p in parts])
                        text = concat_features([p["text_features"] for p in parts])
                        # temperatures and biases are in every micro-step: count their gradient once
                        if not last:
                            output |= {k: v.detach() for k, v in output.items() if k.startswith("logit_")}
                        losses = task.losses(output, image, text, teacher, penalty=last)
                scaler.scale(losses["loss"]).backward()  # outside autocast, as torch's amp recipe
        # 2. The update. During the head warm-up the towers lose their gradients before clipping:
        #    AdamW neither moves nor decays them. The step is skipped, on the device, when the loss
        #    or the gradient norm is not finite on any rank; the scaler (amp) backs off then.
        if scaler.is_enabled():
            scaler.unscale_(optimizer)
        if index < optim.head_warmup_steps:
            for parameter in self.towers:
                parameter.grad = None
        parameters = [p for p in task.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(parameters, optim.grad_clip or float("inf"))
        finite = torch.isfinite(losses["loss"].detach()) & torch.isfinite(norm)
        if self.distributed:  # every rank steps or none does; queued on the device, nobody waits
            agreed = finite.to(torch.int32)
            dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
            finite = agreed.bool()
        step_unless_skipped(optimizer, finite)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        # 3. The learning-rate schedule, and every temperature back within OpenCLIP's bound.
        self.scheduler.step()
        task.clamp_temperatures()
        return StepResult({name: value.detach() for name, value in losses.items()}, finite)

    __call__ = step


def features_without_grad(task: TrainingTask, micro: MicroBatches) -> tuple[list[dict], tuple | None]:
    """Accumulation's first pass: every micro-batch's features without gradients, and the
    distillation teacher's features of the whole batch (None without `distill`)."""
    with torch.no_grad(), task.autocast():
        cached = [task.encode(images, texts) for images, texts in micro]
        teachers = [task.teacher_features(images, texts) for images, texts in micro]
    if teachers[0] is None:
        return cached, None
    return cached, (concat_features([t[0] for t in teachers]), concat_features([t[1] for t in teachers]))
