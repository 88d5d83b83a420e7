"""salt.bench: timing functions, the CLI, and the speed-goal script (on tiny sizes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from salt import bench, cli
from salt.models import ModelSpec, build_model

ROOT = Path(__file__).resolve().parent.parent


def test_time_models_interleaves_and_reports():
    models = {v: build_model(ModelSpec(model=v, particles=10, classes=3)) for v in ("salt", "transformer")}
    calls = []
    for name, model in models.items():
        model.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
    before = torch.get_num_threads()
    out = bench.time_models(models, batch=4, threads=1, warmup=1, repeats=3)
    assert torch.get_num_threads() == before  # thread count restored
    assert calls == ["salt", "transformer"] + ["salt", "transformer"] * 3  # warm-up, then round by round
    for name in models:
        r = out[name]
        assert len(r["times_s"]) == 3 and r["min_s"] <= r["median_s"]
        assert r["jets_per_s"] == pytest.approx(4 / r["median_s"])
        assert r["ns_per_jet"] == pytest.approx(r["median_s"] / 4 * 1e9)


def test_time_models_checks_its_arguments():
    a = build_model(ModelSpec(model="salt", particles=10, classes=3))
    b = build_model(ModelSpec(model="salt", particles=12, classes=3))
    with pytest.raises(ValueError, match="'b'"):
        bench.time_models({"a": a, "b": b}, batch=2)
    with pytest.raises(ValueError, match="repeats"):
        bench.time_models({"a": a}, batch=2, repeats=0)


def test_bench_models_rows():
    rows = bench.bench_models(["salt", "transformer"], 12, 3, impls=("fused", "straightforward"),
                              repeats=1, warmup=0, chunk_rows=0)
    assert [(r["model"], r["impl"]) for r in rows] == [("salt", "fused"), ("salt", "straightforward"),
                                                        ("transformer", "fused")]
    for r in rows:
        assert r["particles"] == 12 and r["batch"] == 3 and r["threads"] == 1 and r["chunk_rows"] == 0
        assert r["params"] > 0 and r["spec"]["model"] == r["model"]


def test_random_jets_are_padded_at_the_end():
    spec = ModelSpec(model="salt", particles=20, classes=2)
    x, mask = bench.random_jets(spec, 50, seed=3)
    assert x.shape == (50, 20, 3) and mask.dtype == torch.bool
    assert torch.all(mask[:, :-1] >= mask[:, 1:])  # real particles first
    assert torch.all(x[~mask] == 0) and mask.sum(1).min() >= 1


def test_tune_allocator_is_idempotent():
    first = bench.tune_allocator()
    assert bench.tune_allocator() == first
    if sys.platform.startswith("linux"):
        assert first


def test_cli_json_and_output_file(tmp_path, capsys):
    out_file = tmp_path / "b.json"
    code = cli.main(["bench", "--models", "salt,linformer,transformer", "--particles", "12,16", "--batch", "3",
                     "--threads", "1", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--json",
                     "--output", str(out_file)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(out_file.read_text()) == report
    assert report["settings"]["batch"] == 3 and report["provenance"]["device"]["device"] == "cpu"
    assert {(r["model"], r["particles"]) for r in report["results"]} == {
        (v, n) for v in ("salt", "linformer", "transformer") for n in (12, 16)}
    assert all(r["jets_per_s"] > 0 for r in report["results"])


def test_cli_errors(capsys):
    assert cli.main(["bench", "--models", "salt,nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli.main(["bench", "--particles", "1x"]) == 2
    assert "--particles" in capsys.readouterr().err


def test_variants_is_a_deprecated_name_of_models(capsys):
    assert cli.main(["bench", "--variants", "salt,nope"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "salt bench: note: --variants is deprecated; use --models"
    assert err[1].startswith("salt bench: error: --models 'salt,nope'")


def test_each_mode_refuses_the_other_modes_options(capsys):
    assert cli.main(["bench", "--models", "salt", "--sweep-particles", "8"]) == 2
    assert "--sweep-particles is not an option of the comparison mode" in capsys.readouterr().err
    assert cli.main(["bench", "--spec", "{}", "--particles", "8"]) == 2
    assert "--particles is not an option of the sweep mode" in capsys.readouterr().err


def test_speed_goal_script_runs(tmp_path):
    """The goal script on tiny batches: it prints the table and the goals, writes its JSON, and
    its exit status says whether every goal was met (small batches may well miss them)."""
    out_file = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "model_speed.py"), "--batch", "4",
                           "--repeats", "1", "--particles", "16,128,150,1024", "--before", "--pair", "--output", str(out_file)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    data = json.loads(out_file.read_text())
    assert set(data["goals"]) == {"salt_vs_transformer_at_150", "salt_vs_linformer_at_150", "salt_time_1024_over_128",
                                  "salt_pair_time_1024_over_128", "part_time_1024_over_128"}
    assert proc.returncode == (0 if all(g["met"] for g in data["goals"].values()) else 1)
    for name in data["goals"]:
        assert name in proc.stdout
    assert "(straightforward)" in proc.stdout and "1024" in proc.stdout and "salt_pair" in proc.stdout
