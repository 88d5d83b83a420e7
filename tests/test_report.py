"""`salt report`: tables and figures from metrics, predictions and benchmark files.

The inputs are written in the exact on-disk shapes the pipeline produces: metrics.json from the
real salt.metrics.compute_metrics on random labels and scores, predictions.npz beside it, bench
JSON in salt.bench's contract, and attention.npz from salt.attention on a real (untrained) SAL-T
model and random jets. Expected numbers are recomputed here from the arrays with numpy and
scikit-learn, not read back from the code under test.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from salt.cli import main as salt_main
from salt.metrics import compute_metrics, json_safe
from salt.attention import write_attention
from salt.evaluate import attention_maps, class_mean_attention
from salt.identity import RunIdentity
from salt.report.figures import FIGURES, Context, build_figures, pareto_front
from salt.report.inputs import ReportInputError, load_attention, load_bench, load_evaluation, partition_sweeps

CLASSES = ["g", "q", "W", "Z", "t"]
N = 16
SPECS = {
    "transformer": {"model": "transformer", "partitions": 4},
    "linformer": {"model": "linformer", "partitions": 4},
    "salt": {"model": "salt", "partitions": 4},
    "salt_p8": {"model": "salt", "partitions": 8},
}
STRENGTH = {"transformer": 1.0, "linformer": 0.6, "salt": 1.4, "salt_p8": 1.2}
COST = {"transformer": (2009, 76494), "linformer": (2521, 59598), "salt": (2176, 79566), "salt_p8": (2212, 95000)}
SORTS = ("kt", "pt")
SEEDS = (1, 2)


def full_spec(variant: str, classes: int = 5, particles: int = N) -> dict:
    return dict(SPECS[variant], particles=particles, features=3, classes=classes, d_model=16, d_ff=16, heads=4,
                blocks=1)


def cost_of(variant: str) -> dict:
    params, flops = COST[variant]
    return {"params": params, "flops_paper": flops, "flops": int(flops * 1.2)}


def write_metrics(root: Path, dataset: str, variant: str, sort: str, seed: int, labels: np.ndarray,
                  scores: np.ndarray, classes=CLASSES, n_particles: np.ndarray | None = None,
                  spec: dict | None = None) -> Path:
    d = root / f"results/eval/{dataset}/{variant}/{sort}/seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(labels, scores, classes, n_particles=n_particles)
    doc = {"identity": {"dataset": dataset, "variant": variant, "sort": sort, "seed": seed},
           "metrics": metrics, "spec": spec or full_spec(variant, len(classes)), "cost": cost_of(variant),
           "training": {"epochs": 3, "best_val_loss": 1.0}, "provenance": {"code_version": "test"},
           "dataset": {"manifest": f"results/shards/{dataset}/{sort}/manifest.json", "sort": sort,
                       "classes": list(classes), "features": ["pt", "deta", "dphi"], "n_particles": N,
                       "test_jets": len(labels)}}
    (d / "metrics.json").write_text(json.dumps(json_safe(doc), indent=1))
    arrays = {"labels": labels, "scores": scores.astype(np.float32)}
    if n_particles is not None:
        arrays["n_particles"] = n_particles
    np.savez_compressed(d / "predictions.npz", **arrays)
    return d / "metrics.json"


# Jets per class: 0.8 x (W, Z, t count) is never a whole number, so no ROC point sits exactly at
# TPR = 0.8 and np.interp (below) agrees with salt.metrics' tie rule.
CLASS_COUNTS = (101, 99, 101, 103, 96)


def random_run(variant: str, sort: str, seed: int):
    """Labels, softmax scores and multiplicities; the signal strength differs per variant and sort."""
    rng = np.random.default_rng([list(SPECS).index(variant), SORTS.index(sort), seed])
    labels = rng.permutation(np.repeat(np.arange(5), CLASS_COUNTS))
    n = len(labels)
    mult = rng.integers(3, 60, n)
    boost = STRENGTH[variant] * (1.3 if sort == "kt" else 1.0) * (0.5 + mult / 60)
    logits = rng.normal(size=(n, 5)) + boost[:, None] * np.eye(5)[labels]
    p = np.exp(logits)
    return labels, p / p.sum(axis=1, keepdims=True), mult


def bench_doc(variant: str, dataset: str = "pythia", device: str = "cpu", particles=(8, 16, 32),
              batches=(1, 64), spec_particles: int = N) -> dict:
    results = []
    for n in particles:
        for b in batches:
            ns = (40.0 + (n * n if variant == "transformer" else 6.0 * n)) * (20.0 if b == 1 else 1.0)
            ms = ns * b / 1e6
            results.append({"particles": n, "batch": b, "threads": 1, "backend": "eager", "precision": "fp32",
                            "latency_ms": ms, "latency_ms_p10": 0.95 * ms, "latency_ms_p90": 1.1 * ms,
                            "ns_per_jet": ns, "jets_per_s": 1e9 / ns, "peak_memory_mb": 5.0 + n * b / 100})
    return {"variant": variant, "dataset": dataset, "spec": full_spec(variant, particles=spec_particles),
            "device": device,
            "device_info": {"device": device, "cpu": "Test CPU 3000", "gpu": None, "driver": None, "cpu_count": 2},
            "cost": cost_of(variant), "results": results, "provenance": {"code_version": "test"}}


def write_bench(root: Path, doc: dict) -> Path:
    path = root / f"results/bench/{doc['device']}/{doc['dataset']}/{doc['variant']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return path


def write_attention_file(root: Path, dataset: str = "pythia", variant: str = "salt", sort: str = "kt",
                         seed: int = 1, jets: int = 80) -> Path:
    """attention.npz of an untrained model of the variant on random jets, where `salt evaluate`
    writes it for results/eval/{dataset}/{variant}/{sort}/seed{seed}."""
    import torch

    from salt.models import build_model

    rng = np.random.default_rng(0)
    counts = rng.integers(2, N + 1, jets)
    mask = np.arange(N)[None] < counts[:, None]
    x = rng.normal(size=(jets, N, 3)).astype(np.float32) * mask[..., None]
    labels = rng.integers(0, 5, jets)
    torch.manual_seed(0)
    model = build_model({"model": SPECS[variant]["model"], "particles": N, "classes": 5}).eval()
    maps = attention_maps(model, torch.from_numpy(x), torch.from_numpy(mask), labels, CLASSES,
                          RunIdentity(dataset, variant, sort, seed), per_class=10)
    path = root / f"results/eval/{dataset}/{variant}/{sort}/seed{seed}/attention.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_attention(path, maps)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """4 variants (salt_p8 = salt with p=8) × 2 sorts × 2 seeds on 'pythia', benchmarks on cpu."""
    root = tmp_path_factory.mktemp("report")
    arrays, metrics = {}, []
    for v in SPECS:
        for s in SORTS:
            for seed in SEEDS:
                y, p, mult = random_run(v, s, seed)
                arrays[(v, s, seed)] = (y, p, mult)
                metrics.append(write_metrics(root, "pythia", v, s, seed, y, p, n_particles=mult))
    bench = [write_bench(root, bench_doc(v)) for v in SPECS]
    return {"root": root, "arrays": arrays, "metrics": metrics, "bench": bench}


def tables(root: Path, metrics, bench, out: str = "tables") -> Path:
    args = ["report", "tables", "--metrics", *map(str, metrics), "--bench", *map(str, bench),
            "--output-dir", str(root / out)]
    assert salt_main(args) == 0
    return root / out


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def independent_rej80_wzt(y: np.ndarray, p: np.ndarray) -> float:
    """Mean over W, Z, t of 1/FPR at TPR 0.8, each against g ∪ q (np.interp on the sklearn ROC)."""
    values = []
    for k in (2, 3, 4):
        keep = np.isin(y, [0, 1, k])
        fpr, tpr, _ = roc_curve(y[keep] == k, p[keep, k])
        values.append(1.0 / np.interp(0.8, tpr, fpr))
    return float(np.mean(values))


# --------------------------------------------------------------------------- tables

def test_accuracy_table_is_mean_and_std_over_seeds(run):
    out = tables(run["root"], run["metrics"], run["bench"])
    rows = {(r["variant"], r["sort"]): r for r in read_csv(out / "accuracy.csv")}
    assert set(rows) == {(v, s) for v in SPECS for s in SORTS}
    for (v, s), row in rows.items():
        runs = [run["arrays"][(v, s, seed)] for seed in SEEDS]
        acc = [np.mean(p.argmax(1) == y) for y, p, _ in runs]
        auc = [np.mean([roc_auc_score(y == k, p[:, k]) for k in range(5)]) for y, p, _ in runs]
        rej = [independent_rej80_wzt(y, p) for y, p, _ in runs]
        assert row["n_seeds"] == "2" and row["dataset"] == "pythia" and row["scheme"] == "hls4ml"
        assert float(row["accuracy"]) == pytest.approx(np.mean(acc), abs=1e-12)
        assert float(row["accuracy_std"]) == pytest.approx(np.std(acc, ddof=1), abs=1e-12)
        assert float(row["auc"]) == pytest.approx(np.mean(auc), abs=1e-9)
        assert float(row["auc_std"]) == pytest.approx(np.std(auc, ddof=1), abs=1e-9)
        assert float(row["rej80_wzt"]) == pytest.approx(np.mean(rej), rel=1e-9)
        assert float(row["rej80_wzt_std"]) == pytest.approx(np.std(rej, ddof=1), rel=1e-6)
    # Markdown: accuracy in %, two decimals, mean ± std; the model label and ordering shown
    md = (out / "accuracy.md").read_text()
    y1, p1, _ = run["arrays"][("salt", "kt", 1)]
    y2, p2, _ = run["arrays"][("salt", "kt", 2)]
    acc = [100 * np.mean(p1.argmax(1) == y1), 100 * np.mean(p2.argmax(1) == y2)]
    expected = f"| SAL-T | kT | 2 | {np.mean(acc):.2f} ± {np.std(acc, ddof=1):.2f} |"
    assert expected in md
    assert "| SAL-T (salt_p8) | pT | 2 |" in md
    # paper order: Transformer, Linformer, SAL-T, then the p=8 variant
    order = [m.group(1) for m in re.finditer(r"^\| ([^|]+?) \| kT \|", md, re.M)]
    assert order == ["Transformer", "Linformer", "SAL-T", "SAL-T (salt_p8)"]
    html = (out / "accuracy.html").read_text()
    assert "<table>" in html and f"{np.mean(acc):.2f} ± {np.std(acc, ddof=1):.2f}" in html


def _check_latex(text: str, name: str) -> None:
    body = re.sub(r"\\[{}%&_#$]", "", text)  # escaped characters do not count
    body = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("%"))
    depth = 0
    for ch in body:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, f"{name}: closing brace without an opening one"
    assert depth == 0, f"{name}: unbalanced braces"
    assert body.count(r"$") % 2 == 0, f"{name}: unbalanced math mode"
    n_tables = body.count(r"\begin{table}")
    assert n_tables >= 1 and n_tables == body.count(r"\end{table}")
    assert body.count(r"\begin{tabular}") == body.count(r"\end{tabular}") == n_tables
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert body.count(rule) == n_tables, f"{name}: {rule} count"
    for block in re.findall(r"\\begin\{tabular\}\{([lr]+)\}(.*?)\\end\{tabular\}", body, re.S):
        spec, content = block
        lines = [ln for ln in content.strip().splitlines() if ln.rstrip().endswith(r"\\")]
        assert lines, f"{name}: empty tabular"
        for line in lines:
            if r"\multicolumn" in line:
                assert f"\\multicolumn{{{len(spec)}}}" in line
            else:
                assert line.count("&") == len(spec) - 1, f"{name}: row has wrong column count: {line}"
        # booktabs order: top rule, header, mid rule, rows, bottom rule
        assert content.index(r"\toprule") < content.index(r"\midrule") < content.index(r"\bottomrule")


def test_latex_tables_are_structurally_sound(run):
    out = tables(run["root"], run["metrics"], run["bench"])
    for name in ("accuracy", "resources", "partitions", "summary", "binary"):
        text = (out / f"{name}.tex").read_text()
        _check_latex(text, name)
    acc = (out / "accuracy.tex").read_text()
    assert r"$k_\mathrm{T}$" in acc and r"$\pm$" in acc and r"SAL-T (salt\_p8)" in acc


def test_partition_table_lists_the_sweep(run):
    out = tables(run["root"], run["metrics"], run["bench"])
    rows = read_csv(out / "partitions.csv")
    acc_rows = {(r["variant"], r["sort"]): r for r in read_csv(out / "accuracy.csv")}
    assert [(r["variant"], r["partitions"], r["sort"]) for r in rows] == [
        ("salt", "4", "kt"), ("salt_p8", "8", "kt"), ("salt", "4", "pt"), ("salt_p8", "8", "pt")]
    for r in rows:
        assert r["accuracy"] == acc_rows[(r["variant"], r["sort"])]["accuracy"]
        assert int(r["params"]) == COST[r["variant"]][0] and int(r["flops_paper"]) == COST[r["variant"]][1]
        assert r["rejection_definition"] == "Rej@0.8 (W,Z,t)"


def test_partition_table_without_a_sweep_is_written_with_a_note(run, tmp_path):
    metrics = [m for m in run["metrics"] if "/salt_p8/" not in str(m) and "/linformer/" not in str(m)]
    out = tables(tmp_path, metrics, [], out="t")
    with open(out / "partitions.csv") as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dataset,variant,model,partitions,sort")
    assert "No partition sweep" in (out / "partitions.md").read_text()
    tex = (out / "partitions.tex").read_text()
    assert r"\multicolumn{" in tex and "No partition sweep" in tex
    _check_latex(tex, "partitions")
    # no benchmarks: the resources table is still written, saying so
    assert "No benchmark files" in (out / "resources.md").read_text()


def test_resources_table_reads_the_dataset_n(run, tmp_path):
    short = bench_doc("linformer", particles=(32, 64))  # the sweep misses N = 16
    big_skipped = bench_doc("transformer")  # batch 64 at N skipped for memory: the row falls back to batch 1
    big_skipped["results"] = [r for r in big_skipped["results"] if (r["particles"], r["batch"]) != (N, 64)]
    big_skipped["skipped"] = [{"particles": N, "batch": 64, "threads": 1, "backend": "eager", "precision": "fp32",
                               "reason": "estimated peak memory 900 MB exceeds the budget of 800 MB"}]
    big_skipped["notes"] = ["onnxruntime is not installed"]
    bench = [p for p in run["bench"] if p.stem in ("salt", "salt_p8")]
    bench += [write_bench(tmp_path, short), write_bench(tmp_path, big_skipped)]
    out = tables(tmp_path, run["metrics"], bench, out="t")
    rows = {r["variant"]: r for r in read_csv(out / "resources.csv")}
    doc = bench_doc("salt")
    at_n = [r for r in doc["results"] if r["particles"] == N]
    big = max(at_n, key=lambda r: r["batch"])
    one = next(r for r in at_n if r["batch"] == 1)
    salt = rows["salt"]
    assert (salt["device"], salt["device_name"], salt["particles"]) == ("cpu", "Test CPU 3000", str(N))
    assert int(salt["batch"]) == big["batch"]
    assert float(salt["ns_per_jet"]) == pytest.approx(big["ns_per_jet"])
    assert float(salt["jets_per_s"]) == pytest.approx(big["jets_per_s"])
    assert float(salt["peak_memory_mb"]) == pytest.approx(big["peak_memory_mb"])
    assert float(salt["latency_us_batch1"]) == pytest.approx(one["latency_ms"] * 1000)
    assert (int(salt["params"]), int(salt["flops_paper"]), int(salt["flops"])) == tuple(cost_of("salt").values())
    assert rows["linformer"]["ns_per_jet"] == ""  # no measurement at N: missing, not zero
    md = (out / "resources.md").read_text()
    assert "| Linformer | — | — | — | 2,521 | 59,598 |" in md
    assert "no measurement at the dataset's N = 16" in md
    assert rows["transformer"]["batch"] == "1"
    assert ("Transformer: eager fp32, batch 64, threads 1 not measured (estimated peak memory 900 MB exceeds "
            "the budget of 800 MB)") in md
    assert "Transformer: onnxruntime is not installed" in md
    assert f"| SAL-T | eager | fp32 | 1 | 2,176 | 79,566 | {int(79566 * 1.2):,} | 64 |" in md


def test_infinite_rejection_is_shown_as_a_lower_bound(tmp_path):
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(5), 40)
    p = np.full((len(y), 5), 0.05)
    p[np.arange(len(y)), y] = 0.8  # perfect separation: no background passes any cut
    p += rng.uniform(0, 1e-3, p.shape)
    p /= p.sum(1, keepdims=True)
    m = write_metrics(tmp_path, "pythia", "salt", "kt", 1, y, p)
    out = tables(tmp_path, [m], [], out="t")
    n_bkg = int(np.isin(y, [0, 1]).sum())  # g ∪ q jets, the background of W, Z and t
    row = read_csv(out / "accuracy.csv")[0]
    assert row["rej80_wzt"] == "inf" and row["rej80_wzt_std"] == ""
    assert f"> {n_bkg:.1f}" in (out / "accuracy.md").read_text()
    assert r"$>$ " + f"{n_bkg:.1f}" in (out / "accuracy.tex").read_text()


def test_undefined_metric_is_a_dash(tmp_path):
    # a binary test set with only background jets: accuracy exists, AUC and rejections do not
    y = np.zeros(30, dtype=int)
    p = np.random.default_rng(1).uniform(0, 1, 30)
    m = write_metrics(tmp_path, "top", "salt", "kt", 1, y, p, classes=["QCD", "top"],
                      spec=full_spec("salt", classes=1))
    out = tables(tmp_path, [m], [], out="t")
    row = read_csv(out / "accuracy.csv")[0]
    assert row["scheme"] == "binary" and row["auc"] == "" and row["rej80"] == ""
    assert float(row["accuracy"]) == pytest.approx(np.mean(p <= 0.5))
    line = next(ln for ln in (out / "accuracy.md").read_text().splitlines() if ln.startswith("| SAL-T"))
    assert line.endswith("| — | — | — | — | 30 | 30 | 30 |")  # three rejections, each on the 30 background jets


def _rejection_at(is_sig: np.ndarray, score: np.ndarray, eff: float) -> float:
    fpr, tpr, _ = roc_curve(is_sig, score)
    return 1.0 / np.interp(eff, tpr, fpr)


def test_binary_table_has_the_paper_columns_per_dataset(run, tmp_path):
    """Top and QG each get a section: accuracy, AUC, 1/eps_B at 0.5 and 0.3, 1/FPR at 0.8, params,
    FLOPs, mean and std over seeds; a multi-class dataset gets none."""
    metrics, expected = [], {}
    for dataset, classes in (("top", ["QCD", "top"]), ("qg", ["gluon", "quark"])):
        for seed in SEEDS:
            rng = np.random.default_rng([len(dataset), seed])
            y = rng.permutation(np.repeat([0, 1], [151, 149]))  # 0.8 * 149, 0.5 * 149, 0.3 * 149: no exact ROC point
            p = 1 / (1 + np.exp(-(rng.normal(size=len(y)) + 0.5 * (2 * y - 1))))
            metrics.append(write_metrics(tmp_path, dataset, "salt", "kt", seed, y, p, classes=classes,
                                         spec=full_spec("salt", classes=1)))
            for eff in (0.3, 0.5, 0.8):
                expected.setdefault((dataset, eff), []).append(_rejection_at(y == 1, p, eff))
            expected.setdefault((dataset, "auc"), []).append(roc_auc_score(y, p))
    out = tables(tmp_path, metrics + run["metrics"][:1], [], out="t")
    rows = {r["dataset"]: r for r in read_csv(out / "binary.csv")}
    assert sorted(rows) == ["qg", "top"]  # no section for the 5-class pythia run
    for dataset, row in rows.items():
        for key, eff in (("rej30", 0.3), ("rej50", 0.5), ("rej80", 0.8)):
            values = expected[(dataset, eff)]
            assert float(row[key]) == pytest.approx(np.mean(values), rel=1e-6)
            assert float(row[f"{key}_std"]) == pytest.approx(np.std(values, ddof=1), rel=1e-6)
        assert float(row["auc"]) == pytest.approx(np.mean(expected[(dataset, "auc")]), rel=1e-9)
        assert int(row["params"]) == COST["salt"][0] and int(row["flops_paper"]) == COST["salt"][1]
    md = (out / "binary.md").read_text()
    assert "Top tagging (top, N = 16, 1 output)" in md and "Quark-gluon (qg, N = 16, 1 output)" in md
    assert "Signal: top, background: QCD." in md and "Signal: quark, background: gluon." in md
    assert "| 1/εB @ εS = 0.5 | 1/εB @ εS = 0.3 | 1/FPR @ TPR = 0.8 (paper) | Params | FLOPs (paper) |" in md
    _check_latex((out / "binary.tex").read_text(), "binary")
    none = tables(tmp_path, run["metrics"][:1], [], out="none")
    assert "No two-class dataset" in (none / "binary.md").read_text()


def test_summary_names_the_best_model(run):
    out = tables(run["root"], run["metrics"], run["bench"])
    rows = {r["quantity"]: r for r in read_csv(out / "summary.csv")}
    means = {(v, s): np.mean([np.mean(run["arrays"][(v, s, seed)][1].argmax(1) == run["arrays"][(v, s, seed)][0])
                              for seed in SEEDS]) for v in SPECS for s in SORTS}
    best = max(means, key=means.get)
    labels = {"transformer": "Transformer", "linformer": "Linformer", "salt": "SAL-T", "salt_p8": "SAL-T (salt_p8)"}
    acc = rows["Accuracy (%) (highest)"]
    assert acc["best"] == f"{labels[best[0]]}, {dict(kt='kT', pt='pT')[best[1]]}"
    assert float(acc["value"]) == pytest.approx(means[best])
    assert rows["Params (fewest)"]["best"] == "Transformer"
    assert rows["FLOPs, paper convention (fewest)"]["best"] == "Linformer"
    assert rows["ns/jet on cpu, largest batch (lowest)"]["best"].startswith("Linformer")


def test_inputs_say_what_they_are_in_their_content(tmp_path, run):
    doc = json.loads(run["metrics"][0].read_text())
    moved = tmp_path / "copied/elsewhere.json"  # the path says nothing: the file does
    moved.parent.mkdir()
    moved.write_text(json.dumps(doc))
    e = load_evaluation(moved)
    assert (e.dataset, e.variant, e.sort, e.seed) == ("pythia", "transformer", "kt", 1) == tuple(doc["identity"].values())
    bench = tmp_path / "renamed.json"
    bench.write_text(json.dumps(bench_doc("salt", device="cuda")))
    b = load_bench(bench)
    assert (b.dataset, b.variant, b.device) == ("pythia", "salt", "cuda")
    a = load_attention(write_attention_file(tmp_path))
    assert (a.identity.dataset, a.identity.variant, a.identity.sort, a.identity.seed) == ("pythia", "salt", "kt", 1)


def test_bad_inputs_name_the_file_and_key(tmp_path, run):
    doc = json.loads(run["metrics"][0].read_text())
    path = tmp_path / "metrics.json"
    old = {k: v for k, v in doc.items() if k != "identity"}  # written before files named their run
    path.write_text(json.dumps(old))
    with pytest.raises(ReportInputError, match=r"metrics\.json: no 'identity' entry"):
        load_evaluation(path)
    path.write_text(json.dumps(dict(doc, identity={k: v for k, v in doc["identity"].items() if k != "seed"})))
    with pytest.raises(ReportInputError, match=r"metrics\.json: 'identity' has no 'seed' entry"):
        load_evaluation(path)
    doc["dataset"]["sort"] = "pt"
    path.write_text(json.dumps(doc))
    with pytest.raises(ReportInputError, match="sorted by 'pt', but its identity says sort 'kt'"):
        load_evaluation(path)
    bench = bench_doc("salt")
    del bench["results"][3]["batch"]
    path = write_bench(tmp_path, bench)
    with pytest.raises(ReportInputError, match=r"salt\.json: results\[3\] has no 'batch' entry"):
        load_bench(path)
    attention = tmp_path / "attention.npz"
    attention.write_text("not an archive")
    with pytest.raises(ReportInputError, match=r"attention\.npz: not an attention file written by salt evaluate"):
        load_attention(attention)
    assert not (tmp_path / "t").exists()


def test_a_model_size_two_files_disagree_on_is_refused_naming_both(run, tmp_path, capsys):
    doc = bench_doc("salt")
    doc["cost"]["flops"] += 1  # a benchmark of another model than the one evaluated
    other = write_bench(tmp_path, doc)
    bench = [p for p in run["bench"] if p.stem != "salt"] + [other]
    args = ["report", "tables", "--metrics", *map(str, run["metrics"]), "--bench", *map(str, bench),
            "--output-dir", str(tmp_path / "t")]
    assert salt_main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"salt report: error: {other}: flops = {cost_of('salt')['flops'] + 1}") and "\n" not in err
    assert "results/eval/pythia/salt/" in err and "Traceback" not in err
    assert not (tmp_path / "t").exists()


def test_partition_sweeps_group_variants_differing_only_in_p():
    specs = {v: full_spec(v) for v in SPECS}
    specs["lin8"] = dict(full_spec("linformer"), partitions=8)
    specs["salt_d8"] = dict(full_spec("salt"), d_model=8, partitions=2)  # differs in more than p
    specs["tr8"] = dict(full_spec("transformer"), partitions=8)  # p means nothing for full attention
    assert partition_sweeps(specs) == [["linformer", "lin8"], ["salt", "salt_p8"]]


# --------------------------------------------------------------------------- figures

class FixedMaps:
    """A model whose first block's attention weights are given: (B, H, N, K) per jet."""

    def __init__(self, maps: np.ndarray):
        self.maps = maps

    def attention_maps(self, x, mask):
        import torch

        return [torch.from_numpy(self.maps[x[:, 0, 0].long().numpy()])]


def test_pareto_front_and_masked_attention_mean():
    import torch

    pts = [(1.0, 50.0), (2.0, 49.0), (2.0, 55.0), (3.0, 60.0), (4.0, 58.0), (5.0, 61.0)]
    assert pareto_front(pts) == [0, 2, 3, 5]
    maps = np.zeros((4, 1, 3, 2), dtype=np.float32)
    maps[0, 0] = [[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]]
    maps[1, 0] = [[0.0, 1.0], [0.9, 0.1], [0.7, 0.3]]
    maps[2, 0] = 0.25  # class 1
    maps[3, 0] = 0.75  # class 0, beyond the 2 jets per class asked for
    mask = np.array([[True, True, False], [True, False, False], [True, True, True], [True, True, True]])
    x = torch.arange(4.0)[:, None, None].expand(4, 3, 1)  # each jet carries its index to FixedMaps
    mean, jets = class_mean_attention(FixedMaps(maps), x, torch.from_numpy(mask), np.array([0, 0, 1, 0]), 3,
                                      per_class=2, batch=3)
    assert jets.tolist() == [2, 1, 0]
    assert mean[0, 0, 0] == pytest.approx([0.5, 0.5])
    assert mean[0, 0, 1] == pytest.approx([0.5, 0.5])  # only jet 0 has particle 1
    assert np.isnan(mean[0, 0, 2]).all()  # no jet of class 0 has particle 2
    assert mean[1] == pytest.approx(np.full((1, 3, 2), 0.25))
    assert np.isnan(mean[2]).all()  # no jets of class 2


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_are_written_from_every_input(run, tmp_path, capsys):
    attention = write_attention_file(tmp_path)
    out = tmp_path / "figures/pythia"
    args = ["report", "figures", "--dataset", "pythia", "--metrics", *map(str, run["metrics"]),
            "--bench", *map(str, run["bench"]), "--attention", str(attention), "--output-dir", str(out)]
    assert salt_main(args) == 0
    status = json.loads(capsys.readouterr().out)
    assert status == {name: "ok" for name in FIGURES}
    for name in FIGURES:
        png, pdf = out / f"{name}.png", out / f"{name}.pdf"
        assert _is_png(png) and png.stat().st_size > 10_000, name
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000, name
    assert not list(out.glob(".*.part"))


def test_figure_status_is_ok_with_data(run, tmp_path):
    from salt.report.inputs import load_benches, load_evaluations

    ctx = Context("pythia", load_evaluations(run["metrics"]), load_benches(run["bench"]))
    status = build_figures(ctx, tmp_path, [n for n in FIGURES if n != "attention_maps"])
    assert set(status.values()) == {"ok"}, status


def test_figures_without_inputs_say_no_data(tmp_path, caplog):
    # one run, no multiplicity, no predictions, no benchmarks, no model
    y = np.arange(50) % 5
    p = np.random.default_rng(0).dirichlet(np.ones(5), 50)
    m = write_metrics(tmp_path, "pythia", "salt", "kt", 1, y, p)
    (m.parent / "predictions.npz").unlink()
    from salt.report.inputs import load_evaluations

    with caplog.at_level(logging.WARNING):
        status = build_figures(Context("pythia", load_evaluations([m]), []), tmp_path / "f")
    assert status["accuracy_per_sort"] == "ok" and status["accuracy_vs_flops"] == "ok"
    for name in ("roc", "accuracy_vs_multiplicity", "latency_vs_n", "attention_maps"):
        assert status[name].startswith("no data"), (name, status[name])
        assert any(name in r.getMessage() and "no data" in r.getMessage() for r in caplog.records), name
        assert _is_png(tmp_path / f"f/{name}.png") and (tmp_path / f"f/{name}.pdf").stat().st_size > 0


def test_figures_refuse_files_of_another_dataset(run, tmp_path, capsys):
    other = write_metrics(tmp_path, "hls4ml", "salt", "kt", 1, *random_run("salt", "kt", 1)[:2])
    args = ["report", "figures", "--dataset", "pythia", "--metrics", str(run["metrics"][0]), str(other),
            "--output-dir", str(tmp_path / "f")]
    assert salt_main(args) == 1  # a user error: one line naming the files, no traceback
    err = capsys.readouterr().err
    assert "salt report: error: --dataset pythia: these files belong to another dataset" in err and str(other) in err
    assert "Traceback" not in err
    assert not (tmp_path / "f").exists()


def test_json_with_infinity_literal_is_read(tmp_path):
    # salt evaluate may write Python's Infinity literal instead of json_safe's "inf": both are read
    y = np.repeat(np.arange(5), 20)
    p = np.full((100, 5), 0.05)
    p[np.arange(100), y] = 0.8
    m = write_metrics(tmp_path, "pythia", "salt", "kt", 1, y, p)
    text = m.read_text()
    assert '"inf"' in text
    m.write_text(text.replace('"inf"', "Infinity"))
    e = load_evaluation(m)
    assert math.isinf(e.metrics["rej_avg_wzt"]["rej80"])


# --------------------------------------------------------------------------- the Snakemake rules

@pytest.mark.slow
def test_report_rules_and_snakemake_report(tmp_path):
    """The `tables` and `figures` rules on the tiny config's inputs (written here, so no training
    runs), then `snakemake --report`: every table and figure is in it with its caption rendered."""
    from test_workflow import copy_workflow, snakemake

    work = copy_workflow(tmp_path)
    for v in ("salt", "transformer"):
        for s in ("kt", "pt"):
            y, p, mult = random_run(v, s, 1)
            write_metrics(work, "pythia", v, s, 1, y, p, n_particles=mult)
            write_attention_file(work, "pythia", v, s)  # the figure reads salt on kt's, seed 1
        write_bench(work, bench_doc(v, particles=(16, 32), batches=(1, 32)))
    only = ("--allowed-rules", "tables", "figures", "all")
    snakemake(work, *only)
    log = (work / "logs/report/figures_pythia.log").read_text()
    assert json.loads(log[log.index("{"):]) == {name: "ok" for name in FIGURES}
    dry = snakemake(work, "-n", *only)
    assert "Nothing to be done" in dry.stdout + dry.stderr  # a fixed set of outputs, all present
    proc = snakemake(work, "--report", "report.html", *only)
    html = (work / "report.html").read_text()
    tables_added = {"accuracy", "resources", "partitions", "summary", "binary"}
    for name in tables_added:
        assert f"Adding {name}.html" in proc.stderr
    for name in FIGURES:
        assert f"Adding {name}.png" in proc.stderr
    for caption in ("Partition-count sweep", "SAL-T attention maps", "Time per jet against the number of particles",
                    "ROC curves</strong> on pythia", "benchmark sweep\\n(N = 16, 32)"):
        assert caption in html, caption
    assert "{{" not in html  # every Jinja expression rendered


# --------------------------------------------------------------------------- statistical errors

def _with_stat(path: Path, stat: dict[str, float]) -> Path:
    """A metrics file given a hand-set test-set error per metric path (salt.metrics' "stat")."""
    doc = json.loads(path.read_text())
    doc["metrics"]["stat"] = stat
    path.write_text(json.dumps(doc))
    return path


def _stat_run(root: Path, error: float) -> list[Path]:
    files = []
    for v in ("salt", "linformer"):
        for seed in SEEDS:
            y, p, _ = random_run(v, "kt", seed)
            stat = {"accuracy": error * seed, "auc_macro": error / 10, "rej_avg_wzt/rej80": 100 * error}
            files.append(_with_stat(write_metrics(root, "pythia", v, "kt", seed, y, p), stat))
    return files


def test_tables_show_the_statistical_error_beside_the_seed_spread(tmp_path):
    files = _stat_run(tmp_path, 0.004)
    out = tables(tmp_path, files, [])
    row = next(r for r in read_csv(out / "accuracy.csv") if r["variant"] == "salt")
    assert float(row["accuracy_stat"]) == pytest.approx(0.004 * np.mean(SEEDS))  # the seeds' mean
    assert float(row["rej80_wzt_stat"]) == pytest.approx(0.4)
    acc = [np.mean(p.argmax(1) == y) for y, p, _ in (random_run("salt", "kt", s) for s in SEEDS)]
    cell = f"{100 * np.mean(acc):.2f} ± {100 * np.std(acc, ddof=1):.2f} ± {100 * 0.004 * np.mean(SEEDS):.2f}"
    assert cell in (out / "accuracy.md").read_text()
    # every rejection names its background: g ∪ q jets of the test set
    assert row["rej80_wzt_nbkg"] == f"{CLASS_COUNTS[0] + CLASS_COUNTS[1]:,}"
    # a metric without an error (older metrics files): mean ± std only
    assert row["rej50_wzt_stat"] == ""


def test_summary_marks_models_tied_within_uncertainty(tmp_path):
    clear = {r["quantity"]: r for r in read_csv(tables(tmp_path, _stat_run(tmp_path / "a", 1e-6), [], "a")
                                                / "summary.csv")}
    tied = {r["quantity"]: r for r in read_csv(tables(tmp_path, _stat_run(tmp_path / "b", 0.2), [], "b")
                                               / "summary.csv")}
    acc = "Accuracy (%) (highest)"
    assert clear[acc]["best"] == "SAL-T, kT" and clear[acc]["tied"] == ""  # strength 1.4 against 0.6
    assert tied[acc]["best"] == "SAL-T, kT (tie)" and tied[acc]["tied"] == "Linformer, kT"


def test_accuracy_vs_multiplicity_is_class_balanced(run):
    from salt.report.figures import multiplicity_stats
    from salt.report.inputs import load_evaluations

    evals = [e for e in load_evaluations(run["metrics"]) if (e.variant, e.sort) == ("salt", "kt")]
    stats = {(b["lo"], b["hi"]): b for b in multiplicity_stats(evals)}
    lo, hi = 25.0, 40.0
    per_seed = []
    for seed in SEEDS:
        y, p, mult = run["arrays"][("salt", "kt", seed)]
        sel = (mult >= lo) & (mult < hi)
        per_seed.append(np.mean([np.mean(p[sel & (y == k)].argmax(1) == k) for k in range(5)
                                 if (sel & (y == k)).sum() >= 10]))
    b = stats[(lo, hi)]
    assert b["balanced"] and b["mean"] == pytest.approx(np.mean(per_seed))
    assert b["std"] == pytest.approx(np.std(per_seed, ddof=1))
    y, _, mult = run["arrays"][("salt", "kt", SEEDS[0])]
    sel = (mult >= lo) & (mult < hi)
    assert b["per_class"] == {name: int((sel & (y == k)).sum()) for k, name in enumerate(CLASSES)}
    assert 0 < b["error"] < 0.2
