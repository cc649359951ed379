"""Exact resume: the run's position, RNG states, stop signals, and the training checkpoint file."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import random
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dalip.atomic import atomic_write, save_torch


@dataclass
class Position:
    """Where the run is: optimiser steps done overall and within the current epoch."""

    step: int = 0
    epoch: int = 0
    steps_in_epoch: int = 0
    nonfinite_in_row: int = 0
    nonfinite_total: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG states as tensors and plain data (loadable with weights_only); on a
    CUDA `device`, that GPU's generator only (not every visible GPU's)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if device is not None and device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore `rng_state`'s states; on a CUDA `device`, only that GPU's generator, so a run
    resumes with fewer (or other) visible GPUs than it was saved with."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss"]))
    if device is None or device.type != "cuda":
        return
    own = state.get("cuda_device")
    if own is None and state.get("cuda"):  # written by dalip <= 0.1.0: every visible GPU's, by index
        index = device.index or 0
        own = state["cuda"][index] if index < len(state["cuda"]) else None
    if own is not None:
        torch.cuda.set_rng_state(own, device)


def training_state(
    components: dict[str, Any],
    position: Position,
    world_size: int,
    device: torch.device | None = None,
    group: Any = None,
    **plain: Any,
) -> dict[str, Any]:
    """What a training checkpoint holds: each component's `state_dict()` (model, optimiser,
    scheduler, scaler), the position, every rank's RNG state and plain data (configs).
    Collective: every rank must call it (`group`: the process group to gather RNG states over)."""
    state = {name: component.state_dict() for name, component in components.items()}
    rng = gather_rng_states(device, group)
    return {**state, "position": position.as_dict(), "rng": rng, **plain, "world_size": world_size}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_saved_state(state: dict[str, Any], path: str | os.PathLike) -> None:
    """ValueError naming `path` and the field unless what a resume reads besides the tensors has
    the types and ranges `training_state` writes: the position's counts (whole numbers, 0 <= in a
    row <= in all <= step), the number of processes, one RNG state per process, the scheduler's
    step a whole number (`check_resumed_position` then holds it to the position's)."""
    position = state.get("position")
    names = [field.name for field in dataclasses.fields(Position)]
    if not isinstance(position, dict) or sorted(position) != sorted(names):
        raise ValueError(f"{path}: position must hold {', '.join(names)}; found {_keys(position)}")
    wrong = [f"{name}={position[name]!r}" for name in names if not _is_int(position[name])]
    if wrong:
        raise ValueError(f"{path}: position {', '.join(wrong)}: expected whole numbers")
    step, in_row, total = position["step"], position["nonfinite_in_row"], position["nonfinite_total"]
    if not 0 <= in_row <= total <= max(step, 0):
        raise ValueError(
            f"{path}: position has {in_row} non-finite steps in a row and {total} in all at step "
            f"{step}: expected 0 <= in a row <= in all <= step"
        )
    world_size, rng = state.get("world_size"), state.get("rng")
    if not _is_int(world_size) or world_size < 1:
        raise ValueError(f"{path}: world_size={world_size!r}: expected a whole number of processes >= 1")
    if not isinstance(rng, list) or len(rng) != world_size or not all(isinstance(r, dict) for r in rng):
        raise ValueError(f"{path}: rng: expected one RNG state per process ({world_size})")
    scheduler = state.get("scheduler")
    last = scheduler.get("last_epoch") if isinstance(scheduler, dict) else None
    if not _is_int(last):
        raise ValueError(f"{path}: scheduler.last_epoch={last!r}: expected a whole number of steps")


def _keys(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, dict) else type(value).__name__


def restore_training_state(
    state: dict[str, Any],
    components: dict[str, Any],
    rank: int,
    world_size: int,
    device: torch.device | None = None,
) -> Position:
    """Load `training_state`'s components and this rank's RNG state; returns the position."""
    for name, component in components.items():
        component.load_state_dict(state[name])
    rng = state["rng"]
    set_rng_state(rng[rank] if len(rng) == world_size else rng[0], device)
    return Position(**state["position"])


def gather_rng_states(device: torch.device | None = None, group: Any = None) -> list[dict[str, Any]]:
    """Every rank's RNG state (rank order); just this process's when not distributed."""
    own = rng_state(device)
    if not dist.is_initialized():
        return [own]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, own, group=group)
    return states


STOP_GRACE_VARIABLE = "DALIP_STOP_GRACE_SECONDS"
DEFAULT_STOP_GRACE_SECONDS = 120.0


def stop_grace_seconds() -> float:
    """How long a stop signal waits for the loop to reach a step's end (`DALIP_STOP_GRACE_SECONDS`)."""
    text = os.environ.get(STOP_GRACE_VARIABLE, "")
    try:
        grace = float(text) if text else DEFAULT_STOP_GRACE_SECONDS
    except ValueError:
        grace = -1.0
    if not 0 < grace < math.inf:
        raise ValueError(f"{STOP_GRACE_VARIABLE}={text!r}: expected a number of seconds > 0")
    return grace


class StopSignals:
    """Turns SIGTERM / SIGINT into a flag the loop reads before each step (all ranks agree on it
    through `dalip.train.distributed.ControlChannel`), then saves a checkpoint and stops.

    A step that never gets to read the flag (a stalled data reader, a hung collective) must not
    keep the process alive: a second signal, or the grace period (`stop_grace_seconds`) passing
    before the loop calls `acknowledge`, ends the process at once with one line on stderr
    (exit status 128 + the signal, the steps since the last checkpoint lost) and its loader
    workers with it.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.grace = stop_grace_seconds()
        self._previous: dict[int, Any] = {}
        self._deadline: threading.Timer | None = None
        self._pid = os.getpid()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked loader worker inherits the handler: its parent decides
            return
        if self.received is not None:
            end_now(signum, "a second stop signal arrived before the step reached its end")
        self.received = signum
        why = f"no step reached its end within {self.grace:g} s of the signal ({STOP_GRACE_VARIABLE})"
        self._deadline = threading.Timer(self.grace, end_now, (signum, why))
        self._deadline.daemon = True
        self._deadline.start()

    def acknowledge(self) -> None:
        """The loop has seen the signal and is stopping in order: no deadline any more."""
        if self._deadline is not None:
            self._deadline.cancel()

    def __exit__(self, *exc: Any) -> None:
        self.acknowledge()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def end_now(signum: int, why: str) -> None:
    """End the process at once (a stop the loop could not honour): one line, loader workers killed."""
    line = f"dalip: stopped by signal {signum} without a checkpoint: {why}\n"
    os.write(2, line.encode())
    for child in multiprocessing.active_children():  # DataLoader workers; a stalled one would linger
        child.kill()
    os._exit(128 + signum)


def all_ranks_agree(value: bool, device: torch.device) -> bool:
    """True only if `value` is True on every rank."""
    if not dist.is_initialized():
        return value
    flag = torch.tensor([1 if value else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


# Training checkpoints: a torch file of tensors and plain data only, so it loads with
# `torch.load(..., weights_only=True)`.
TRAINING_PATTERN = "step_*.pt"


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (model, optimiser, scheduler, RNG, position...)."""
    atomic_write(path, lambda temporary: save_torch(state, temporary))


def training_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Training checkpoints in `folder`, oldest step first."""
    return sorted(Path(folder).glob(TRAINING_PATTERN))


def prune_training_checkpoints(folder: str | os.PathLike, keep_last: int) -> None:
    for old in training_checkpoints(folder)[:-keep_last]:
        old.unlink(missing_ok=True)


def resolve_resume(resume: str, checkpoint_folder: str | os.PathLike) -> Path:
    """`latest` -> the newest training checkpoint in the run's folder; else the path itself."""
    if resume == "latest":
        found = training_checkpoints(checkpoint_folder)
        if not found:
            raise FileNotFoundError(f"--resume latest: no checkpoint in {checkpoint_folder}")
        return found[-1]
    if not os.path.isfile(resume):
        raise FileNotFoundError(f"--resume: checkpoint not found: {resume}")
    return Path(resume)
