#!/usr/bin/env python
"""The fused Triton SAL-T kernel compiled for an H100/H200 (sm_90) on a machine without a GPU, and counted.

    python benchmarks/fused_static.py [--particles 150 1024] [--tiles 16x1 32x2 32x4] [--max-registers 128]

For each tile (rows per tile x warps per program): registers and spills per thread, shared
memory, programs and warps per multiprocessor, and per jet the warp-instructions executed,
the fp32 multiply-adds (FFMA, checked against the kernel's algebra) and the 128-byte cache
lines its global loads and stores touch (traced under Triton's interpreter), and three floors
under the time per jet at batch 4096 on an H200: issuing every instruction (one
warp-instruction per scheduler per clock), doing the multiply-adds at the fp32 rate, and the
L1 serving one line per multiprocessor per clock. Measured times sit above
them; this ranks kernel designs where no GPU is at hand (benchmarks/fused_speed.py measures).
Needs triton (its bundled ptxas and cuobjdump), not a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salt.kernels.offline import H200, static_profile  # noqa: E402
from salt.models import ModelSpec  # noqa: E402

GOALS_NS = {150: 30.0, 1024: 200.0}  # per jet at batch 4096 (benchmarks/fused_speed.py)


def tile(text: str) -> tuple[int, int]:
    rows, _, warps = text.partition("x")
    try:
        return int(rows), int(warps)
    except ValueError:
        raise argparse.ArgumentTypeError(f"tile {text!r}: expected ROWSxWARPS, e.g. 32x2") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--model", default="salt", help="a linear-attention model (default salt)")
    parser.add_argument("--particles", type=int, nargs="+", default=[150, 1024])
    parser.add_argument("--tiles", type=tile, nargs="+", default=[(16, 1), (32, 2), (32, 4), (64, 4)],
                        help="ROWSxWARPS (default 16x1 32x2 32x4 64x4)")
    parser.add_argument("--max-registers", type=int, nargs="+", default=[0],
                        help="register caps to try; 0 is none (default 0)")
    parser.add_argument("--precision", default="ieee", choices=["ieee", "tf32x3"])
    parser.add_argument("--mask", action="store_true", help="the kernel for inputs with a particle mask")
    args = parser.parse_args(argv)

    import triton

    print(f"triton {triton.__version__}, sm_90, floors at {H200['sms']} SMs x {H200['clock_mhz']} MHz (H200); "
          f"{args.model}, C = 5, p = 4, {args.precision}{', masked' if args.mask else ''}\n")
    print("| N | tile | reg cap | registers | spill B | shared kB | warps/SM | warp-instr/jet | FFMA (algebra) "
          "| L1 lines/jet | issue floor ns/jet | FMA floor ns/jet | L1 floor ns/jet | goal ns/jet |")
    print("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for n in args.particles:
        spec = ModelSpec(model=args.model, particles=n, classes=5, partitions=4)
        for rows, warps in args.tiles:
            if rows > max(16, 1 << (n - 1).bit_length()):
                continue
            for cap in args.max_registers:
                p = static_profile(spec, block_n=rows, num_warps=warps, has_mask=args.mask, precision=args.precision,
                                   max_registers=cap or None)
                print(f"| {n} | {rows}x{warps} | {cap or '-'} | {p.registers} | {p.spill_bytes} | "
                      f"{p.shared_bytes / 1024:.0f} | {p.warps_per_sm} | {p.warp_instructions:,} | "
                      f"{p.warp_ffma:,} ({p.expected_warp_ffma:,.0f}) | {p.l1_lines:,} | {p.issue_floor_ns:.1f} | "
                      f"{p.fma_floor_ns:.1f} | {p.l1_floor_ns:.1f} | {GOALS_NS.get(n, '-')} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
