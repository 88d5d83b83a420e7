"""Inference speed of model variants: a library of timing functions plus `salt bench`.

The functions take built models and return plain dicts, so the pipeline's benchmark
rules (latency at batch 1 and 4096, peak memory, N sweeps) can reuse them. Timing
rules: inputs are made once, every model runs `warmup` untimed passes, then the timed
passes of all models are interleaved round by round, so a load spike on a shared
machine hits every variant alike; the median pass gives jets/s. On CUDA each pass is
bracketed by synchronisations.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch

from salt.models import ModelSpec, build_model
from salt.models.classifier import JetClassifier

_ALLOCATOR_TUNED = False


def tune_allocator() -> bool:
    """Keep freed memory mapped in this process (glibc only); returns whether it applied.

    glibc hands large freed blocks straight back to the kernel, so every new
    intermediate tensor of a forward pass is page-faulted in again; on a VM that costs
    as much as the arithmetic. Raising the mmap and trim thresholds lets the heap reuse
    them, which is what jemalloc/tcmalloc setups for PyTorch CPU inference achieve. It
    changes no result, only time, and it applies to every variant alike.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_trim_threshold, ctypes.c_int(2**31 - 1)) == 1
        ok = libc.mallopt(m_mmap_threshold, ctypes.c_int(1 << 30)) == 1 and ok
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = ok
    return ok


@contextlib.contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op threads (None: leave as is)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def random_jets(spec: ModelSpec, batch: int, device: str | torch.device = "cpu", seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard-normal features and a mask with a realistic share of padding (about a third)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, spec.particles, spec.features, generator=gen)
    counts = torch.randint(max(1, spec.particles // 3), spec.particles + 1, (batch, 1), generator=gen)
    mask = torch.arange(spec.particles)[None, :] < counts
    x = x * mask[..., None]
    return x.to(device), mask.to(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_models(models: dict[str, JetClassifier], batch: int, *, device: str = "cpu", threads: int | None = 1,
                warmup: int = 2, repeats: int = 7, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Inference time of several models on the same random batch, interleaved round by round.

    All models must take the same (N, F). Returns per name: times_s (every timed pass),
    median_s, min_s, jets_per_s (from the median), ns_per_jet.
    """
    if not models:
        return {}
    if repeats < 1 or warmup < 0 or batch < 1:
        raise ValueError(f"need batch >= 1, repeats >= 1, warmup >= 0 (got {batch}, {repeats}, {warmup})")
    dev = torch.device(device)
    first = next(iter(models.values())).spec
    for name, model in models.items():
        if (model.spec.particles, model.spec.features) != (first.particles, first.features):
            raise ValueError(f"model {name!r} takes (N, F) = ({model.spec.particles}, {model.spec.features}); "
                             f"expected ({first.particles}, {first.features}) like the others")
    x, mask = random_jets(first, batch, dev, seed)
    times: dict[str, list[float]] = {name: [] for name in models}
    with num_threads(threads), torch.inference_mode():
        for model in models.values():
            model.to(dev).eval()
            for _ in range(warmup):
                model(x, mask)
        _synchronize(dev)
        for _ in range(repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(x, mask)
                _synchronize(dev)
                times[name].append(time.perf_counter() - start)
    out = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        out[name] = {"times_s": ts, "median_s": median, "min_s": min(ts),
                     "jets_per_s": batch / median, "ns_per_jet": median / batch * 1e9}
    return out


def bench_variants(variants: list[str], particles: int, batch: int, *, classes: int = 5, partitions: int = 4,
                   blocks: int = 1, impls: tuple[str, ...] = ("fused",), device: str = "cpu",
                   threads: int | None = 1, warmup: int = 2, repeats: int = 7, seed: int = 0,
                   chunk_rows: int | None = None) -> list[dict[str, Any]]:
    """Throughput of freshly initialised variants at one N (weights do not change the time).

    chunk_rows: the models' inference slicing (JetClassifier.inference_chunk_rows; None keeps
    the default, 0 turns it off)."""
    models: dict[str, JetClassifier] = {}
    specs: dict[str, ModelSpec] = {}
    for variant in variants:
        spec = ModelSpec(model=variant, particles=particles, classes=classes, partitions=partitions, blocks=blocks)
        for impl in impls:
            if impl != "fused" and spec.attention == "full":
                continue  # full attention has one path only
            torch.manual_seed(seed)
            model = build_model(spec, impl=impl)
            if chunk_rows is not None:
                model.inference_chunk_rows = chunk_rows
            models[f"{variant}/{impl}"] = model
            specs[f"{variant}/{impl}"] = spec
    timed = time_models(models, batch, device=device, threads=threads, warmup=warmup, repeats=repeats, seed=seed)
    results = []
    for key, timing in timed.items():
        variant, impl = key.split("/")
        results.append({"variant": variant, "impl": impl, "particles": particles, "batch": batch,
                        "threads": threads, "device": device, "spec": specs[key].to_dict(),
                        "chunk_rows": models[key].inference_chunk_rows,
                        "params": sum(p.numel() for p in models[key].parameters()), **timing})
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", default="salt,linformer,transformer",
                        help="comma-separated variants (default salt,linformer,transformer)")
    parser.add_argument("--particles", default="150", help="N, or a comma-separated list of N")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--impl", default="fused", choices=["fused", "straightforward", "both"],
                        help="forward path of the linear variants (default fused)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="inference slicing in particle rows (default: the model's, 65536; 0 = off)")
    parser.add_argument("--no-tune-allocator", action="store_true",
                        help="leave glibc's allocator as it is (see salt.bench.tune_allocator)")
    parser.add_argument("--output", help="also write the JSON result here (atomically)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def main(args: argparse.Namespace) -> int:
    from salt.models.spec import VARIANTS

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if not variants or unknown:
        print(f"salt bench: --variants {args.variants!r}: unknown {unknown}; expected some of {sorted(VARIANTS)}",
              file=sys.stderr)
        return 2
    try:
        particle_list = [int(v) for v in args.particles.split(",") if v.strip()]
    except ValueError:
        print(f"salt bench: --particles {args.particles!r}: expected integers like 150 or 128,1024", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"salt bench: --device {args.device}: CUDA is not available here", file=sys.stderr)
        return 2
    tuned = False if args.no_tune_allocator else tune_allocator()
    impls = ("fused", "straightforward") if args.impl == "both" else (args.impl,)
    results = []
    try:
        for n in particle_list:
            results += bench_variants(variants, n, args.batch, classes=args.classes, partitions=args.partitions,
                                      blocks=args.blocks, impls=impls, device=args.device, threads=args.threads,
                                      warmup=args.warmup, repeats=args.repeats, chunk_rows=args.chunk_rows)
    except ValueError as err:
        print(f"salt bench: {err}", file=sys.stderr)
        return 2
    from salt.provenance import provenance

    report = {"provenance": provenance(device=args.device),
              "settings": {"batch": args.batch, "threads": args.threads, "device": args.device,
                           "warmup": args.warmup, "repeats": args.repeats, "allocator_tuned": tuned,
                           "chunk_rows": args.chunk_rows,
                           "timing": "median of interleaved passes; jets_per_s = batch / median"},
              "results": results}
    if args.output:
        from salt.atomic import write_json

        write_json(args.output, report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"batch {args.batch}, {args.threads} thread(s), {args.device}, allocator tuned: {tuned}")
        print(f"{'variant':18s} {'impl':16s} {'N':>5s} {'median ms':>10s} {'jets/s':>10s}")
        for r in results:
            print(f"{r['variant']:18s} {r['impl']:16s} {r['particles']:5d} {r['median_s'] * 1e3:10.2f} "
                  f"{r['jets_per_s']:10.0f}")
    return 0
