"""The whole pipeline on a tiny config: a full run, idempotence, and what re-runs after an edit.

The workflow is copied into a temporary directory (Snakefile, workflow/, profiles/, salt/ sources
as the rules' inputs) and run with the `salt` of this environment; the tiny config makes every
stage real but small.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from workflowrun import copy_workflow, snakemake

from salt.data.record import JET_FIELDS
from salt.data.shards import read_attrs, read_shard

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def planned_jobs(workdir: Path) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run would execute."""
    out = snakemake(workdir, "-n").stdout
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m:
            continue
        wc = re.search(r"wildcards: (.*)", block)
        wildcards = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        jobs.append((m.group(1), wildcards))
    return [(r, w) for r, w in jobs if r != "all"]


@contextmanager
def edited(path: Path, change: Callable[[str], str]) -> Iterator[None]:
    """`path` with `change` applied to its text, restored afterwards."""
    original = path.read_text()
    path.write_text(change(original))
    try:
        yield
    finally:
        path.write_text(original)


def planned_rules_after_editing(work: Path, source: str) -> Counter:
    with edited(work / source, lambda text: text + "\n# an edit\n"):
        return Counter(r for r, _ in planned_jobs(work))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("workflow"))
    snakemake(work)
    return work


def test_full_run_writes_tables_and_figures(finished_run):
    work = finished_run
    for table in ("accuracy", "resources"):
        for ext in ("md", "csv", "tex"):
            assert (work / f"results/tables/{table}.{ext}").stat().st_size > 0
    for fig in ("roc", "accuracy_per_sort", "latency_vs_n"):
        for ext in ("png", "pdf"):
            assert (work / f"results/figures/pythia/{fig}.{ext}").stat().st_size > 0
    assert len(list((work / "resources/raw/pythia").glob("*.root"))) == 5
    metrics = list((work / "results/eval").rglob("metrics.json"))
    assert len(metrics) == 4  # (salt, transformer) x (kt, pt)


def test_second_run_has_nothing_to_do(finished_run):
    assert planned_jobs(finished_run) == []


def test_editing_one_variant_reruns_only_that_variant(finished_run, tmp_path):
    work = finished_run
    config = yaml.safe_load((work / "config.yaml").read_text())
    original = (work / "config.yaml").read_text()
    config["variants"]["salt"]["d_model"] = 8
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        jobs = planned_jobs(work)
    finally:
        (work / "config.yaml").write_text(original)
    rules = Counter(r for r, _ in jobs)
    assert rules["train"] == 2 and rules["evaluate"] == 2 and rules["bench"] == 1, jobs
    assert {w.get("variant") for r, w in jobs if r in ("train", "evaluate", "bench")} == {"salt"}
    assert rules["tables"] == 1 and rules["figures"] == 1
    assert not {"generate", "preprocess", "manifest"} & set(rules), jobs


def test_editing_training_code_reruns_training_not_data(finished_run):
    rules = planned_rules_after_editing(finished_run, "salt/train.py")
    assert rules["train"] == 4 and rules["evaluate"] == 4
    assert not {"generate", "preprocess", "manifest", "bench"} & set(rules), rules


def test_editing_the_kinematics_reruns_generation(finished_run):
    rules = planned_rules_after_editing(finished_run, "salt/data/kinematics.py")
    assert rules["generate"] == 5 and rules["preprocess"] == 10, rules   # pythia.py imports it


def test_editing_the_cost_model_reruns_what_reports_flops_not_training(finished_run):
    rules = planned_rules_after_editing(finished_run, "salt/models/cost.py")
    assert rules["evaluate"] == 4 and rules["bench"] == 2 and rules["tables"] == 1 and rules["figures"] == 1, rules
    assert not {"generate", "preprocess", "manifest", "train"} & set(rules), rules


def test_settings_that_cannot_change_a_result_rerun_nothing(finished_run):
    def change(text: str) -> str:
        config = yaml.safe_load(text)
        config["train"]["checkpoint_minutes"] = 0.5
        config["dataset"]["pythia"]["step"] = 7
        return yaml.safe_dump(config)

    with edited(finished_run / "config.yaml", change):
        assert planned_jobs(finished_run) == []


def test_html_report_has_every_table_and_figure(finished_run):
    proc = snakemake(finished_run, "--report", "report.html")
    assert (finished_run / "report.html").stat().st_size > 100_000
    for table in ("accuracy", "resources", "partitions", "summary", "binary"):
        assert f"Adding {table}.html" in proc.stderr
    for fig in ("roc", "accuracy_per_sort", "accuracy_vs_multiplicity", "latency_vs_n", "accuracy_vs_flops",
                "attention_maps"):
        assert f"Adding {fig}.png" in proc.stderr
    assert "{{" not in (finished_run / "report.html").read_text()  # every caption's Jinja rendered


def test_adding_a_clustering_sort_runs_only_its_jobs(finished_run):
    # last in the module: it builds the new sort's shards, which the restored config does not use
    work = finished_run
    original = (work / "config.yaml").read_text()
    config = yaml.safe_load(original)
    config["runs"].append({"variants": ["salt"], "sorts": ["lund_kt"]})
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        jobs = planned_jobs(work)
        snakemake(work, "results/shards/pythia/lund_kt/manifest.json")
    finally:
        (work / "config.yaml").write_text(original)
    rules = Counter(r for r, _ in jobs)
    assert rules["preprocess"] == 5 and rules["manifest"] == 1, jobs   # one job per raw file, then one manifest
    assert rules["train"] == 1 and rules["evaluate"] == 1, jobs          # salt x lund_kt x one seed
    assert {w["sort"] for _, w in jobs if "sort" in w} == {"lund_kt"}, jobs
    assert not {"generate", "bench"} & set(rules), jobs

    shard = next((work / "results/shards/pythia/lund_kt/train").glob("*.h5"))
    assert read_attrs(shard)["sort"] == "lund_kt"
    d = read_shard(shard)
    n = d["jet"][:, JET_FIELDS.index("n_particles")].astype(int)
    kept = d["mask"].sum(axis=1)
    assert np.array_equal(kept, np.minimum(n, d["mask"].shape[1]))
    slots = np.arange(d["mask"].shape[1])
    # the key is n - position in the whole jet's order, 0 on padding; a jet longer than N keeps its
    # N hardest (truncation: pt), so its keys fall strictly but may skip values
    short = n <= d["mask"].shape[1]
    assert np.array_equal(d["sort_value"][short], np.where(d["mask"], n[:, None] - slots, 0)[short])
    value = np.where(d["mask"], d["sort_value"], -1)
    assert np.all(np.diff(value[~short], axis=1) < 0) and np.all(value[~short] <= n[~short, None])
    assert np.all(d["sort_value"][~d["mask"]] == 0)
