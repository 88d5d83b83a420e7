"""Jets from shards as torch tensors, normalised with the manifest's train statistics.

Two ways to feed a trainer, chosen by `train.loader`:

* in memory (`load_split`): the whole split as tensors. Small sets (the demo, HLS4ML,
  ModelNet10) fit, and a GPU then indexes its batches without any host traffic.
* streaming (`ShardStream`): for sets larger than RAM (JetClass). An IterableDataset
  that reads HDF5 chunks in a random order that interleaves every shard, mixes them in
  a bounded shuffle buffer and yields ready batches. Each DataLoader worker (and each
  DDP rank) reads a disjoint subset of chunks; every random choice is a function of
  (seed, epoch, rank, worker), so a run is reproducible for a given worker count and
  can skip forward to any batch when it resumes.

The shards stay physical on disk and normalisation happens here, so every model sees
the same inputs whatever sort built the shards.
"""

from __future__ import annotations

import signal
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from salt.data.shards import CHUNK_JETS, ShardError, apply_normalisation, read_shard

LOADERS = ("memory", "stream", "auto")
_TRAIN_FIELDS = ("particles", "mask", "label")


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


# ---------------------------------------------------------------------------
# Memory or stream


def split_nbytes(manifest: dict[str, Any], split: str) -> int:
    """Bytes the split takes as tensors in memory (x float32, mask bool, label int64)."""
    n = manifest["splits"][split]["n_jets"]
    per_jet = manifest["n_particles"] * (4 * len(manifest["features"]) + 1) + 8 + 8
    return n * per_jet


def resolve_loader(kind: str, manifest: dict[str, Any], split: str, budget_gb: float) -> str:
    """'memory' or 'stream' for `split`; 'auto' streams only what does not fit under the budget.

    The budget is a config value, not the free RAM of the node, so the choice (which
    changes the batch order and hence the result) is the same on every machine."""
    if kind not in LOADERS:
        raise ValueError(f"train.loader is {kind!r}; expected one of {LOADERS}")
    if kind != "auto":
        return kind
    return "memory" if split_nbytes(manifest, split) <= budget_gb * 2**30 else "stream"


# ---------------------------------------------------------------------------
# Streaming


@dataclass(frozen=True)
class Chunk:
    """Jets [start, stop) of one shard: the unit of reading, aligned to the HDF5 chunking."""

    path: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def split_chunks(manifest: dict[str, Any], split: str, *, root: str | Path | None = None,
                 max_jets: int | None = None) -> list[Chunk]:
    """The read units of `split` in file order (the first `max_jets` jets if given)."""
    chunks: list[Chunk] = []
    remaining = max_jets
    for entry, path in zip([e for e in manifest["splits"][split]["shards"] if e["n_jets"] > 0],
                           shard_paths(manifest, split, root)):
        try:
            with h5py.File(path, "r") as f:
                n, step = f["label"].shape[0], (f["particles"].chunks or (CHUNK_JETS,))[0]
        except (OSError, KeyError) as err:
            raise ShardError(f"{path}: cannot open the shard for streaming ({err})") from err
        if n != entry["n_jets"]:
            raise ShardError(f"{path}: holds {n} jets but the manifest lists {entry['n_jets']}; rebuild the manifest")
        if remaining is not None:
            n = min(n, remaining)
            remaining -= n
        chunks += [Chunk(str(path), a, min(a + step, n)) for a in range(0, n, step)]
        if remaining is not None and remaining <= 0:
            break
    if not chunks:
        raise ValueError(f"split {split!r} of the manifest has no jets")
    return chunks


class ShardStream(IterableDataset):
    """Batches (x, mask, y) streamed from shards with bounded memory.

    Order of one epoch: the chunks of every shard are permuted together (so
    consecutive reads come from different shards), dealt round-robin to the
    `world * workers` readers, and each reader fills a buffer of at least
    `buffer_jets` jets, permutes it and emits batches; the remainder carries over
    into the next buffer. Peak memory per reader: one buffer plus one chunk.
    `shuffle=False` reads in file order (validation). The last batch of each reader
    may be short.
    """

    def __init__(self, chunks: list[Chunk], normalisation: dict[str, Any], batch_size: int, *, shuffle: bool,
                 seed: int = 0, buffer_jets: int = 16384, rank: int = 0, world: int = 1,
                 max_open_files: int = 8) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size is {batch_size}; expected a positive integer")
        self.chunks = chunks
        self.normalisation = normalisation
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_jets = max(buffer_jets, batch_size)
        self.rank, self.world = rank, world
        self.max_open_files = max_open_files
        self.epoch = 0
        self.peak_buffer_jets = 0  # the most jets held at once (per reader; for tests and benchmarks)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields (call before iter())."""
        self.epoch = epoch

    def n_jets(self) -> int:
        return sum(len(c) for c in self.chunks)

    def reader_chunks(self, reader: int, readers: int) -> list[Chunk]:
        """The chunks one reader (rank * workers + worker) reads this epoch, in reading order."""
        order = np.arange(len(self.chunks))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.chunks))
        return [self.chunks[i] for i in order[reader::readers]]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        reader, readers = self.rank * workers + worker, self.world * workers
        rng = np.random.default_rng([self.seed, self.epoch, reader, 1])
        files: OrderedDict[str, h5py.File] = OrderedDict()
        carry: list[np.ndarray] | None = None
        pending: list[list[np.ndarray]] = []
        held = 0
        try:
            for chunk in self.reader_chunks(reader, readers):
                pending.append(self._read(chunk, files))
                held += len(chunk)
                self.peak_buffer_jets = max(self.peak_buffer_jets, held)
                if held >= self.buffer_jets:
                    carry = yield from self._emit(carry, pending, rng, final=False)
                    pending = []
                    held = len(carry[0])
            yield from self._emit(carry, pending, rng, final=True)
        finally:
            for f in files.values():
                f.close()

    def _read(self, chunk: Chunk, files: OrderedDict[str, h5py.File]) -> list[np.ndarray]:
        f = files.pop(chunk.path, None)
        if f is None:
            try:
                f = h5py.File(chunk.path, "r")
            except OSError as err:
                raise ShardError(f"{chunk.path}: cannot open the shard ({err})") from err
            if len(files) >= self.max_open_files:
                files.popitem(last=False)[1].close()
        files[chunk.path] = f   # most recently used last
        try:
            particles, mask, label = (f[name][chunk.start:chunk.stop] for name in _TRAIN_FIELDS)
        except (OSError, KeyError) as err:
            raise ShardError(f"{chunk.path}: cannot read jets [{chunk.start}:{chunk.stop}] ({err})") from err
        return [apply_normalisation(particles, mask, self.normalisation), mask, label.astype(np.int64, copy=False)]

    def _emit(self, carry: list[np.ndarray] | None, pending: list[list[np.ndarray]], rng: np.random.Generator,
              final: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        parts = ([carry] if carry is not None else []) + pending
        if not parts:
            return None
        block = [np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in range(3)]
        n = len(block[2])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        full = n if final else n - n % self.batch_size
        for i in range(0, full, self.batch_size):
            idx = order[i:i + self.batch_size]
            yield tuple(torch.from_numpy(np.ascontiguousarray(a[idx])) for a in block)  # type: ignore[misc]
        return [a[order[full:]] for a in block]


def _quiet_worker(_worker_id: int) -> None:
    """Workers leave SIGTERM/SIGUSR1/SIGINT to the trainer, which stops them after saving a checkpoint.

    Under SLURM the whole process group gets the signal; a worker dying from it would
    break the main process before it could save."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def stream_loader(dataset: ShardStream, workers: int, *, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ready-made batches from `workers` processes (0: in the calling process).

    Workers are not persistent, so each epoch's `set_epoch` reaches them; results depend
    on the worker count (it decides which reader holds which chunk), not on timing."""
    return DataLoader(dataset, batch_size=None, num_workers=workers, worker_init_fn=_quiet_worker,
                      pin_memory=pin_memory, prefetch_factor=4 if workers else None, persistent_workers=False)
