"""The fused kernel compiled ahead of time for an NVIDIA GPU, and what its machine code costs.

Triton ships ptxas and cuobjdump, so a machine without a GPU can compile the kernel for
sm_90 (H100/H200) exactly as a launch there would, and read the result:

    kernel = compile_offline(spec, has_mask=False, block_n=32, num_warps=2)
    profile = static_profile(spec, block_n=32, num_warps=2)    # registers, spills, instructions

The profile counts the SASS instructions a program executes for one jet (each loop body
times its trip count) and the cache lines its global accesses touch (access_trace.py), and
turns them into floors under the measured time: a multiprocessor issues at most one
warp-instruction per scheduler per clock, does at most 128 fp32 multiply-adds per clock,
and its L1 serves about one 128-byte line per clock. The line count is an upper bound where
the compiler merges loads of overlapping addresses. The real time sits above the floors
(memory latency, barriers, too few warps to hide them), so the profile ranks kernel designs
on a CPU; only a GPU measures them (benchmarks/fused_speed.py).
"""

from __future__ import annotations

import inspect
import math
import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from salt.kernels.access_trace import lines_per_jet, trace_addresses
from salt.models.spec import ModelSpec

# sm_90 per multiprocessor: registers, warps, resident programs, shared memory; schedulers
SM90 = dict(registers=65536, warps=64, programs=32, shared=228 * 1024, schedulers=4)
# an H200 SXM: multiprocessors and the largest SM clock (nvidia-smi clocks.max.sm)
H200 = dict(sms=132, clock_mhz=1980)

_INSTRUCTION = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?);")
_BRANCH_TARGET = re.compile(r"\bBRA\b.*?(0x[0-9a-f]+)")


def compile_offline(spec: ModelSpec, *, has_mask: bool, block_n: int, num_warps: int, arch: int = 90,
                    **options: Any) -> Any:
    """The fused kernel for `spec` compiled for an sm_`arch` GPU without one: what a launch
    with this tile and these FusedClassifier options would compile, so GPU-only compile errors
    show on a CPU."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from salt.kernels.fused import FusedClassifier
    from salt.kernels.salt_forward import salt_forward_kernel
    from salt.models import build_model

    fused = FusedClassifier(build_model(spec), block_n=block_n, num_warps=num_warps, **options)
    meta, launch = fused.launch(1, torch.device("cpu"), has_mask)
    meta["FAST"] = True  # what a GPU launch compiles, interpreter or not
    names = list(inspect.signature(salt_forward_kernel.fn).parameters)
    signature = {n: "constexpr" if n in meta else "*u8" if n == "mask_ptr" else "*fp32" for n in names}
    # a launch specializes every pointer to a 16-byte-aligned one (torch allocates 256-byte aligned),
    # which is what lets loads of contiguous columns vectorize
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n not in meta}
    return triton.compile(ASTSource(salt_forward_kernel, signature, constexprs=meta, attrs=aligned),
                          target=GPUTarget("cuda", arch, 32), options=launch)


def _cuobjdump(cubin: bytes, flag: str) -> str:
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(tool), flag, f.name], capture_output=True, text=True, check=True).stdout


def executed_instructions(sass: str, trips: int) -> Counter[str]:
    """Opcode -> instructions one thread executes: every backward branch closes a loop over
    the tiles (the kernel's only runtime loops; Triton unrolls static_range), so each
    instruction counts once per trip of every loop around it."""
    code = [(int(m.group(1), 16), m.group(2)) for m in map(_INSTRUCTION.match, sass.splitlines()) if m]
    at = {address: i for i, (address, _) in enumerate(code)}
    weight = [1] * len(code)
    for i, (address, text) in enumerate(code):
        target = _BRANCH_TARGET.search(text)
        if target and int(target.group(1), 16) < address:
            for j in range(at[int(target.group(1), 16)], i + 1):
                weight[j] *= trips
    counts: Counter[str] = Counter()
    for w, (_, text) in zip(weight, code):
        words = text.split()
        opcode = words[1] if words[0].startswith("@") else words[0]  # skip a predicate guard
        counts[opcode.split(".")[0]] += w
    return counts


def padded_fmas(spec: ModelSpec, block_n: int) -> int:
    """Multiply-adds per jet of the kernel's algebra (salt_forward.py) at its padded sizes:
    what the FFMA count of a correct loop analysis must come to, give or take the few in
    exp and the head."""
    from salt.kernels.fused import FusedClassifier, compact_rows
    from salt.models import build_model

    m = FusedClassifier(build_model(spec)).meta
    rows = math.ceil(m["N"] / block_n) * block_n
    dp, hpp, ffp = m["DP"], m["HPP"], m["FFP"]
    span, compact = compact_rows(spec, block_n)
    per_row = m["F"] * dp  # the embedding (first block only)
    # E^T x and F^T x (both in one product of `compact` rows when partitioned); attend; FFN
    per_row += m["BLOCKS"] * ((compact if span else 2 * hpp) * dp + hpp * dp + 2 * dp * ffp)
    per_row += m["BLOCKS"] * ((dp * hpp + m["R"] * m["P"] * hpp) if m["CONV"] else dp * hpp)  # logits (+ conv)
    return rows * per_row + m["BLOCKS"] * 4 * hpp * dp * dp  # + KP, KP W_q, VP, VO per jet


@dataclass
class StaticProfile:
    registers: int
    spill_bytes: int  # per thread, from ptxas's stack frame
    shared_bytes: int
    programs_per_sm: int
    warps_per_sm: int
    warp_instructions: int  # per jet, every warp of its program
    warp_ffma: int  # per jet: fp32 multiply-adds (FFMA; tf32x3 products run as HMMA instead)
    expected_warp_ffma: float  # padded_fmas / 32
    issue_floor_ns: float  # per jet, at one warp-instruction per scheduler per clock, every SM busy
    fma_floor_ns: float  # per jet, the model's padded multiply-adds at 128 per SM per clock
    l1_lines: int  # per jet: 128-byte lines the global loads and stores touch, per warp-instruction, summed
    l1_floor_ns: float  # per jet, at one line per SM per clock


def occupancy(registers: int, shared_bytes: int, num_warps: int) -> int:
    """Programs one sm_90 multiprocessor holds at once (registers are allocated 256 per warp at a time)."""
    per_warp = math.ceil(registers * 32 / 256) * 256
    return min(SM90["registers"] // (per_warp * num_warps), SM90["shared"] // (shared_bytes + 1024),
               SM90["warps"] // num_warps, SM90["programs"])


def static_profile(spec: ModelSpec, *, block_n: int, num_warps: int, has_mask: bool = False,
                   gpu: dict[str, int] = H200, **options: Any) -> StaticProfile:
    """The sm_90 kernel for `spec` with these launch options, counted (see the module docstring)."""
    kernel = compile_offline(spec, has_mask=has_mask, block_n=block_n, num_warps=num_warps, **options)
    usage = _cuobjdump(kernel.asm["cubin"], "-res-usage")
    registers = int(re.search(r"REG:(\d+)", usage).group(1))
    spill = int(re.search(r"STACK:(\d+)", usage).group(1))
    counts = executed_instructions(_cuobjdump(kernel.asm["cubin"], "-sass"), math.ceil(spec.particles / block_n))
    trace = trace_addresses(spec.to_dict(), has_mask=has_mask, block_n=block_n, num_warps=num_warps)
    l1_lines = lines_per_jet(kernel.asm["ttgir"], trace)["lines"]
    shared = int(kernel.metadata.shared)
    programs = occupancy(registers, shared, num_warps)
    issue_rate = gpu["sms"] * SM90["schedulers"] * gpu["clock_mhz"] * 1e6  # warp-instructions per second
    fma_rate = gpu["sms"] * 128 * gpu["clock_mhz"] * 1e6
    fmas = padded_fmas(spec, block_n)
    warp_instructions = sum(counts.values()) * num_warps
    return StaticProfile(
        registers=registers, spill_bytes=spill, shared_bytes=shared, programs_per_sm=programs,
        warps_per_sm=programs * num_warps, warp_instructions=warp_instructions,
        warp_ffma=counts["FFMA"] * num_warps, expected_warp_ffma=fmas / 32,
        issue_floor_ns=warp_instructions / issue_rate * 1e9, fma_floor_ns=fmas / fma_rate * 1e9,
        l1_lines=l1_lines, l1_floor_ns=l1_lines / (gpu["sms"] * gpu["clock_mhz"] * 1e6) * 1e9)
