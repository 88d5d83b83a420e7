"""What a sweep may run: backends, devices and threads, and the memory estimates and budgets
that decide which configurations are skipped.

A configuration whose estimated memory (`estimate_memory_mb`, conservative) exceeds the budget
is not run but recorded as skipped with the reason: a latency at batch 4096 must be a batch-4096
number, so the batch is never split to make it fit. A cuda run without a visible GPU fails
(`require_device`): a CPU figure filed under cuda would be a lie.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch

from salt.kernels.fused import fused_extra_bytes
from salt.models import ModelSpec, build_model
from salt.models.classifier import JetClassifier


BACKENDS = ("eager", "compile", "cudagraph", "onnxruntime", "fused")
CUDA_ONLY_BACKENDS = ("cudagraph", "fused")  # fused: the one-kernel Triton forward (salt/kernels), fp32
PRECISIONS = ("fp32", "bf16")
DEFAULT_BACKENDS = {"cpu": ("eager", "onnxruntime"), "cuda": ("eager", "cudagraph", "fused")}
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
             "cudagraph and fused: warm-up and capture included; compile: after compiling; "
             "onnxruntime: not measured (null)"),
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
ESTIMATE_CPU_TILE_MB = 2.0  # per thread: torch's CPU flash attention keeps a (256 x 512) tile and its sums
# Kernels of torch's scaled_dot_product_attention (torch.nn.attention.SDPBackend values), and the
# one path that holds a jet's (H, N, N) logits in memory: the math fallback (ONNX Runtime's graph too).
SDPA_KERNELS = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}
MATERIALISING_KERNELS = ("math", "onnxruntime")


@lru_cache(maxsize=256)
def attention_kernel(spec: ModelSpec, device: str = "cpu", precision: str = "fp32", backend: str = "eager"
                     ) -> str | None:
    """The kernel full attention runs on for `spec` on `device`, asked of torch's own dispatcher
    (torch._fused_sdp_choice, the choice scaled_dot_product_attention makes) with the model's inputs
    for two jets, under bf16 autocast for bf16. "flash (cpu)" is torch's blockwise CPU kernel,
    "onnxruntime" the exported graph (matmul, softmax). None for linear attention (no N x N logits).

    Kernel choice depends on dtype, head size, mask and GPU, not on the batch, so two jets stand
    for any batch. On cuda this touches the GPU (a context in the calling process)."""
    if spec.attention != "full":
        return None
    if backend == "onnxruntime":
        return "onnxruntime"
    if spec.pair_bias:  # attention with a bias is spelled out (models/attention.py)
        return "math"
    from salt.models.attention import FullAttention

    dev = torch.device(device)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        attention = FullAttention(spec).to(dev)
        x = torch.randn(2, spec.particles, spec.d_model, device=dev)
        key_mask = torch.ones(2, spec.particles, dtype=torch.bool, device=dev) if spec.mask else None
        q, k, v, attn_mask = attention.sdpa_inputs(x, key_mask)
        choice = int(torch._fused_sdp_choice(q, k, v, attn_mask))
    name = SDPA_KERNELS.get(choice, f"sdpa backend {choice}")
    return f"{name} (cpu)" if dev.type == "cpu" and name != "math" else name


def attention_assumption(spec: ModelSpec, kernel: str | None) -> str:
    """What the memory estimate assumed about attention, for a skip reason."""
    if spec.attention != "full":
        return f"linear attention: (H, N, {spec.partitions}) logits"
    if kernel in MATERIALISING_KERNELS:
        return f"{kernel} attention kernel: (H, N, N) logits held"
    return f"{kernel} attention kernel: no N x N logits held"


def estimate_memory_mb(spec: ModelSpec, batch: int, *, backend: str = "eager", device: str = "cpu",
                       impl: str = "fused", chunk_rows: int | None = None, precision: str = "fp32",
                       kernel: str | None = None, threads: int = 1) -> float:
    """Conservative peak memory of one inference pass, in MiB: weights, inputs and the activations
    alive at the widest point of a block, counted as fp32, plus allowances for autocast copies,
    ONNX Runtime's arena and runtime scratch (checked against measurements in tests/test_bench_sweep.py).

    Full attention depends on its kernel (`kernel`, else `attention_kernel` is asked): the math
    path and ONNX Runtime hold the (H, N, N) logits, counted three times (scores, softmax, a
    temporary); the fused kernels (flash, memory-efficient, cuDNN, the CPU flash kernel) work on
    tiles, keeping a running maximum and sum per query row and head beside copies of q, k, v and
    the output, plus on a CPU a tile buffer per thread (`threads`).
    """
    n, d, dff, h = spec.particles, spec.d_model, spec.d_ff, spec.heads
    weights = 4 * _param_count(spec)
    inputs = batch * n * (4 * spec.features + 1) + 4 * batch * spec.classes
    if backend == "fused":  # activations stay on chip: the packed weights and the scratch buffer
        return ESTIMATE_OVERHEAD_MB + (weights + inputs + fused_extra_bytes(spec, batch)) / 2**20
    scratch_mb = 0.0
    if spec.attention == "full":
        kernel = kernel or attention_kernel(spec, device, precision, backend)
        attention = 3 * h * n if kernel in MATERIALISING_KERNELS else 2 * h + 4 * d
        if kernel is not None and kernel.endswith("(cpu)"):
            scratch_mb = ESTIMATE_CPU_TILE_MB * threads
    else:
        attention = 3 * h * spec.partitions
    per_particle = 6 * d + 2 * dff + attention  # floats alive per particle
    if impl == "straightforward" and spec.attention != "full":
        per_particle += 4 * d  # K and V at full length, zero-padded
    if spec.pair_bias:  # the 4 pair features and their temporaries, then the (H, keys) bias and its copy
        per_particle += (4 + 8 + 2 * h + spec.pair_hidden) * (n if spec.attention == "full" else spec.partitions)
    jets = slice_jets(spec, batch, backend=backend, device=device, chunk_rows=chunk_rows)
    working = 4 * jets * n * per_particle * (ESTIMATE_BF16_FACTOR if precision == "bf16" else 1.0)
    total = (weights + inputs + working) / 2**20
    if backend == "onnxruntime":
        total *= ESTIMATE_ARENA_FACTOR
    return ESTIMATE_OVERHEAD_MB + scratch_mb + total


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
