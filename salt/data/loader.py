"""Jets from shards as torch tensors, normalised with the manifest's train statistics.

Small sets (the demo, HLS4ML, ModelNet10) are loaded whole into memory; the
shards stay physical on disk and normalisation happens here, so every model
sees the same inputs whatever sort built the shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from salt.data.shards import apply_normalisation, read_shard


@dataclass
class JetTensors:
    """One split in memory: inputs x (n, N, F), mask (n, N), labels y (n,) and multiplicity (n,)."""

    x: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor
    n_particles: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> "JetTensors":
        return JetTensors(self.x.to(device), self.mask.to(device), self.y.to(device), self.n_particles.to(device))


def shard_paths(manifest: dict[str, Any], split: str, root: str | Path | None = None) -> list[Path]:
    """Paths of the non-empty shards of `split` (relative paths resolve against `root`)."""
    base = Path(root) if root is not None else Path()
    return [base / e["path"] for e in manifest["splits"][split]["shards"] if e["n_jets"] > 0]


def load_split(manifest: dict[str, Any], split: str, *, normalise: bool = True, max_jets: int | None = None,
               root: str | Path | None = None) -> JetTensors:
    """Concatenate every shard of `split` (optionally the first `max_jets` jets)."""
    parts: list[dict[str, np.ndarray]] = []
    remaining = max_jets
    for path in shard_paths(manifest, split, root):
        stop = None if remaining is None else remaining
        data = read_shard(path, 0, stop, fields=("particles", "mask", "label", "jet"))
        parts.append(data)
        if remaining is not None:
            remaining -= len(data["label"])
            if remaining <= 0:
                break
    if not parts:
        raise ValueError(f"split {split!r} of the manifest has no jets")
    particles = np.concatenate([p["particles"] for p in parts])
    mask = np.concatenate([p["mask"] for p in parts])
    labels = np.concatenate([p["label"] for p in parts])
    jet = np.concatenate([p["jet"] for p in parts])
    if normalise:
        particles = apply_normalisation(particles, mask, manifest["normalisation"])
    n_index = manifest["jet_features"].index("n_particles")
    return JetTensors(
        x=torch.from_numpy(np.ascontiguousarray(particles)),
        mask=torch.from_numpy(mask),
        y=torch.from_numpy(labels.astype(np.int64)),
        n_particles=torch.from_numpy(jet[:, n_index].astype(np.int64)),
    )
