"""Tiny learnable jet datasets as real shards + manifest, for the loader and trainer tests.

Classes differ in multiplicity and in the angular spread of their particles, so a model
learns something in a few epochs and early stopping has a real validation curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import numpy as np

import salt.data.shards as shards
from salt.atomic import write_json

FEATURES = ["pt", "deta", "dphi"]
JET_FEATURES = ["pt", "n_particles"]


def jets(n: int, n_particles: int, n_classes: int, rng: np.random.Generator):
    labels = rng.integers(0, n_classes, n)
    counts = np.clip(rng.poisson(4 + 3 * labels), 2, n_particles)
    mask = np.arange(n_particles)[None] < counts[:, None]
    spread = 0.05 + 0.1 * labels[:, None]
    pt = np.sort(rng.exponential(20.0, (n, n_particles)), axis=1)[:, ::-1]
    x = np.stack([pt, rng.normal(0, 1, (n, n_particles)) * spread, rng.normal(0, 1, (n, n_particles)) * spread], -1)
    x = (x * mask[..., None]).astype(np.float32)
    key = (pt * mask).astype(np.float32)
    jet = np.stack([pt.sum(1), counts], 1).astype(np.float32)
    return x, mask, key, labels.astype(np.int64), jet


def write_dataset(root: Path, *, n_train: int = 600, n_val: int = 200, n_particles: int = 8,
                  classes: Sequence[str] = ("a", "b", "c"), shards_per_split: int = 2, chunk_jets: int = 512,
                  seed: int = 0, relative_to: Path | None = None, names: Sequence[str] | None = None) -> Path:
    """Write train/val/test shards and manifest.json under `root`; returns the manifest path.

    `relative_to`: store shard paths relative to this directory (as the workflow does);
    `names`: shard file names (default s000, s001, ...)."""
    rng = np.random.default_rng(seed)
    names = list(names) if names is not None else [f"s{k:03d}" for k in range(shards_per_split)]
    shards_per_split = len(names)
    paths: dict[str, list[Path]] = {}
    with mock.patch.object(shards, "CHUNK_JETS", chunk_jets):
        for split, n in (("train", n_train), ("val", n_val), ("test", n_val)):
            paths[split] = []
            sizes = np.full(shards_per_split, n // shards_per_split)
            sizes[: n % shards_per_split] += 1
            for k, size in enumerate(sizes):
                path = root / split / f"{names[k]}.h5"
                attrs = {"classes": list(classes), "sort": "kt", "kind": "jet", "split": split, "source": ["synthetic"]}
                with shards.ShardWriter(path, n_particles, FEATURES, JET_FEATURES, attrs) as w:
                    w.append(*jets(int(size), n_particles, len(classes), rng))
                paths[split].append(path.relative_to(relative_to) if relative_to else path)
    if relative_to is not None:
        import os

        cwd = os.getcwd()
        os.chdir(relative_to)
        try:
            manifest = shards.build_manifest(paths, "robust")
        finally:
            os.chdir(cwd)
    else:
        manifest = shards.build_manifest(paths, "robust")
    out = root / "manifest.json"
    write_json(out, manifest)
    return out
