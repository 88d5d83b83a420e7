"""The fused kernel's global-memory accesses, traced on a CPU: cache lines per jet.

A GPU's L1 serves about one 128-byte line per clock per multiprocessor, so a warp-wide load
whose 32 lanes fall in 16 lines costs 16 clocks of it however few instructions it is. Which
lane reads which element is the compiled kernel's layout (TTGIR), and which address each
element has is what the kernel computes. This module joins the two without a GPU:

1. `trace_addresses` runs one jet through the kernel under Triton's interpreter (in a child
   process: TRITON_INTERPRET must be set before Triton is imported) and records, for every
   load and store executed, its source line and the address of every unmasked element,
   relative to the buffer it falls in (a GPU allocates buffers 256-byte aligned);
2. `lines_per_jet` takes each access's layout from the sm_90 compile of the same launch
   (salt/kernels/offline.py) and counts, per warp-wide instruction, the distinct 128-byte
   lines its lanes touch (consecutive elements a thread holds along the layout's fastest
   dimension form one access of up to 16 bytes, as Triton vectorizes).

Blocked and slice layouts are followed (every global access of salt_forward.py has one);
an access in any other layout is reported as not counted.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LINE_BYTES = 128
VECTOR_BYTES = 16
KERNEL_FILE = "salt_forward.py"


@dataclass(frozen=True)
class Blocked:
    size_per_thread: tuple[int, ...]
    threads_per_warp: tuple[int, ...]
    warps_per_cta: tuple[int, ...]
    order: tuple[int, ...]  # order[0] varies fastest


def parse_layouts(ttgir: str) -> dict[str, Blocked]:
    """The TTGIR's blocked layouts by name (#blocked, #blocked1, ...)."""
    out: dict[str, Blocked] = {}
    for name, body in re.findall(r"^(#\w+) = #ttg\.blocked<\{(.*)\}>", ttgir, re.M):
        def field(key: str) -> tuple[int, ...]:
            return tuple(int(v) for v in re.search(key + r" = \[([\d, ]*)\]", body).group(1).split(","))
        out[name] = Blocked(field("sizePerThread"), field("threadsPerWarp"), field("warpsPerCTA"), field("order"))
    return out


def _resolve(ref: str, locs: dict[str, str]) -> int | None:
    """The kernel-file line of a location: a call site's callee where known, else its caller."""
    text = locs.get(ref, ref)
    found = re.match(r'loc\("[^"]*' + re.escape(KERNEL_FILE) + r'":(\d+):\d+\)', text)
    if found:
        return int(found.group(1))
    call = re.match(r"loc\(callsite\((#\w+) at (#\w+)\)\)", text)
    if call:
        return _resolve(call.group(1), locs) or _resolve(call.group(2), locs)
    inner = re.search(r"(#loc\d*)", text[4:])  # a named or fused location wraps another
    return _resolve(inner.group(1), locs) if inner else None


def memory_sites(ttgir: str) -> list[dict[str, Any]]:
    """Every tensor load and store of the TTGIR: kind, shape, layout name and kernel-file line."""
    locs = dict(re.findall(r"^(#loc\d*) = (loc\(.*\))$", ttgir, re.M))
    sites = []
    for kind, shape, layout, loc in re.findall(
            r"tt\.(load|store) [^\n]*?: tensor<([\dx]+)x!tt\.ptr<\w+>, (#[^>]*?>?)> loc\((#loc\d*)\)", ttgir):
        sites.append({"kind": kind, "shape": tuple(int(s) for s in shape.split("x")), "layout": layout,
                      "line": _resolve(loc, locs)})
    return sites


def _slice_parent(layout: str) -> tuple[int, str] | None:
    found = re.match(r"#ttg\.slice<\{dim = (\d+), parent = (#\w+)\}>", layout)
    return (int(found.group(1)), found.group(2)) if found else None


def owners(shape: tuple[int, ...], layout: Blocked) -> np.ndarray:
    """(warps, 32 lanes, registers) -> the flat index of the element each register holds: Triton's
    blocked layout, index_d = within + s_d (lane_d + t_d (warp_d + w_d rep_d)), wrapped where the
    tensor is smaller than the layout's tile (lanes then hold copies)."""
    rank = len(shape)
    s, t, w, order = layout.size_per_thread, layout.threads_per_warp, layout.warps_per_cta, layout.order
    reps = [max(1, math.ceil(shape[d] / (s[d] * t[d] * w[d]))) for d in range(rank)]

    def split(linear: np.ndarray, radices: list[int]) -> list[np.ndarray]:
        coords = [np.zeros_like(linear)] * rank
        for d in order:  # order[0] fastest
            coords[d] = linear % radices[d]
            linear = linear // radices[d]
        return coords

    warps, lanes = math.prod(w), math.prod(t)
    per_dim = [reps[d] * s[d] for d in range(rank)]
    registers = math.prod(per_dim)
    wc = split(np.arange(warps)[:, None, None], list(w))
    lc = split(np.arange(lanes)[None, :, None], list(t))
    rc = split(np.arange(registers)[None, None, :], per_dim)  # register r: (rep_d, within_d), within fastest
    flat = np.zeros((warps, lanes, registers), dtype=np.int64)
    for d in range(rank):
        rep, within = rc[d] // s[d], rc[d] % s[d]
        index = (within + s[d] * (lc[d] + t[d] * (wc[d] + w[d] * rep))) % shape[d]
        flat = flat * shape[d] + index
    return flat


def warp_lines(offsets: np.ndarray, buffers: np.ndarray, flat: np.ndarray, fastest_run: int,
               element_bytes: int = 4) -> tuple[int, int]:
    """(warp-wide instructions, distinct 128-byte lines summed over them) of one access. A thread's
    registers are grouped into runs of `fastest_run` (its consecutive elements along the fastest
    dimension); a run is one instruction while every lane's addresses stay consecutive, aligned
    and within 16 bytes. Elements with buffer -1 (masked off) touch nothing."""
    warps, _, registers = flat.shape
    instructions = lines = 0
    per_vector = VECTOR_BYTES // element_bytes
    for start in range(0, registers, fastest_run):
        run = flat[:, :, start:start + fastest_run]
        addr, buf = offsets[run], buffers[run]
        pieces, begin = [], 0
        for k in range(1, run.shape[2] + 1):
            if k < run.shape[2] and k - begin < per_vector:
                both = (buf[:, :, k] >= 0) & (buf[:, :, begin] >= 0)
                joined = (addr[:, :, k] - addr[:, :, k - 1] == element_bytes) & (buf[:, :, k] == buf[:, :, k - 1]) \
                    & (addr[:, :, begin] % VECTOR_BYTES == 0)
                if np.all(joined | ~both):
                    continue
            pieces.append((begin, k))
            begin = k
        for lo, hi in pieces:
            ok = buf[:, :, lo:hi] >= 0
            line = buf[:, :, lo:hi] * (1 << 40) + addr[:, :, lo:hi] // LINE_BYTES
            for wi in range(warps):
                instructions += 1
                lines += len(np.unique(line[wi][ok[wi]]))
    return instructions, lines


def lines_per_jet(ttgir: str, trace: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kernel-file line and in total: warp-wide memory instructions and the 128-byte lines
    they touch, for the traced jet. `trace` is `trace_addresses`'s records."""
    layouts = parse_layouts(ttgir)
    sites: dict[tuple[Any, ...], str] = {}  # (line, kind, shape) -> the layout of its first such access
    for site in memory_sites(ttgir):
        sites.setdefault((site["line"], site["kind"], site["shape"]), site["layout"])
    by_line: dict[str, dict[str, int]] = defaultdict(lambda: {"instructions": 0, "lines": 0, "executions": 0})
    uncounted: set[str] = set()
    cache: dict[tuple[str, tuple[int, ...]], tuple[np.ndarray, int]] = {}
    for rec in trace:
        shape = tuple(rec["shape"])
        key = (rec["line"], rec["kind"], shape)
        if key not in sites and math.prod(shape) == 1:
            continue  # a scalar (the interpreter gives it shape (1,)): one address a warp
        if key not in sites:
            uncounted.add(f"{rec['kind']} at line {rec['line']} {shape}")
            continue
        layout_name = sites[key]
        if (layout_name, shape) not in cache:
            sliced = _slice_parent(layout_name)
            parent = layouts.get(sliced[1] if sliced else layout_name)
            if parent is None:
                uncounted.add(f"{rec['kind']} at line {rec['line']} ({layout_name})")
                continue
            full = list(shape)
            if sliced:
                full.insert(sliced[0], 1)
            flat = owners(tuple(full), parent)
            fastest = parent.order[0]
            run = parent.size_per_thread[fastest] if full[fastest] > 1 else 1
            # copies of an element a thread holds (a slice's, or a tile wider than the tensor) load once
            first = np.unique(flat[0, 0], return_index=True)[1]
            if len(first) < flat.shape[2]:
                flat, run = flat[:, :, np.sort(first)], 1
            cache[layout_name, shape] = (flat, run)
        flat, run = cache[layout_name, shape]
        instructions, lines = warp_lines(np.asarray(rec["offsets"], dtype=np.int64),
                                         np.asarray(rec["buffers"], dtype=np.int64), flat, run)
        stats = by_line[f"{rec['kind']} line {rec['line']}"]
        stats["executions"] += 1
        stats["instructions"] += instructions
        stats["lines"] += lines
    return {"lines": sum(s["lines"] for s in by_line.values()),
            "instructions": sum(s["instructions"] for s in by_line.values()),
            "by_line": dict(by_line), "uncounted": sorted(uncounted)}


def trace_addresses(spec: dict[str, Any], *, has_mask: bool, block_n: int, num_warps: int,
                    timeout: float = 600) -> list[dict[str, Any]]:
    """Every global load and store of one jet's program under Triton's interpreter: kernel-file
    line, kind, shape, and per element its buffer (the kernel argument it falls in; -1 where
    masked off) and byte offset in it."""
    root = Path(__file__).resolve().parent.parent.parent
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    job = json.dumps({"spec": spec, "has_mask": has_mask, "block_n": block_n, "num_warps": num_warps})
    proc = subprocess.run([sys.executable, "-m", "salt.kernels.access_trace", job], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"access trace failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def _child(job: dict[str, Any]) -> list[dict[str, Any]]:
    import inspect

    import torch
    import triton.runtime.interpreter as interpreter

    from salt.kernels import salt_forward
    from salt.kernels.fused import FusedClassifier
    from salt.models import ModelSpec, build_model

    spec = ModelSpec.from_dict(job["spec"])
    torch.manual_seed(0)
    fused = FusedClassifier(build_model(spec).eval(), block_n=job["block_n"], num_warps=job["num_warps"])
    x = torch.randn(1, spec.particles, spec.features)
    mask = (torch.rand(1, spec.particles) > 0.3) if job["has_mask"] else None
    records: list[dict[str, Any]] = []
    spans: list[tuple[int, int]] = []  # the kernel's buffers, [start, end) in bytes
    real = interpreter._interpreter

    def where(ptrs: np.ndarray, ok: np.ndarray, kind: str) -> None:
        frame = inspect.currentframe()
        while frame is not None and Path(frame.f_code.co_filename).name != KERNEL_FILE:
            frame = frame.f_back
        addresses = ptrs.astype(np.int64).ravel()
        buffers = np.full(addresses.shape, -1, dtype=np.int64)
        offsets = np.zeros_like(addresses)
        ok = np.broadcast_to(ok, ptrs.shape).ravel()
        for i, (lo, hi) in enumerate(spans):
            inside = ok & (addresses >= lo) & (addresses < hi)
            buffers[inside], offsets[inside] = i, addresses[inside] - lo
        records.append({"kind": kind, "line": frame.f_lineno if frame else None, "shape": list(ptrs.shape),
                        "buffers": buffers.tolist(), "offsets": offsets.tolist()})

    class Recording:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def load(self, ptrs, mask, other, dtype):  # noqa: ANN001
            where(ptrs, mask, "load")
            return real.load(ptrs, mask, other, dtype)

        def store(self, ptrs, value, mask):  # noqa: ANN001
            where(ptrs, mask, "store")
            return real.store(ptrs, value, mask)

    kernel = salt_forward.salt_forward_kernel

    class RecordingKernel:  # notes where each tensor argument lies, then launches
        def __getitem__(self, grid: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                spans.extend((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())
                             for t in args if isinstance(t, torch.Tensor))
                return kernel[grid](*args, **kwargs)
            return call

    salt_forward.salt_forward_kernel = RecordingKernel()
    interpreter._interpreter = Recording()
    try:
        with torch.no_grad():
            fused(x, mask)
    finally:
        interpreter._interpreter = real
        salt_forward.salt_forward_kernel = kernel
    return records


if __name__ == "__main__":
    json.dump(_child(json.loads(sys.argv[1])), sys.stdout)
