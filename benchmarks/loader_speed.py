"""Does streaming keep the training step busy? Jets/s of the shard loader, as training runs it, against
jets/s of the SAL-T training step on the same device.

    python benchmarks/loader_speed.py                                   # cpu: N=150, batch 1024
    python benchmarks/loader_speed.py --device cuda --workers 0 4 8 12  # the GPU check: loader >= 2x step

Writes shards like `salt preprocess` does (HDF5, Blosc LZ4, 512-jet chunks, realistic multiplicities
padded to N) into --dir (reused when present), then measures
1. the training step: SAL-T forward, backward and the trainer's Adam (salt.training.optim) on random
   jets already on --device, batch --batch, after warm-up; on cuda timed between synchronisations, so
   the rate is what the GPU sustains when its input is ready;
2. the loader: full epochs of the trainer's own streaming feed (salt.training.feeds.StreamFeed):
   ShardStream through a DataLoader with --workers processes, shuffling and normalising on the fly,
   pinned memory and non-blocking copies to the device when it is a GPU, every batch on the device
   before the clock stops;
and prints both rates, their ratio per worker count, and whether the best loader reaches --goal
times the step (exit status 1 if not). The loader runs alone here; in training it shares the host's
cores with the process that launches the GPU's kernels, so leave it headroom.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from salt.atomic import write_json
from salt.cli import DeprecatedAlias
from salt.data.shards import ShardWriter, build_manifest, load_manifest
from salt.models import build_model
from salt.training.distributed import Dist
from salt.training.feeds import StreamFeed
from salt.training.optim import loss_sum, make_optimizer
from salt.training.settings import TrainSettings


def write_shards(root: Path, jets: int, n_particles: int, shards: int, seed: int = 0) -> Path:
    """Random jets with ~40 particles each (Pythia-like multiplicity), physical scales."""
    manifest_path = root / f"manifest_{jets}_{n_particles}_{shards}.json"
    if manifest_path.exists():
        return manifest_path
    rng = np.random.default_rng(seed)
    paths = {"train": [], "val": []}
    per = jets // shards
    for k in range(shards):
        path = root / f"N{n_particles}" / f"train_{k:03d}.h5"
        attrs = {"classes": ["g", "q", "W", "Z", "t"], "sort": "kt", "kind": "jet", "split": "train",
                 "source": ["synthetic"]}
        with ShardWriter(path, n_particles, ["pt", "deta", "dphi"], ["pt", "n_particles"], attrs) as w:
            for start in range(0, per, 8192):
                n = min(8192, per - start)
                counts = np.clip(rng.poisson(40, n), 1, n_particles)
                mask = np.arange(n_particles)[None] < counts[:, None]
                pt = -np.sort(-rng.exponential(15.0, (n, n_particles)), axis=1)
                x = np.stack([pt, rng.normal(0, 0.2, pt.shape), rng.normal(0, 0.2, pt.shape)], -1)
                x = (x * mask[..., None]).astype(np.float32)
                w.append(x, mask, (pt * mask).astype(np.float32), rng.integers(0, 5, n),
                         np.stack([pt.sum(1), counts], 1).astype(np.float32))
        paths["train"].append(path)
    paths["val"] = paths["train"][:1]   # the manifest wants a val split; only train is read here
    manifest = build_manifest({"train": paths["train"]}, "robust")
    write_json(manifest_path, manifest)
    return manifest_path


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(manifest: dict[str, Any], batch: int, workers: int, epochs: int, buffer_jets: int,
                device: torch.device) -> dict[str, Any]:
    settings = TrainSettings(schedule=[(batch, epochs)], loader="stream", workers=workers, buffer_jets=buffer_jets)
    feed = StreamFeed(manifest, "train", settings, seed=1, device=device, world=1)
    n, t0 = 0, time.perf_counter()
    for epoch in range(epochs):
        for x, m, y, _ in feed.train_batches(epoch, batch, 0, Dist()):
            n += len(y)
    synchronize(device)
    dt = time.perf_counter() - t0
    return {"workers": workers, "jets": n, "seconds": round(dt, 3), "jets_per_s": round(n / dt),
            "pin_memory": device.type == "cuda"}


def step_rate(model_name: str, n_particles: int, batch: int, steps: int, device: torch.device,
              precision: str) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model({"model": model_name, "particles": n_particles, "classes": 5, "features": 3}).to(device)
    opt = make_optimizer(model.parameters(), TrainSettings(schedule=[(batch, 1)]))
    gen = torch.Generator().manual_seed(0)
    counts = torch.randint(1, n_particles + 1, (batch, 1), generator=gen)
    mask = torch.arange(n_particles)[None] < counts
    x = torch.randn(batch, n_particles, 3, generator=gen) * mask[..., None]
    x, mask, y = x.to(device), mask.to(device), torch.randint(0, 5, (batch,), generator=gen).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    model.train()

    def step() -> None:
        with autocast:
            logits = model(x, mask)
        (loss_sum(logits, y) / batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    dt = time.perf_counter() - t0
    return {"model": model_name, "precision": precision, "threads": torch.get_num_threads(), "steps": steps,
            "seconds": round(dt, 3), "jets_per_s": round(steps * batch / dt)}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from salt.provenance import device_info

    return str(device_info("cpu")["cpu"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]: where the step runs and batches go")
    p.add_argument("--dir", default="/tmp/salt-loader-bench", help="where the shards are written (reused)")
    p.add_argument("--jets", type=int, default=131_072)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--particles", type=int, default=150)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--buffer-jets", type=int, default=16384)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of this process (the step on cpu)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--model", default="salt", help="ModelSpec.model of the training step")
    p.add_argument("--variant", dest="model", action=DeprecatedAlias, use="--model", help="deprecated name of --model")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="of the training step")
    p.add_argument("--goal", type=float, default=2.0, help="the loader must reach this many times the step")
    p.add_argument("--output", help="also write the results to this JSON file")
    args = p.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: no CUDA GPU is visible here", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    manifest_path = write_shards(Path(args.dir), args.jets, args.particles, args.shards)
    manifest = load_manifest(manifest_path)
    print(f"shards: {manifest_path} ({args.jets} jets, N={args.particles}; ready in {time.perf_counter() - t0:.1f} s)")
    name = device_name(device)
    step = step_rate(args.model, args.particles, args.batch, args.steps, device, args.precision)
    print(f"training step ({args.model}, {args.precision}, batch {args.batch}) on {args.device} ({name}): "
          f"{step['jets_per_s']:,} jets/s")
    loaders = []
    for w in args.workers:
        r = loader_rate(manifest, args.batch, w, args.epochs, args.buffer_jets, device)
        r["times_step"] = round(r["jets_per_s"] / step["jets_per_s"], 2)
        loaders.append(r)
        print(f"loader, {w} worker(s){', pinned, non-blocking copies' if r['pin_memory'] else ''}: "
              f"{r['jets_per_s']:,} jets/s = {r['times_step']}x the training step")
    best = max(loaders, key=lambda r: r["jets_per_s"])
    ok = best["times_step"] >= args.goal
    print(f"{'PASS' if ok else 'FAIL'}: best loader ({best['workers']} workers) {best['times_step']}x the step "
          f"on {name}; goal >= {args.goal}x")
    if args.output:
        write_json(args.output, {"settings": vars(args), "device_name": name, "cpu_count": len(os.sched_getaffinity(0)),
                                 "step": step, "loader": loaders, "best_workers": best["workers"], "pass": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
