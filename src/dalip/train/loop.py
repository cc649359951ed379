"""The training loop: `train(config, resume=None)`.

One process or many under torchrun (DDP); the global batch (`batch_size`) and the
schedule do not depend on how the work is split. Rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import yaml
from tqdm import tqdm

from dalip.config import TrainConfig, config_to_dict
from dalip.data import MixedDataset, build_loader, build_train_dataset
from dalip.model.features import concat_features
from dalip.model.file_format import save_model
from dalip.train.distributed import (
    DistributedContext, context_from_environment, init_distributed, micro_batch_size, shutdown_distributed,
)
from dalip.train.locks import tower_parameters
from dalip.train.optim import apply_gradients, create_optimizer, create_scheduler
from dalip.train.run_log import RunLog
from dalip.train.state import (
    Position, StopSignals, all_ranks_agree, load_training_state, prune_training_checkpoints, resolve_resume,
    restore_training_state, save_training_state, seed_everything, training_checkpoints, training_state,
)
from dalip.train.task import TrainingTask

logger = logging.getLogger(__name__)
# Called on rank 0 every `eval_every` steps when `data.val` is set, as
# validate(task, batch_size) -> results for the run log; without one, nothing is evaluated
# (`dalip train` passes `dalip.evaluation.zero_shot.training_validation(config)`).
Validate = Callable[[TrainingTask, int], dict[str, Any]]


class NonFiniteLossError(RuntimeError):
    """Raised when the loss stays non-finite for `max_nonfinite` steps in a row."""


def build_data(config: TrainConfig, task: TrainingTask, context: DistributedContext) -> MixedDataset:
    """This rank's share of the run's weighted source mix, in the task's input format."""
    transform = task.preprocess_train if config.data.augment else task.preprocess_val
    return build_train_dataset(
        config.data.sources, transform, task.tokenizer, seed=config.seed,
        rank=context.rank, world_size=context.world_size, num_samples=config.data.num_samples,
    )


def train(config: TrainConfig, resume: str | None = None, validate: Validate | None = None) -> dict[str, Any]:
    """Run (or resume) a training run; returns a summary (step, paths, interruption)."""
    context = context_from_environment(config.device)
    init_distributed(context)
    try:
        return Trainer(config, context, validate).run(resume)
    finally:
        shutdown_distributed()


class Trainer:
    """Drives a `TrainingTask` through a run: data, accumulation, optimiser and schedule,
    checkpoints and resume, the run log and periodic validation."""

    def __init__(self, config: TrainConfig, context: DistributedContext, validate: Validate | None = None) -> None:
        self.config, self.context = config, context
        self.validate = validate if config.eval_every and config.data.val else None
        self.device = torch.device(context.device)
        self.out_dir = Path(config.out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.micro_batch = micro_batch_size(config, context.world_size)
        seed_everything(config.seed)  # identical initial weights on every rank
        self.task = TrainingTask.from_config(config, self.device, context.rank, context.world_size)
        self.model = self.task.model
        if context.is_distributed:
            self.task.distribute(self.device)
        self.optimizer = create_optimizer(self.model, config.optim)
        self.towers = tower_parameters(self.model)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "amp")
        self.dataset = build_data(config, self.task, context)
        # One loader for the whole run: workers persist across epochs (the dataset reads
        # the epoch from shared memory), and augmentation is seeded per sample.
        self.loader = build_loader(self.dataset, self.micro_batch, config.data.workers, seed=config.seed,
                                   persistent_workers=True, pin_memory=self.device.type == "cuda")
        self.steps_per_epoch = self._steps_per_epoch()
        self.total_steps = config.steps or config.epochs * self.steps_per_epoch
        self.scheduler = create_scheduler(self.optimizer, config.optim, self.total_steps)
        self.position = Position()
        self.run_log = RunLog(self.out_dir, context.is_main, config.tensorboard)
        self.last_losses: dict[str, float] = {}

    def _steps_per_epoch(self) -> int | None:
        batches = self.loader.num_batches
        if batches is None:
            if self.config.steps is None:
                raise ValueError("steps: the data's epoch length is unknown (webdataset without "
                                 "num_samples); set steps or data.num_samples")
            return None
        steps = batches // self.config.optim.accumulation
        if steps < 1:
            raise ValueError(f"batch_size: {self.config.batch_size} is larger than one epoch of data "
                             f"({batches * self.micro_batch} samples per rank)")
        return steps

    # -- the run ------------------------------------------------------------------------
    def run(self, resume: str | None) -> dict[str, Any]:
        self._prepare_out_dir(resume)
        if resume:
            self._restore(resolve_resume(resume, self.checkpoint_dir))
        else:  # per-rank streams for dropout; a resumed run restores the saved ones
            seed_everything(self.config.seed + 7919 * self.context.rank)
        interrupted = None
        with StopSignals() as signals, self._progress() as progress:
            while self.position.step < self.total_steps and interrupted is None:
                interrupted = self._run_epoch(signals, progress)
        self._save_checkpoint()  # collective: every rank hands in its RNG state
        if self.context.is_main and interrupted is None:
            save_model(self.model, self.out_dir / "model.safetensors",
                       extra={"loss": self.config.loss.kind, "step": self.position.step})
        self.run_log.close()
        return {
            "step": self.position.step, "epoch": self.position.epoch, "out_dir": str(self.out_dir),
            "interrupted_by_signal": interrupted, "nonfinite_steps": self.position.nonfinite_total,
            "losses": self.last_losses,
        }

    def _run_epoch(self, signals: StopSignals, progress: Any) -> int | None:
        position = self.position
        self.dataset.set_epoch(position.epoch)
        loader = self.loader
        batches = iter(loader)
        for _ in range(position.steps_in_epoch * self.config.optim.accumulation):
            next(batches, None)  # resume: replay the data stream up to where the run stopped
        produced = position.steps_in_epoch
        while position.step < self.total_steps and (self.steps_per_epoch is None or position.steps_in_epoch < self.steps_per_epoch):
            micro = self._take(batches)
            if not all_ranks_agree(micro is not None, self.device):
                break
            self._step(micro, progress)
            produced += 1
            received = signals.agreed(self.device)
            if received is not None:
                logger.info("signal %d: saving a checkpoint at step %d", received, position.step)
                return received
        if produced == 0:
            raise ValueError(f"data: an epoch produced no batch of {self.micro_batch} samples; check data.sources")
        self._log_epoch_skips(loader)
        position.epoch += 1
        position.steps_in_epoch = 0
        return None

    def _take(self, batches: Iterator[Any]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        micro = []
        for _ in range(self.config.optim.accumulation):
            batch = next(batches, None)
            if batch is None:
                return None
            images, texts = batch
            micro.append((images.to(self.device, non_blocking=True), texts.to(self.device, non_blocking=True)))
        return micro

    # -- one optimiser step -----------------------------------------------------------
    def forward_backward(self, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Gradients of the loss over the whole local batch, however it is split.

        With accumulation, features of every micro-batch are first computed without
        gradients; each micro-batch is then recomputed with gradients and the loss taken
        over all of them (as OpenCLIP), so the gradient is that of the full batch.
        """
        task = self.task
        if len(micro) == 1:
            images, texts = micro[0]
            with task.autocast():
                losses = task(images, texts)
            self.scaler.scale(losses["loss"]).backward()
            return losses
        with torch.no_grad(), task.autocast():
            cached = [task.encode(images, texts) for images, texts in micro]
        for index, (images, texts) in enumerate(micro):
            last = index == len(micro) - 1
            sync = contextlib.nullcontext() if last or not self.context.is_distributed else task.encoder.no_sync()
            with sync, task.autocast():
                output = task.encode(images, texts)
                parts = [output if i == index else c for i, c in enumerate(cached)]
                image = concat_features([p["image_features"] for p in parts])
                text = concat_features([p["text_features"] for p in parts])
                if not last:  # every micro-step sees the temperatures; count their gradient once
                    output = {k: v.detach() if k.startswith("logit_scale") else v for k, v in output.items()}
                losses = task.losses(output, image, text)
            with sync:
                self.scaler.scale(losses["loss"]).backward()
        return losses

    def _step(self, micro: list[tuple[torch.Tensor, torch.Tensor]], progress: Any) -> None:
        self.model.train()
        started = time.perf_counter()
        losses = self.forward_backward(micro)
        loss_is_finite = all_ranks_agree(bool(torch.isfinite(losses["loss"]).item()), self.device)
        # During the head warm-up the towers get no gradient: AdamW neither moves nor decays them.
        held = self.towers if self.position.step < self.config.optim.head_warmup_steps else ()
        finite = apply_gradients(self.model, self.optimizer, self.scaler, self.config.optim.grad_clip,
                                 loss_is_finite, self.device, held=held)
        if finite:
            self.position.nonfinite_in_row = 0
        else:
            self._count_nonfinite()
        self.scheduler.step()
        self.task.clamp_temperatures()
        self.position.step += 1
        self.position.steps_in_epoch += 1
        elapsed = time.perf_counter() - started
        self._after_step(losses, finite, elapsed, progress)

    def _count_nonfinite(self) -> None:
        position = self.position
        position.nonfinite_in_row += 1
        position.nonfinite_total += 1
        logger.warning("step %d: non-finite loss or gradient; step skipped", position.step + 1)
        if position.nonfinite_in_row >= self.config.max_nonfinite:
            raise NonFiniteLossError(
                f"the loss was not finite for {position.nonfinite_in_row} steps in a row (last at step "
                f"{position.step + 1}); the weights were not updated by those steps. Lower optim.lr, "
                f"set optim.grad_clip, or use precision fp32/bf16"
            )

    def _after_step(self, losses: dict[str, torch.Tensor], finite: bool, elapsed: float, progress: Any) -> None:
        position, config = self.position, self.config
        images_per_second = config.batch_size / max(elapsed, 1e-9)
        self.last_losses = {k: float(v.detach()) for k, v in losses.items()}
        progress.update(1)
        progress.set_postfix(loss=f"{self.last_losses['loss']:.4f}", img_s=f"{images_per_second:.0f}")
        if position.step % config.log_every == 0 or position.step == self.total_steps:
            self.run_log.write({
                "step": position.step, "epoch": position.epoch,
                "lr": self.optimizer.param_groups[0]["lr"], **self.last_losses,
                "logit_scale": float(self.model.clip.logit_scale.detach().exp()),
                "images_per_second": images_per_second, "skipped_step": not finite,
                "nonfinite_steps": position.nonfinite_total,
                "skipped_samples": self.dataset.skipped(),
            })
        if self.validate is not None and position.step % config.eval_every == 0:
            self._evaluate()
        if position.step % config.checkpoint_every == 0 and position.step < self.total_steps:
            self._save_checkpoint()

    # -- evaluation, checkpoints, logs ------------------------------------------------
    def _evaluate(self) -> None:
        if self.context.is_main:
            results = self.validate(self.task, self.micro_batch)
            self.run_log.write({"step": self.position.step, "eval": results})
            self.model.train()
        if self.context.is_distributed:
            torch.distributed.barrier()

    def _components(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler}

    def _save_checkpoint(self) -> None:
        state = training_state(  # collective: every rank hands in its RNG state
            self._components(), self.position, self.context.world_size,
            config=config_to_dict(self.config), dalip_config=self.model.config(),
        )
        if not self.context.is_main:
            return
        path = self.checkpoint_dir / f"step_{self.position.step:09d}.pt"
        save_training_state(path, state)
        prune_training_checkpoints(self.checkpoint_dir, self.config.keep_last)
        logger.debug("saved %s", path)

    def _restore(self, path: Path) -> None:
        state = load_training_state(path)
        self.position = restore_training_state(state, self._components(), self.context.rank, self.context.world_size)
        logger.info("resumed from %s at step %d (epoch %d)", path, self.position.step, self.position.epoch)

    def _prepare_out_dir(self, resume: str | None) -> None:
        if self.context.is_main:
            if not resume and training_checkpoints(self.checkpoint_dir):
                raise ValueError(f"out_dir {self.out_dir} already holds checkpoints; pass --resume latest "
                                 f"to continue that run, or choose another out_dir")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(self.config), sort_keys=False))
        if self.context.is_distributed:
            torch.distributed.barrier()

    def _progress(self) -> Any:
        show = self.context.is_main and self.config.progress
        return tqdm(total=self.total_steps, initial=self.position.step, unit="step",
                    disable=None if show else True, dynamic_ncols=True)

    def _log_epoch_skips(self, loader: Any) -> None:
        skips = getattr(loader, "last_epoch_skips", {})
        if skips and self.context.is_main:
            self.run_log.write({"step": self.position.step, "epoch": self.position.epoch, "epoch_skipped_samples": skips})

