"""The bench rule under Snakemake on the tiny config: its result file, its GPU request, running alone
on local runs, and the failure of a cuda job on a machine without a GPU.

The bench rule needs no data (random jets, fresh weights), so its jobs run on their own.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from workflowrun import ROOT, copy_workflow, snakemake, tiny_config


pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def workflow_copy(dest: Path, **bench) -> Path:
    config = tiny_config()
    config["bench"].update(bench)
    return copy_workflow(dest, config)


def job_blocks(dry_run_output: str) -> list[str]:
    return [b for b in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_output) if b.strip().startswith("rule bench:")]


def test_bench_rule_writes_the_result_file(tmp_path):
    work = workflow_copy(tmp_path)
    target = "results/bench/cpu/pythia/salt.json"
    proc = snakemake(work, target, check=False)
    assert proc.returncode == 0, proc.stderr[-5000:] + (work / "logs/bench/cpu/pythia/salt.log").read_text()[-3000:]
    doc = json.loads((work / target).read_text())
    assert (doc["variant"], doc["dataset"], doc["device"]) == ("salt", "pythia", "cpu")
    config = yaml.safe_load((work / "config.yaml").read_text())["bench"]
    assert doc["settings"]["particles"] == sorted(set(config["particles"]) | {16})
    rows = {(r["particles"], r["batch"], r["backend"]) for r in doc["results"]}
    assert rows == {(n, b, be) for n in (16, 32) for b in config["batch_sizes"] for be in ("eager", "onnxruntime")}
    assert doc["settings"]["repeats"] == config["repeats"]
    assert "ms per batch" in (work / "logs/bench/cpu/pythia/salt.log").read_text()


def test_bench_jobs_run_alone_locally_and_only_cuda_jobs_ask_for_a_gpu(tmp_path):
    work = workflow_copy(tmp_path, devices=["cpu", "cuda"])
    proc = snakemake(work, "-n", "results/bench/cpu/pythia/salt.json", "results/bench/cuda/pythia/salt.json", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    blocks = job_blocks(proc.stdout)
    assert len(blocks) == 2
    for block in blocks:
        device = re.search(r"device=(\w+)", block).group(1)
        assert re.search(r"threads: 2\b", block), block  # every core of a -c2 run: nothing runs beside it
        assert re.search(rf"gpu={1 if device == 'cuda' else 0}\b", block), block


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure on a machine without a GPU")
def test_cuda_bench_job_fails_without_a_gpu(tmp_path):
    work = workflow_copy(tmp_path, devices=["cuda"])
    target = "results/bench/cuda/pythia/salt.json"
    proc = snakemake(work, target, check=False)
    assert proc.returncode != 0
    assert not (work / target).exists()
    log = (work / "logs/bench/cuda/pythia/salt.log").read_text()
    assert "no CUDA GPU is visible" in log and "bench.devices: [cpu]" in log


def test_latency_script_prints_the_table(tmp_path):
    """benchmarks/latency.py on the tiny config: one table row per (variant, backend, N), and the
    result files in the bench rule's format."""
    config = tiny_config()
    config["bench"].update(repeats=2, warmup=1, backends={"cpu": ["eager"]})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/latency.py"), "--config", str(tmp_path / "config.yaml"),
                           "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if re.match(r"\| (salt|transformer) \| eager \| \d+ \|", line)]
    assert [tuple(r.split("|")[1:4]) for r in rows] == [(f" {v} ", " eager ", f" {n} ") for v in ("salt", "transformer")
                                                        for n in (16, 32)]
    assert all("skipped" not in r and " - " not in r for r in rows)
    for variant in ("salt", "transformer"):
        doc = json.loads((tmp_path / f"out/cpu/pythia/{variant}.json").read_text())
        assert doc["variant"] == variant and len(doc["results"]) == 4
