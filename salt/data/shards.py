"""HDF5 shards (one schema for every dataset), their manifest and normalisation statistics.

A shard holds the jets of one raw file for one split, already sorted and padded:

    particles   float32 (n, N, F)  physical features in sort order, zeros after the last particle
    mask        bool    (n, N)     true for real particles
    sort_value  float32 (n, N)     the sort key of each slot (so a reader can see the partitions)
    label       int64   (n,)       class index
    jet         float32 (n, J)     per-jet features (pt, eta, phi, energy, mass, n_particles, ...)

Attributes name the features, classes, sort key and N. The manifest of a
(dataset, sort) indexes every shard with its checksum and carries the
normalisation statistics fitted on the train split only: stored values stay
physical and normalisation happens when loading.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # registers the Blosc filter with HDF5: every reader of shards needs it
import numpy as np

from salt.atomic import atomic_path, write_json
from salt.provenance import file_md5, provenance

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
DATASETS = ("particles", "mask", "sort_value", "label", "jet")
CHUNK_JETS = 512
# Blosc LZ4 with byte shuffle: about 3x faster to write and 5x faster to read than LZF, and
# smaller, on padded particle arrays (benchmarks/preprocess_speed.py). Shards opened outside
# salt need `import hdf5plugin` first.
COMPRESSION = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)
NORMALISATIONS = ("robust", "standard", "none")


class ShardError(ValueError):
    """A shard or manifest that does not follow the schema; the message names the file."""


@dataclass
class ShardWriter:
    """Append batches of jets to a shard; the file appears only on `close()` success.

    Used as a context manager so that an exception (or a killed job) leaves no
    shard behind."""

    path: Path
    n_particles: int
    features: Sequence[str]
    jet_features: Sequence[str]
    attrs: dict[str, Any]

    def __enter__(self) -> "ShardWriter":
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._file = h5py.File(self._tmp, "w")
        n, f, j = self.n_particles, len(self.features), len(self.jet_features)
        chunk = CHUNK_JETS
        self._ds = {
            "particles": self._file.create_dataset("particles", (0, n, f), np.float32, maxshape=(None, n, f),
                                                   chunks=(chunk, n, f), **COMPRESSION),
            "mask": self._file.create_dataset("mask", (0, n), bool, maxshape=(None, n), chunks=(chunk, n),
                                              **COMPRESSION),
            "sort_value": self._file.create_dataset("sort_value", (0, n), np.float32, maxshape=(None, n),
                                                    chunks=(chunk, n), **COMPRESSION),
            "label": self._file.create_dataset("label", (0,), np.int64, maxshape=(None,), chunks=(chunk * 8,)),
            "jet": self._file.create_dataset("jet", (0, j), np.float32, maxshape=(None, j), chunks=(chunk, j)),
        }
        self.count = 0
        return self

    def append(self, particles: np.ndarray, mask: np.ndarray, sort_value: np.ndarray, label: np.ndarray,
               jet: np.ndarray) -> None:
        m = len(label)
        if m == 0:
            return
        for name, arr in (("particles", particles), ("mask", mask), ("sort_value", sort_value),
                          ("label", label), ("jet", jet)):
            ds = self._ds[name]
            if arr.shape[1:] != ds.shape[1:] or len(arr) != m:
                raise ShardError(f"{self.path}: {name} batch has shape {arr.shape}, expected ({m}, *{ds.shape[1:]})")
            ds.resize(self.count + m, axis=0)
            ds[self.count:self.count + m] = arr
        self.count += m

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                a = self._file.attrs
                a["schema_version"] = SCHEMA_VERSION
                a["n_particles"] = self.n_particles
                a["features"] = json.dumps(list(self.features))
                a["jet_features"] = json.dumps(list(self.jet_features))
                a["n_jets"] = self.count
                for key, value in self.attrs.items():
                    a[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)
        finally:
            self._file.close()
        return bool(self._ctx.__exit__(exc_type, exc, tb))


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The shard's attributes with JSON values decoded."""
    try:
        with h5py.File(path, "r") as f:
            raw = dict(f.attrs)
            missing = [d for d in DATASETS if d not in f]
    except OSError as err:
        raise ShardError(f"{path}: not a readable HDF5 shard ({err})") from err
    if missing:
        raise ShardError(f"{path}: datasets {missing} missing; a shard needs {list(DATASETS)}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        value = value.item() if hasattr(value, "item") else value
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[key] = value
    if out.get("schema_version") != SCHEMA_VERSION:
        raise ShardError(f"{path}: schema_version {out.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    return out


def read_shard(path: str | Path, start: int = 0, stop: int | None = None,
               fields: Iterable[str] = DATASETS) -> dict[str, np.ndarray]:
    """Read jets [start, stop) of a shard."""
    try:
        with h5py.File(path, "r") as f:
            return {name: f[name][start:stop] for name in fields}
    except (OSError, KeyError) as err:
        raise ShardError(f"{path}: cannot read {list(fields)} [{start}:{stop}] ({err})") from err


# ---------------------------------------------------------------------------
# Normalisation

def fit_normalisation(paths: Sequence[str | Path], method: str, features: Sequence[str],
                      max_particles: int = 2_000_000, seed: int = 0) -> dict[str, Any]:
    """Per-feature centre and scale fitted on real (unpadded) particles of the train shards.

    robust: centre = median, scale = P95 - P5 (the authors' choice, but without
    the padded zeros they included); standard: mean and std; none: identity.
    Quantiles come from a seeded uniform sample of at most `max_particles` so the
    fit is bounded in memory on JetClass-sized inputs."""
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {method!r}; expected one of {NORMALISATIONS}")
    n_feat = len(features)
    if method == "none":
        return {"method": method, "features": list(features), "center": [0.0] * n_feat, "scale": [1.0] * n_feat}
    totals = [int(read_shard(p, fields=("mask",))["mask"].sum()) for p in paths]
    total = sum(totals)
    if total == 0:
        raise ShardError(f"no particles in the train shards {list(map(str, paths))}; cannot fit normalisation")
    rng = np.random.default_rng(seed)
    keep_fraction = min(1.0, max_particles / total)
    samples = []
    for path, count in zip(paths, totals):
        if count == 0:
            continue
        with h5py.File(path, "r") as f:
            for start in range(0, f["label"].shape[0], 8 * CHUNK_JETS):
                stop = start + 8 * CHUNK_JETS
                x = f["particles"][start:stop][f["mask"][start:stop]]
                if keep_fraction < 1.0:
                    x = x[rng.random(len(x)) < keep_fraction]
                samples.append(x.astype(np.float64))
    x = np.concatenate(samples)
    if method == "robust":
        p5, p50, p95 = np.percentile(x, [5, 50, 95], axis=0)
        center, scale = p50, p95 - p5
    else:
        center, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return {"method": method, "features": list(features), "center": center.tolist(), "scale": scale.tolist(),
            "fitted_on_particles": int(len(x)), "train_particles": int(total)}


def apply_normalisation(particles: np.ndarray, mask: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """Normalise real particles; padded slots stay exactly zero."""
    center = np.asarray(norm["center"], dtype=np.float32)
    scale = np.asarray(norm["scale"], dtype=np.float32)
    out = (particles - center) / scale
    out *= mask[..., None]
    return out.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------
# Manifest

def build_manifest(splits: dict[str, Sequence[str | Path]], normalisation: str = "robust") -> dict[str, Any]:
    """Index the shards of one (dataset, sort), check they agree, and fit the normalisation."""
    manifest: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "splits": {}}
    reference: dict[str, Any] | None = None
    for split in SPLITS:
        entries = []
        for path in splits.get(split, []):
            attrs = read_attrs(path)
            if reference is None:
                reference = attrs
            for key in ("features", "classes", "sort", "truncation", "n_particles", "jet_features", "kind"):
                if attrs.get(key) != reference.get(key):
                    raise ShardError(f"{path}: attribute {key!r} = {attrs.get(key)!r} differs from "
                                     f"{reference.get(key)!r} in the other shards")
            if attrs.get("split") != split:
                raise ShardError(f"{path}: holds split {attrs.get('split')!r} but was listed as {split!r}")
            labels = read_shard(path, fields=("label",))["label"]
            counts = np.bincount(labels, minlength=len(reference["classes"])).tolist()
            entries.append({"path": str(path), "n_jets": int(attrs["n_jets"]), "class_counts": counts,
                            "md5": file_md5(path), "source": attrs.get("source")})
        manifest["splits"][split] = {
            "shards": entries,
            "n_jets": sum(e["n_jets"] for e in entries),
            "class_counts": np.sum([e["class_counts"] for e in entries], axis=0).tolist() if entries else [],
        }
    if reference is None:
        raise ShardError("no shards given")
    if manifest["splits"]["train"]["n_jets"] == 0:
        raise ShardError("the train split is empty; check the split fractions and the raw files")
    for key in ("features", "classes", "sort", "truncation", "n_particles", "jet_features", "kind"):
        manifest[key] = reference.get(key)
    train_paths = [e["path"] for e in manifest["splits"]["train"]["shards"] if e["n_jets"]]
    manifest["normalisation"] = fit_normalisation(train_paths, normalisation, reference["features"])
    manifest["provenance"] = provenance()
    return manifest


def load_manifest(path: str | Path) -> dict[str, Any]:
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ShardError(f"{path}: cannot read manifest ({err})") from err
    for key in ("splits", "features", "classes", "n_particles", "normalisation"):
        if key not in manifest:
            raise ShardError(f"{path}: manifest has no {key!r}")
    return manifest


def verify_shards(manifest: dict[str, Any], splits: Iterable[str], root: str | Path | None = None) -> None:
    """Check the shards of `splits` against the manifest's md5s before a job uses them.

    A shard changed after the manifest was built (a disk error, a hand edit, a copy gone wrong)
    keeps its size and often its mtime, and would otherwise be trained on silently. One sequential
    read per shard and job, far less than the epochs that follow."""
    base = Path(root) if root is not None else Path()
    for split in splits:
        for entry in manifest["splits"][split]["shards"]:
            path = base / entry["path"]
            actual = file_md5(path)
            if actual != entry["md5"]:
                raise ShardError(f"{path}: md5 {actual}, but the manifest lists {entry['md5']}; the shard changed "
                                 f"after the manifest was built (re-run its preprocessing and the manifest)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for split in SPLITS:
        parser.add_argument(f"--{split}", nargs="*", default=[], metavar="SHARD", help=f"{split} shards")
    parser.add_argument("--normalisation", choices=NORMALISATIONS, default="robust")
    parser.add_argument("--output", required=True, help="manifest.json to write")


def main(args: argparse.Namespace) -> int:
    manifest = build_manifest({s: getattr(args, s) for s in SPLITS}, args.normalisation)
    write_json(args.output, manifest)
    counts = {s: manifest["splits"][s]["n_jets"] for s in SPLITS}
    print(f"manifest {args.output}: {counts} jets, features {manifest['features']}, sort {manifest['sort']}")
    return 0
