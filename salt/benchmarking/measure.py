"""One configuration timed inside the measuring process: eager, torch.compile, CUDA graphs,
ONNX Runtime or the fused Triton kernel (in a CUDA graph), with its peak memory.

* Latency is the median over timed passes (p10 and p90 beside it) after warm-up. On CUDA each
  pass is bracketed by CUDA events after a synchronisation, so a pass is one batch's latency
  and not a pipelined throughput.
* Peak memory: on CUDA, torch.cuda.max_memory_allocated after reset_peak_memory_stats, with
  the weights and inputs already on the device (so they count). On CPU, the peak resident set
  (VmHWM, reset through /proc/self/clear_refs) above the resident set at the start, less the
  library code paged in since: weights, inputs, intermediates and allocator slack. A
  process-wide maxrss would be monotone and so only ever report the largest configuration run
  so far.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from salt.models import ModelSpec, build_model
from salt.numerics import fp32_convolutions
from salt.benchmarking.limits import MIN_TIMED_PASSES, device_kind, resolve_threads
from salt.benchmarking.runtime import indexed_device, random_jets, synchronize, tune_allocator


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


def fused_missing(spec: ModelSpec) -> str | None:
    """Why the fused backend cannot run `spec` here, or None when it can."""
    from salt.kernels.fused import coverage

    reason = coverage(spec)
    if reason is not None:
        return f"fused: {reason}; backend fused not run for {spec.model} (its eager figures are the eager rows)"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed (pip install 'salt[triton]'): backend fused skipped"
    return None


def export_onnx(spec: ModelSpec, path: str | os.PathLike[str], *, seed: int = 0, impl: str = "fused") -> Path:
    """Write the model (initialised with `seed`, as the eager runs are) to ONNX with a dynamic batch axis."""
    torch.manual_seed(seed)
    model = build_model(spec, impl=impl).eval()
    x, mask = random_jets(spec, 2)
    args = (x, mask) if spec.reads_mask else (x,)
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
    synchronize(device)
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
    index = x.device.index or 0
    providers = [("CUDAExecutionProvider", {"device_id": index})] if kind == "cuda" else ["CPUExecutionProvider"]
    session = onnxruntime.InferenceSession(path, options, providers=providers)
    if kind == "cuda":
        return bound_step(session, {"x": x, "mask": mask}, "cuda", index)
    arrays = {"x": x.cpu().numpy(), "mask": mask.cpu().numpy()}
    feeds = {i.name: arrays[i.name] for i in session.get_inputs()}
    return lambda: session.run(None, feeds)


def bound_step(session: Any, tensors: dict[str, torch.Tensor], device_type: str, index: int) -> Callable[[], Any]:
    """An onnxruntime pass on inputs bound where they lie, its outputs left on the same device: on a
    GPU a pass then times the model, not host-device copies (as feeding numpy arrays would)."""
    tensors = {name: t.contiguous() for name, t in tensors.items()}
    binding = session.io_binding()
    for i in session.get_inputs():
        t = tensors[i.name]
        dtype = torch.empty(0, dtype=t.dtype).numpy().dtype
        binding.bind_input(i.name, device_type, index, dtype, tuple(t.shape), t.data_ptr())
    for o in session.get_outputs():
        binding.bind_output(o.name, device_type, index)

    def step() -> Any:
        session.run_with_iobinding(binding)
        return binding, tensors  # the bound memory stays alive with the step

    return step


def measure_config(job: dict[str, Any]) -> dict[str, Any]:
    """Time one configuration in this process and report its peak memory. Meant for a fresh process
    (`measure_isolated`); job keys: spec, device, particles, batch, threads, backend, precision,
    warmup, repeats, time_budget_s, impl, chunk_rows, tune_allocator, seed, onnx_path."""
    kind = device_kind(job["device"])
    rss = _RssPeak() if kind == "cpu" else None  # before anything of this configuration exists
    if job["tune_allocator"]:
        tune_allocator()
    dev = indexed_device(job["device"])
    torch.set_num_threads(resolve_threads(job["threads"]) if kind == "cpu" else 1)
    threads = torch.get_num_threads()
    if kind == "cuda":
        torch.cuda.set_device(dev)  # graphs, streams and the allocator's statistics follow the current device
    spec = ModelSpec.from_dict(job["spec"])
    backend, precision = job["backend"], job["precision"]
    x, mask = random_jets(spec, job["batch"], dev, job["seed"])
    with contextlib.ExitStack() as stack:
        if backend == "onnxruntime":
            step = _onnxruntime_step(job["onnx_path"], x, mask, threads, kind)
        else:
            torch.manual_seed(job["seed"])
            model = build_model(spec, impl=job["impl"]).to(dev).eval()
            if backend == "fused":
                from salt.kernels.fused import FusedClassifier

                model = FusedClassifier(model)
            if job["chunk_rows"] is not None:
                model.inference_chunk_rows = job["chunk_rows"]
            stack.enter_context(torch.inference_mode())
            stack.enter_context(fp32_convolutions())  # "fp32" rows: cuDNN would otherwise take TF32
            if precision == "bf16":  # graphs must not hold autocast's cast cache from outside their pool
                stack.enter_context(torch.autocast(kind, dtype=torch.bfloat16, cache_enabled=backend != "cudagraph"))
            if kind == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            if backend in ("cudagraph", "fused"):  # fused: one kernel, replayed without Python's launch cost
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
