"""The training loop: `train(config, resume=None)`.

One process or many under torchrun (DDP); the global batch (`batch_size`) and the
schedule do not depend on how the work is split. Rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from dalip.config import TrainConfig, config_to_dict, validate_train_config
from dalip.data import build_loader
from dalip.loss import DALIPLoss
from dalip.model.dalip_model import DALIPModel
from dalip.model.features import Features
from dalip.model.file_format import save_model
from dalip.train.distributed import DistributedContext, context_from_environment, init_distributed, shutdown_distributed
from dalip.train.optim import create_optimizer, create_scheduler
from dalip.train.run_log import MetricsLog
from dalip.train.out_dir import apply_current_hyperparameters, claim_out_dir, read_resume_state, tidy_out_dir
from dalip.train.state import (
    Position, StopSignals, all_ranks_agree, gather_rng_states, prune_training_checkpoints, save_training_state,
    seed_everything, set_rng_state,
)
from dalip.train.task import build_data, build_training_model, micro_batch_size

logger = logging.getLogger(__name__)
MAX_LOGIT_SCALE = math.log(100.0)  # as OpenCLIP: temperature never below 0.01
# Called on rank 0 every `eval_every` steps when `data.val` is set, as
# validate(model, tokenizer, preprocess, device, batch_size) -> results for the run log
# (`dalip train` passes `dalip.evaluation.zero_shot.training_validation(config)`).
Validate = Callable[[DALIPModel, Callable, Callable, torch.device, int], dict[str, Any]]


class NonFiniteLossError(RuntimeError):
    """Raised when the loss stays non-finite for `max_nonfinite` steps in a row."""


def check_finite_weights(model: torch.nn.Module, step: int) -> None:
    """NonFiniteLossError when a weight is NaN or infinite: such a model is never saved as a result."""
    broken = [name for name, tensor in model.state_dict().items()
              if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:
        raise NonFiniteLossError(f"after step {step} the weights are not finite (e.g. {broken[0]}); no "
                                 f"model.safetensors was written. Lower optim.lr or set optim.grad_clip")


def build_loss(config: TrainConfig, context: DistributedContext) -> DALIPLoss:
    alpha = 1.0 if config.loss.kind == "clip" else config.model.alpha
    return DALIPLoss(
        alpha=alpha, combine=config.loss.combine, local_loss=config.loss.local_loss,
        gather_with_grad=config.loss.gather_with_grad, cache_labels=True,
        rank=context.rank, world_size=context.world_size,
    )


def train(
    config: TrainConfig, resume: str | None = None, validate: Validate | None = None, *, force: bool = False,
    allow_changes: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or resume) a training run; returns a summary (step, paths, interruption).

    `force` starts over in an out_dir that holds an earlier run (deleting only the files
    that run wrote); `allow_changes` lists config fields that may differ from the
    checkpoint's on resume (dalip.train.out_dir).
    """
    validate_train_config(config)
    context = context_from_environment(config.device)
    init_distributed(context)
    try:
        return Trainer(config, context, validate, force=force, allow_changes=allow_changes).run(resume)
    finally:
        shutdown_distributed()


class Trainer:
    def __init__(
        self, config: TrainConfig, context: DistributedContext, validate: Validate | None = None, *,
        force: bool = False, allow_changes: Sequence[str] = (),
    ) -> None:
        self.config, self.context = config, context
        self.force, self.allow_changes = force, tuple(allow_changes)
        self.validate = validate if config.eval_every and config.data.val else None
        if config.eval_every and config.data.val and validate is None:
            logger.warning("data.val is set but no validation function was given: no evaluation while training")
        self.device = torch.device(context.device)
        self.out_dir = Path(config.out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.micro_batch = micro_batch_size(config, context.world_size)
        seed_everything(config.seed)  # identical initial weights on every rank
        self.model, self.train_transform, self.val_transform, self.tokenizer = build_training_model(config, self.device)
        self.second_order = config.loss.kind == "dalip"
        self.wrapped = self.model
        if context.is_distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.model, device_ids=ids)
        self.loss_fn = build_loss(config, context)
        self.optimizer = create_optimizer(self.model, config.optim)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "amp")
        transform = self.train_transform if config.data.augment else self.val_transform
        self.dataset = build_data(config, transform, self.tokenizer, context)
        # One loader for the whole run: workers persist across epochs (the dataset reads
        # the epoch from shared memory), and augmentation is seeded per sample.
        self.loader = build_loader(self.dataset, self.micro_batch, config.data.workers, seed=config.seed,
                                   persistent_workers=True, pin_memory=self.device.type == "cuda")
        self.steps_per_epoch = self._steps_per_epoch()
        self.total_steps = config.steps or config.epochs * self.steps_per_epoch
        self.scheduler = create_scheduler(self.optimizer, config.optim, self.total_steps)
        self.position = Position()
        self.metrics = MetricsLog(self.out_dir, False)  # opened by `run` once out_dir is ours
        self.last_losses: dict[str, float] = {}
        self.resume_changes: list[dict[str, Any]] = []
        self.output_folder: Any = None  # rank 0's dalip.outputs.OutputFolder while `run` holds it

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
        claim = claim_out_dir(self.out_dir, is_main=self.context.is_main, device=self.device, resume=resume,
                              force=self.force)
        with claim as folder:
            state = self._prepare_out_dir(resume)
            if state is not None:
                self._restore(state)
            else:  # per-rank streams for dropout; a resumed run restores the saved ones
                seed_everything(self.config.seed + 7919 * self.context.rank)
            self.output_folder = folder
            interrupted = None
            with StopSignals() as signals, self._progress() as progress:
                while self.position.step < self.total_steps and interrupted is None:
                    interrupted = self._run_epoch(signals, progress)
            self._save_checkpoint()  # collective: every rank hands in its RNG state
            if self.context.is_main and interrupted is None:
                check_finite_weights(self.model, self.position.step)
                save_model(self.model, self.out_dir / "model.safetensors",
                           extra={"loss": self.config.loss.kind, "step": self.position.step})
            self.metrics.close()
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
            if not all_ranks_agree(micro is not None and self._unusable_source() is None, self.device):
                break
            self._step(micro, progress)
            produced += 1
            received = signals.agreed(self.device)
            if received is not None:
                logger.info("signal %d: saving a checkpoint at step %d", received, position.step)
                return received
        unusable = self._unusable_source()
        if not all_ranks_agree(unusable is None, self.device):  # every rank stops, not only the one that saw it
            raise unusable or ValueError("data.sources: a source was unreadable on another rank (see rank 0)")
        if produced == 0:
            names = ", ".join(source.path for source in self.config.data.sources)
            raise ValueError(f"data: an epoch produced no batch of {self.micro_batch} samples from {names}; "
                             f"check data.sources (skipped: {self.dataset.skipped() or 'none'})")
        self._log_epoch_skips(loader)
        position.epoch += 1
        position.steps_in_epoch = 0
        return None

    def _unusable_source(self) -> ValueError | None:
        """The error naming a source whose every sample was bad (dalip.data.mixing), or None."""
        try:
            self.dataset.check_sources()
        except ValueError as error:
            return error
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
    def _autocast(self) -> contextlib.AbstractContextManager:
        precision = self.config.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _losses(self, output: dict[str, Any], image: Features, text: Features) -> dict[str, torch.Tensor]:
        return self.loss_fn(image, text, output["logit_scale"], output.get("logit_scale_second"))

    def _forward_backward(self, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Gradients of the loss over the whole local batch, however it is split.

        With accumulation, features of every micro-batch are first computed without
        gradients; each micro-batch is then recomputed with gradients and the loss taken
        over all of them (as OpenCLIP), so the gradient is that of the full batch.
        """
        if len(micro) == 1:
            images, texts = micro[0]
            with self._autocast():
                output = self.wrapped(images, texts, second_order=self.second_order)
                losses = self._losses(output, output["image_features"], output["text_features"])
            self.scaler.scale(losses["loss"]).backward()
            return losses
        with torch.no_grad(), self._autocast():
            cached = [self.wrapped(images, texts, second_order=self.second_order) for images, texts in micro]
        for index, (images, texts) in enumerate(micro):
            last = index == len(micro) - 1
            sync = contextlib.nullcontext() if last or not self.context.is_distributed else self.wrapped.no_sync()
            with sync, self._autocast():
                output = self.wrapped(images, texts, second_order=self.second_order)
                parts = [output if i == index else c for i, c in enumerate(cached)]
                image = _concat([p["image_features"] for p in parts])
                text = _concat([p["text_features"] for p in parts])
                if not last:  # every micro-step sees the temperatures; count their gradient once
                    output = {k: v.detach() if k.startswith("logit_scale") else v for k, v in output.items()}
                losses = self._losses(output, image, text)
            with sync:
                self.scaler.scale(losses["loss"]).backward()
        return losses

    def _step(self, micro: list[tuple[torch.Tensor, torch.Tensor]], progress: Any) -> None:
        self.model.train()
        started = time.perf_counter()
        losses = self._forward_backward(micro)
        finite = all_ranks_agree(bool(torch.isfinite(losses["loss"]).item()), self.device)
        if finite:
            self.scaler.unscale_(self.optimizer)
            parameters = [p for p in self.model.parameters() if p.grad is not None]
            limit = self.config.optim.grad_clip or float("inf")
            norm = torch.nn.utils.clip_grad_norm_(parameters, limit)
            # Under amp the scaler skips overflowing steps itself; elsewhere a non-finite
            # gradient is treated like a non-finite loss.
            finite = self.config.precision == "amp" or all_ranks_agree(bool(torch.isfinite(norm).item()), self.device)
        if finite:
            self.scaler.step(self.optimizer)
            self.position.nonfinite_in_row = 0
        else:
            self._count_nonfinite()
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        with torch.no_grad():
            self.model.clip.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            if self.model.logit_scale_second is not None:
                self.model.logit_scale_second.clamp_(0, MAX_LOGIT_SCALE)
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
            self.metrics.write({
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
            results = self.validate(self.model, self.tokenizer, self.val_transform, self.device, self.micro_batch)
            self.metrics.write({"step": self.position.step, "eval": results})
            self.model.train()
        if self.context.is_distributed:
            torch.distributed.barrier()

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "position": self.position.as_dict(), "rng": gather_rng_states(),
            "config": config_to_dict(self.config), "dalip_config": self.model.config(),
            "world_size": self.context.world_size, "resume_changes": self.resume_changes,
        }

    def _save_checkpoint(self) -> None:
        state = self._state()  # every rank takes part in gathering the RNG states
        if not self.context.is_main:
            return
        path = self.checkpoint_dir / f"step_{self.position.step:09d}.pt"
        save_training_state(path, state)
        prune_training_checkpoints(self.checkpoint_dir, self.config.keep_last)
        if self.output_folder is not None:
            self.output_folder.record()  # a killed run's manifest still lists its files
        logger.debug("saved %s", path)

    def _restore(self, state: dict[str, Any]) -> None:
        fresh_groups = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        fresh_base_lrs = list(self.scheduler.base_lrs)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.position = Position(**state["position"])
            rng = state["rng"]
            set_rng_state(rng[self.context.rank] if len(rng) == self.context.world_size else rng[0])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
            raise ValueError(f"--resume: checkpoint {state['path']} does not fit this run "
                             f"({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''})"
                             ) from error
        apply_current_hyperparameters(self.optimizer, self.scheduler, fresh_groups, fresh_base_lrs)
        self.resume_changes = list(state.get("resume_changes") or []) + self.resume_changes
        logger.info("resumed from %s at step %d (epoch %d)", state["path"], self.position.step, self.position.epoch)

    def _prepare_out_dir(self, resume: str | None) -> dict[str, Any] | None:
        """Check a resume against its checkpoint, tidy out_dir, open the logs; returns the
        training state to restore (None for a fresh start)."""
        config, state, step = config_to_dict(self.config), None, None
        if resume:
            state, change = read_resume_state(resume, self.checkpoint_dir, config, self.allow_changes)
            self.resume_changes = [change] if change else []
            step = change["step"] if change else int(state["position"]["step"])
        if self.context.is_main:
            tidy_out_dir(self.out_dir, config, step)
        purge_step = None if step is None else step + 1
        self.metrics = MetricsLog(self.out_dir, self.context.is_main, self.config.tensorboard, purge_step=purge_step)
        if self.resume_changes:
            self.metrics.write({"step": step, "resumed_with_changes": self.resume_changes[-1]["changed"]})
        if self.context.is_distributed:
            torch.distributed.barrier()
        return state

    def _progress(self) -> Any:
        show = self.context.is_main and self.config.progress
        return tqdm(total=self.total_steps, initial=self.position.step, unit="step",
                    disable=None if show else True, dynamic_ncols=True)

    def _log_epoch_skips(self, loader: Any) -> None:
        skips = getattr(loader, "last_epoch_skips", {})
        if skips and self.context.is_main:
            self.metrics.write({"step": self.position.step, "epoch": self.position.epoch, "epoch_skipped_samples": skips})


def _concat(features: list[Features]) -> Features:
    first = torch.cat([f.first for f in features])
    second = None if features[0].second is None else torch.cat([f.second for f in features])
    return Features(first, second)
