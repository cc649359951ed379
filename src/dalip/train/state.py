"""Exact resume: the run's position, RNG states, stop signals, and the training checkpoint file."""

from __future__ import annotations

import dataclasses
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

from dalip.atomic import atomic_write


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


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain data (loadable with weights_only)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(position), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_state(components: dict[str, Any], position: Position, world_size: int, **plain: Any) -> dict[str, Any]:
    """What a training checkpoint holds: each component's `state_dict()` (model, optimiser,
    scheduler, scaler), the position, every rank's RNG state and plain data (configs).
    Collective: every rank must call it."""
    state = {name: component.state_dict() for name, component in components.items()}
    return {**state, "position": position.as_dict(), "rng": gather_rng_states(), **plain, "world_size": world_size}


def restore_training_state(state: dict[str, Any], components: dict[str, Any], rank: int, world_size: int) -> Position:
    """Load `training_state`'s components and this rank's RNG state; returns the position."""
    for name, component in components.items():
        component.load_state_dict(state[name])
    rng = state["rng"]
    set_rng_state(rng[rank] if len(rng) == world_size else rng[0])
    return Position(**state["position"])


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's RNG state (rank order); just this process's when not distributed."""
    own = rng_state()
    if not dist.is_initialized():
        return [own]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, own)
    return states


class StopSignals:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def agreed(self, device: torch.device) -> int | None:
        """The signal number if any rank received one (all ranks agree), else None."""
        received = self.received or 0
        if dist.is_initialized():
            flag = torch.tensor([received], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            received = int(flag.item())
        return received or None


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
    atomic_write(path, lambda temporary: torch.save(state, temporary))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint written by `save_training_state` (no code runs on load)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and weights_only errors all mean "not ours"
        raise ValueError(f"{path} is not a dalip training checkpoint ({type(error).__name__})") from error
    if not isinstance(state, dict) or "dalip_config" not in state or "model" not in state:
        raise ValueError(f"{path} is not a dalip training checkpoint (no model or dalip_config)")
    return state


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
