"""The training loop: `train(config, resume=None)`.

One process or many under torchrun (DDP); the global batch (`batch_size`) and the
schedule do not depend on how the work is split. Rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from dalip.config import TrainConfig, config_to_dict, validate_train_config
from dalip.data import build_loader, resampling_notes
from dalip.model.devices import configure_cuda
from dalip.model.file_format import save_model
from dalip.train.distributed import (
    ControlChannel,
    DistributedContext,
    context_from_environment,
    init_distributed,
    micro_batch_size,
    shutdown_distributed,
)
from dalip.train.optim import NonFiniteSteps, check_finite_weights, check_nonfinite
from dalip.train.out_dir import (
    check_resumed_position,
    claim_out_dir,
    restore_with_current_hyperparameters,
    start_run,
)
from dalip.train.run_data import EpochCheck, build_data, steps_per_epoch, take_micro_batches
from dalip.train.run_log import RunLog, StepTimes, progress_bar
from dalip.train.state import (
    Position,
    StopSignals,
    prune_training_checkpoints,
    save_training_state,
    seed_everything,
    training_state,
)
from dalip.train.step import OptimizerStep, StepResult
from dalip.train.task import TrainingTask

logger = logging.getLogger(__name__)
# Rank 0's hooks (dalip.evaluation.validation): `validate` every eval_every steps, `choose_mode` at the end
Validate = Callable[[TrainingTask, int], dict[str, Any]]


def train(
    config: TrainConfig,
    resume: str | None = None,
    validate: Validate | None = None,
    *,
    choose_mode: Validate | None = None,
    force: bool = False,
    allow_changes: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or resume) a training run; returns a summary (step, paths, interruption). `force`:
    start over in an out_dir that holds an earlier run (deleting only the files it wrote);
    `allow_changes`: config fields that may differ from the checkpoint's on resume (`out_dir.py`)."""
    validate_train_config(config)
    context = context_from_environment(config.device)
    init_distributed(context, config.distributed_timeout_minutes)
    try:
        return Trainer(config, context, validate, choose_mode, force=force, allow_changes=allow_changes).run(
            resume
        )
    finally:
        shutdown_distributed()


class Trainer:
    """Drives a `TrainingTask` through a run: data, accumulation, optimiser and schedule,
    checkpoints and resume, the run log and periodic validation."""

    def __init__(
        self,
        config: TrainConfig,
        context: DistributedContext,
        validate: Validate | None = None,
        choose_mode: Validate | None = None,
        *,
        force: bool = False,
        allow_changes: Sequence[str] = (),
    ) -> None:
        self.config, self.context = config, context
        self.force, self.allow_changes = force, tuple(allow_changes)
        self.validate = validate if config.eval_every and config.data.val else None
        self.choose_mode = choose_mode
        if config.eval_every and config.data.val and validate is None and context.is_main:
            logger.warning("eval_every is set but train() was given no validate: nothing is evaluated")
        self.device = torch.device(context.device)
        if self.device.type == "cuda":
            configure_cuda(config.tf32)
        self.control = ControlChannel.create(context, config.distributed_timeout_minutes)
        self.out_dir = Path(config.out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.micro_batch = micro_batch_size(config, context.world_size)
        seed_everything(config.seed)  # identical initial weights on every rank
        self.task = TrainingTask.from_config(config, self.device, context.rank, context.world_size)
        self.model = self.task.model
        if context.is_distributed:
            self.task.distribute(self.device)
        if config.compile:
            self.task.compile()
        self.dataset = build_data(config, self.task, context)
        for note in resampling_notes(self.dataset, config.data.workers) if context.is_main else ():
            logger.info(note)
        # One loader for the whole run: workers persist across epochs (the dataset reads
        # the epoch from shared memory), and augmentation is seeded per sample.
        self.loader = build_loader(
            self.dataset,
            self.micro_batch,
            config.data.workers,
            seed=config.seed,
            persistent_workers=True,
            pin_memory=self.device.type == "cuda",
        )
        self.steps_per_epoch = steps_per_epoch(self.loader, config, self.micro_batch)
        self.total_steps = config.steps or config.epochs * self.steps_per_epoch
        self.check_epoch = EpochCheck(
            self.dataset, config, self.micro_batch, self.steps_per_epoch, self.device, context.is_main
        )
        self.stepper = OptimizerStep(self.task, config, self.total_steps, context.is_distributed)
        self.optimizer, self.scheduler, self.scaler = (
            self.stepper.optimizer,
            self.stepper.scheduler,
            self.stepper.scaler,
        )
        self.position = Position()
        self.nonfinite = NonFiniteSteps(self.device)
        self.times = StepTimes()
        self.run_log = RunLog(self.out_dir, False)  # opened by `run` once out_dir is ours
        self.last_losses: dict[str, float] = {}
        self.resume_changes: list[dict[str, Any]] = []
        self.output_folder: Any = None  # rank 0's dalip.outputs.OutputFolder while `run` holds it

    # -- the run ------------------------------------------------------------------------
    def run(self, resume: str | None) -> dict[str, Any]:
        claim = claim_out_dir(
            self.out_dir, is_main=self.context.is_main, device=self.device, resume=resume, force=self.force
        )
        with claim as folder:
            state = self._prepare_out_dir(resume)
            if folder is not None:  # config.yaml and metrics.jsonl are listed before any step
                folder.record()
            if state is not None:
                self._restore(state)
            else:  # per-rank streams for dropout; a resumed run restores the saved ones
                seed_everything(self.config.seed + 7919 * self.context.rank)
            self.output_folder = folder
            interrupted = None
            progress = progress_bar(
                self.total_steps, self.position.step, self.context.is_main and self.config.progress
            )
            with StopSignals() as signals, progress:
                while self.position.step < self.total_steps and interrupted is None:
                    interrupted = self._run_epoch(signals, progress)
            if interrupted is None and self.choose_mode is not None:  # stored with the model by rank 0
                self.model.answer_mode = (self._on_main(self.choose_mode, "answer_mode") or {}).get("chosen")
            self._save_checkpoint()  # collective: every rank hands in its RNG state
            if self.context.is_main and interrupted is None:
                check_finite_weights(self.model, self.position.step)
                save_model(
                    self.model,
                    self.out_dir / "model.safetensors",
                    extra={"loss": self.config.loss.kind, "step": self.position.step},
                )
            self.run_log.close()
        return {
            "step": self.position.step,
            "epoch": self.position.epoch,
            "out_dir": str(self.out_dir),
            "interrupted_by_signal": interrupted,
            "nonfinite_steps": self.position.nonfinite_total,
            "losses": self.last_losses,
            "answer_mode": self.model.answer_mode,
        }

    def _run_epoch(self, signals: StopSignals, progress: Any) -> int | None:
        """The rest of the current epoch, step by step: the next batch (every rank agrees that it
        has one and that no stop signal came), the optimiser step, logging, validation and
        checkpoints. Returns the stop signal that ended it early, if one did."""
        position = self.position
        self.dataset.set_epoch(position.epoch)
        loader = self.loader
        batches = iter(loader)
        for _ in range(position.steps_in_epoch * self.config.optim.accumulation):
            next(batches, None)  # resume: replay the data stream up to where the run stopped
        produced = position.steps_in_epoch
        while position.step < self.total_steps and (
            self.steps_per_epoch is None or position.steps_in_epoch < self.steps_per_epoch
        ):
            waited = time.perf_counter()
            micro = take_micro_batches(batches, self.config.optim.accumulation, self.device)
            self.times.add_data_wait(time.perf_counter() - waited)
            ready = micro is not None and self.dataset.unusable_source() is None
            ready, received = self.control.agree(ready, signals.received)  # every rank, once a step
            if received is not None:
                signals.acknowledge()
                logger.info("signal %d: saving a checkpoint at step %d", received, position.step)
                return received
            if not ready:
                break
            # One optimiser step (dalip.train.step: forward, losses, backward, update, schedule),
            # then its bookkeeping; nothing here waits for the device except on log steps.
            self.model.train()
            result = self.stepper.step(micro, position.step)
            position.step += 1
            position.steps_in_epoch += 1
            produced += 1
            self.nonfinite.update(result.updated, position.step, self.config.max_nonfinite)
            self.times.step_done()
            progress.update(1)
            if position.step % self.config.log_every == 0 or position.step == self.total_steps:
                self._log_step(result, progress)
            if self.validate is not None and position.step % self.config.eval_every == 0:
                self._on_main(self.validate, "eval")
            if position.step % self.config.checkpoint_every == 0 and position.step < self.total_steps:
                self._save_checkpoint()
        self.check_epoch(position.epoch, produced, position.step >= self.total_steps)
        skips = getattr(loader, "last_epoch_skips", {})
        if skips and self.context.is_main:
            self.run_log.write(
                {"step": position.step, "epoch": position.epoch, "epoch_skipped_samples": skips}
            )
        position.epoch += 1
        position.steps_in_epoch = 0
        return None

    # -- the step's figures ------------------------------------------------------------
    def _log_step(self, result: StepResult, progress: Any) -> None:
        """Bring the step's figures to the host (the one sync of a log step) and write them."""
        names = list(result.losses)
        scale = self.model.clip.logit_scale.detach().exp()
        device_values = [*(result.losses[n] for n in names), scale, result.updated, *self.nonfinite.counts]
        values = torch.stack([v.to(torch.float64) for v in device_values]).tolist()
        self.last_losses = dict(zip(names, values[: len(names)]))
        logit_scale, updated, *counts = values[len(names) :]
        total_before = self.position.nonfinite_total
        self._count_nonfinite(*(int(n) for n in counts))
        if self.position.nonfinite_total > total_before:
            logger.warning(
                "step %d: %d non-finite step(s) skipped since the last log record (%d in all)",
                self.position.step,
                self.position.nonfinite_total - total_before,
                self.position.nonfinite_total,
            )
        times = self.times.figures(self.config.batch_size)
        self.times.restart()
        progress.set_postfix(
            loss=f"{self.last_losses['loss']:.4f}", img_s=f"{times['images_per_second']:.0f}"
        )
        self.run_log.write(
            {
                "step": self.position.step,
                "epoch": self.position.epoch,
                "lr": self.optimizer.param_groups[0]["lr"],
                **self.last_losses,
                "logit_scale": logit_scale,
                **times,
                "skipped_step": not updated,
                "nonfinite_steps": self.position.nonfinite_total,
                "skipped_samples": self.dataset.skipped(),
            }
        )

    def _count_nonfinite(self, in_row: int, total: int, tripped: int) -> None:
        """The device's count of skipped steps into the position; NonFiniteLossError once
        `max_nonfinite` in a row were skipped."""
        self.position.nonfinite_in_row, self.position.nonfinite_total = in_row, total
        check_nonfinite(tripped, self.config.max_nonfinite)

    # -- evaluation, checkpoints, logs ------------------------------------------------
    def _on_main(self, hook: Validate, key: str) -> dict[str, Any] | None:
        """Rank 0 runs an evaluation hook, its random draws apart from the run's, and logs its
        record under `key`; the other ranks wait on the CPU (distributed_timeout_minutes)."""
        record = None
        if self.context.is_main:
            with torch.random.fork_rng(devices=[]):
                record = hook(self.task, self.micro_batch)
            self.run_log.write({"step": self.position.step, key: record})
            self.model.train()
        self.control.barrier()
        return record

    def _components(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
        }

    def _save_checkpoint(self) -> None:
        self._count_nonfinite(*self.nonfinite.read())  # into the position; a run past its limit stops here
        state = training_state(  # collective: every rank hands in its RNG state
            self._components(),
            self.position,
            self.context.world_size,
            self.device,
            self.control.group,
            config=config_to_dict(self.config),
            dalip_config=self.model.config(),
            resume_changes=self.resume_changes,
        )
        if not self.context.is_main:
            return
        path = self.checkpoint_dir / f"step_{self.position.step:09d}.pt"
        save_training_state(path, state)
        prune_training_checkpoints(self.checkpoint_dir, self.config.keep_last)
        if self.output_folder is not None:
            self.output_folder.record()  # a killed run's manifest still lists its files
        logger.debug("saved %s", path)

    def _restore(self, state: dict[str, Any]) -> None:
        self.position = restore_with_current_hyperparameters(
            state, self._components(), self.context, self.device
        )
        scheduler_step = state["scheduler"]["last_epoch"]
        check_resumed_position(
            self.position, self.total_steps, self.steps_per_epoch, state["path"], scheduler_step
        )
        self.nonfinite = NonFiniteSteps(
            self.device, self.position.nonfinite_in_row, self.position.nonfinite_total
        )
        self.resume_changes = list(state.get("resume_changes") or []) + self.resume_changes
        logger.info(
            "resumed from %s at step %d (epoch %d)", state["path"], self.position.step, self.position.epoch
        )

    def _prepare_out_dir(self, resume: str | None) -> dict[str, Any] | None:
        """Check a resume, tidy out_dir, open the run log; the state to restore (None: a fresh start)."""
        state, self.resume_changes, step = start_run(
            self.out_dir, config_to_dict(self.config), resume, self.allow_changes, self.context.is_main
        )
        purge_step = None if step is None else step + 1
        self.run_log = RunLog(
            self.out_dir, self.context.is_main, self.config.tensorboard, purge_step=purge_step
        )
        if self.resume_changes:
            self.run_log.write({"step": step, "resumed_with_changes": self.resume_changes[-1]["changed"]})
        self.control.barrier()
        return state
