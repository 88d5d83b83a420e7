"""The report with GPU benchmark files: Table 2's per-variant GPU view (best backend at batch 1 and at the
largest batch, with the GPU's name) and the cuda row of panels in the latency-vs-N figure.

The cuda files are synthetic but in the exact shape `salt bench --device cuda` writes
(salt.bench.bench_document): the device_info of a GPU, rows per backend and precision, a skip.
"""

from __future__ import annotations

import copy

import pytest

from test_report import N, SPECS, bench_doc, read_csv, tables, write_bench, write_metrics, random_run

GPU = "NVIDIA H200"
# (backend, precision) -> factor on the synthetic eager fp32 latency: which one is fastest differs by batch
SPEED = {("eager", "fp32"): 1.0, ("eager", "bf16"): 0.8, ("cudagraph", "fp32"): 0.5, ("cudagraph", "bf16"): 0.6}
SPEED_BIG = {("eager", "fp32"): 1.0, ("eager", "bf16"): 0.45, ("cudagraph", "fp32"): 0.9, ("cudagraph", "bf16"): 0.4}


def cuda_doc(variant: str, batches=(1, 64, 256)) -> dict:
    doc = bench_doc(variant, device="cuda", batches=batches)
    rows = []
    for base in doc["results"]:
        for (backend, precision), factor in SPEED.items():
            f = factor if base["batch"] == 1 else SPEED_BIG[(backend, precision)]
            r = copy.deepcopy(base)
            r.update(backend=backend, precision=precision)
            for key in ("latency_ms", "latency_ms_p10", "latency_ms_p90", "ns_per_jet"):
                r[key] *= f
            r["jets_per_s"] /= f
            rows.append(r)
    doc["results"] = rows
    doc["device_info"] = {"device": "cuda", "gpu": GPU, "driver": "580.159", "cpu": "Test CPU 3000",
                          "cpu_count": 16, "gpu_memory_gb": 139.8, "cuda": "13.0", "torch": "2.11.0+cu130",
                          "onnxruntime": None, "onnx": None, "cudnn": 91300, "compute_capability": "9.0",
                          "sm_clock_mhz": "1980", "max_sm_clock_mhz": "1980"}
    doc["skipped"] = []
    doc["notes"] = ["onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu): backend onnxruntime "
                    "skipped on cuda"]
    doc["settings"] = {"particles": sorted({r["particles"] for r in rows}), "batch_sizes": list(batches),
                       "threads": [1], "backends": ["eager", "cudagraph"], "precisions": ["fp32", "bf16"],
                       "memory_budget_mb": 114525.0, "memory_budget_source": "default: 80% of the GPU's memory",
                       "host_threads": 1}
    return doc


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_report")
    metrics = [write_metrics(root, "pythia", v, "kt", 1, *random_run(v, "kt", 1)[:2]) for v in SPECS]
    bench = [write_bench(root, bench_doc(v)) for v in SPECS]
    docs = {v: cuda_doc(v) for v in SPECS}
    # one variant whose largest batch at N was skipped: its largest measured batch is 64
    docs["transformer"]["results"] = [r for r in docs["transformer"]["results"]
                                      if not (r["particles"] == N and r["batch"] == 256)]
    docs["transformer"]["skipped"] = [{"particles": N, "batch": 256, "threads": 1, "backend": b, "precision": p,
                                       "reason": "out of memory at run time: CUDA out of memory"}
                                      for b, p in SPEED]
    bench += [write_bench(root, d) for d in docs.values()]
    return {"root": root, "metrics": metrics, "bench": bench, "docs": docs}


def test_table2_names_the_gpu_and_its_best_backend_per_variant(gpu_run):
    out = tables(gpu_run["root"], gpu_run["metrics"], gpu_run["bench"])
    best = [r for r in read_csv(out / "resources.csv") if r["selection"] == "best backend"]
    assert {r["variant"] for r in best} == set(SPECS)
    assert {(r["device"], r["device_name"]) for r in best} == {("cuda", GPU)}
    for r in best:
        at_n = [x for x in gpu_run["docs"][r["variant"]]["results"] if x["particles"] == N]
        one = min((x for x in at_n if x["batch"] == 1), key=lambda x: x["latency_ms"])
        largest = max(x["batch"] for x in at_n)
        big = min((x for x in at_n if x["batch"] == largest), key=lambda x: x["latency_ms"])
        assert float(r["latency_us_batch1"]) == pytest.approx(one["latency_ms"] * 1000)
        assert r["best_batch1"] == f"{one['backend']}, {one['precision']}" == "cudagraph, fp32"
        assert int(r["batch"]) == largest and float(r["ns_per_jet"]) == pytest.approx(big["ns_per_jet"])
        assert r["best_largest"] == f"{big['backend']}, {big['precision']}" == "cudagraph, bf16"
    assert {r["variant"]: int(r["batch"]) for r in best}["transformer"] == 64
    md = (out / "resources.md").read_text()
    assert f"on cuda: {GPU}, best backend per variant" in md
    assert "| Model | µs (batch 1) | Backend (batch 1) | Largest batch | ms per batch | ns/jet | Backend (largest batch) |" in md
    # the per-configuration section of the GPU is still there, and the CPU's has no GPU view
    every = [r for r in read_csv(out / "resources.csv") if r["selection"] == "every configuration"]
    assert {r["device"] for r in every} == {"cpu", "cuda"}
    assert md.count("best backend per variant") == 1
    assert r"$\mu$s (batch 1)" in (out / "resources.tex").read_text()


def test_latency_figure_has_a_cuda_row_of_panels(gpu_run):
    import matplotlib.pyplot as plt

    from salt.report.figures import Context, fig_latency_vs_n
    from salt.report.inputs import load_benches, load_evaluations

    ctx = Context("pythia", load_evaluations(gpu_run["metrics"]), load_benches(gpu_run["bench"]))
    fig = fig_latency_vs_n(ctx)
    try:
        axes = fig.axes
        assert len(axes) == 4  # rows cpu, cuda x columns batch 1, largest batch
        panels = [next(t.get_text() for t in ax.texts if "\nbatch" in t.get_text()) for ax in axes]
        # each row's columns are batch 1 and that device's own largest batch (cpu 64, cuda 256)
        assert panels == ["cpu: Test CPU 3000\nbatch 1", "cpu: Test CPU 3000\nbatch 64",
                          f"cuda: {GPU}\nbatch 1", f"cuda: {GPU}\nbatch 256"]
        cuda_labels = {line.get_label() for ax in axes[2:] for line in ax.get_lines()}
        assert {"SAL-T", "SAL-T (cudagraph)"} <= cuda_labels
        # the cuda panel's batch-1 SAL-T eager line is the file's eager fp32 ns/jet over N
        line = next(ln for ln in axes[2].get_lines() if ln.get_label() == "SAL-T")
        doc = gpu_run["docs"]["salt"]
        expected = sorted((r["particles"], r["ns_per_jet"]) for r in doc["results"]
                          if r["batch"] == 1 and (r["backend"], r["precision"]) == ("eager", "fp32"))
        assert list(line.get_xdata()) == [n for n, _ in expected]
        assert list(line.get_ydata()) == pytest.approx([ns for _, ns in expected])
    finally:
        plt.close(fig)
