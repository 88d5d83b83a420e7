"""Inference speed and memory of model variants: timing functions and `salt bench`.

Two ways to use it:

* ``salt bench --variants salt,transformer --particles 150 --batch 1024`` compares
  variants side by side in one process (`time_models`, `bench_variants`): inputs are
  made once, every model runs `warmup` untimed passes, then the timed passes of all
  models are interleaved round by round, so a load spike on a shared machine hits every
  variant alike; the median pass gives jets/s. benchmarks/model_speed.py builds on it.
* ``salt bench --spec JSON --variant V --dataset D --device cpu|cuda --sweep-particles ...``
  is the pipeline's benchmark stage (workflow/rules/bench.smk): one variant over a sweep
  of particle counts, batch sizes, thread counts, backends (eager, torch.compile, CUDA
  graphs, ONNX Runtime) and precisions (fp32, bf16 autocast); one JSON file with latency
  per batch and per jet, throughput and peak memory (`run_sweep`, `bench_document`).

Sweep rules, and why:

* Each configuration runs in its own fresh process, forked from a "zygote" process that
  has only imported torch and never runs a model. Peak memory is then that configuration's
  own, not a high-water mark left by an earlier, bigger one; no allocator cache, compiled
  graph or CUDA state carries over; and a crash names its configuration.
* Latency is the median over timed passes (p10 and p90 beside it) after warm-up. On CUDA
  each pass is bracketed by CUDA events after a synchronisation, so a pass is one batch's
  latency and not a pipelined throughput.
* Peak memory: on CUDA, torch.cuda.max_memory_allocated after reset_peak_memory_stats,
  with the weights and inputs already on the device (so they count). On CPU, the peak
  resident set (VmHWM, reset through /proc/self/clear_refs) of the measuring process
  above its resident set when it started, less the library code it paged in: weights,
  inputs, intermediates and allocator slack. A process-wide maxrss would be monotone and
  so would only ever report the largest configuration run so far.
* A configuration whose estimated memory (`estimate_memory_mb`, conservative) exceeds the
  budget is not run but recorded under "skipped" with the reason: a latency at batch 4096
  must be a batch-4096 number, so the batch is never split to make it fit.
* A cuda run without a visible GPU fails (`require_device`): a CPU figure filed under
  cuda would be a lie. The CPU fallback is the config's device list.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import importlib.metadata
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
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


# =============================================================================
# The pipeline benchmark: one variant over an N sweep, each configuration in a fresh process

BACKENDS = ("eager", "compile", "cudagraph", "onnxruntime")
PRECISIONS = ("fp32", "bf16")
DEFAULT_BACKENDS = {"cpu": ("eager", "onnxruntime"), "cuda": ("eager", "cudagraph")}
DEFAULT_PRECISIONS = {"cpu": ("fp32",), "cuda": ("fp32", "bf16")}
DEFAULT_BATCHES = (1, 4096)
DEFAULT_CPU_BUDGET_GB = 8.0
GPU_BUDGET_SHARE = 0.8  # of the GPU's memory, when no budget is given
MIN_TIMED_PASSES = 3  # even when the time budget runs out first
RESULT_KEYS = ("particles", "batch", "threads", "backend", "precision", "latency_ms", "latency_ms_p10",
               "latency_ms_p90", "ns_per_jet", "jets_per_s", "peak_memory_mb")
TIMING_NOTE = ("median (p10, p90) of timed passes after warm-up, each configuration in a fresh process; "
               "cpu: perf_counter around each call; cuda: CUDA events after a synchronisation, one batch per pass; "
               "ns_per_jet = latency / batch, jets_per_s = batch / latency")
MEMORY_NOTE = {
    "cpu": ("peak resident set of the measuring process (VmHWM, reset via /proc/self/clear_refs) above its "
            "resident set at start, less library code paged in: weights, inputs, intermediates, allocator slack; "
            "compile: not measured (null), the compiler's own memory would dominate"),
    "cuda": ("torch.cuda.max_memory_allocated after reset_peak_memory_stats, weights and inputs on the device; "
             "cudagraph: warm-up and capture included; compile: after compiling; onnxruntime: not measured (null)"),
}


class BenchError(RuntimeError):
    """A benchmark that cannot give an honest number: no GPU for a cuda run, a failed configuration."""


def device_kind(device: str) -> str:
    """"cpu" or "cuda" for a device string such as "cuda:1"."""
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise BenchError(f"--device {device!r}: {err}; expected cpu or cuda[:i]") from err
    if kind not in ("cpu", "cuda"):
        raise BenchError(f"--device {device!r}: expected cpu or cuda[:i]")
    return kind


def require_device(device: str) -> None:
    """Fail unless `device` exists here. A cuda benchmark without a GPU must not quietly run on the CPU."""
    if device_kind(device) != "cuda":
        return
    if not torch.cuda.is_available():
        raise BenchError(
            f"--device {device}: no CUDA GPU is visible on this machine (torch {torch.__version__}, built with "
            f"CUDA {torch.version.cuda}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). "
            "A CPU measurement must not be filed under cuda: run this job on a GPU node, or benchmark the CPU "
            "only (config bench.devices: [cpu]).")
    index = torch.device(device).index or 0
    if index >= torch.cuda.device_count():
        raise BenchError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) are visible")


def resolve_threads(threads: int) -> int:
    """Intra-op threads for a thread setting: 0 means every core this process may run on (its CPU
    affinity, which is the job's allocation under SLURM)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads is {threads!r}; expected 0 (all cores) or a positive integer")
    if threads:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@lru_cache(maxsize=64)
def _param_count(spec: ModelSpec) -> int:
    return sum(p.numel() for p in build_model(spec).parameters())


def slice_jets(spec: ModelSpec, batch: int, *, backend: str, device: str, chunk_rows: int | None) -> int:
    """Jets per forward slice: eager CPU inference runs big batches in slices of `chunk_rows`
    particle rows (JetClassifier.inference_chunk_rows); every other path runs the whole batch."""
    rows = JetClassifier.inference_chunk_rows if chunk_rows is None else chunk_rows
    n = spec.particles
    if backend == "eager" and device_kind(device) == "cpu" and rows and batch * n > rows:
        return min(batch, max(1, rows // n))
    return batch


ESTIMATE_OVERHEAD_MB = 16.0  # runtime scratch and session state beside the tensors
ESTIMATE_BF16_FACTOR = 1.5  # autocast keeps bf16 copies beside the fp32 tensors
ESTIMATE_ARENA_FACTOR = 2.0  # ONNX Runtime's CPU arena grows by doubling


def estimate_memory_mb(spec: ModelSpec, batch: int, *, backend: str = "eager", device: str = "cpu",
                       impl: str = "fused", chunk_rows: int | None = None, precision: str = "fp32") -> float:
    """Conservative peak memory of one inference pass, in MiB: weights, inputs and the activations
    alive at the widest point of a block, counted as fp32, plus allowances for autocast copies,
    ONNX Runtime's arena and runtime scratch (checked against measurements in tests/test_bench_sweep.py).

    Full attention counts its (H, N, N) logits three times (scores, softmax, a temporary), as the
    math path and ONNX Runtime materialise them; PyTorch's fused attention kernels need less, so
    the estimate errs high there, which is the safe side for a skip decision.
    """
    n, d, dff, h = spec.particles, spec.d_model, spec.d_ff, spec.heads
    keys = n if spec.attention == "full" else spec.partitions
    per_particle = 6 * d + 2 * dff + 3 * h * keys  # floats alive per particle
    if impl == "straightforward" and spec.attention != "full":
        per_particle += 4 * d  # K and V at full length, zero-padded
    jets = slice_jets(spec, batch, backend=backend, device=device, chunk_rows=chunk_rows)
    working = 4 * jets * n * per_particle * (ESTIMATE_BF16_FACTOR if precision == "bf16" else 1.0)
    weights = 4 * _param_count(spec)
    inputs = batch * n * (4 * spec.features + 1) + 4 * batch * spec.classes
    total = (weights + inputs + working) / 2**20
    if backend == "onnxruntime":
        total *= ESTIMATE_ARENA_FACTOR
    return ESTIMATE_OVERHEAD_MB + total


def onnxruntime_missing(kind: str) -> str | None:
    """Why the onnxruntime backend cannot run here, or None when it can."""
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for cuda): backend skipped"
    for module in ("onnx", "onnxscript"):
        try:
            importlib.import_module(module)
        except ImportError:
            return f"{module} is not installed (needed to export the model to ONNX): backend onnxruntime skipped"
    if kind == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return ("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu): "
                "backend onnxruntime skipped on cuda")
    return None


def export_onnx(spec: ModelSpec, path: str | os.PathLike[str], *, seed: int = 0, impl: str = "fused") -> Path:
    """Write the model (initialised with `seed`, as the eager runs are) to ONNX with a dynamic batch axis."""
    torch.manual_seed(seed)
    model = build_model(spec, impl=impl).eval()
    x, mask = random_jets(spec, 2)
    args = (x, mask) if spec.mask else (x,)
    batch = torch.export.Dim("batch")
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the exporter's own deprecations, not ours
            torch.onnx.export(model, args, str(path), dynamo=True, dynamic_shapes=tuple({0: batch} for _ in args),
                              verbose=False)
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    return Path(path)


# --- what runs inside the measuring process ----------------------------------------------

def _proc_status() -> dict[str, int]:
    """Memory lines of /proc/self/status, in kB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssFile"):
                out[key] = int(value.split()[0])
    return out


class _RssPeak:
    """The peak resident set of this process from now on, above its present one (Linux)."""

    def __init__(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the present resident set
            start = _proc_status()
            self.rss0, self.file0 = start["VmRSS"], start.get("RssFile", 0)
            self.ok = True
        except (OSError, KeyError):
            self.ok = False

    def peak_mb(self) -> float | None:
        if not self.ok:
            return None
        now = _proc_status()
        code = max(0, now.get("RssFile", 0) - self.file0)  # shared library pages first touched
        return max(0, now["VmHWM"] - self.rss0 - code) / 1024


def _time_passes(step: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
                 time_budget_s: float, after_warmup: Callable[[], None] | None = None) -> list[float]:
    """Seconds per pass after `warmup` untimed passes; stops early (after MIN_TIMED_PASSES) once the
    timed passes have taken `time_budget_s`."""
    for _ in range(warmup):
        step()
    _synchronize(device)
    if after_warmup is not None:
        after_warmup()
    cuda = device.type == "cuda"
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times: list[float] = []
    while len(times) < repeats:
        if cuda:
            torch.cuda.synchronize(device)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        if sum(times) > time_budget_s and len(times) >= min(MIN_TIMED_PASSES, repeats):
            break
    return times


def _capture_graph(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, warmup: int,
                   device: torch.device) -> Callable[[], Any]:
    """A CUDA graph of one forward pass on static inputs (warmed up on a side stream, as capture
    requires); the step replays it and returns its output."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(max(1, warmup)):
            model(x, mask)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model(x, mask)

    def replay() -> torch.Tensor:
        graph.replay()
        return out  # the graph's static output, refreshed by the replay

    return replay


def _onnxruntime_step(path: str, x: torch.Tensor, mask: torch.Tensor, threads: int, kind: str
                      ) -> Callable[[], Any]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CUDAExecutionProvider"] if kind == "cuda" else ["CPUExecutionProvider"]
    session = onnxruntime.InferenceSession(path, options, providers=providers)
    arrays = {"x": x.cpu().numpy(), "mask": mask.cpu().numpy()}
    feeds = {i.name: arrays[i.name] for i in session.get_inputs()}
    return lambda: session.run(None, feeds)


def measure_config(job: dict[str, Any]) -> dict[str, Any]:
    """Time one configuration in this process and report its peak memory. Meant for a fresh process
    (`measure_isolated`); job keys: spec, device, particles, batch, threads, backend, precision,
    warmup, repeats, time_budget_s, impl, chunk_rows, tune_allocator, seed, onnx_path."""
    kind = device_kind(job["device"])
    rss = _RssPeak() if kind == "cpu" else None  # before anything of this configuration exists
    if job["tune_allocator"]:
        tune_allocator()
    dev = torch.device(job["device"])
    torch.set_num_threads(resolve_threads(job["threads"]) if kind == "cpu" else 1)
    threads = torch.get_num_threads()
    if kind == "cuda":
        torch.cuda.set_device(dev)
    spec = ModelSpec.from_dict(job["spec"])
    backend, precision = job["backend"], job["precision"]
    x, mask = random_jets(spec, job["batch"], dev, job["seed"])
    with contextlib.ExitStack() as stack:
        if backend == "onnxruntime":
            step = _onnxruntime_step(job["onnx_path"], x, mask, threads, kind)
        else:
            torch.manual_seed(job["seed"])
            model = build_model(spec, impl=job["impl"]).to(dev).eval()
            if job["chunk_rows"] is not None:
                model.inference_chunk_rows = job["chunk_rows"]
            stack.enter_context(torch.inference_mode())
            if precision == "bf16":  # graphs must not hold autocast's cast cache from outside their pool
                stack.enter_context(torch.autocast(kind, dtype=torch.bfloat16, cache_enabled=backend != "cudagraph"))
            if kind == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            if backend == "cudagraph":
                step = _capture_graph(model, x, mask, job["warmup"], dev)
            else:
                run = torch.compile(model) if backend == "compile" else model
                step = lambda: run(x, mask)  # noqa: E731
        # a compiled model's peak is taken after compiling (its warm-up), not over the compiler's work
        reset = (lambda: torch.cuda.reset_peak_memory_stats(dev)) if kind == "cuda" and backend == "compile" else None
        times = _time_passes(step, dev, job["warmup"], job["repeats"], job["time_budget_s"], after_warmup=reset)
    if backend == "compile" and kind == "cpu":
        peak = None  # the process's resident set would mostly be the compiler's own memory
    elif rss is not None:
        peak = rss.peak_mb()
    else:
        peak = None if backend == "onnxruntime" else torch.cuda.max_memory_allocated(dev) / 2**20
    return {"times_s": times, "threads_used": threads, "peak_memory_mb": peak}


def _measure_message(job: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"status": "ok", "result": measure_config(job)}
    except torch.cuda.OutOfMemoryError as err:
        return {"status": "oom", "message": str(err).splitlines()[0] if str(err) else "CUDA out of memory"}
    except Exception:  # noqa: BLE001 - reported to the parent, which fails the run
        return {"status": "error", "message": traceback.format_exc()}


def _zygote_main() -> None:
    """The clean process each configuration is forked from: it has imported torch and salt (so a
    fork starts in milliseconds) but never runs a model, starts a thread pool or touches CUDA.

    Reads one job per line (JSON) on stdin, forks a child per job, and answers one JSON line per job
    on its original stdout; everything else anyone prints goes to stderr.
    """
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in sys.stdin:
        job = json.loads(line)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the measuring process
            os.close(read_fd)
            code = 0
            try:
                with os.fdopen(write_fd, "w") as out:
                    json.dump(_measure_message(job), out)
            except BaseException:  # noqa: BLE001
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd) as result:
            text = result.read()
        _, status = os.waitpid(pid, 0)
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            message = {"status": "died", "exitcode": os.waitstatus_to_exitcode(status)}
        answers.write(json.dumps(message) + "\n")
        answers.flush()


class _Zygote:
    """The parent's handle on the zygote process (started on first use, ended with the parent)."""

    process: subprocess.Popen | None = None

    @classmethod
    def ask(cls, job: dict[str, Any]) -> dict[str, Any]:
        if cls.process is None or cls.process.poll() is not None:
            package_root = str(Path(__file__).resolve().parent.parent)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root,
                                                                            os.environ.get("PYTHONPATH")])))
            cls.process = subprocess.Popen([sys.executable, "-c", "from salt.bench import _zygote_main; _zygote_main()"],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert cls.process.stdin is not None and cls.process.stdout is not None
        try:
            cls.process.stdin.write(json.dumps(job) + "\n")
            cls.process.stdin.flush()
            answer = cls.process.stdout.readline()
        except BrokenPipeError:
            answer = ""
        if not answer:
            code = cls.process.wait()
            cls.process = None
            raise BenchError(f"{describe(job)}: the benchmark's zygote process ended (exit code {code})")
        return json.loads(answer)


def measure_isolated(job: dict[str, Any]) -> tuple[str, Any]:
    """`measure_config` in a fresh process: ("ok", result), ("oom", message) or ("error", traceback).

    The process is a fork of a clean zygote that has only imported torch: nothing a previous
    configuration allocated, compiled or cached is in it. Raises BenchError when the process dies
    without an answer (killed, e.g. out of memory)."""
    if not hasattr(os, "fork"):
        return _unisolated(job)
    message = _Zygote.ask(job)
    if message["status"] == "died":
        code = message["exitcode"]
        why = " (killed: out of memory?)" if code == -9 else ""
        raise BenchError(f"{describe(job)}: the measuring process ended with exit code {code}{why} and no result")
    return message["status"], message.get("result", message.get("message"))


def _unisolated(job: dict[str, Any]) -> tuple[str, Any]:
    message = _measure_message(job)  # no fork (not POSIX): measured in this process
    return message["status"], message.get("result", message.get("message"))


def describe(point: dict[str, Any]) -> str:
    return (f"N={point['particles']} batch={point['batch']} threads={point['threads']} "
            f"{point['backend']} {point['precision']}")


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def result_row(point: dict[str, Any], measured: dict[str, Any], estimate_mb: float) -> dict[str, Any]:
    """One row of the result file (RESULT_KEYS, then extras) from a measurement."""
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


def default_memory_budget_mb(device: str) -> float:
    """8 GiB on a CPU; 80% of the GPU's memory on cuda."""
    if device_kind(device) == "cuda":
        index = torch.device(device).index or 0
        return GPU_BUDGET_SHARE * torch.cuda.get_device_properties(index).total_memory / 2**20
    return DEFAULT_CPU_BUDGET_GB * 1024


def memory_headroom_mb() -> tuple[float, str] | None:
    """The memory this job may still use, and where the limit comes from: the smaller of the
    machine's available memory and the headroom of the job's memory cgroup (how SLURM enforces
    --mem); None when neither is known."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) / 1024, "available on the machine"))
    except OSError:
        pass
    try:
        cgroups = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        cgroups = []
    for line in cgroups:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            base, files = Path("/sys/fs/cgroup") / path.lstrip("/"), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            base, files = Path("/sys/fs/cgroup/memory") / path.lstrip("/"), ("memory.limit_in_bytes",
                                                                            "memory.usage_in_bytes")
        else:
            continue
        try:
            limit, usage = ((base / f).read_text().strip() for f in files)
        except OSError:
            continue
        if limit != "max" and int(limit) < 2**60:
            found.append(((int(limit) - int(usage)) / 2**20, "left in the job's memory cgroup"))
    return min(found) if found else None


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
    if kind == "cpu" and "cudagraph" in backends:
        raise ValueError("backend cudagraph needs a cuda device; drop it from the cpu backends")
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
    if "onnxruntime" in backends and any(p != "fp32" for p in precisions):
        notes.append("onnxruntime: fp32 only (the exported graph is fp32); its bf16 configurations are not run")
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
                    if backend == "onnxruntime" and precision != "fp32":
                        continue
                    for t in thread_list:
                        for batch in batches:
                            point = {"particles": n, "batch": batch, "threads": t, "backend": backend,
                                     "precision": precision}
                            estimate = estimate_memory_mb(spec_n, batch, backend=backend, device=device, impl=impl,
                                                          chunk_rows=chunk_rows, precision=precision)
                            if estimate > budget:
                                reason = (f"estimated peak memory {estimate:.0f} MB exceeds the budget of "
                                          f"{budget:.0f} MB")
                                skipped.append({**point, "reason": reason, "estimated_memory_mb": round(estimate, 1)})
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
        info["sm_clock_mhz"] = _nvidia_smi(index, "clocks.sm")
        info["max_sm_clock_mhz"] = _nvidia_smi(index, "clocks.max.sm")
    return info


def _nvidia_smi(index: int, query: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--id={index}", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
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

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", default="salt,linformer,transformer",
                        help="comparison mode: comma-separated variants (default salt,linformer,transformer)")
    parser.add_argument("--particles", default="150", help="comparison mode: N, or a comma-separated list of N")
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="batch size(s); comparison mode takes one (default 1024), --spec mode a list "
                             "(default 1 4096)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="intra-op threads, 0 = all cores; comparison mode takes one (default 1), "
                             "--spec mode a list (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--impl", default="fused", choices=["fused", "straightforward", "both"],
                        help="forward path of the linear variants (default fused; both: comparison mode only)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed passes (default 2; --spec mode 3)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes (default 7; --spec mode 20)")
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="inference slicing in particle rows (default: the model's, 65536; 0 = off)")
    parser.add_argument("--no-tune-allocator", action="store_true",
                        help="leave glibc's allocator as it is (see salt.bench.tune_allocator)")
    parser.add_argument("--output", help="also write the JSON result here (atomically)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sweep = parser.add_argument_group("pipeline benchmark (--spec mode)")
    sweep.add_argument("--spec", help="model spec as JSON, e.g. '{\"model\": \"salt\", \"particles\": 150, "
                                      "\"classes\": 5}'; selects this mode")
    sweep.add_argument("--variant", help="the config's name of the variant, written into the result")
    sweep.add_argument("--dataset", help="the dataset name, written into the result")
    sweep.add_argument("--sweep-particles", type=int, nargs="+", default=[],
                       help="particle counts N to measure (the spec's N is always added)")
    sweep.add_argument("--backends", nargs="+", choices=BACKENDS, default=None,
                       help="default: eager onnxruntime on cpu, eager cudagraph on cuda")
    sweep.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=None,
                       help="default: fp32 on cpu, fp32 bf16 on cuda (bf16 = autocast)")
    sweep.add_argument("--memory-budget-gb", type=float, default=None,
                       help=f"skip configurations estimated above this (default {DEFAULT_CPU_BUDGET_GB:g} on cpu, "
                            f"{GPU_BUDGET_SHARE:.0%} of the GPU's memory on cuda)")
    sweep.add_argument("--time-budget-s", type=float, default=60.0,
                       help=f"stop timing a configuration after this many seconds of timed passes "
                            f"(at least {MIN_TIMED_PASSES} passes; default 60)")
    sweep.add_argument("--seed", type=int, default=0, help="weights and inputs")


def main(args: argparse.Namespace) -> int:
    if args.spec is not None:
        return _main_sweep(args)
    return _main_compare(args)


def _main_sweep(args: argparse.Namespace) -> int:
    def fail(message: str, code: int = 2) -> int:
        print(f"salt bench: {message}", file=sys.stderr)
        return code

    try:
        spec = ModelSpec.from_dict(json.loads(args.spec))
    except json.JSONDecodeError as err:
        return fail(f"--spec is not valid JSON ({err}): {args.spec!r}")
    except (TypeError, ValueError) as err:
        return fail(f"--spec: {err}")
    if not args.variant or not args.dataset or not args.output:
        return fail("--spec mode needs --variant, --dataset and --output (the names and file of the result)")
    if args.impl == "both":
        return fail("--impl both is for the comparison mode; --spec mode measures one path")
    try:
        require_device(args.device)
        sweep = run_sweep(spec, device=args.device, particles=args.sweep_particles,
                          batches=args.batch or list(DEFAULT_BATCHES), threads=args.threads or [1],
                          backends=args.backends, precisions=args.precisions,
                          repeats=20 if args.repeats is None else args.repeats,
                          warmup=3 if args.warmup is None else args.warmup, time_budget_s=args.time_budget_s,
                          memory_budget_mb=None if args.memory_budget_gb is None else args.memory_budget_gb * 1024,
                          impl=args.impl, chunk_rows=args.chunk_rows, tune_allocator=not args.no_tune_allocator,
                          seed=args.seed)
    except ValueError as err:
        return fail(str(err))
    except BenchError as err:
        return fail(str(err), 1)
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
    batches, threads_list = args.batch or [1024], args.threads or [1]
    if len(batches) != 1 or len(threads_list) != 1:
        print("salt bench: the comparison mode (--variants) takes one --batch and one --threads; "
              "sweeps are the --spec mode's", file=sys.stderr)
        return 2
    batch = batches[0]
    try:
        threads = resolve_threads(threads_list[0])
        require_device(args.device)
    except (ValueError, BenchError) as err:
        print(f"salt bench: {err}", file=sys.stderr)
        return 2
    warmup = 2 if args.warmup is None else args.warmup
    repeats = 7 if args.repeats is None else args.repeats
    tuned = False if args.no_tune_allocator else tune_allocator()
    impls = ("fused", "straightforward") if args.impl == "both" else (args.impl,)
    results = []
    try:
        for n in particle_list:
            results += bench_variants(variants, n, batch, classes=args.classes, partitions=args.partitions,
                                      blocks=args.blocks, impls=impls, device=args.device, threads=threads,
                                      warmup=warmup, repeats=repeats, chunk_rows=args.chunk_rows)
    except ValueError as err:
        print(f"salt bench: {err}", file=sys.stderr)
        return 2
    from salt.provenance import provenance

    report = {"provenance": provenance(device=args.device),
              "settings": {"batch": batch, "threads": threads, "device": args.device,
                           "warmup": warmup, "repeats": repeats, "allocator_tuned": tuned,
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
        print(f"{'variant':18s} {'impl':16s} {'N':>5s} {'median ms':>10s} {'jets/s':>10s}")
        for r in results:
            print(f"{r['variant']:18s} {r['impl']:16s} {r['particles']:5d} {r['median_s'] * 1e3:10.2f} "
                  f"{r['jets_per_s']:10.0f}")
    return 0
