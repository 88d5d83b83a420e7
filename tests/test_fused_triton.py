"""The fused Triton forward (salt/kernels) against the eager model and the authors' Keras outputs.

The kernel runs on the CPU through Triton's interpreter, in one child process for the whole
module (tests/fusedcheck.py says why); the checks that never launch the kernel run here.
"""

from __future__ import annotations

import logging
import re

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install 'salt[triton]')")

from fusedcheck import RANDOM_SPECS, fixture_cases, run_interpreted  # noqa: E402

from salt.kernels.access_trace import parse_layouts  # noqa: E402
from salt.kernels.fused import (  # noqa: E402
    FusedClassifier, compact_rows, coverage, default_tile, fused_model, partition_span)
from salt.models import ModelSpec, build_model  # noqa: E402

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def diffs() -> dict[str, float]:
    return run_interpreted()


@pytest.mark.parametrize("case", sorted(RANDOM_SPECS))
def test_fused_matches_eager_on_random_specs(diffs, case):
    assert diffs[case] <= TOLERANCE, f"{case}: scaled |fused - eager| {diffs[case]:.2e}"


@pytest.mark.parametrize("case", fixture_cases())
def test_fused_reproduces_reference_fixtures(diffs, case):
    assert diffs[case] <= TOLERANCE, f"{case}: max |diff| to eager or the Keras probabilities {diffs[case]:.2e}"


@pytest.mark.slow
@pytest.mark.parametrize("knobs, has_mask, options", [
    (dict(model="salt", blocks=2, mask=True), True, dict(block_n=32, num_warps=4, precision="ieee")),
    (dict(model="salt_noconv", aggregation="mean"), False, dict(block_n=64, num_warps=8, precision="tf32x3")),
], ids=["salt_2blocks_mask", "noconv_mean_tf32x3"])
def test_kernel_compiles_for_sm90(knobs, has_mask, options):
    """The interpreter does not run Triton's compiler: compile for an H100/H200 ahead of time
    (this process never sets TRITON_INTERPRET, so the kernel here is the compiled kind)."""
    from salt.kernels.offline import compile_offline

    kernel = compile_offline(ModelSpec(particles=150, classes=5, **knobs), has_mask=has_mask, **options)
    assert kernel.asm["cubin"]
    # per element, exp and 1/x are the single ftz instructions, not tl.exp's (non-ftz ex2) sequence
    ptx = kernel.asm["ptx"]
    assert "ex2.approx.ftz.f32" in ptx and "rcp.approx.ftz.f32" in ptx, "fast math not compiled in"
    assert "ex2.approx.f32" not in ptx
    # the gathers from scratch (the convolution's shifted rows, the softmax's head columns) run along
    # rows: order [0, 1], 4 rows a thread (16-byte vectors), not one row a lane across cache lines
    ttgir = kernel.asm["ttgir"]
    layouts = parse_layouts(ttgir)
    gathers = re.findall(r"%(shifted|top|total)\w* = tt\.load [^\n]*?, (#\w+)> loc", ttgir)
    assert len(gathers) >= 2 * 4 * knobs.get("blocks", 1), gathers
    for name, layout in gathers:
        assert layouts[layout].order == (0, 1) and layouts[layout].size_per_thread == (4, 1), (name, layouts[layout])


def test_full_attention_falls_back_to_eager_with_one_logged_line(caplog):
    model = build_model(ModelSpec(model="transformer", particles=16, classes=2))
    with caplog.at_level(logging.WARNING, logger="salt.kernels.fused"):
        assert fused_model(model) is model
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "full softmax attention" in lines[0], lines
    with pytest.raises(ValueError, match="full softmax attention"):
        FusedClassifier(model)


def test_too_wide_models_are_not_covered():
    assert "d_model 256" in coverage(ModelSpec(model="salt", particles=16, classes=2, d_model=256))
    assert coverage(ModelSpec(model="salt", particles=16, classes=2)) is None
    assert "pairwise attention bias" in coverage(ModelSpec(model="salt_pair", particles=16, classes=2))


def test_tile_spreads_a_jet_over_more_warps_when_the_batch_leaves_multiprocessors_idle():
    assert default_tile(150, 4096, 132) == (32, 2)
    assert default_tile(150, 1, 132) == (64, 8)
    assert default_tile(16, 4096, 132) == (16, 1) and default_tile(16, 8, 132) == (16, 2)
    model = build_model(ModelSpec(model="salt", particles=150, classes=5))
    cpu = torch.device("cpu")  # counts as one multiprocessor
    assert FusedClassifier(model).tile(1, cpu) == (32, 2)
    assert FusedClassifier(model, block_n=64).tile(1, cpu) == (64, 4)
    assert FusedClassifier(model, num_warps=4).tile(1, cpu) == (32, 4)


def test_pass_one_multiplies_only_by_the_partitions_a_tile_reaches():
    # N = 150, p = 4: partitions of 38 particles; tiles of 32 rows reach into 2, of 64 into 3
    assert partition_span(150, 38, 32) == 2 and partition_span(150, 38, 64) == 3
    assert partition_span(1024, 256, 32) == 1 and partition_span(8, 2, 16) == 4
    salt = ModelSpec(model="salt", particles=150, classes=5)
    assert compact_rows(salt, 32) == (2, 16)  # (E, F) x 2 partitions x 4 heads, against 2 x 16 rows
    assert compact_rows(salt, 64) == (0, 16)  # 24 rows pad to 32: no fewer, the dense products run
    assert compact_rows(ModelSpec(model="salt", particles=1024, classes=5), 32) == (1, 16)
    for dense in ("linformer", "salt_nopartition"):
        assert compact_rows(ModelSpec(model=dense, particles=150, classes=5), 32) == (0, 16)


def test_kernel_needs_cuda_outside_the_interpreter(monkeypatch):
    fused = FusedClassifier(build_model(ModelSpec(model="salt", particles=16, classes=2)))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        fused(torch.zeros(1, 16, 3))


def test_bad_input_shape_is_named():
    fused = FusedClassifier(build_model(ModelSpec(model="salt", particles=16, classes=2)))
    with pytest.raises(ValueError, match=r"expected \(batch, 16, 3\)"):
        fused(torch.zeros(2, 15, 3))
    with pytest.raises(ValueError, match="precision 'tf32'"):
        FusedClassifier(build_model(ModelSpec(model="salt", particles=16, classes=2)), precision="tf32")
    with pytest.raises(ValueError, match="power of two"):
        FusedClassifier(build_model(ModelSpec(model="salt", particles=16, classes=2)), block_n=24)


def test_bench_notes_why_a_variant_has_no_fused_rows():
    from salt.benchmarking.measure import fused_missing

    assert "full softmax attention" in fused_missing(ModelSpec(model="transformer", particles=16, classes=2))
    assert fused_missing(ModelSpec(model="salt_noconv", particles=16, classes=2)) is None


def test_evaluate_on_cpu_runs_eager_with_one_logged_line(caplog):
    from salt.evaluate import inference_model

    model = build_model(ModelSpec(model="salt", particles=16, classes=2))
    with caplog.at_level(logging.WARNING, logger="salt.evaluate"):
        runner, used = inference_model(model, "fused", torch.device("cpu"))
    assert runner is model and used == "eager"
    assert len(caplog.records) == 1 and "needs a CUDA device" in caplog.records[0].getMessage()
    with pytest.raises(ValueError, match="expected one of"):
        inference_model(model, "triton", torch.device("cpu"))


def test_fused_memory_estimate_counts_the_scratch_of_deeper_models():
    from salt.benchmarking.limits import estimate_memory_mb

    one, two = (ModelSpec(model="salt", particles=1024, classes=5, blocks=b) for b in (1, 2))
    # one block keeps its activations on chip; two read the first block's output back (4096 jets x 1024 x 16 fp32)
    assert estimate_memory_mb(two, 4096, backend="fused", device="cuda") - estimate_memory_mb(
        one, 4096, backend="fused", device="cuda") > 4096 * 1024 * 16 * 4 / 2**20
    assert estimate_memory_mb(one, 4096, backend="fused", device="cuda") < estimate_memory_mb(
        one, 4096, backend="eager", device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_speed_script_needs_cuda_and_not_the_pipeline_packages():
    """benchmarks/fused_speed.py runs on a bare GPU image: with snakemake, uproot, awkward, hdf5plugin
    and mplhep unimportable it still parses its arguments and, without a GPU, says what it needs."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    blocker = ("import runpy, sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('snakemake', 'uproot', 'awkward', 'hdf5plugin', 'mplhep'):\n"
               "            raise ImportError(f'{name} is not on the GPU image')\n"
               "sys.meta_path.insert(0, Block())\n"
               "sys.argv = ['fused_speed.py', '--repeats', '5']\n"
               "runpy.run_path(sys.argv_script, run_name='__main__')\n")
    blocker = blocker.replace("sys.argv_script", repr(str(root / "benchmarks" / "fused_speed.py")))
    proc = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=120, cwd=root)
    assert proc.returncode == 1, proc.stderr
    assert "fused_speed.py: needs a CUDA device" in proc.stderr, proc.stderr


def test_speed_script_records_a_failing_exactness_case_and_goes_on(monkeypatch):
    """A GPU run is scarce: a case that cannot launch is a FAIL row with its reason, and the other
    cases still run (here on the CPU, where every launch refuses without the interpreter)."""
    import importlib.util
    from pathlib import Path

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "fused_speed.py"
    module_spec = importlib.util.spec_from_file_location("fused_speed", path)
    script = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(script)
    rows = script.check_exactness(torch.device("cpu"), "ieee")
    assert len(rows) == 6 and not any(r["ok"] for r in rows)
    assert all(r["max_abs_diff"] is None and "needs a CUDA device" in r["error"] for r in rows), rows


@pytest.mark.gpu
@pytest.mark.parametrize("model_name, knobs", [
    ("salt", {}), ("salt", {"mask": True, "blocks": 2}), ("linformer", {"mask": True}),
    ("salt_nopartition", {}), ("salt", {"particles": 37, "partitions": 3, "classes": 1})])
def test_compiled_kernel_matches_eager_on_the_gpu(model_name, knobs):
    """The compiled kernel (not the interpreter), launched for inputs on the last GPU (not
    necessarily the current one), against the eager model in exact fp32."""
    from salt.benchmarking.runtime import random_jets
    from salt.numerics import fp32_convolutions

    dev = torch.device("cuda", torch.cuda.device_count() - 1)
    spec = ModelSpec(**{"model": model_name, "particles": 150, "classes": 5, **knobs})
    torch.manual_seed(0)
    model = build_model(spec).to(dev).eval()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised biases and conv bias: make them matter
            p.add_(0.2 * torch.randn_like(p))
    fused = FusedClassifier(model)
    for batch in (256, 3):  # the throughput tile, and the latency tile of a batch that leaves SMs idle
        x, mask = random_jets(spec, batch, dev, seed=1)
        with torch.inference_mode(), fp32_convolutions():
            diff = (fused(x, mask) - model(x, mask)).abs().max().item()
        assert diff <= TOLERANCE, f"batch {batch} (tile {fused.tile(batch, dev)}): max |fused - eager| {diff:.2e}"
