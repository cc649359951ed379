"""Rank and world size from the torchrun environment, process-group setup, the control
channel the ranks agree on run decisions over, and how the global batch splits over ranks and
accumulation steps."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from dalip.config import TrainConfig
from dalip.model.devices import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: global rank, local rank (GPU index), world size, device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def context_from_environment(device: str | None = None) -> DistributedContext:
    """Read RANK / LOCAL_RANK / WORLD_SIZE (as torchrun sets them); pick cuda:<local_rank> or cpu."""
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    resolved = resolve_device(device or "auto", local_rank)
    return DistributedContext(rank, local_rank, world_size, str(resolved))


def init_distributed(context: DistributedContext, timeout_minutes: float = 60.0) -> None:
    """Join the process group torchrun describes: nccl on GPUs, gloo on CPU. `timeout_minutes`
    bounds how long a collective waits for the slowest rank (e.g. while rank 0 validates)."""
    if not context.is_distributed or dist.is_initialized():
        return
    backend = "nccl" if context.device.startswith("cuda") else "gloo"
    if context.device.startswith("cuda"):
        torch.cuda.set_device(context.device)
    dist.init_process_group(
        backend=backend,
        rank=context.rank,
        world_size=context.world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
    )


class ControlChannel:
    """The run decisions every rank must take together (is there a batch for everyone? did any
    rank get a stop signal? wait while rank 0 validates), over a CPU (gloo) group: agreeing costs
    one small all_reduce and never waits for the GPU's queue. One process: no communication."""

    def __init__(self, group: Any = None, active: bool = False) -> None:
        self.group, self.active = group, active

    @classmethod
    def create(cls, context: DistributedContext, timeout_minutes: float = 60.0) -> ControlChannel:
        """Collective under torch.distributed (every rank calls it): a gloo group beside nccl."""
        if not context.is_distributed or not dist.is_initialized():
            return cls()
        if dist.get_backend() == "gloo":
            return cls(None, True)
        return cls(dist.new_group(backend="gloo", timeout=datetime.timedelta(minutes=timeout_minutes)), True)

    def agree(self, ready: bool, signal: int | None) -> tuple[bool, int | None]:
        """(ready on every rank, the largest signal number any rank received or None)."""
        if not self.active:
            return ready, signal
        flags = torch.tensor([0 if ready else 1, signal or 0], dtype=torch.int64)  # on the CPU
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group)
        not_ready, received = flags.tolist()
        return not not_ready, received or None

    def barrier(self) -> None:
        if self.active:
            dist.barrier(group=self.group)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def micro_batch_size(config: TrainConfig, world_size: int) -> int:
    """Samples per rank per forward pass: batch_size / (world_size x accumulation)."""
    parts = world_size * config.optim.accumulation
    if config.batch_size % parts:
        raise ValueError(
            f"batch_size: {config.batch_size} is not divisible by world size x optim.accumulation "
            f"= {world_size} x {config.optim.accumulation}"
        )
    return config.batch_size // parts
