"""Top tagging and quark-gluon jets through the whole workflow, on a loopback HTTP server.

The server holds files written as the real ones are (tests/formats.py): the three Top-tagging
pandas HDF stores (key "table", PyTables table format, the 806 real columns) and EnergyFlow npz
files (X = (pT, y, phi, PDG id), y). Each dataset is downloaded (the Top stores have no published
md5, so the first download's is pinned; the QG files get md5 overrides because they are not the
real bytes), preprocessed into kT-sorted shards with the official split (Top: the file; QG: the
last file is the test set, the rest split at random), trained for one epoch with one sigmoid
output, evaluated, and reported in the Top/QG table and the ROC figures.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from formats import qg_arrays, top_frame, write_qg_npz, write_top_store
from httpserver import LoopbackServer
from workflowrun import copy_workflow, snakemake

from salt.cli import main as salt_main
from salt.data.shards import read_shard
from salt.models.cost import model_cost
from salt.models.spec import ModelSpec

ROOT = Path(__file__).resolve().parent.parent

TOP_FILES = {"train.h5": 48, "val.h5": 16, "test.h5": 24}  # jets per file
QG_FILES = {"QG_jets.npz": 40, "QG_jets_1.npz": 40, "QG_jets_19.npz": 30}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("files")
    top = {name: write_top_store(tmp / name, top_frame(n, seed=i, ttv=i)).read_bytes()
           for i, (name, n) in enumerate(TOP_FILES.items())}
    qg = {name: write_qg_npz(tmp / name, qg_arrays(n, seed=10 + i)).read_bytes()
          for i, (name, n) in enumerate(QG_FILES.items())}
    work = copy_workflow(tmp_path_factory.mktemp("work"))
    with LoopbackServer() as server:
        server.add("/top/train.h5", top["train.h5"], mode="drop", failures=1)  # resumed within the job
        for name in ("val.h5", "test.h5"):
            server.add(f"/top/{name}", top[name])
        for name, data in qg.items():
            server.add(f"/qg/{name}", data)
        datasets = {
            "top": {"source": "toptagging", "classes": ["QCD", "top"], "sigmoid": True,
                    "download": {"files": list(TOP_FILES), "base_url": server.url + "/top"},
                    "particles": 16, "features": ["pt_rel", "deta", "dphi"], "normalisation": "none",
                    "split": {"fixed": {"train.h5": "train", "val.h5": "val", "test.h5": "test"}}, "step": 20},
            "qg": {"source": "quarkgluon", "classes": ["gluon", "quark"], "sigmoid": True,
                   "download": {"files": list(QG_FILES), "base_url": server.url + "/qg",
                                "md5": {name: md5(data) for name, data in qg.items()}},
                   "particles": 12, "features": ["pt", "deta", "dphi"], "normalisation": "standard",
                   "split": {"val": 0.25, "test": 0.0, "seed": 7, "fixed": {"QG_jets_19.npz": "test"}}},
        }
        config = {"datasets": list(datasets), "dataset": datasets, "seeds": [1],
                  "variants": {"salt": {"model": "salt"}}, "runs": [{"variants": ["salt"], "sorts": ["kt"]}],
                  "train": {"schedule": [[32, 1]], "loader": "memory"},
                  "bench": {"devices": ["cpu"], "particles": [8], "batch_sizes": [1, 8], "repeats": 2,
                            "warmup": 0, "time_budget_s": 1, "backends": {"cpu": ["eager"]}}}
        (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        targets = ["results/tables/binary.md", "results/figures/top/roc.png", "results/figures/qg/roc.png"]
        snakemake(work, *targets)
        requests = server.requests_for("/top/train.h5")
    return work, top, qg, requests


@pytest.mark.workflow
@pytest.mark.slow
def test_top_tagging_from_download_to_table(run):
    work, top, _, requests = run
    m = json.loads((work / "results/shards/top/kt/manifest.json").read_text())
    assert m["classes"] == ["QCD", "top"] and m["n_particles"] == 16 and m["features"] == ["pt_rel", "deta", "dphi"]
    # the official split is the file: one shard per file, every jet of it in its split
    assert {s: m["splits"][s]["n_jets"] for s in ("train", "val", "test")} == {
        "train": TOP_FILES["train.h5"], "val": TOP_FILES["val.h5"], "test": TOP_FILES["test.h5"]}
    raw = work / "resources/raw/top/archives"
    for name, data in top.items():  # no published md5: the first download's is pinned beside the file
        assert (raw / name).read_bytes() == data
        assert (raw / f"{name}.md5").read_text().split()[0] == md5(data)
    assert [r.status for r in requests] == [200, 206]
    d = read_shard(work / "results/shards/top/kt/test/test.h5", fields=("particles", "mask", "sort_value"))
    x, mask, sv = d["particles"], d["mask"], d["sort_value"]
    assert mask.any(axis=1).all() and np.all(x[~mask] == 0)
    assert np.all(np.diff(np.where(mask, sv, -1.0), axis=1) <= 0)  # kT-descending, padding last
    assert np.all((x[..., 0][mask] > 0) & (x[..., 0][mask] <= 1.0))  # pT / pT_jet
    metrics = json.loads((work / "results/eval/top/salt/kt/seed1/metrics.json").read_text())
    assert metrics["spec"]["classes"] == 1 and metrics["metrics"]["scheme"] == "binary"
    assert metrics["metrics"]["n"] == TOP_FILES["test.h5"]
    table = (work / "results/tables/binary.md").read_text()
    assert "## Top tagging (top, N = 16, 1 output)" in table
    row = next(ln for ln in table.splitlines() if ln.startswith("| SAL-T") and "| kT | 1 |" in ln)
    assert f"| {metrics['cost']['params']:,} | {metrics['cost']['flops_paper']:,} |" in row
    assert (work / "results/figures/top/roc.png").stat().st_size > 1000


@pytest.mark.workflow
@pytest.mark.slow
def test_quark_gluon_from_download_to_table(run):
    work, _, qg, _ = run
    m = json.loads((work / "results/shards/qg/kt/manifest.json").read_text())
    assert m["classes"] == ["gluon", "quark"] and m["n_particles"] == 12
    counts = {s: m["splits"][s]["n_jets"] for s in ("train", "val", "test")}
    assert counts["test"] == QG_FILES["QG_jets_19.npz"]  # the last file is the test set, whole
    assert counts["train"] + counts["val"] == QG_FILES["QG_jets.npz"] + QG_FILES["QG_jets_1.npz"]
    assert counts["val"] > 0 and counts["train"] > counts["val"]
    by_shard = {Path(e["path"]).name: e["n_jets"] for e in m["splits"]["test"]["shards"]}
    assert by_shard == {"QG_jets.h5": 0, "QG_jets_1.h5": 0, "QG_jets_19.h5": QG_FILES["QG_jets_19.npz"]}
    raw = work / "resources/raw/qg/archives"
    assert all(md5((raw / name).read_bytes()) == md5(data) for name, data in qg.items())
    assert not list(raw.glob("*.part"))
    d = read_shard(work / "results/shards/qg/kt/train/QG_jets.h5", fields=("particles", "mask"))
    assert d["mask"].any(axis=1).all() and np.all(np.abs(d["particles"][..., 2][d["mask"]]) < 1.0)  # dphi
    metrics = json.loads((work / "results/eval/qg/salt/kt/seed1/metrics.json").read_text())
    assert metrics["spec"]["classes"] == 1 and metrics["spec"]["particles"] == 12
    assert set(metrics["metrics"]["rej_signal"]) >= {"rej30", "rej50", "rej80"}
    assert "## Quark-gluon (qg, N = 12, 1 output)" in (work / "results/tables/binary.md").read_text()
    assert (work / "results/figures/qg/roc.png").stat().st_size > 1000


# The paper's sizes (Top: SAL-T, N = 200, one output; QG: N = 150), in its FLOP convention
PAPER_COST = {"top": (200, 3_580, 986_161), "qg": (150, 3_196, 739_761)}


@pytest.mark.parametrize("dataset", sorted(PAPER_COST))
def test_model_info_gives_the_paper_sizes(dataset, capsys):
    n, params, flops = PAPER_COST[dataset]
    assert salt_main(["model-info", "--model", "salt", "--particles", str(n), "--classes", "1"]) == 0
    out = capsys.readouterr().out
    assert f"N={n} p=4 C=1 blocks=1" in out
    numbers = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert numbers["params"] == f"{params:,}" and numbers["flops_paper"] == f"{flops:,}"


@pytest.mark.workflow
def test_paper_config_trains_the_paper_sized_models(tmp_path):
    """The paper config's Top and QG SAL-T jobs get the spec of the paper's models (C = 1)."""
    work = copy_workflow(tmp_path, config=ROOT / "config.yaml")
    targets = [f"results/models/{d}/salt/kt/seed1/model.pt" for d in sorted(PAPER_COST)]
    out = snakemake(work, "-n", "-p", *targets, "--configfile", "workflow/configs/paper.yaml").stdout
    # the train rule's command opens its attempt log first, then runs `salt train`
    commands = [line for line in out.splitlines() if line.startswith("Shell command:") and " salt train " in line]
    assert len(commands) == 2, out[-3000:]
    for line in commands:
        dataset = line.split("--output-dir results/models/")[1].split("/")[0]
        spec = json.loads(line.split("--spec ")[1].split("' --train-config")[0].strip("'"))
        n, params, flops = PAPER_COST[dataset]
        assert spec["classes"] == 1 and spec["particles"] == n
        cost = model_cost(ModelSpec.from_dict(spec))
        assert (cost["params"], cost["flops_paper"]) == (params, flops)
