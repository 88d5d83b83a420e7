"""Batches for training and validation, from memory or streamed from shards.

A feed yields this rank's part of each batch as (x, mask, y, weight); weight 0 marks a
stand-in jet for a rank whose share of a short last batch is empty (DDP needs every rank to step).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from salt.data.loader import JetTensors, ShardStream, load_split, resolve_loader, split_chunks, stream_loader
from salt.training.distributed import Dist, rank_slice
from salt.training.settings import TrainSettings


class MemoryFeed:
    def __init__(self, data: JetTensors) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def train_batches(self, perm: torch.Tensor, batch_size: int, skip: int, dist: Dist
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]]:
        perm = perm.to(self.data.y.device)
        for i in range(skip * batch_size, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            local, weight = idx[rank_slice(len(idx), dist)], 1.0
            if len(local) == 0:
                local, weight = idx[:1], 0.0
            yield self.data.x[local], self.data.mask[local], self.data.y[local], weight

    def eval_batches(self, batch_size: int, dist: Dist) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        part = rank_slice(len(self.data), dist)
        for i in range(part.start, part.stop, batch_size):
            j = min(i + batch_size, part.stop)
            yield self.data.x[i:j], self.data.mask[i:j], self.data.y[i:j]


class StreamFeed:
    def __init__(self, manifest: dict[str, Any], split: str, settings: TrainSettings, seed: int, device: torch.device,
                 world: int, max_jets: int | None = None) -> None:
        self.chunks = split_chunks(manifest, split, max_jets=max_jets)
        if len(self.chunks) < world:
            raise ValueError(f"the {split} split has {len(self.chunks)} HDF5 chunks, fewer than the {world} ranks "
                             "that would each stream a share of them; use train.loader: memory")
        self.normalisation = manifest["normalisation"]
        self.settings, self.seed, self.device = settings, seed, device
        self.n = sum(len(c) for c in self.chunks)

    def __len__(self) -> int:
        return self.n

    def _loader(self, batch_size: int, shuffle: bool, epoch: int, dist: Dist) -> Iterator:
        ds = ShardStream(self.chunks, self.normalisation, batch_size, shuffle=shuffle, seed=self.seed,
                         buffer_jets=self.settings.buffer_jets, rank=dist.rank, world=dist.world)
        ds.set_epoch(epoch)
        return iter(stream_loader(ds, self.settings.workers, pin_memory=self.device.type == "cuda"))

    def train_batches(self, epoch: int, batch_size: int, skip: int, dist: Dist
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]]:
        # each rank streams its own chunks in batches of global/world: same global batch size
        batches = self._loader(max(1, batch_size // dist.world), True, epoch, dist)
        for _ in range(skip):   # resume inside an epoch: replay the order, discard what was trained on
            next(batches, None)
        for x, m, y in batches:
            yield (x.to(self.device, non_blocking=True), m.to(self.device, non_blocking=True),
                   y.to(self.device, non_blocking=True), 1.0)

    def eval_batches(self, batch_size: int, dist: Dist) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for x, m, y in self._loader(batch_size, False, 0, dist):
            yield x.to(self.device), m.to(self.device), y.to(self.device)


def make_feed(manifest: dict[str, Any], split: str, settings: TrainSettings, seed: int, device: torch.device,
              world: int, max_jets: int | None = None) -> tuple[MemoryFeed | StreamFeed, str]:
    kind = resolve_loader(settings.loader, manifest, split, settings.memory_budget_gb)
    if kind == "memory":
        return MemoryFeed(load_split(manifest, split, max_jets=max_jets).to(device)), kind
    return StreamFeed(manifest, split, settings, seed, device, world, max_jets=max_jets), kind
