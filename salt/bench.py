"""`salt bench`: inference speed and memory of models, in two modes with their own options.

* Comparison, ``salt bench --models salt,transformer --particles 150 --batch 1024``: model
  families side by side in one process (`time_models`, `bench_models`). Inputs are made once,
  every model runs its untimed warm-up passes, then the timed passes of all models are
  interleaved round by round, so a load spike on a shared machine hits every model alike; the
  median pass gives jets/s. benchmarks/model_speed.py builds on it.
* Sweep, ``salt bench --spec JSON --variant V --dataset D --device cpu|cuda --sweep-particles ...``:
  the workflow's benchmark stage (workflow/rules/bench.smk). One named variant of the config over
  particle counts, batch sizes, thread counts, backends and precisions, each configuration in a
  fresh process (`run_sweep`; the machinery and its rules are in salt/benchmarking/); one JSON
  file with latency per batch and per jet, throughput, peak memory, and what was skipped and why
  (`bench_document`).

The modes share the names --batch, --threads, --warmup and --repeats but not their defaults,
which are spelled out per mode (COMPARE_DEFAULTS, SWEEP_DEFAULTS); an option that only the other
mode reads is an error rather than silently ignored.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib.metadata
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from salt.models import ModelSpec, build_model
from salt.benchmarking.isolation import describe, measure_isolated
from salt.benchmarking.limits import (BACKENDS, CUDA_ONLY_BACKENDS, DEFAULT_BACKENDS, DEFAULT_BATCHES, DEFAULT_CPU_BUDGET_GB,
                                      DEFAULT_PRECISIONS, GPU_BUDGET_SHARE, MEMORY_NOTE, MIN_TIMED_PASSES,
                                      PRECISIONS, TIMING_NOTE, BenchError, attention_assumption, attention_kernel,
                                      default_memory_budget_mb, device_kind, estimate_memory_mb, memory_headroom_mb,
                                      require_device, resolve_threads)
from salt.benchmarking.measure import export_onnx, fused_missing, onnxruntime_missing
from salt.benchmarking.runtime import num_threads, random_jets, synchronize, tune_allocator
from salt.models.classifier import JetClassifier

FP32_ONLY = {"onnxruntime": "the exported graph is fp32", "fused": "the Triton kernel computes in fp32"}


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
        synchronize(dev)
        for _ in range(repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(x, mask)
                synchronize(dev)
                times[name].append(time.perf_counter() - start)
    out = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        out[name] = {"times_s": ts, "median_s": median, "min_s": min(ts),
                     "jets_per_s": batch / median, "ns_per_jet": median / batch * 1e9}
    return out


def bench_models(models: list[str], particles: int, batch: int, *, classes: int = 5, partitions: int = 4,
                 blocks: int = 1, impls: tuple[str, ...] = ("fused",), device: str = "cpu",
                 threads: int | None = 1, warmup: int = 2, repeats: int = 7, seed: int = 0,
                 chunk_rows: int | None = None) -> list[dict[str, Any]]:
    """Throughput of freshly initialised models (ModelSpec.model families) at one N: weights do not
    change the time, so no training is needed to compare them.

    chunk_rows: the models' inference slicing (JetClassifier.inference_chunk_rows; None keeps
    the default, 0 turns it off)."""
    built: dict[str, JetClassifier] = {}
    specs: dict[str, ModelSpec] = {}
    for family in models:
        spec = ModelSpec(model=family, particles=particles, classes=classes, partitions=partitions, blocks=blocks)
        for impl in impls:
            if impl != "fused" and spec.attention == "full":
                continue  # full attention has one path only
            torch.manual_seed(seed)
            model = build_model(spec, impl=impl)
            if chunk_rows is not None:
                model.inference_chunk_rows = chunk_rows
            built[f"{family}/{impl}"] = model
            specs[f"{family}/{impl}"] = spec
    timed = time_models(built, batch, device=device, threads=threads, warmup=warmup, repeats=repeats, seed=seed)
    results = []
    for key, timing in timed.items():
        family, impl = key.split("/")
        results.append({"model": family, "impl": impl, "particles": particles, "batch": batch,
                        "threads": threads, "device": device, "spec": specs[key].to_dict(),
                        "chunk_rows": built[key].inference_chunk_rows,
                        "params": sum(p.numel() for p in built[key].parameters()), **timing})
    return results


# =============================================================================
# The sweep: one named variant of the config over an N sweep, each configuration in a fresh process


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def result_row(point: dict[str, Any], measured: dict[str, Any], estimate_mb: float) -> dict[str, Any]:
    """One row of the result file (limits.RESULT_KEYS, then extras) from a measurement."""
    times = measured["times_s"]
    median = statistics.median(times)
    batch = point["batch"]
    peak = measured["peak_memory_mb"]
    return {"particles": point["particles"], "batch": batch, "threads": point["threads"],
            "backend": point["backend"], "precision": point["precision"],
            "latency_ms": median * 1e3, "latency_ms_p10": _percentile(times, 10) * 1e3,
            "latency_ms_p90": _percentile(times, 90) * 1e3, "ns_per_jet": median / batch * 1e9,
            "jets_per_s": batch / median, "peak_memory_mb": None if peak is None else round(peak, 2),
            "threads_used": measured["threads_used"], "repeats": len(times),
            "estimated_memory_mb": round(estimate_mb, 2)}


def run_sweep(spec: ModelSpec, *, device: str = "cpu", particles: Sequence[int] = (), batches: Sequence[int] = DEFAULT_BATCHES,
              threads: Sequence[int] = (1,), backends: Sequence[str] | None = None,
              precisions: Sequence[str] | None = None, repeats: int = 20, warmup: int = 3,
              time_budget_s: float = 60.0, memory_budget_mb: float | None = None, impl: str = "fused",
              chunk_rows: int | None = None, tune_allocator: bool = True, seed: int = 0,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure `spec` at every (N, backend, precision, threads, batch); returns {"results", "skipped",
    "notes", "settings"} for `bench_document`.

    The spec's own N is always part of the sweep (the report's tables are at the dataset's N). On
    cuda the thread setting is not swept: the host side runs with one thread, recorded as 1.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    kind = device_kind(device)
    require_device(device)
    backends = list(DEFAULT_BACKENDS[kind] if backends is None else backends)
    precisions = list(DEFAULT_PRECISIONS[kind] if precisions is None else precisions)
    for name, values, allowed in (("backend", backends, BACKENDS), ("precision", precisions, PRECISIONS)):
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise ValueError(f"{name}s {values}: expected some of {list(allowed)}")
    if kind == "cpu" and (cuda_only := [b for b in backends if b in CUDA_ONLY_BACKENDS]):
        raise ValueError(f"backend {cuda_only[0]} needs a cuda device; drop it from the cpu backends")
    if "compile" in backends and warmup < 1:
        raise ValueError("backend compile needs warmup >= 1: its first call compiles")
    if repeats < 1 or warmup < 0 or time_budget_s <= 0:
        raise ValueError(f"need repeats >= 1, warmup >= 0 and time_budget_s > 0 (got {repeats}, {warmup}, "
                         f"{time_budget_s})")
    if not batches or min(batches) < 1:
        raise ValueError(f"batch sizes {list(batches)}: expected positive integers")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in particles):
        raise ValueError(f"particle counts {list(particles)}: expected positive integers")
    for t in threads:
        resolve_threads(t)  # validates
    thread_list = list(threads) if kind == "cpu" else [1]
    sweep = sorted(set(particles) | {spec.particles})
    notes: list[str] = []
    if "onnxruntime" in backends and (why := onnxruntime_missing(kind)):
        notes.append(why)
        log(f"note: {why}")
        backends = [b for b in backends if b != "onnxruntime"]
    if "fused" in backends and (why := fused_missing(spec)):
        notes.append(why)
        log(f"note: {why}")
        backends = [b for b in backends if b != "fused"]
    for backend in ("onnxruntime", "fused"):
        if backend in backends and any(p != "fp32" for p in precisions):
            notes.append(f"{backend}: fp32 only ({FP32_ONLY[backend]}); its bf16 configurations are not run")
    configured = memory_budget_mb
    budget = default_memory_budget_mb(device) if memory_budget_mb is None else float(memory_budget_mb)
    headroom = memory_headroom_mb() if kind == "cpu" else None
    if headroom is not None and headroom[0] < budget:
        notes.append(f"memory budget lowered from {budget:.0f} MB to the {headroom[0]:.0f} MB {headroom[1]}")
        budget = headroom[0]
    rows_wanted = JetClassifier.inference_chunk_rows if chunk_rows is None else chunk_rows
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="salt-bench-") as tmp:
        for n in sweep:
            spec_n = spec.replace(particles=n)
            onnx_path: Path | None = None
            for backend in backends:
                for precision in precisions:
                    if backend in FP32_ONLY and precision != "fp32":
                        continue
                    for t in thread_list:
                        for batch in batches:
                            point = {"particles": n, "batch": batch, "threads": t, "backend": backend,
                                     "precision": precision}
                            kernel = attention_kernel(spec_n, device, precision, backend)
                            estimate = estimate_memory_mb(spec_n, batch, backend=backend, device=device, impl=impl,
                                                          chunk_rows=chunk_rows, precision=precision, kernel=kernel,
                                                          threads=resolve_threads(t) if kind == "cpu" else 1)
                            if estimate > budget:
                                reason = (f"estimated peak memory {estimate:.0f} MB "
                                          f"({attention_assumption(spec_n, kernel)}) exceeds the budget of "
                                          f"{budget:.0f} MB")
                                skipped.append({**point, "reason": reason, "estimated_memory_mb": round(estimate, 1),
                                                "attention_kernel": kernel})
                                log(f"{describe(point)}: skipped, {reason}")
                                continue
                            if backend == "onnxruntime" and onnx_path is None:
                                onnx_path = export_onnx(spec_n, Path(tmp) / f"model_n{n}.onnx", seed=seed, impl=impl)
                            job = {**point, "spec": spec_n.to_dict(), "device": device, "warmup": warmup,
                                   "repeats": repeats, "time_budget_s": time_budget_s, "impl": impl,
                                   "chunk_rows": chunk_rows, "tune_allocator": tune_allocator, "seed": seed,
                                   "onnx_path": None if onnx_path is None else str(onnx_path)}
                            status, payload = measure_isolated(job)
                            if status == "oom":
                                reason = f"out of memory at run time: {payload}"
                                skipped.append({**point, "reason": reason, "estimated_memory_mb": round(estimate, 1)})
                                log(f"{describe(point)}: skipped, {reason}")
                                continue
                            if status != "ok":
                                raise BenchError(f"{describe(point)}: the measurement failed:\n{payload}")
                            row = result_row(point, payload, estimate)
                            results.append(row)
                            memory = "-" if row["peak_memory_mb"] is None else f"{row['peak_memory_mb']:.1f} MB"
                            log(f"{describe(point)}: {row['latency_ms']:.4g} ms per batch "
                                f"(p10 {row['latency_ms_p10']:.4g}, p90 {row['latency_ms_p90']:.4g}), "
                                f"{row['ns_per_jet']:.4g} ns/jet, peak {memory}, {row['repeats']} passes")
    settings = {"particles": sweep, "batch_sizes": list(batches), "threads": list(threads),
                "backends": backends, "precisions": precisions, "repeats": repeats, "warmup": warmup,
                "time_budget_s": time_budget_s, "min_timed_passes": MIN_TIMED_PASSES,
                "memory_budget_mb": round(budget, 1),
                "memory_budget_source": "given" if configured is not None else
                ("default: 80% of the GPU's memory" if kind == "cuda" else f"default: {DEFAULT_CPU_BUDGET_GB:g} GiB"),
                "allocator_tuned": bool(tune_allocator) and _tunable_allocator(),
                "chunk_rows": rows_wanted, "impl": impl, "seed": seed, "timing": TIMING_NOTE,
                "memory": MEMORY_NOTE[kind], "host_threads": 1 if kind == "cuda" else None,
                "fp32": "cuDNN convolutions without TF32; matrix products at PyTorch's default, fp32",
                "cpu_threads_available": resolve_threads(0)}
    return {"results": results, "skipped": skipped, "notes": notes, "settings": settings}


def _tunable_allocator() -> bool:
    return sys.platform.startswith("linux") and ctypes.util.find_library("c") is not None


def _library_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def bench_device_info(device: str) -> dict[str, Any]:
    """salt.provenance.device_info plus the software that ran the numbers (gpu and driver are null on a CPU)."""
    from salt.provenance import device_info

    info: dict[str, Any] = {"device": device, "gpu": None, "driver": None, **device_info(device)}
    info.update(torch=torch.__version__, cuda=torch.version.cuda, onnxruntime=_library_version("onnxruntime"),
                onnx=_library_version("onnx"))
    if device_kind(device) == "cuda":
        info["cudnn"] = torch.backends.cudnn.version()
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        info["compute_capability"] = f"{props.major}.{props.minor}"
        smi_id = nvidia_smi_id(index)
        info["sm_clock_mhz"] = _nvidia_smi(smi_id, "clocks.sm")
        info["max_sm_clock_mhz"] = _nvidia_smi(smi_id, "clocks.max.sm")
    return info


def nvidia_smi_id(index: int) -> str:
    """nvidia-smi's name for torch's cuda:index. nvidia-smi counts every GPU of the node, torch only
    those in CUDA_VISIBLE_DEVICES, so the GPU is named by its UUID."""
    props = torch.cuda.get_device_properties(index)
    return f"GPU-{props.uuid}" if getattr(props, "uuid", None) is not None else str(index)


def _nvidia_smi(gpu: str, query: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--id={gpu}", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return out.splitlines()[0] if out else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def bench_document(spec: ModelSpec, *, variant: str, dataset: str, device: str, sweep: dict[str, Any]
                   ) -> dict[str, Any]:
    """The result file: identity, device, cost at the dataset's N, one row per measured configuration,
    the configurations skipped (with why), notes, settings and provenance."""
    from salt.models.cost import model_cost
    from salt.provenance import provenance

    cost = model_cost(spec)
    return {"variant": variant, "dataset": dataset, "spec": spec.to_dict(), "device": device,
            "device_info": bench_device_info(device),
            "cost": {key: cost[key] for key in ("params", "flops_paper", "flops")},
            "results": sweep["results"], "skipped": sweep["skipped"], "notes": sweep["notes"],
            "settings": sweep["settings"], "provenance": provenance(device=device)}


# =============================================================================
# The command line

COMPARE_DEFAULTS: dict[str, Any] = {"models": "salt,linformer,transformer", "particles": "150", "batch": [1024],
                                    "threads": [1], "warmup": 2, "repeats": 7, "classes": 5, "partitions": 4,
                                    "blocks": 1}
SWEEP_DEFAULTS: dict[str, Any] = {"sweep_particles": [], "batch": list(DEFAULT_BATCHES), "threads": [1], "warmup": 3,
                                  "repeats": 20, "time_budget_s": 60.0, "seed": 0}
# options that only one mode reads; a value given for the other mode's is refused
COMPARE_ONLY = ("models", "particles", "classes", "partitions", "blocks")
SWEEP_ONLY = ("variant", "dataset", "sweep_particles", "backends", "precisions", "memory_budget_gb", "time_budget_s",
              "seed")


def _defaults(name: str) -> str:
    def show(value: Any) -> str:
        return " ".join(map(str, value)) if isinstance(value, list) else str(value)

    return f"comparison: {show(COMPARE_DEFAULTS[name])}; sweep: {show(SWEEP_DEFAULTS[name])}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from salt.cli import DeprecatedAlias

    both = parser.add_argument_group("both modes")
    both.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    both.add_argument("--batch", type=int, nargs="+", default=None,
                      help=f"batch size(s); the comparison takes one, the sweep a list (default {_defaults('batch')})")
    both.add_argument("--threads", type=int, nargs="+", default=None,
                      help=f"intra-op threads, 0 = all cores; the comparison takes one, the sweep a list "
                           f"(default {_defaults('threads')})")
    both.add_argument("--warmup", type=int, default=None, help=f"untimed passes (default {_defaults('warmup')})")
    both.add_argument("--repeats", type=int, default=None, help=f"timed passes (default {_defaults('repeats')})")
    both.add_argument("--impl", default="fused", choices=["fused", "straightforward", "both"],
                      help="forward path of the linear-attention models (default fused; both: comparison only)")
    both.add_argument("--chunk-rows", type=int, default=None,
                      help="inference slicing in particle rows (default: the model's, 65536; 0 = off)")
    both.add_argument("--no-tune-allocator", action="store_true",
                      help="leave glibc's allocator as it is (see salt.benchmarking.runtime.tune_allocator)")
    both.add_argument("--output", help="also write the JSON result here (atomically); the sweep needs it")
    both.add_argument("--json", action="store_true", help="print JSON instead of a table")

    compare = parser.add_argument_group("comparison mode (without --spec): model families side by side")
    compare.add_argument("--models", default=None,
                         help=f"comma-separated models, as ModelSpec.model (default {COMPARE_DEFAULTS['models']})")
    compare.add_argument("--variants", dest="models", action=DeprecatedAlias, use="--models",
                         help="deprecated name of --models")
    compare.add_argument("--particles", default=None,
                         help=f"N, or a comma-separated list of N (default {COMPARE_DEFAULTS['particles']})")
    for name in ("classes", "partitions", "blocks"):
        compare.add_argument(f"--{name}", type=int, default=None, help=f"default {COMPARE_DEFAULTS[name]}")

    sweep = parser.add_argument_group("sweep mode (--spec): the workflow's benchmark of one variant of the config")
    sweep.add_argument("--spec", help="model spec as JSON, e.g. '{\"model\": \"salt\", \"particles\": 150, "
                                      "\"classes\": 5}'; selects this mode")
    sweep.add_argument("--variant", help="the config's name of the variant, written into the result")
    sweep.add_argument("--dataset", help="the dataset name, written into the result")
    sweep.add_argument("--sweep-particles", type=int, nargs="+", default=None,
                       help="particle counts N to measure (the spec's N is always added)")
    sweep.add_argument("--backends", nargs="+", choices=BACKENDS, default=None,
                       help="default: eager onnxruntime on cpu, eager cudagraph fused on cuda (fused: the one-kernel "
                            "Triton forward of the linear-attention models, fp32, cuda only)")
    sweep.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=None,
                       help="default: fp32 on cpu, fp32 bf16 on cuda (bf16 = autocast)")
    sweep.add_argument("--memory-budget-gb", type=float, default=None,
                       help=f"skip configurations estimated above this (default {DEFAULT_CPU_BUDGET_GB:g} on cpu, "
                            f"{GPU_BUDGET_SHARE * 100:.0f}%% of the GPU's memory on cuda)")  # %% : argparse formats help
    sweep.add_argument("--time-budget-s", type=float, default=None,
                       help=f"stop timing a configuration after this many seconds of timed passes "
                            f"(at least {MIN_TIMED_PASSES} passes; default {SWEEP_DEFAULTS['time_budget_s']:g})")
    sweep.add_argument("--seed", type=int, default=None, help=f"weights and inputs (default {SWEEP_DEFAULTS['seed']})")


def _fill_mode(args: argparse.Namespace, defaults: dict[str, Any], foreign: tuple[str, ...], mode: str) -> str | None:
    """Give the options left unset this mode's defaults; the error if an option of the other mode was set."""
    given = [name for name in foreign if getattr(args, name) is not None]
    if given:
        option = "--" + given[0].replace("_", "-")
        return f"{option} is not an option of the {mode} mode ({'with' if mode == 'sweep' else 'without'} --spec)"
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return None


def main(args: argparse.Namespace) -> int:
    if args.spec is not None:
        return _main_sweep(args)
    return _main_compare(args)


def _fail(message: str, code: int = 2) -> int:
    print(f"salt bench: error: {message}", file=sys.stderr)
    return code


def _main_sweep(args: argparse.Namespace) -> int:
    if why := _fill_mode(args, SWEEP_DEFAULTS, COMPARE_ONLY, "sweep"):
        return _fail(why)
    try:
        spec = ModelSpec.from_dict(json.loads(args.spec))
    except json.JSONDecodeError as err:
        return _fail(f"--spec is not valid JSON ({err}): {args.spec!r}")
    except (TypeError, ValueError) as err:
        return _fail(f"--spec: {err}")
    if not args.variant or not args.dataset or not args.output:
        return _fail("--spec mode needs --variant, --dataset and --output (the names and file of the result)")
    if args.impl == "both":
        return _fail("--impl both is for the comparison mode; --spec mode measures one path")
    try:
        require_device(args.device)
        sweep = run_sweep(spec, device=args.device, particles=args.sweep_particles, batches=args.batch,
                          threads=args.threads, backends=args.backends, precisions=args.precisions,
                          repeats=args.repeats, warmup=args.warmup, time_budget_s=args.time_budget_s,
                          memory_budget_mb=None if args.memory_budget_gb is None else args.memory_budget_gb * 1024,
                          impl=args.impl, chunk_rows=args.chunk_rows, tune_allocator=not args.no_tune_allocator,
                          seed=args.seed)
    except ValueError as err:
        return _fail(str(err))
    except BenchError as err:
        return _fail(str(err), 1)
    document = bench_document(spec, variant=args.variant, dataset=args.dataset, device=args.device, sweep=sweep)
    from salt.atomic import write_json

    write_json(args.output, document)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print_sweep(document)
    return 0


def print_sweep(document: dict[str, Any]) -> None:
    """The result rows as a table, then what was skipped and why."""
    print(f"{document['variant']} on {document['dataset']} (N = {document['spec']['particles']}), "
          f"{document['device']}: {document['device_info'].get('gpu') or document['device_info'].get('cpu')}")
    print(f"{'N':>5s} {'backend':>11s} {'prec':>4s} {'thr':>3s} {'batch':>6s} {'ms/batch':>10s} {'p10':>9s} "
          f"{'p90':>9s} {'ns/jet':>10s} {'jets/s':>11s} {'peak MB':>8s}")
    for r in document["results"]:
        memory = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.1f}"
        print(f"{r['particles']:5d} {r['backend']:>11s} {r['precision']:>4s} {r['threads']:3d} {r['batch']:6d} "
              f"{r['latency_ms']:10.4f} {r['latency_ms_p10']:9.4f} {r['latency_ms_p90']:9.4f} "
              f"{r['ns_per_jet']:10.1f} {r['jets_per_s']:11.0f} {memory:>8s}")
    for s in document["skipped"]:
        print(f"skipped {describe(s)}: {s['reason']}")
    for note in document["notes"]:
        print(f"note: {note}")


def _main_compare(args: argparse.Namespace) -> int:
    from salt.models.spec import MODELS

    if why := _fill_mode(args, COMPARE_DEFAULTS, SWEEP_ONLY, "comparison"):
        return _fail(why)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if not models or unknown:
        return _fail(f"--models {args.models!r}: unknown {unknown}; expected some of {sorted(MODELS)}")
    try:
        particle_list = [int(v) for v in args.particles.split(",") if v.strip()]
    except ValueError:
        return _fail(f"--particles {args.particles!r}: expected integers like 150 or 128,1024")
    if len(args.batch) != 1 or len(args.threads) != 1:
        return _fail("the comparison mode (--models) takes one --batch and one --threads; sweeps are the --spec mode's")
    batch = args.batch[0]
    try:
        threads = resolve_threads(args.threads[0])
        require_device(args.device)
    except (ValueError, BenchError) as err:
        return _fail(str(err))
    tuned = False if args.no_tune_allocator else tune_allocator()
    impls = ("fused", "straightforward") if args.impl == "both" else (args.impl,)
    results = []
    try:
        for n in particle_list:
            results += bench_models(models, n, batch, classes=args.classes, partitions=args.partitions,
                                    blocks=args.blocks, impls=impls, device=args.device, threads=threads,
                                    warmup=args.warmup, repeats=args.repeats, chunk_rows=args.chunk_rows)
    except ValueError as err:
        return _fail(str(err))
    from salt.provenance import provenance

    report = {"provenance": provenance(device=args.device),
              "settings": {"batch": batch, "threads": threads, "device": args.device,
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
        print(f"batch {batch}, {threads} thread(s), {args.device}, allocator tuned: {tuned}")
        print(f"{'model':18s} {'impl':16s} {'N':>5s} {'median ms':>10s} {'jets/s':>10s}")
        for r in results:
            print(f"{r['model']:18s} {r['impl']:16s} {r['particles']:5d} {r['median_s'] * 1e3:10.2f} "
                  f"{r['jets_per_s']:10.0f}")
    return 0
