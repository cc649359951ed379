"""One optimiser step as every caller takes it (the Trainer, `benchmarks/bench_step.py`, the
tests): forward and backward over the micro-batches, then the update (unscale, clip, step or
skip), the schedule and the temperature clamp.

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


def forward_backward(
    task: TrainingTask, scaler: torch.amp.GradScaler, micro: MicroBatches, distributed: bool = False
) -> dict[str, torch.Tensor]:
    """Gradients of the loss over the whole local batch, however it is split.

    With accumulation, features of every micro-batch are first computed without gradients;
    each micro-batch is then recomputed with gradients and the loss taken over all of them
    (as OpenCLIP), so the gradient is that of the full batch. Under DDP every micro-batch but
    the last runs, forward and backward, inside its own `no_sync()` (a context manager is
    entered once), so gradients are all-reduced once per step.
    """
    if len(micro) == 1:
        images, texts = micro[0]
        with task.autocast():
            losses = task(images, texts)
        scaler.scale(losses["loss"]).backward()
        return losses
    with torch.no_grad(), task.autocast():
        cached = [task.encode(images, texts) for images, texts in micro]
        teachers = [task.teacher_features(images, texts) for images, texts in micro]
    teacher = None
    if teachers[0] is not None:  # distillation: the start model's features of the whole batch
        teacher = (concat_features([t[0] for t in teachers]), concat_features([t[1] for t in teachers]))
    for index, (images, texts) in enumerate(micro):
        last = index == len(micro) - 1
        with contextlib.nullcontext() if last or not distributed else task.forward_module.no_sync():
            with task.autocast():
                output = task.encode(images, texts)
                parts = [output if i == index else c for i, c in enumerate(cached)]
                image = concat_features([p["image_features"] for p in parts])
                text = concat_features([p["text_features"] for p in parts])
                if not last:  # every micro-step sees the temperatures and biases; count their gradient once
                    output = {k: v.detach() if k.startswith("logit_") else v for k, v in output.items()}
                losses = task.losses(output, image, text, teacher, penalty=last)
            scaler.scale(losses["loss"]).backward()
    return losses


def apply_gradients(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    grad_clip: float | None,
    loss: torch.Tensor,
    held: Sequence[torch.nn.Parameter] = (),
    distributed: bool = False,
) -> torch.Tensor:
    """The update after backward: unscale, clip the gradient norm, step unless the loss or the
    norm is not finite on any rank; the scaler is updated and the gradients cleared either way.
    Returns whether the weights changed, as a () bool tensor on the device.

    `held` parameters lose their gradients before clipping, so this step leaves them exactly as
    they are. Under amp the scaler also backs off when the gradients overflowed.
    """
    if scaler.is_enabled():
        scaler.unscale_(optimizer)
    for parameter in held:
        parameter.grad = None
    parameters = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip or float("inf"))
    finite = torch.isfinite(loss.detach()) & torch.isfinite(norm)
    if distributed:
        agreed = finite.to(torch.int32)
        dist.all_reduce(agreed, op=dist.ReduceOp.MIN)  # queued on the device; nobody waits
        finite = agreed.bool()
    step_unless_skipped(optimizer, finite)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return finite


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
        losses = forward_backward(self.task, self.scaler, micro, self.distributed)
        optim = self.config.optim
        # During the head warm-up the towers get no gradient: AdamW neither moves nor decays them.
        held = self.towers if index < optim.head_warmup_steps else ()
        updated = apply_gradients(
            self.task.model,
            self.optimizer,
            self.scaler,
            optim.grad_clip,
            losses["loss"],
            held=held,
            distributed=self.distributed,
        )
        self.scheduler.step()
        self.task.clamp_temperatures()
        return StepResult({name: value.detach() for name, value in losses.items()}, updated)

    __call__ = step
