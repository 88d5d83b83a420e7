"""The fused kernel compiled for sm_90 without a GPU, and its static profile (salt/kernels/offline.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install 'salt[triton]')")

from salt.kernels.offline import executed_instructions, occupancy, padded_fmas, static_profile  # noqa: E402
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
