"""The run's position and its resumable checkpoint (weights, optimizer, RNGs, history).

An atomic `checkpoint.pt` beside model.pt holds everything a run needs to continue bit for
bit: weights, Adam state, position down to the batch, early stopping state with its best
weights, every RNG, history so far. It is written at each epoch end, every
`checkpoint_minutes` within an epoch, and on SIGTERM/SIGUSR1 (salt/training/signals.py). The
next attempt (Snakemake `--retries`, the SLURM profile's `retries`, `sbatch --requeue`, or
simply running the same command again) resumes from it. It is removed once model.pt is
written, and ignored (with a warning) if it belongs to different settings, spec, seed or data.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from salt.atomic import atomic_path
from salt.training.settings import TrainSettings

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "salt-train-checkpoint/1"


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

    def advance(self, jets: int) -> None:
        """One optimizer step done, over `jets` jets of all ranks."""
        self.seen += jets
        self.step += 1
        self.global_step += 1


@dataclass
class GlobalBest:
    val_loss: float = math.inf
    epoch: int = -1
    weights: dict[str, torch.Tensor] | None = None


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every generator a run draws from; on cuda the training GPU's own (only that one: asking for
    every GPU's state would open a context on each GPU of the node, in every DDP rank)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore `rng_state`'s generators; a CUDA state is restored onto the training GPU (a run saved on
    one GPU may resume on another) and ignored when the run resumes on a CPU."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    cuda = state.get("cuda")
    if device.type == "cuda" and isinstance(cuda, torch.Tensor):
        torch.cuda.set_rng_state(cuda, device)


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


class Checkpoints:
    """checkpoint.pt of one run: when the next one is due, and writing, reading and removing it.
    Only rank 0 writes; every rank keeps the same clock, since the ranks vote on `due` together."""

    def __init__(self, path: Path, fingerprint: dict[str, Any], *, is_main: bool, every_minutes: float) -> None:
        self.path, self.fingerprint, self.is_main = path, fingerprint, is_main
        self.every_s = every_minutes * 60
        self.last_save = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        return load_checkpoint(self.path, self.fingerprint)

    def due(self) -> bool:
        """Whether the mid-epoch interval has passed (never, with checkpoint_minutes 0)."""
        return self.every_s > 0 and time.monotonic() - self.last_save > self.every_s

    def save(self, state: dict[str, Any], why: str, pos: Position) -> None:
        """Write `state` (the run's, without format and fingerprint) and restart the interval."""
        if self.is_main:
            save_checkpoint(self.path, {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, **state})
            (log.debug if why == "epoch end" else log.info)("checkpoint (%s): epoch %d, step %d in the epoch", why,
                                                            pos.epoch, pos.step)
        self.last_save = time.monotonic()

    def remove(self) -> None:
        """Once the model is written: a rerun must train afresh."""
        self.path.unlink(missing_ok=True)
