"""The fused kernel compiled for sm_90 without a GPU, and its static profile (salt/kernels/offline.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install 'salt[triton]')")

from salt.kernels.access_trace import Blocked, lines_per_jet, owners, trace_addresses, warp_lines  # noqa: E402
from salt.kernels.offline import (  # noqa: E402
    compile_offline, executed_instructions, occupancy, padded_fmas, static_profile)
from salt.models import ModelSpec  # noqa: E402

# cuobjdump -sass layout: a prologue, a loop closed by a backward branch, an epilogue
SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;                      /* 0x00000a0000017a02 */
        /*0010*/                   LDG.E R2, desc[UR4][R4.64] ;                /* 0x0000000404027981 */
        /*0020*/                   FFMA R3, R2, R2, R3 ;                       /* 0x0000000202037223 */
        /*0030*/               @P0 FFMA R3, R2, R3, R3 ;                       /* 0x0000000302030223 */
        /*0040*/               @P1 BRA 0x20 ;                                  /* 0xfffffffc00001947 */
        /*0050*/                   STG.E desc[UR4][R6.64], R3 ;                /* 0x0000000306007986 */
        /*0060*/                   EXIT ;                                      /* 0x000000000000794d */
        /*0070*/                   BRA 0x70;                                   /* 0xfffffff000007947 */
"""


def test_loop_bodies_count_once_per_trip():
    counts = executed_instructions(SASS, trips=5)
    # the branch to itself after EXIT (the usual trap) is not a loop: it counts once
    assert counts == {"MOV": 1, "LDG": 1, "FFMA": 10, "BRA": 5 + 1, "STG": 1, "EXIT": 1}


def test_occupancy_is_limited_by_registers_shared_memory_and_warps():
    assert occupancy(168, 5 * 1024, 2) == 6  # 168 regs -> 5,376 per warp: 12 warps
    assert occupancy(32, 100 * 1024, 1) == 2  # shared memory: 2 x (100 + 1) kB of 228
    assert occupancy(32, 0, 8) == 8  # 64 warps at most


@pytest.mark.slow
def test_profile_counts_the_multiply_adds_of_the_kernels_algebra():
    """The loop analysis is right when the counted FFMAs come to the algebra's padded
    multiply-adds (plus the few of exp and the head); a loop counted once, or twice over,
    would be off by a factor."""
    spec = ModelSpec(model="salt", particles=40, classes=5, partitions=4, blocks=2)
    profile = static_profile(spec, block_n=16, num_warps=1)
    assert profile.expected_warp_ffma == padded_fmas(spec, 16) / 32
    assert profile.expected_warp_ffma <= profile.warp_ffma <= 1.1 * profile.expected_warp_ffma, profile
    assert profile.spill_bytes == 0 and profile.programs_per_sm >= 1, profile
    assert profile.issue_floor_ns > profile.fma_floor_ns > 0
    capped = static_profile(spec, block_n=16, num_warps=1, max_registers=96)
    assert capped.registers <= 96 < profile.registers, (capped, profile)


@pytest.mark.slow
def test_static_benchmark_prints_a_row_per_tile(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "fused_static.py"
    module_spec = importlib.util.spec_from_file_location("fused_static", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    assert module.main(["--particles", "20", "--tiles", "16x1", "32x2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 20 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["16x1", "32x2"], rows
    with pytest.raises(SystemExit):
        module.main(["--tiles", "32by2"])


def test_layout_owners_cover_every_element_once():
    layout = Blocked((1, 4), (8, 4), (2, 1), (1, 0))
    flat = owners((32, 16), layout)  # 2 warps x 32 lanes x 8 registers
    assert flat.shape == (2, 32, 8) and sorted(flat.ravel()) == list(range(32 * 16))
    assert list(flat[0, 1, :4]) == [4, 5, 6, 7]  # lane 1 holds the next 4 columns of row 0


def test_lines_per_instruction_of_a_head_gather():
    """The gather of each head's columns from a (32 rows, 16 columns) fp32 scratch, by a warp whose
    lanes run along the rows: 16 cache lines per instruction from row-major scratch (64-byte rows),
    1 from column-major scratch."""
    lanes_along_rows = Blocked((1, 1), (32, 1), (1, 2), (0, 1))
    flat = owners((32, 16), lanes_along_rows)
    n, j = np.arange(32)[:, None], np.arange(16)[None, :]
    row_major = ((n * 16 + (j // 4) * 4) * 4).ravel()
    column_major = (((j // 4) * 4 * 32 + n) * 4).ravel()
    none_masked = np.zeros(32 * 16, dtype=np.int64)
    assert warp_lines(row_major, none_masked, flat, 1) == (16, 16 * 16)
    assert warp_lines(column_major, none_masked, flat, 1) == (16, 16)
    masked = none_masked.copy()
    masked[::2] = -1  # the even columns masked off: their loads issue but touch nothing
    assert warp_lines(column_major, masked, flat, 1) == (16, 8)


@pytest.mark.slow
def test_fused_kernel_gathers_read_whole_cache_lines():
    """The convolution's shifted rows and the softmax's head columns, traced for one jet and laid
    out as compiled: about one line per warp-wide load (row-major scratch made Triton 3.6 take 16),
    and every access of the kernel followed."""
    spec = ModelSpec(model="salt", particles=150, classes=5)
    kernel = compile_offline(spec, has_mask=False, block_n=32, num_warps=2)
    report = lines_per_jet(kernel.asm["ttgir"], trace_addresses(spec.to_dict(), has_mask=False, block_n=32,
                                                                num_warps=2))
    assert report["uncounted"] == []
    source = (Path(__file__).resolve().parent.parent / "salt/kernels/salt_forward.py").read_text().splitlines()
    gather = 1 + next(i for i, text in enumerate(source) if "shifted = tl.load(" in text)
    site = report["by_line"][f"load line {gather}"]
    assert site["executions"] == 5 * 5 * 4  # tiles x taps x p
    assert site["lines"] <= 2 * site["instructions"], site
    assert report["lines"] < 5000, report["lines"]
