"""Rank and world size from the torchrun environment; process-group setup."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
    if device is None or device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested but no CUDA GPU is available; use device=cpu or auto")
        device = f"cuda:{local_rank}" if device == "cuda" else device
    return DistributedContext(rank, local_rank, world_size, device)


def init_distributed(context: DistributedContext) -> None:
    """Join the process group torchrun describes: nccl on GPUs, gloo on CPU."""
    if not context.is_distributed or dist.is_initialized():
        return
    backend = "nccl" if context.device.startswith("cuda") else "gloo"
    if context.device.startswith("cuda"):
        torch.cuda.set_device(context.device)
    dist.init_process_group(backend=backend, rank=context.rank, world_size=context.world_size)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy; the input is left as it was)."""
    if not dist.is_initialized():
        return value.clone()
    result = value.detach().clone()
    dist.all_reduce(result)
    return result / dist.get_world_size()
