"""The device of a training or evaluation process, and rank bookkeeping for DistributedDataParallel
under torchrun (gloo on CPU, NCCL on GPUs).

Each rank trains on its slice of every global batch; losses are scaled so that the gradient is
the mean over the global batch, as in one process (salt/training/steps.py). Ranks agree once
per step, in a small gloo all-reduce (`Dist.sum`), on batch sizes, end of data and stop requests.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

log = logging.getLogger(__name__)


@dataclass
class Dist:
    """Rank, world size, the process group's backend (None: a single process without one) and a CPU
    (gloo) group for the per-step bookkeeping."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    meta_group: Any = None
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.backend is not None

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


def resolve_device(device: str) -> torch.device:
    """The device to train or evaluate on: cuda[:i] falls back to the CPU, with a warning, where no GPU
    is visible (the history, summary and metrics record the device that ran)."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        log.warning("device %s requested but CUDA is not available; running on cpu", device)
        return torch.device("cpu")
    return torch.device(device)


def launched_by_torchrun() -> bool:
    """True for a rank that torchrun started (it sets TORCHELASTIC_RUN_ID), even a world of one."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str) -> Dist:
    """Join the process group of a torchrun launch: NCCL with one GPU per rank (cuda:LOCAL_RANK) on
    cuda, gloo on a CPU. A world of one under torchrun joins too (DistributedDataParallel over one
    rank computes what a single process does), so a one-GPU machine can test the NCCL path."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and not launched_by_torchrun():
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"rank {rank}: LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) "
                               "are visible; start one process per GPU (salt train --nproc = train.gpus)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch_dist.init_process_group("nccl", device_id=device)
        meta = torch_dist.new_group(backend="gloo")
        backend = "nccl"
    else:
        torch_dist.init_process_group("gloo")
        meta, backend = None, "gloo"
    log.info("DistributedDataParallel: rank %d of %d, backend %s, %s", rank, world, backend,
             f"cuda:{local_rank}" if device_type == "cuda" else "cpu")
    return Dist(rank, world, local_rank, meta, backend)


def rank_slice(n: int, dist: Dist) -> slice:
    """This rank's contiguous share of n items (sizes differ by at most one)."""
    return slice(n * dist.rank // dist.world, n * (dist.rank + 1) // dist.world)
