"""A training run's out_dir: claiming it, tidying it, and what a resume may change.

`claim_out_dir` applies dalip.outputs' policy (manifest, `--force`, lock) on rank 0 and
tells every rank when it refused. A resumed run continues the run its checkpoint belongs
to. Config fields that change the training itself (data, model, optimiser, batch, steps,
seed, ...) must match the checkpoint's config, unless the user lists them (`--allow-change FIELD`): then the new
values are used, also the optimiser's (its saved hyper-parameters would otherwise win), and
the change is recorded in metrics.jsonl and in later checkpoints. Fields that only affect
logging and bookkeeping may always change.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from dalip.atomic import write_text
from dalip.model.file_format import load_training_state
from dalip.outputs import OutputFolder
from dalip.readers import load_json_text
from dalip.train.distributed import DistributedContext
from dalip.train.state import (
    Position,
    all_ranks_agree,
    check_saved_state,
    resolve_resume,
    restore_training_state,
    training_checkpoints,
)

logger = logging.getLogger(__name__)

# Fields that do not change what is trained: free to differ on resume.
BOOKKEEPING_FIELDS = frozenset(
    {
        "out_dir",
        "progress",
        "tensorboard",
        "checkpoint_every",
        "keep_last",
        "log_every",
        "eval_every",
        "max_nonfinite",
        "data.val",
        "data.val_templates",
        # how the same computation runs, not what it computes
        "compile",
        "tf32",
        "distributed_timeout_minutes",
    }
)


@contextlib.contextmanager
def claim_out_dir(
    out_dir: Path,
    *,
    is_main: bool,
    device: torch.device,
    resume: str | None,
    force: bool,
) -> Iterator[OutputFolder | None]:
    """Rank 0 checks and locks out_dir (dalip.outputs); every rank learns if that failed.

    Yields the OutputFolder on rank 0 (None elsewhere); unlocks it and records what was
    written on the way out."""
    folder, error = None, None
    if is_main:
        if not resume and not force and training_checkpoints(out_dir / "checkpoints"):
            error = FileExistsError(
                f"out_dir {out_dir} already holds checkpoints; pass --resume latest "
                f"to continue that run, --force to start over, or choose another out_dir"
            )
        else:
            folder = OutputFolder(
                out_dir, "train", force=force, resume=bool(resume), legacy="checkpoints/step_*.pt"
            )
            try:
                folder.open()
            except Exception as caught:  # raised below, once every rank knows
                folder, error = None, caught
    if not all_ranks_agree(error is None, device):
        raise error or ValueError(f"out_dir {out_dir}: refused on rank 0 (see its message)")
    complete = False
    try:
        yield folder
        complete = True
    finally:
        if folder is not None:
            folder.close(complete)


def read_resume_state(
    resume: str,
    checkpoint_dir: Path,
    config: Mapping[str, Any],
    allow_changes: Iterable[str],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(training state with its "path", record of the allowed config changes or None)."""
    path = resolve_resume(resume, checkpoint_dir)
    state = {**load_training_state(path), "path": str(path)}
    missing = [
        key for key in ("optimizer", "scheduler", "scaler", "position", "rng", "config") if key not in state
    ]
    if missing:
        raise ValueError(
            f"--resume: {path} is not a complete training checkpoint (missing {', '.join(missing)})"
        )
    check_saved_state(state, f"--resume: {path}")
    position = state["position"]
    if not isinstance(state["config"], dict):
        raise ValueError(f"--resume: {path}: its stored run config is not a mapping")
    changes = check_resume_changes(state["config"], config, allow_changes, path)
    record = {
        "step": position["step"],
        "checkpoint": str(path),
        "changed": {k: list(v) for k, v in changes.items()},
    }
    return state, record if changes else None


def start_run(
    out_dir: Path,
    config: Mapping[str, Any],
    resume: str | None,
    allow_changes: Iterable[str],
    is_main: bool,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int | None]:
    """(training state to resume or None, the allowed config changes it makes as [] or [record],
    its step or None); rank 0 also tidies out_dir (`tidy_out_dir`). Every rank calls it."""
    state, changes, step = None, [], None
    if resume:
        state, change = read_resume_state(resume, out_dir / "checkpoints", config, allow_changes)
        changes, step = ([change] if change else []), int(state["position"]["step"])
    if is_main:
        tidy_out_dir(out_dir, config, step)
    return state, changes, step


def restore_with_current_hyperparameters(
    state: dict[str, Any], components: dict[str, Any], context: DistributedContext, device: torch.device
) -> Position:
    """`restore_training_state`, then this run's optimiser hyper-parameters put back
    (`apply_current_hyperparameters`); a checkpoint that does not fit is a ValueError naming it."""
    optimizer, scheduler = components["optimizer"], components["scheduler"]
    fresh_groups = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    fresh_base_lrs = list(scheduler.base_lrs)
    try:
        position = restore_training_state(state, components, context.rank, context.world_size, device)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"--resume: checkpoint {state['path']} does not fit this run ({type(error).__name__}: {reason})"
        ) from error
    apply_current_hyperparameters(optimizer, scheduler, fresh_groups, fresh_base_lrs)
    saved = state.get("world_size")
    if isinstance(saved, int) and saved != context.world_size and context.is_main:
        logger.warning(
            "--resume: checkpoint %s was written by %d process(es), this run has %d: the global batch "
            "and the schedule carry on, but the data order and random streams differ from an "
            "uninterrupted run (not an exact resume)",
            state["path"],
            saved,
            context.world_size,
        )
    return position


def check_resumed_position(
    position: Position,
    total_steps: int,
    steps_per_epoch: int | None,
    path: str | os.PathLike,
    scheduler_step: int | None = None,
) -> None:
    """ValueError unless a checkpoint's position fits this run: step 0..total_steps, a step of the
    epoch within the epoch, no negative count, the learning-rate schedule at the same step (it
    moves once per optimiser step); a damaged or crafted file would train on wrongly."""
    problems = []
    if not 0 <= position.step <= total_steps:
        problems.append(f"step {position.step} (this run has {total_steps})")
    if position.epoch < 0 or position.nonfinite_in_row < 0 or position.nonfinite_total < 0:
        counts = f"{position.nonfinite_in_row} / {position.nonfinite_total}"
        problems.append(f"epoch {position.epoch}, non-finite counts {counts}")
    if position.steps_in_epoch < 0 or (
        steps_per_epoch is not None and position.steps_in_epoch > steps_per_epoch
    ):
        problems.append(f"step {position.steps_in_epoch} of an epoch of {steps_per_epoch}")
    if problems:
        raise ValueError(
            f"--resume: checkpoint {path} is at {'; '.join(problems)}: not a position of this run"
        )
    if scheduler_step is not None and scheduler_step != position.step:
        raise ValueError(
            f"--resume: {path}: scheduler.last_epoch={scheduler_step}: expected the position's step "
            f"{position.step} (the learning-rate schedule moves one step per optimiser step)"
        )


def tidy_out_dir(out_dir: Path, config: Mapping[str, Any], resumed_step: int | None) -> None:
    """Remove half-written files of a killed run, cut metrics.jsonl back to the resumed
    step (those steps are trained again), write config.yaml. Rank 0 only."""
    clean_temporary_files(out_dir)
    if resumed_step is not None:
        truncate_metrics(out_dir / "metrics.jsonl", resumed_step)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "config.yaml", yaml.safe_dump(dict(config), sort_keys=False))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}; lists (data.sources) stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def changed_fields(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields whose value differs between two config dicts: {field: (saved, current)}.

    Fields only one side knows (written by another dalip version) are not compared.
    """
    before, after = flatten(saved), flatten(current)
    return {
        name: (before[name], after[name])
        for name in sorted(set(before) & set(after))
        if before[name] != after[name]
    }


def check_resume_changes(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    allowed: Iterable[str],
    checkpoint: str | os.PathLike,
) -> dict[str, tuple[Any, Any]]:
    """The changes a resume makes (bookkeeping left out); ValueError naming any not allowed."""
    allowed = set(allowed)
    known = set(flatten(current)) | {name.rsplit(".", 1)[0] for name in flatten(current) if "." in name}
    unknown = sorted(name for name in allowed if name not in known)
    if unknown:
        raise ValueError(
            f"--allow-change: unknown field(s) {', '.join(unknown)}; expected config fields such as "
            f"optim.lr or steps"
        )
    changes = {
        name: values
        for name, values in changed_fields(saved, current).items()
        if name not in BOOKKEEPING_FIELDS
    }
    refused = [name for name in changes if not _is_allowed(name, allowed)]
    if refused:
        shown = "; ".join(f"{name}: {changes[name][0]!r} -> {changes[name][1]!r}" for name in refused)
        flags = " ".join(f"--allow-change {name}" for name in refused)
        raise ValueError(
            f"--resume: the config differs from checkpoint {checkpoint} in {shown}. Resume with the "
            f"run's own config, or accept the change explicitly with {flags}"
        )
    return changes


def _is_allowed(name: str, allowed: set[str]) -> bool:
    return any(name == field or name.startswith(field + ".") for field in allowed)


def apply_current_hyperparameters(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    fresh_groups: list[dict[str, Any]],
    fresh_base_lrs: list[float],
) -> None:
    """After loading saved optimiser/scheduler states, put back this run's hyper-parameters
    (lr, weight decay, betas, eps) and its lr at the restored step.

    When nothing changed, every value is the one the state held, so an exact resume stays exact.
    """
    if len(fresh_groups) != len(optimizer.param_groups):
        raise ValueError(
            "--resume: the checkpoint's optimiser has other parameter groups than this run "
            "(a changed lock or loss kind); resume with the run's own config"
        )
    for group, fresh in zip(optimizer.param_groups, fresh_groups):
        group.update({key: value for key, value in fresh.items() if key not in ("params", "lr")})
    scheduler.base_lrs = list(fresh_base_lrs)
    step = scheduler.last_epoch
    for group, base, factor in zip(optimizer.param_groups, fresh_base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(step)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def clean_temporary_files(out_dir: str | os.PathLike) -> list[Path]:
    """Delete half-written checkpoint files a killed run left (`atomic_write`'s .*.tmp names)."""
    out_dir = Path(out_dir)
    leftovers = [
        *out_dir.glob(".model.safetensors.*.tmp"),
        *(out_dir / "checkpoints").glob(".step_*.pt.*.tmp"),
    ]
    for path in leftovers:
        path.unlink(missing_ok=True)
        logger.info("removed %s, left half-written by an interrupted run", path)
    return leftovers


def truncate_metrics(path: str | os.PathLike, step: int) -> int:
    """Drop metrics.jsonl records after `step` (and a line cut short by a kill); returns how
    many were dropped. A resumed run writes those steps again."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = load_json_text(line)
        except ValueError:  # a line cut short by a kill (or one no dalip run wrote)
            dropped += bool(line.strip())
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        write_text(path, "".join(f"{line}\n" for line in kept))
    return dropped
