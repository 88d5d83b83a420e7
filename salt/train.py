"""Train one model variant on one (dataset, sort, seed), following the authors' protocol.

Protocol (research/paper.md §3): Adam with Keras' defaults and update rule (lr 1e-3, eps 1e-7), a
phased batch-size schedule, cross entropy (binary for a single sigmoid output), and
early stopping on the validation loss that behaves like one Keras `model.fit` per
phase with `EarlyStopping(patience, restore_best_weights=True)` (TF 2.15): its state
restarts every phase and the phase's best weights come back only if the phase stops
early. `early_stopping: global` keeps that stopping rule but ends on the weights with
the lowest validation loss over all phases (what the authors' ModelCheckpoint held).

Cluster behaviour:

* Resumable. An atomic `checkpoint.pt` beside model.pt holds everything a run needs
  to continue bit for bit (weights, Adam state, position down to the batch, early
  stopping state with its best weights, every RNG, history so far). It is written at
  each epoch end, every `checkpoint_minutes` within an epoch, and on SIGTERM/SIGUSR1
  (SLURM preemption, time limit, `--signal`): the trainer finishes the current step,
  saves and exits with EXIT_PREEMPTED (75, EX_TEMPFAIL). The next attempt (Snakemake
  `--retries`, the SLURM profile's `retries`, `sbatch --requeue`, or simply running the
  same command again) resumes from it. It is removed once model.pt is written, and
  ignored (with a warning) if it belongs to different settings, spec, seed or data.
  Under Snakemake's SLURM executor the job's exit status is the inner Snakemake's (1)
  and the profile's `retries:` resubmits it; a plain `sbatch` of `salt train` passes 75
  on, which a site can list in slurm.conf's RequeueExit to have SLURM requeue it.
* Distributed. Under torchrun (WORLD_SIZE > 1) each rank trains on its slice of every
  global batch with DistributedDataParallel; losses are scaled so the gradient is the
  mean over the global batch, as in one process. Ranks agree once per step (a small
  gloo all-reduce) on batch sizes, end of data and stop requests.

Test hook: SALT_TRAIN_SIGNAL_AT_STEP=N[:USR1] makes rank 0 send itself SIGTERM (or
SIGUSR1) right after global step N, so tests can interrupt a run at an exact point.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from tqdm import tqdm

from salt.atomic import atomic_path
from salt.data.loader import (JetTensors, ShardStream, load_split, resolve_loader, split_chunks, stream_loader)
from salt.data.shards import load_manifest
from salt.models import ModelSpec, build_model, save_model
from salt.provenance import provenance

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75   # EX_TEMPFAIL: stopped by a signal after saving checkpoint.pt; run the same command again
CHECKPOINT_FORMAT = "salt-train-checkpoint/1"
SIGNAL_HOOK_ENV = "SALT_TRAIN_SIGNAL_AT_STEP"
HISTORY_FIELDS = ("epoch", "phase", "batch_size", "lr", "loss", "accuracy", "val_loss", "val_accuracy", "wall_s",
                  "epoch_s", "jets_per_s", "device", "precision", "attempt")


# ---------------------------------------------------------------------------
# Settings


@dataclass
class TrainSettings:
    """The `train:` block of config.yaml for one job (its variant's schedule already chosen)."""

    schedule: list[tuple[int, int]]
    lr: float = 1e-3
    eps: float = 1e-7
    adam: str = "keras"               # keras: eps added to sqrt(v) as Keras does; torch: torch.optim.Adam
    patience: int = 40
    early_stopping: str = "phase"     # "phase": the authors' per-phase restart; "global": end on the best epoch
    eval_batch: int = 4096
    max_train_jets: int | None = None
    loader: str = "auto"              # memory | stream | auto (memory if the split fits in memory_budget_gb)
    memory_budget_gb: float = 8.0
    workers: int = 2                  # DataLoader processes per rank when streaming
    buffer_jets: int = 16384          # shuffle buffer per streaming reader
    precision: str = "fp32"           # fp32 | bf16 (autocast of the training steps; validation stays fp32)
    checkpoint_minutes: float = 10.0  # mid-epoch checkpoint interval; 0: epoch ends and signals only

    # keys that do not change the trained weights (a checkpoint stays valid when they change)
    NOT_IN_RESULT = ("checkpoint_minutes",)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            hint = (" (per-variant `schedules` are resolved by the train rule; pass the chosen `schedule`)"
                    if "schedules" in unknown else "")
            raise ValueError(f"train settings: unknown keys {unknown}; expected some of {sorted(known)}{hint}")
        if "schedule" not in d:
            raise ValueError("train settings: 'schedule' is missing; expected [[batch_size, max_epochs], ...]")
        s = cls(**d)
        try:
            s.schedule = [(int(b), int(e)) for b, e in s.schedule]
        except (TypeError, ValueError):
            raise ValueError(f"train settings: schedule {d['schedule']!r}; expected [[batch_size, max_epochs], ...]")
        if not s.schedule or any(b < 1 or e < 1 for b, e in s.schedule):
            raise ValueError(f"train settings: schedule {d['schedule']!r}; expected positive (batch_size, max_epochs)")
        choices = {"early_stopping": ("phase", "global"), "loader": ("memory", "stream", "auto"),
                   "precision": ("fp32", "bf16"), "adam": ("keras", "torch")}
        for key, allowed in choices.items():
            if getattr(s, key) not in allowed:
                raise ValueError(f"train settings: {key} is {getattr(s, key)!r}; expected one of {allowed}")
        for key in ("patience", "eval_batch", "buffer_jets"):
            if int(getattr(s, key)) < 1:
                raise ValueError(f"train settings: {key} is {getattr(s, key)!r}; expected a positive integer")
        if s.workers < 0:
            raise ValueError(f"train settings: workers is {s.workers!r}; expected 0 or more")
        return s

    def result_dict(self) -> dict[str, Any]:
        """The settings that change the trained weights."""
        return {k: v for k, v in asdict(self).items() if k not in self.NOT_IN_RESULT}


# ---------------------------------------------------------------------------
# Pieces of the protocol


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def loss_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross entropy for several classes, binary cross entropy for one sigmoid output."""
    logits = logits.float()
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), reduction="sum")
    return F.cross_entropy(logits, y, reduction="sum")


def n_correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    return (pred == y).sum()


class KerasAdam(torch.optim.Optimizer):
    """Adam as Keras 2.15 computes it (the authors' `Adam()`), not as torch.optim.Adam does.

    Keras: p -= lr·sqrt(1-β2^t)/(1-β1^t) · m / (sqrt(v) + ε). torch adds ε to the bias-corrected
    sqrt(v̂), which equals Keras with ε·sqrt(1-β2^t): at ε = 1e-7 torch's effective ε is 32x
    smaller in the first step and the two converge only after a few thousand steps."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-7) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self.state[p] for p in params]
            for p, state in zip(params, states):
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            grads, ms, vs = [p.grad for p in params], [s["m"] for s in states], [s["v"] for s in states]
            beta1, beta2 = group["betas"]
            t = states[0]["step"] + 1
            torch._foreach_lerp_(ms, grads, 1 - beta1)                  # m += (g - m)(1 - β1)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)  # v += (g² - v)(1 - β2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, group["eps"])
            alpha = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
            torch._foreach_addcdiv_(params, ms, denom, value=-alpha)
            for state in states:
                state["step"] = t


def make_optimizer(params: Any, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.adam == "keras":
        return KerasAdam(params, lr=settings.lr, eps=settings.eps)
    return torch.optim.Adam(params, lr=settings.lr, eps=settings.eps)


def _copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class EarlyStopping:
    """Keras 2.15 `EarlyStopping(monitor="val_loss", patience, restore_best_weights=True)`; one per phase.

    Its on_epoch_end, line by line: keep the first epoch's weights if nothing is stored
    yet (so a NaN first epoch still has weights to restore); count the epoch; on a
    strict improvement store value, epoch and weights and reset the count; otherwise
    stop once the count reaches `patience` (never at absolute epoch 0) and restore the
    stored weights. Finishing the phase without stopping restores nothing."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.wait = 0
        self.best = math.inf
        self.best_epoch = -1
        self.best_weights: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, value: float, model: torch.nn.Module) -> bool:
        """Record epoch `epoch` (counted over the whole run); True = stop (best weights restored)."""
        if self.best_weights is None:
            self.best_weights = _copy_state(model)
        self.wait += 1
        if value < self.best:   # NaN never improves
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_weights = _copy_state(model)
            return False
        if self.wait >= self.patience and epoch > 0:
            model.load_state_dict(self.best_weights)
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "wait": self.wait, "best": self.best, "best_epoch": self.best_epoch,
                "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.patience, self.wait, self.best = state["patience"], state["wait"], state["best"]
        self.best_epoch, self.best_weights = state["best_epoch"], state["best_weights"]


class Preempted(Exception):
    """A stop signal arrived; the checkpoint is saved and the process should exit EXIT_PREEMPTED."""

    def __init__(self, signum: int | None) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}" if signum else "stopped with the other ranks")
        self.signum = signum


class StopSignals:
    """Turns SIGTERM/SIGUSR1 into a flag the training loop checks between steps."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if _in_main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is None:   # no logging here: the handler may interrupt a logging call
            self.received = signum

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            # after a stop, ignore more: a second signal (torchrun stopping the other ranks, SLURM
            # repeating itself) must not kill the process while it exits with EXIT_PREEMPTED
            # (SIG_IGN also survives interpreter shutdown, which resets Python-level handlers)
            signal.signal(sig, handler if exc_type is None else signal.SIG_IGN)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _signal_hook() -> tuple[int, int] | None:
    """(global step, signal) from SALT_TRAIN_SIGNAL_AT_STEP, or None."""
    value = os.environ.get(SIGNAL_HOOK_ENV)
    if not value:
        return None
    step, _, name = value.partition(":")
    return int(step), getattr(signal, f"SIG{name or 'TERM'}")


# ---------------------------------------------------------------------------
# Distribution


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


def _rank_slice(n: int, dist: Dist) -> slice:
    """This rank's contiguous share of n items (sizes differ by at most one)."""
    return slice(n * dist.rank // dist.world, n * (dist.rank + 1) // dist.world)


# ---------------------------------------------------------------------------
# Data feeds: yield this rank's part of each batch as (x, mask, y, weight); weight 0 marks a
# stand-in jet for a rank whose share of a short last batch is empty (DDP needs every rank to step).


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
            local, weight = idx[_rank_slice(len(idx), dist)], 1.0
            if len(local) == 0:
                local, weight = idx[:1], 0.0
            yield self.data.x[local], self.data.mask[local], self.data.y[local], weight

    def eval_batches(self, batch_size: int, dist: Dist) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        part = _rank_slice(len(self.data), dist)
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


# ---------------------------------------------------------------------------
# Run state and checkpoint


@dataclass
class Position:
    """Where the run is: enough to continue at the next batch."""

    phase: int = 0
    phase_started: bool = False
    epoch: int = 0              # epochs finished over the whole run
    epoch_in_phase: int = 0
    step: int = 0               # batches finished in the current epoch
    global_step: int = 0
    loss_sum: float = 0.0       # current epoch's accumulators
    correct: int = 0
    seen: int = 0
    epoch_s: float = 0.0        # time already spent in the current epoch by earlier attempts
    stopped_phases: list[int] = field(default_factory=list)


@dataclass
class GlobalBest:
    val_loss: float = math.inf
    epoch: int = -1
    weights: dict[str, torch.Tensor] | None = None


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomic and synced: a node that dies after the rename still has the whole file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())


def load_checkpoint(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at `path` if it belongs to this run; else None (and say why)."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        log.warning("%s is unreadable (%s); starting from scratch", path, err)
        return None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        log.warning("%s is not a %s file; starting from scratch", path, CHECKPOINT_FORMAT)
        return None
    if payload["fingerprint"] != fingerprint:
        old = payload["fingerprint"]
        differ = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        log.warning("%s was made with different %s; starting from scratch (it will be overwritten)", path, differ)
        return None
    return payload


def run_fingerprint(spec: dict[str, Any], settings: TrainSettings, seed: int, manifest: dict[str, Any],
                    loaders: dict[str, str], world: int) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: everything that changes the weights."""
    data = {split: [e["md5"] for e in manifest["splits"][split]["shards"]] for split in ("train", "val")}
    fp = {"spec": spec, "settings": json.loads(json.dumps(settings.result_dict())), "seed": seed, "data": data,
          "loaders": loaders}
    if "stream" in loaders.values():   # which rank reads which chunk depends on the world size
        fp["world"] = world
    return fp


# ---------------------------------------------------------------------------
# Training


def resolve_device(device: str) -> torch.device:
    if device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("device %s requested but CUDA is not available; training on cpu", device)
        return torch.device("cpu")
    return torch.device(device)


def train(manifest_path: str | Path, spec: dict[str, Any], settings: TrainSettings, *, seed: int, device: str,
          out_dir: str | Path, threads: int = 1) -> dict[str, Any]:
    """Train (or resume) and write model.pt and history.csv into `out_dir`; returns the training summary.

    Raises Preempted after saving checkpoint.pt when SIGTERM/SIGUSR1 arrives."""
    torch.set_num_threads(threads)
    dev = resolve_device(device)
    dist = init_distributed(dev.type)
    if dev.type == "cuda" and dist.active:
        dev = torch.device("cuda", dist.local_rank)
    try:
        with StopSignals() as signals:
            return _Run(manifest_path, spec, settings, seed, dev, Path(out_dir), dist, signals).run()
    finally:
        if dist.active:
            torch_dist.destroy_process_group()


class _Run:
    """One training run: the loop of `train`, split into steps small enough to read."""

    def __init__(self, manifest_path: str | Path, spec: dict[str, Any], settings: TrainSettings, seed: int,
                 dev: torch.device, out: Path, dist: Dist, signals: StopSignals) -> None:
        self.settings, self.seed, self.dev, self.out, self.dist, self.signals = settings, seed, dev, out, dist, signals
        self.manifest_path = str(manifest_path)
        self.manifest = load_manifest(manifest_path)
        self.spec = dict(spec)
        _check_spec(self.spec, self.manifest, manifest_path)
        self.checkpoint_path = out / "checkpoint.pt"
        self.is_main = dist.rank == 0
        self.hook = _signal_hook()

        seed_everything(seed)
        self.model = build_model(ModelSpec.from_dict(self.spec)).to(dev)
        self.net: torch.nn.Module = self.model
        if dist.active:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.opt = make_optimizer(self.model.parameters(), settings)
        self.train_feed, train_kind = make_feed(self.manifest, "train", settings, seed, dev, dist.world,
                                                settings.max_train_jets)
        self.val_feed, val_kind = make_feed(self.manifest, "val", settings, seed, dev, dist.world)
        self.loaders = {"train": train_kind, "val": val_kind}
        self.gen = torch.Generator().manual_seed(seed)   # the in-memory shuffle, on CPU for any device
        self.epoch_gen_state = self.gen.get_state()      # its state at the start of the current epoch
        self.autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if settings.precision == "bf16"
                         else nullcontext())
        if settings.precision == "bf16" and dev.type != "cuda":
            log.warning("bf16 autocast on %s: supported but slow; it is meant for GPUs", dev)

        self.pos = Position()
        self.early = EarlyStopping(settings.patience)
        self.best = GlobalBest()
        self.history: list[dict[str, Any]] = []
        self.attempt, self.elapsed_before = 1, 0.0
        self.fingerprint = run_fingerprint(self.spec, settings, seed, self.manifest, self.loaders, dist.world)
        self._resume()
        self.t_start = time.perf_counter()
        self.last_save = time.monotonic()

    # -- checkpoint -------------------------------------------------------------

    def _resume(self) -> None:
        payload = load_checkpoint(self.checkpoint_path, self.fingerprint)
        if payload is None:
            return
        self.model.load_state_dict(payload["model"])
        self.opt.load_state_dict(payload["optimizer"])
        self.pos = Position(**payload["position"])
        self.early.load_state_dict(payload["early_stopping"])
        self.best = GlobalBest(**payload["global_best"])
        self.history = list(payload["history"])
        self.epoch_gen_state = payload["rng"]["shuffle"]
        _set_rng_state(payload["rng"])
        self.attempt = payload["attempt"] + 1
        self.elapsed_before = payload["elapsed_s"]
        log.info("resumed from %s: attempt %d, phase %d, epoch %d, step %d in the epoch", self.checkpoint_path,
                 self.attempt, self.pos.phase, self.pos.epoch, self.pos.step)

    def _save(self, why: str) -> None:
        if self.is_main:
            payload = {
                "format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint,
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "position": asdict(self.pos), "early_stopping": self.early.state_dict(),
                "global_best": asdict(self.best), "history": self.history,
                "rng": _rng_state() | {"shuffle": self.epoch_gen_state},
                "attempt": self.attempt, "elapsed_s": self.wall(),
            }
            save_checkpoint(self.checkpoint_path, payload)
            (log.debug if why == "epoch end" else log.info)("checkpoint (%s): epoch %d, step %d in the epoch", why,
                                                            self.pos.epoch, self.pos.step)
        self.last_save = time.monotonic()

    def wall(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    # -- loop -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        schedule = self.settings.schedule
        while self.pos.phase < len(schedule):
            batch_size, max_epochs = schedule[self.pos.phase]
            if not self.pos.phase_started:   # a Keras fit(): constant lr again, fresh early stopping
                for group in self.opt.param_groups:
                    group["lr"] = self.settings.lr
                self.early = EarlyStopping(self.settings.patience)
                self.pos.phase_started = True
            self._train_epoch(batch_size)
            stop = self._end_epoch(batch_size)
            if stop or self.pos.epoch_in_phase >= max_epochs:
                if stop:
                    self.pos.stopped_phases.append(self.pos.phase)
                    log.info("phase %d stopped early; restored its best weights (epoch %d, val_loss %.5f)",
                             self.pos.phase, self.early.best_epoch, self.early.best)
                self.pos.phase, self.pos.epoch_in_phase, self.pos.phase_started = self.pos.phase + 1, 0, False
            self._save("epoch end")
            if self.dist.sum([self.signals.received is not None], dtype=torch.int64)[0]:
                self._stop()
        return self._finish()

    def _stop(self) -> None:
        self.dist.barrier()   # rank 0 has written the checkpoint before anyone exits
        raise Preempted(self.signals.received)

    def _train_epoch(self, batch_size: int) -> None:
        pos, dist = self.pos, self.dist
        if isinstance(self.train_feed, MemoryFeed):
            self.gen.set_state(self.epoch_gen_state)   # the same order again when resuming inside the epoch
            perm = torch.randperm(len(self.train_feed), generator=self.gen)
            batches = self.train_feed.train_batches(perm, batch_size, pos.step, dist)
        else:
            batches = self.train_feed.train_batches(pos.epoch, batch_size, pos.step, dist)
        loss_acc = torch.tensor(pos.loss_sum, dtype=torch.float64, device=self.dev)
        correct_acc = torch.tensor(pos.correct, dtype=torch.int64, device=self.dev)
        t0 = time.perf_counter()
        every = self.settings.checkpoint_minutes * 60
        total = math.ceil(len(self.train_feed) / batch_size)
        bar = tqdm(total=total, initial=pos.step, desc=f"epoch {pos.epoch}", leave=False, unit="batch",
                   disable=not (self.is_main and sys.stderr.isatty()))
        self.net.train()
        while True:
            batch = next(batches, None)
            n_local = 0 if batch is None or batch[3] == 0 else len(batch[2])
            stop = self.signals.received is not None
            save_due = every > 0 and time.monotonic() - self.last_save > every
            n_global, exhausted, stop, save_due = (int(v) for v in dist.sum(
                [n_local, batch is None, stop, save_due], dtype=torch.int64))
            if exhausted:
                break
            if stop or save_due:
                pos.loss_sum, pos.correct = float(loss_acc), int(correct_acc)
                pos.epoch_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                self._save("signal" if stop else "interval")
                if stop:
                    bar.close()
                    self._stop()
            x, m, y, weight = batch
            with self.autocast:
                logits = self.net(x, m)
            total_loss = loss_sum(logits, y) * weight
            # DDP averages gradients over ranks: scale so the result is the mean over the global batch
            (total_loss * (dist.world / n_global)).backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            if weight:
                loss_acc += total_loss.detach().double()
                correct_acc += n_correct(logits.detach(), y)
            pos.seen += n_global
            pos.step += 1
            pos.global_step += 1
            bar.update(1)
            if self.hook and self.is_main and pos.global_step == self.hook[0]:
                os.kill(os.getpid(), self.hook[1])
        bar.close()
        pos.loss_sum, pos.correct = float(loss_acc), int(correct_acc)
        pos.epoch_s += time.perf_counter() - t0

    def _end_epoch(self, batch_size: int) -> bool:
        pos = self.pos
        t0 = time.perf_counter()
        loss_total, correct_total = self.dist.sum([pos.loss_sum, float(pos.correct)])
        val_loss, val_acc = self._validate()
        epoch_s = pos.epoch_s + time.perf_counter() - t0
        row = {"epoch": pos.epoch, "phase": pos.phase, "batch_size": batch_size, "lr": self.settings.lr,
               "loss": loss_total / pos.seen, "accuracy": correct_total / pos.seen, "val_loss": val_loss,
               "val_accuracy": val_acc, "wall_s": round(self.wall(), 3), "epoch_s": round(epoch_s, 3),
               "jets_per_s": round(pos.seen / max(pos.epoch_s, 1e-9), 1), "device": str(self.dev),
               "precision": self.settings.precision, "attempt": self.attempt}
        self.history.append(row)
        log.info("epoch %d phase %d bs %d loss %.4f acc %.4f val_loss %.4f val_acc %.4f (%.1f s, %.0f jets/s)",
                 pos.epoch, pos.phase, batch_size, row["loss"], row["accuracy"], val_loss, val_acc, epoch_s,
                 row["jets_per_s"])
        if val_loss < self.best.val_loss:
            self.best = GlobalBest(val_loss, pos.epoch, _copy_state(self.model))
        stop = self.early.update(pos.epoch, val_loss, self.model)
        self.epoch_gen_state = self.gen.get_state()   # where the next epoch's shuffle starts
        pos.epoch += 1
        pos.epoch_in_phase += 1
        pos.step, pos.loss_sum, pos.correct, pos.seen, pos.epoch_s = 0, 0.0, 0, 0, 0.0
        return stop

    @torch.no_grad()
    def _validate(self) -> tuple[float, float]:
        self.model.eval()
        loss_acc = torch.zeros((), dtype=torch.float64, device=self.dev)
        correct_acc = torch.zeros((), dtype=torch.int64, device=self.dev)
        for x, m, y in self.val_feed.eval_batches(self.settings.eval_batch, self.dist):
            logits = self.model(x, m)   # fp32 even under bf16: early stopping compares exact losses
            loss_acc += loss_sum(logits, y).double()
            correct_acc += n_correct(logits, y)
        loss_total, correct_total = self.dist.sum([float(loss_acc), float(correct_acc)])
        n = len(self.val_feed)
        return loss_total / n, correct_total / n

    # -- outputs ----------------------------------------------------------------

    def _finish(self) -> dict[str, Any]:
        final = "last"
        if self.settings.early_stopping == "global" and self.best.weights is not None:
            self.model.load_state_dict(self.best.weights)
            final = f"global best (epoch {self.best.epoch})"
        last = self.history[-1]
        summary = {
            "epochs": self.pos.epoch, "best_val_loss": self.best.val_loss, "best_epoch": self.best.epoch,
            "final_val_loss": last["val_loss"], "final_val_accuracy": last["val_accuracy"], "final_weights": final,
            "stopped_early_phases": list(self.pos.stopped_phases), "train_jets": len(self.train_feed),
            "val_jets": len(self.val_feed), "wall_s": self.wall(), "attempts": self.attempt,
            "device": str(self.dev), "precision": self.settings.precision, "world_size": self.dist.world,
            "loaders": dict(self.loaders), "seed": self.seed, "settings": self.settings.result_dict(),
        }
        if self.is_main:
            _write_history(self.out / "history.csv", self.history)
            save_model(self.out / "model.pt", self.model.cpu(), {
                "summary": summary, "manifest": self.manifest_path, "sort": self.manifest.get("sort"),
                "classes": self.manifest["classes"], "features": self.manifest["features"],
                "provenance": provenance(device=str(self.dev)),
            })
            self.checkpoint_path.unlink(missing_ok=True)   # finished: a rerun must train afresh
        self.dist.barrier()
        return summary


def _check_spec(spec: dict[str, Any], manifest: dict[str, Any], path: str | Path) -> None:
    for key, have in (("particles", manifest["n_particles"]), ("features", len(manifest["features"]))):
        if spec.get(key, have) != have:
            raise ValueError(f"model spec {key}={spec[key]} but the shards in {path} have {key}={have}")
    classes = len(manifest["classes"])
    if spec.get("classes", classes) not in (classes, 1 if classes == 2 else classes):
        raise ValueError(f"model spec classes={spec['classes']} but {path} has {classes} classes")
    spec.setdefault("particles", manifest["n_particles"])
    spec.setdefault("features", len(manifest["features"]))
    spec.setdefault("classes", classes)


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="manifest.json of the shards to train on")
    parser.add_argument("--spec", required=True, help="JSON model spec (variant knobs)")
    parser.add_argument("--train-config", required=True,
                        help="JSON training settings (schedule, lr, ...; see TrainSettings)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (each torchrun rank takes cuda:LOCAL_RANK)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--output-dir", required=True,
                        help="directory for model.pt and history.csv (and checkpoint.pt while training)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="DDP processes (one per GPU), launched here through torch's elastic launcher")
    parser.epilog = (f"Exit status {EXIT_PREEMPTED}: stopped by SIGTERM/SIGUSR1 after saving checkpoint.pt; "
                     "running the same command again resumes.")


def launch(args: argparse.Namespace) -> int:
    """Run this command as `args.nproc` DDP ranks under torchrun's launcher, inside this process.

    Equivalent to `torchrun --standalone --nproc-per-node N -m salt.cli train ...`, but the
    exit status stays meaningful: EXIT_PREEMPTED when the ranks stopped on a signal (torchrun
    itself would exit 1), and SIGUSR1 is forwarded to the ranks like SIGTERM."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    os.environ.setdefault("TORCHELASTIC_SIGNALS_TO_HANDLE", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1")
    rank_args = ["--manifest", args.manifest, "--spec", args.spec, "--train-config", args.train_config,
                 "--seed", str(args.seed), "--device", args.device, "--threads", str(args.threads),
                 "--output-dir", args.output_dir]
    try:
        torchrun.main(["--standalone", f"--nproc-per-node={args.nproc}", "-m", "salt.cli", "train", *rank_args])
    except ChildFailedError as err:
        # preempted: a rank stopped on a signal, the others with it (or were stopped by the launcher)
        codes = {f.exitcode for f in err.failures.values()}
        return EXIT_PREEMPTED if EXIT_PREEMPTED in codes and codes <= {EXIT_PREEMPTED, -signal.SIGTERM} else 1
    except SignalException as err:
        log.warning("%s; the ranks were told to save a checkpoint and stop", err)
        return EXIT_PREEMPTED
    return 0


def main(args: argparse.Namespace) -> int:
    if args.nproc < 1:
        raise ValueError(f"--nproc is {args.nproc}; expected 1 or more")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        return launch(args)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s{f' [rank {rank}]' if rank else ''} %(message)s")
    settings = TrainSettings.from_dict(json.loads(args.train_config))
    try:
        summary = train(args.manifest, json.loads(args.spec), settings, seed=args.seed, device=args.device,
                        out_dir=args.output_dir, threads=args.threads)
    except Preempted as stop:
        log.warning("%s: checkpoint saved in %s; exiting with %d so the job is retried", stop, args.output_dir,
                    EXIT_PREEMPTED)
        return EXIT_PREEMPTED
    if rank == 0:
        print(json.dumps({k: summary[k] for k in ("epochs", "best_val_loss", "final_val_accuracy", "wall_s",
                                                  "attempts", "device", "precision")}))
    return 0
