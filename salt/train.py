"""`salt train`: one model on one (dataset, sort, seed), following the authors' protocol.

The protocol: Adam with Keras' defaults and update rule, a phased batch-size schedule, cross
entropy, and early stopping on the validation loss that behaves like one Keras `model.fit` per
phase (salt/training/optim.py, salt/training/early_stopping.py). This module runs it: phases
and epochs (`_Run`), validation, the history, and model.pt with the training summary.
`early_stopping: global` keeps the per-phase stopping rule but ends on the weights with the
lowest validation loss over all phases (what the authors' ModelCheckpoint held).

The run is resumable (salt/training/checkpoint.py), stops cleanly on SIGTERM/SIGUSR1 with exit
status EXIT_PREEMPTED (salt/training/signals.py), and trains as DDP ranks under torchrun or
`--nproc` (salt/training/distributed.py); the steps themselves are in salt/training/steps.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from tqdm import tqdm

from salt.atomic import atomic_path
from salt.cli import json_value
from salt.data.shards import load_manifest, verify_shards
from salt.models.checkpoint import save_model
from salt.models.classifier import JetClassifier
from salt.models.registry import build_model
from salt.models.spec import ModelSpec
from salt.numerics import reproducible_training
from salt.provenance import provenance
from salt.training.checkpoint import Checkpoints, GlobalBest, Position, rng_state, run_fingerprint, set_rng_state
from salt.training.distributed import Dist, init_distributed, resolve_device
from salt.training.early_stopping import EarlyStopping, copy_state
from salt.training.feeds import MemoryFeed, make_feed
from salt.training.optim import make_optimizer, seed_everything
from salt.training.settings import TrainSettings
from salt.training.signals import EXIT_PREEMPTED, Preempted, StopSignals, signal_hook
from salt.training.steps import Batch, EpochSums, StepVote, train_step, validate

log = logging.getLogger(__name__)


HISTORY_FIELDS = ("epoch", "phase", "batch_size", "lr", "loss", "accuracy", "val_loss", "val_accuracy", "wall_s",
                  "epoch_s", "jets_per_s", "device", "precision", "attempt")


# ---------------------------------------------------------------------------
# Training


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
        with StopSignals() as signals, reproducible_training(dev):
            return _Run(manifest_path, spec, settings, seed, dev, Path(out_dir), dist, signals).run()
    finally:
        if dist.active:
            torch_dist.destroy_process_group()


class _Run:
    """One training run: the state `train` carries from step to step, epoch to epoch and attempt to attempt."""

    def __init__(self, manifest_path: str | Path, spec: dict[str, Any], settings: TrainSettings, seed: int,
                 dev: torch.device, out: Path, dist: Dist, signals: StopSignals) -> None:
        self.settings, self.seed, self.dev, self.out, self.dist, self.signals = settings, seed, dev, out, dist, signals
        self.manifest_path = str(manifest_path)
        self.manifest = load_manifest(manifest_path)
        self.spec = dict(spec)
        _check_spec(self.spec, self.manifest, manifest_path)
        if dist.rank == 0:   # once per job; the other ranks wait for the result
            _check_writable(out)
            verify_shards(self.manifest, ("train", "val"))
        dist.barrier()
        self.is_main = dist.rank == 0
        self.hook = signal_hook()

        seed_everything(seed)
        self.model, self.net = self._build_model()
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
        self.checkpoints = Checkpoints(
            out / "checkpoint.pt", run_fingerprint(self.spec, settings, seed, self.manifest, self.loaders, dist.world),
            is_main=self.is_main, every_minutes=settings.checkpoint_minutes)
        self._resume()
        self.t_start = time.perf_counter()

    def _build_model(self) -> tuple[JetClassifier, torch.nn.Module]:
        """The model, and the module that trains it (the model itself, or its DDP wrapper)."""
        model = build_model(ModelSpec.from_dict(self.spec)).to(self.dev)
        if model.pair is not None:  # the pairwise bias reads physical pT, Δη, Δφ back from the inputs
            model.pair.calibrate(self.manifest["features"], self.manifest["normalisation"])
        if not self.dist.active:
            return model, model
        return model, torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)

    # -- checkpoint -------------------------------------------------------------

    def _resume(self) -> None:
        payload = self.checkpoints.load()
        if payload is None:
            return
        self.model.load_state_dict(payload["model"])
        self.opt.load_state_dict(payload["optimizer"])
        self.pos = Position(**payload["position"])
        self.early.load_state_dict(payload["early_stopping"])
        self.best = GlobalBest(**payload["global_best"])
        self.history = list(payload["history"])
        self.epoch_gen_state = payload["rng"]["shuffle"]
        set_rng_state(payload["rng"], self.dev)
        self.attempt = payload["attempt"] + 1
        self.elapsed_before = payload["elapsed_s"]
        log.info("resumed from %s: attempt %d, phase %d, epoch %d, step %d in the epoch", self.checkpoints.path,
                 self.attempt, self.pos.phase, self.pos.epoch, self.pos.step)

    def _save(self, why: str) -> None:
        state = {} if not self.is_main else {
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "position": asdict(self.pos), "early_stopping": self.early.state_dict(),
            "global_best": asdict(self.best), "history": self.history,
            "rng": rng_state(self.dev) | {"shuffle": self.epoch_gen_state},
            "attempt": self.attempt, "elapsed_s": self.wall(),
        }
        self.checkpoints.save(state, why, self.pos)

    def _stop(self) -> None:
        self.dist.barrier()   # rank 0 has written the checkpoint before anyone exits
        raise Preempted(self.signals.received)

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

    def _train_epoch(self, batch_size: int) -> None:
        """The epoch's steps from pos.step on; a stop signal or a due checkpoint pauses between steps."""
        pos = self.pos
        batches = self._epoch_batches(batch_size)
        sums = EpochSums(pos, self.dev)
        bar = tqdm(total=math.ceil(len(self.train_feed) / batch_size), initial=pos.step, desc=f"epoch {pos.epoch}",
                   leave=False, unit="batch", disable=not (self.is_main and sys.stderr.isatty()))
        self.net.train()
        while True:
            batch = next(batches, None)
            vote = StepVote.take(self.dist, batch, self.signals.received is not None, self.checkpoints.due())
            if vote.exhausted:
                break
            if vote.stop or vote.save_due:
                sums.store(pos)
                self._save("signal" if vote.stop else "interval")
                if vote.stop:
                    bar.close()
                    self._stop()
            total_loss, logits = train_step(self.net, self.opt, batch, vote.n_global, self.dist.world, self.autocast)
            if batch[3]:   # weight 0: a stand-in jet of a rank with an empty share
                sums.add(total_loss, logits, batch[2])
            pos.advance(vote.n_global)
            bar.update(1)
            if self.hook and self.is_main and pos.global_step == self.hook[0]:
                os.kill(os.getpid(), self.hook[1])
        bar.close()
        sums.store(pos)

    def _epoch_batches(self, batch_size: int) -> Iterator[Batch]:
        """This epoch's batches from step pos.step on, in the order a run without interruption gets."""
        if isinstance(self.train_feed, MemoryFeed):
            self.gen.set_state(self.epoch_gen_state)
            perm = torch.randperm(len(self.train_feed), generator=self.gen)
            return self.train_feed.train_batches(perm, batch_size, self.pos.step, self.dist)
        return self.train_feed.train_batches(self.pos.epoch, batch_size, self.pos.step, self.dist)

    def _end_epoch(self, batch_size: int) -> bool:
        pos = self.pos
        t0 = time.perf_counter()
        loss_total, correct_total = self.dist.sum([pos.loss_sum, float(pos.correct)])
        val_loss, val_acc = validate(self.model, self.val_feed, self.settings.eval_batch, self.dist, self.dev)
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
            self.best = GlobalBest(val_loss, pos.epoch, copy_state(self.model))
        stop = self.early.update(pos.epoch, val_loss, self.model)
        self.epoch_gen_state = self.gen.get_state()   # where the next epoch's shuffle starts
        pos.epoch += 1
        pos.epoch_in_phase += 1
        pos.step, pos.loss_sum, pos.correct, pos.seen, pos.epoch_s = 0, 0.0, 0, 0, 0.0
        return stop

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
            "device": str(self.dev), "precision": self.settings.precision, "world_size": self.dist.world, "ddp_backend": self.dist.backend,
            "loaders": dict(self.loaders), "seed": self.seed, "settings": self.settings.result_dict(),
        }
        if self.is_main:
            _write_history(self.out / "history.csv", self.history)
            save_model(self.out / "model.pt", self.model.cpu(), {
                "summary": summary, "manifest": self.manifest_path, "sort": self.manifest.get("sort"),
                "classes": self.manifest["classes"], "features": self.manifest["features"],
                "provenance": provenance(device=str(self.dev)),
            })
            self.checkpoints.remove()
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


def _check_writable(out: Path) -> None:
    """Fail now, not at the first checkpoint an epoch later, if the outputs cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as err:
        raise ValueError(f"{out}: cannot write the model directory ({err.strerror or err})") from err


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="manifest.json of the shards to train on")
    parser.add_argument("--spec", required=True, type=json_value, help="JSON model spec (variant knobs)")
    parser.add_argument("--train-config", required=True, type=json_value,
                        help="JSON training settings (schedule, lr, ...; see TrainSettings)")
    parser.add_argument("--run-settings", type=json_value, default={},
                        help=f"JSON of settings that cannot change the result ({', '.join(TrainSettings.NOT_IN_RESULT)}); "
                             "kept apart so that a workflow can pass them without retraining when they change")
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
    rank_args = ["--manifest", args.manifest, "--spec", json.dumps(args.spec),
                 "--train-config", json.dumps(args.train_config), "--run-settings", json.dumps(args.run_settings),
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
    stray = sorted(set(args.run_settings) - set(TrainSettings.NOT_IN_RESULT))
    if stray:
        raise ValueError(f"--run-settings: {stray} change the result; pass them in --train-config")
    settings = TrainSettings.from_dict(args.train_config | args.run_settings)
    try:
        summary = train(args.manifest, args.spec, settings, seed=args.seed, device=args.device,
                        out_dir=args.output_dir, threads=args.threads)
    except Preempted as stop:
        log.warning("%s: checkpoint saved in %s; exiting with %d so the job is retried", stop, args.output_dir,
                    EXIT_PREEMPTED)
        return EXIT_PREEMPTED
    if rank == 0:
        print(json.dumps({k: summary[k] for k in ("epochs", "best_val_loss", "final_val_accuracy", "wall_s",
                                                  "attempts", "device", "precision")}))
    return 0
