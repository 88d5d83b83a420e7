"""Is streaming fast enough? Jets/s of the shard loader alone against jets/s of a training step.

    .venv/bin/python benchmarks/loader_speed.py                      # N=128, batch 1024, 1 thread
    .venv/bin/python benchmarks/loader_speed.py --workers 0 1 2 4 --jets 200000

Writes shards like `salt preprocess` does (HDF5, Blosc LZ4, 512-jet chunks, realistic
multiplicities padded to N) into --dir (reused when present), then measures
1. the loader: full epochs of ShardStream through a DataLoader with 0..k workers,
   shuffling and normalising on the fly, batches handed to the training process;
2. one SAL-T training step (forward, backward, Adam) at the same batch size on
   `--threads` CPU threads;
and prints both rates and their ratio (the goal is a loader >= 10x the step).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from salt.atomic import write_json
from salt.data.loader import ShardStream, split_chunks, stream_loader
from salt.data.shards import ShardWriter, build_manifest, load_manifest
from salt.models import build_model
from salt.training.optim import loss_sum


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


def loader_rate(manifest: dict, batch: int, workers: int, epochs: int, buffer_jets: int) -> dict:
    ds = ShardStream(split_chunks(manifest, "train"), manifest["normalisation"], batch, shuffle=True, seed=1,
                     buffer_jets=buffer_jets)
    n, t0 = 0, time.perf_counter()
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for x, m, y in stream_loader(ds, workers):
            n += len(y)
    dt = time.perf_counter() - t0
    return {"workers": workers, "jets": n, "seconds": round(dt, 3), "jets_per_s": round(n / dt)}


def step_rate(variant: str, n_particles: int, batch: int, threads: int, steps: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model({"model": variant, "particles": n_particles, "classes": 5, "features": 3})
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    x, m, y = torch.randn(batch, n_particles, 3), torch.ones(batch, n_particles, dtype=torch.bool), \
        torch.randint(0, 5, (batch,))
    model.train()

    def step():
        (loss_sum(model(x, m), y) / batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t0
    return {"variant": variant, "threads": threads, "steps": steps, "seconds": round(dt, 3),
            "jets_per_s": round(steps * batch / dt)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="/tmp/salt-loader-bench", help="where the shards are written (reused)")
    p.add_argument("--jets", type=int, default=100_000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--particles", type=int, default=128)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--buffer-jets", type=int, default=16384)
    p.add_argument("--threads", type=int, default=1, help="threads of the training step")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--variant", default="salt")
    p.add_argument("--output", help="also write the results to this JSON file")
    args = p.parse_args()

    t0 = time.perf_counter()
    manifest_path = write_shards(Path(args.dir), args.jets, args.particles, args.shards)
    manifest = load_manifest(manifest_path)
    print(f"shards: {manifest_path} ({args.jets} jets, N={args.particles}; ready in {time.perf_counter() - t0:.1f} s)")
    step = step_rate(args.variant, args.particles, args.batch, args.threads, args.steps)
    print(f"training step ({args.variant}, batch {args.batch}, {args.threads} thread(s)): "
          f"{step['jets_per_s']:,} jets/s")
    loaders = []
    for w in args.workers:
        r = loader_rate(manifest, args.batch, w, args.epochs, args.buffer_jets)
        r["times_step"] = round(r["jets_per_s"] / step["jets_per_s"], 1)
        loaders.append(r)
        print(f"loader, {w} worker(s): {r['jets_per_s']:,} jets/s = {r['times_step']}x the training step")
    if args.output:
        write_json(args.output, {"settings": vars(args), "step": step, "loader": loaders})


if __name__ == "__main__":
    main()
