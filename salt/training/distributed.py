"""Rank bookkeeping for DistributedDataParallel under torchrun (gloo on CPU, NCCL on GPUs)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist


@dataclass
class Dist:
    """Rank, world size, and a CPU (gloo) group for the per-step bookkeeping."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    meta_group: Any = None

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum(self, values: list[float], dtype: torch.dtype = torch.float64) -> list[float]:
        """Element-wise sum over ranks (identity for one process)."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=dtype)
        torch_dist.all_reduce(t, group=self.meta_group)
        return t.tolist()

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier(group=self.meta_group)


def init_distributed(device_type: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        torch_dist.init_process_group("nccl")
        meta = torch_dist.new_group(backend="gloo")
    else:
        torch_dist.init_process_group("gloo")
        meta = None
    return Dist(rank, world, local_rank, meta)


def rank_slice(n: int, dist: Dist) -> slice:
    """This rank's contiguous share of n items (sizes differ by at most one)."""
    return slice(n * dist.rank // dist.world, n * (dist.rank + 1) // dist.world)
