"""The paper's tables from metrics and benchmark files.

* accuracy (Table 1): per dataset × model × sort, accuracy, AUC and the dataset scheme's
  rejections, mean ± std over seeds ± the test set's statistical error, and the number of
  background jets behind each rejection;
* resources (Table 2): parameters, FLOPs (the paper's TF-profiler convention and the full
  count), latency, throughput and peak memory at the dataset's N, per device benchmarked;
* partitions (Table 7): the partition-count sweep, when the run has variants that differ
  only in `partitions` (otherwise the table is written with a note, so the DAG is fixed);
* summary: per dataset, the best model for each quantity with the runner-up, and the models
  that tie with it within the uncertainties;
* binary (Tables 3 and 4, Top tagging and quark-gluon): per two-class dataset, accuracy, AUC,
  the community's background rejection 1/eps_B at eps_S = 0.5 and 0.3, the paper's 1/FPR at
  TPR = 0.8, parameters and FLOPs.

Rejections follow salt.metrics: every number is named by its exact
definition, and an infinite rejection (no background jet passed) is shown as "> bound", the
bound being the mean with each such value replaced by its background count.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from salt.atomic import write_text
from salt.metrics import PART_WORKING_POINTS, aggregate, canonical_name, flatten, rej_key
from salt.report.inputs import (
    SORT_LATEX,
    Bench,
    Costs,
    Evaluation,
    class_index,
    dataset_label,
    group,
    ordered_datasets,
    ordered_sorts,
    model_costs,
    ordered_variants,
    partition_sweeps,
    sort_label,
    variant_label,
)
from salt.report.render import Column, Label, Stat, Table, to_csv, to_html, to_latex, to_markdown

log = logging.getLogger(__name__)

TABLES = ("accuracy", "resources", "partitions", "summary", "binary")
TITLES = {
    "accuracy": "Accuracy, AUC and background rejection per model and particle ordering",
    "resources": "Model size, FLOPs, latency, throughput and memory",
    "partitions": "SAL-T partition-count sweep",
    "summary": "Best model per quantity",
    "binary": "Top tagging and quark-gluon: accuracy, AUC, background rejection, parameters and FLOPs",
}
REFERENCE_BACKEND = "eager"
REFERENCE_PRECISION = "fp32"


# ----------------------------------------------------------------------------- metric definitions

NBkg = Callable[[dict[str, Any]], "int | None"]


@dataclass(frozen=True)
class MetricDef:
    """One displayed metric: its aggregate key (a '/'-path into compute_metrics' output), its
    formatting, and for a rejection the per-class parts (value path, background count) it
    averages, used to bound an infinite mean."""

    key: str
    header: str
    path: str
    digits: int
    scale: float = 1.0
    parts: tuple[tuple[str, NBkg], ...] = ()
    latex: str | None = None
    primary: bool = False  # the scheme's headline rejection (summary and partition tables)

    def column(self) -> Column:
        return Column(self.key, self.header, "stat", self.digits, self.scale, self.latex)

    def background_column(self) -> Column:
        return Column(f"{self.key}_nbkg", f"{self.header}: bkg jets")

    @property
    def is_rejection(self) -> bool:
        return bool(self.parts)


def _path_count(path: str) -> NBkg:
    return lambda flat: flat.get(path)


ACCURACY = MetricDef("accuracy", "Accuracy (%)", "accuracy", 2, 100.0, latex=r"Accuracy (\%)")
AUC_MACRO = MetricDef("auc", "AUC", "auc_macro", 4)


def _hls4ml(names: Sequence[str]) -> list[MetricDef]:
    idx = class_index(names)
    q, wzt = idx["q"], [idx["w"], idx["z"], idx["t"]]
    defs = [ACCURACY, AUC_MACRO]
    for eff in (0.5, 0.8):
        rk = rej_key(eff)
        parts = tuple((f"rej_vs_gq/{n}/{rk}", _path_count(f"rej_vs_gq/{n}/n_bkg")) for n in wzt)
        defs.append(MetricDef(f"{rk}_wzt", f"Rej@{eff:g} (W,Z,t)", f"rej_avg_wzt/{rk}", 1, parts=parts,
                              primary=eff == 0.8))
    legacy = tuple((f"rej_vs_gq/{n}/rej_legacy", _path_count(f"rej_vs_gq/{n}/n_bkg")) for n in [q, *wzt])
    defs.append(MetricDef("rej80_qwzt_legacy", "Rej@0.8 legacy (q,W,Z,t)", "rej_avg_qwzt_legacy", 1, parts=legacy))
    return defs


def _jetclass(names: Sequence[str]) -> list[MetricDef]:
    defs = [ACCURACY, MetricDef("auc", "AUC (OvO)", "auc_macro_ovo", 4)]
    wps = {canonical_name(k): v for k, v in PART_WORKING_POINTS.items()}
    for name in names:
        canon = canonical_name(name)
        if canon == "qcd":
            continue
        eff = wps.get(canon, 0.5)
        rk = rej_key(eff)
        path = f"rej_vs_qcd/{name}/{rk}"
        defs.append(MetricDef(f"{rk}_{canon}", f"{name} Rej@{eff:g}", path, 1,
                              parts=((path, _path_count(f"rej_vs_qcd/{name}/n_bkg")),)))
    return defs


def _binary(names: Sequence[str]) -> list[MetricDef]:
    defs = [ACCURACY, MetricDef("auc", "AUC", "auc", 4)]
    for eff in (0.3, 0.5, 0.8):
        rk = rej_key(eff)
        parts = ((f"rej_signal/{rk}", _path_count("rej_signal/n_bkg")),)
        defs.append(MetricDef(rk, f"Rej@{eff:g}", f"rej_signal/{rk}", 1, parts=parts, primary=eff == 0.8))
    return defs


def _generic(names: Sequence[str]) -> list[MetricDef]:
    defs = [ACCURACY, AUC_MACRO]
    for eff in (0.5, 0.8):
        rk = rej_key(eff)
        parts = tuple((f"rej_ovr/{n}/{rk}", _ovr_background(n)) for n in names)
        defs.append(MetricDef(f"{rk}_ovr", f"Rej@{eff:g} (one-vs-rest mean)", f"rej_ovr_mean/{rk}", 1,
                              parts=parts, primary=eff == 0.8))
    return defs


def _ovr_background(name: str) -> NBkg:
    def count(flat: dict[str, Any]) -> int | None:
        n, k = flat.get("n"), flat.get(f"class_counts/{name}")
        return None if n is None or k is None else int(n - k)
    return count


SCHEME_METRICS: dict[str, Callable[[Sequence[str]], list[MetricDef]]] = {
    "hls4ml": _hls4ml, "jetclass": _jetclass, "binary": _binary, "generic": _generic,
}
SCHEME_NOTES = {
    "hls4ml": ("Rej@x = 1/FPR at signal efficiency x, interpolated on the ROC curve. (W,Z,t): mean of W, Z and t, "
               "each against g ∪ q (PHAT-JeT's Avg Bkg Rej). Legacy: the SAL-T4HEP code's definition, the ROC point "
               "nearest 0.8 signal efficiency, averaged over q (against g), W, Z and t."),
    "jetclass": ("ParT convention (arXiv 2202.03772, Table 2): each signal against QCD with score p_X/(p_X+p_QCD), "
                 "rejection at 50 % signal efficiency (99 % for Hqql, 99.5 % for Tbl); AUC is the macro one-vs-one AUC."),
    "binary": "Rej@x = 1/FPR at signal efficiency x, interpolated on the ROC curve.",
    "generic": "Rej@x = 1/FPR at signal efficiency x (one class against the rest), averaged over the classes.",
}
COMMON_NOTE = ("Mean ± std (ddof = 1) over the seeds ± the test set's statistical error (mean over the seeds): "
               "binomial for accuracy, bootstrap over the test jets for AUC and rejection; '± —': one seed. "
               "The seed spread measures training, the statistical error what another test set of the same size "
               "would change; a difference smaller than both combined is not resolved. A rejection R rests on "
               "about (bkg jets)/R background jets passing the cut. At an efficiency the test set hits exactly, "
               "the rejection is that of the tightest cut reaching it. > x: no background jet passed at "
               "the working point in some seed, so the mean is unbounded; x is a lower bound. —: not defined.")


def scheme_of(evals: Sequence[Evaluation]) -> str:
    schemes = {e.scheme for e in evals}
    if len(schemes) > 1:
        by = {s: next(str(e.path) for e in evals if e.scheme == s) for s in schemes}
        raise ValueError(f"dataset {evals[0].dataset!r} mixes metric schemes: {by}")
    return schemes.pop()


def metric_defs(evals: Sequence[Evaluation]) -> list[MetricDef]:
    scheme = scheme_of(evals)
    return SCHEME_METRICS.get(scheme, _generic)(evals[0].class_names)


def primary_rejection(defs: Sequence[MetricDef]) -> MetricDef | None:
    return next((d for d in defs if d.primary), None)


# ----------------------------------------------------------------------------- statistics over seeds

def seed_stats(runs: Sequence[Evaluation], defs: Sequence[MetricDef]) -> dict[str, Stat]:
    """Mean ± std over the runs (seeds) of each metric, from salt.metrics.aggregate, with the
    test set's statistical error (the seeds' mean of salt.metrics' "stat"; None for metrics
    files written before it existed)."""
    agg = aggregate([r.metrics for r in runs])
    flats = [flatten(r.metrics) for r in runs]
    out: dict[str, Stat] = {}
    for d in defs:
        entry = agg.get(d.path)
        if entry is None or entry["n"] == 0 or entry["mean"] is None:
            out[d.key] = Stat(None, n=0)
            continue
        error = agg.get(f"stat/{d.path}", {}).get("mean")
        stat = Stat(entry["mean"], entry["std"], int(entry["n"]), error=error)
        if math.isinf(stat.mean) and d.is_rejection:
            stat.bound = _rejection_bound(flats, d)
        out[d.key] = stat
    return out


def _rejection_bound(flats: Sequence[dict[str, Any]], d: MetricDef) -> float | None:
    """Lower bound of an unbounded mean rejection: each infinite part replaced by its background count."""
    per_seed = []
    for flat in flats:
        values = []
        for value_path, n_bkg in d.parts:
            v = flat.get(value_path)
            if v is None:
                continue
            if math.isinf(float(v)):
                count = n_bkg(flat)
                if not count:
                    return None
                v = float(count)
            values.append(float(v))
        if values:
            per_seed.append(sum(values) / len(values))
    return sum(per_seed) / len(per_seed) if per_seed else None


def background_counts(runs: Sequence[Evaluation], defs: Sequence[MetricDef]) -> dict[str, str | None]:
    """Per rejection, the background jets of its comparisons ("1,595", or "798–1,595" where the
    averaged comparisons differ), from the first run (all seeds share the test set)."""
    flat = flatten(runs[0].metrics)
    out: dict[str, str | None] = {}
    for d in defs:
        if not d.is_rejection:
            continue
        counts = sorted({int(c) for c in (n_bkg(flat) for _, n_bkg in d.parts) if c is not None})
        out[f"{d.key}_nbkg"] = (None if not counts else f"{counts[0]:,}" if len(counts) == 1
                                else f"{counts[0]:,}–{counts[-1]:,}")
    return out


def _sort_cell(sort: str) -> Label:
    return Label(sort_label(sort), SORT_LATEX.get(sort), sort)


def _specs(evals: Sequence[Evaluation]) -> dict[str, dict[str, Any]]:
    return {e.variant: e.spec for e in evals}


# ----------------------------------------------------------------------------- Table 1: accuracy

BASE_COLUMNS = [Column("variant", "Variant", display=False), Column("model", "Model"), Column("sort", "Sort"),
                Column("n_seeds", "Seeds", "number", 0), Column("test_jets", "Test jets", "number", 0, display=False)]


def model_rows(ds: Sequence[Evaluation], defs: Sequence[MetricDef], costs: Costs) -> list[dict[str, Any]]:
    """One row per (variant, sort) of one dataset's runs: BASE_COLUMNS, the metrics over seeds, and
    the model's size (params, flops_paper)."""
    specs = _specs(ds)
    groups = group(ds, "variant", "sort")
    rows = []
    for variant in ordered_variants(specs.items()):
        for sort in ordered_sorts(s for v, s in groups if v == variant):
            runs = groups[(variant, sort)]
            row: dict[str, Any] = {
                "variant": variant, "model": variant_label(variant, specs[variant]), "sort": _sort_cell(sort),
                "n_seeds": len(runs), "test_jets": runs[0].metrics.get("n"),
            }
            row.update(seed_stats(runs, defs))
            row.update(background_counts(runs, defs))
            cost = costs[(runs[0].dataset, variant)]
            row.update(params=cost["params"], flops_paper=cost["flops_paper"])
            rows.append(row)
    return rows


def accuracy_tables(evals: Sequence[Evaluation], costs: Costs) -> list[Table]:
    tables = []
    for dataset in ordered_datasets(e.dataset for e in evals):
        ds = [e for e in evals if e.dataset == dataset]
        defs = metric_defs(ds)
        rows = model_rows(ds, defs, costs)
        scheme = scheme_of(ds)
        n_particles = ds[0].spec.get("particles")
        tables.append(Table(
            title=f"{dataset_label(dataset)} ({dataset}, N = {n_particles}, {scheme} metrics)",
            columns=BASE_COLUMNS + [d.column() for d in defs]
            + [d.background_column() for d in defs if d.is_rejection],
            rows=rows, notes=[SCHEME_NOTES.get(scheme, SCHEME_NOTES["generic"]), COMMON_NOTE],
            context={"dataset": dataset, "scheme": scheme}, label=f"accuracy-{dataset}"))
    if not tables:
        tables.append(Table("No evaluations", BASE_COLUMNS + [ACCURACY.column(), AUC_MACRO.column()],
                            notes=["No metrics files were given."], context={"dataset": None, "scheme": None},
                            label="accuracy"))
    return tables


# ----------------------------------------------------------------------------- Table 2: resources

RESOURCE_COLUMNS = [
    Column("variant", "Variant", display=False),
    Column("model", "Model"),
    Column("backend", "Backend"),
    Column("precision", "Precision"),
    Column("threads", "Threads"),
    Column("params", "Params", "number", 0),
    Column("flops_paper", "FLOPs (paper)", "number", 0),
    Column("flops", "FLOPs (full)", "number", 0),
    Column("batch", "Batch", "number", 0),
    Column("ns_per_jet", "ns/jet", "number", 1),
    Column("latency_us_batch1", "µs (batch 1)", "number", 1, latex=r"$\mu$s (batch 1)"),
    Column("jets_per_s", "Jets/s", "number", 0),
    Column("peak_memory_mb", "Peak MB", "number", 1),
    Column("latency_ms", "ms per batch", "number", 3, display=False),
    Column("latency_ms_p10", "ms per batch, p10", "number", 3, display=False),
    Column("latency_ms_p90", "ms per batch, p90", "number", 3, display=False),
    Column("latency_ms_batch1_p10", "ms (batch 1), p10", "number", 4, display=False),
    Column("latency_ms_batch1_p90", "ms (batch 1), p90", "number", 4, display=False),
]
RESOURCE_NOTE = ("FLOPs (paper): the authors' TF-profiler convention (TensorFlow's v1 profiler on the frozen Keras graph; the E/F einsum and "
                 "activations not counted); FLOPs (full): every multiply-add counted. ns/jet, jets/s and peak memory at "
                 "the largest batch measured (the Batch column; configurations not measured are named below); µs (batch 1): one jet per call. Threads 'all' = every core.")


def _threads_label(t: Any) -> str:
    return "all" if t in (0, "0") else str(t)


def device_name(b: Bench) -> str:
    info = b.device_info
    return str(info.get("gpu") or info.get("cpu") or b.device)


def bench_rows(b: Bench, label: str | None = None, cost: dict[str, Any] | None = None
               ) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of one benchmark file at the dataset's N: one per (backend, precision, threads). Its
    size columns show `cost` (the report's one value for the variant), else the file's own."""
    n = b.spec.get("particles")
    at_n = [r for r in b.results if r.get("particles") == n]
    notes = []
    name = label or variant_label(b.variant, b.spec)
    if not at_n:
        swept = sorted({r.get("particles") for r in b.results})
        notes.append(f"{b.path}: no measurement at the dataset's N = {n} (sweep covers {swept})")
    for s in b.skipped:
        if s.get("particles") == n:
            notes.append(f"{name}: {s.get('backend', 'eager')} {s.get('precision', 'fp32')}, batch {s.get('batch')}, "
                         f"threads {_threads_label(s.get('threads', 1))} not measured ({s.get('reason', 'no reason given')})")
    notes += [f"{name}: {note}" for note in b.notes]
    configs = sorted({(r.get("backend", "eager"), r.get("precision", "fp32"), r.get("threads", 1)) for r in at_n},
                     key=lambda c: (c[0] != REFERENCE_BACKEND, c[0], c[1] != REFERENCE_PRECISION, c[1], c[2] or 1e9))
    rows = []
    size = b.cost if cost is None else cost
    base = {"variant": b.variant, "model": name,
            "params": size.get("params"), "flops_paper": size.get("flops_paper"), "flops": size.get("flops")}
    for backend, precision, threads in configs or [(None, None, None)]:
        row = dict(base, backend=backend, precision=precision, threads=None if threads is None else _threads_label(threads))
        sel = [r for r in at_n if (r.get("backend", "eager"), r.get("precision", "fp32"), r.get("threads", 1))
               == (backend, precision, threads)]
        if sel:
            big = max(sel, key=lambda r: r["batch"])
            row.update(batch=big["batch"], ns_per_jet=big.get("ns_per_jet"), jets_per_s=big.get("jets_per_s"),
                       peak_memory_mb=big.get("peak_memory_mb"), latency_ms=big.get("latency_ms"),
                       latency_ms_p10=big.get("latency_ms_p10"), latency_ms_p90=big.get("latency_ms_p90"))
            one = next((r for r in sel if r["batch"] == 1), None)
            if one is not None:
                ms = one.get("latency_ms")
                row.update(latency_us_batch1=None if ms is None else ms * 1000.0,
                           latency_ms_batch1_p10=one.get("latency_ms_p10"),
                           latency_ms_batch1_p90=one.get("latency_ms_p90"))
        rows.append(row)
    return rows, notes


GPU_COLUMNS = [
    Column("variant", "Variant", display=False),
    Column("model", "Model"),
    Column("latency_us_batch1", "µs (batch 1)", "number", 1, latex=r"$\mu$s (batch 1)"),
    Column("best_batch1", "Backend (batch 1)"),
    Column("batch", "Largest batch", "number", 0),
    Column("latency_ms", "ms per batch", "number", 3),
    Column("ns_per_jet", "ns/jet", "number", 1),
    Column("best_largest", "Backend (largest batch)"),
]
GPU_NOTE = ("Per variant, the fastest configuration measured at the dataset's N: at batch 1 (one jet per call, "
            "µs) and at the largest batch measured (ms per batch and ns/jet), each naming its backend and "
            "precision (eager, cudagraph = CUDA graphs, compile = torch.compile; bf16 = autocast).")


def _fastest(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    timed = [r for r in rows if r.get("latency_ms") is not None]
    return min(timed, key=lambda r: r["latency_ms"]) if timed else None


def _config_name(r: dict[str, Any]) -> str:
    return f"{r.get('backend', 'eager')}, {r.get('precision', 'fp32')}"


def gpu_latency_table(dataset: str, device: str, benches: Sequence[Bench]) -> Table:
    """Table 2's GPU view: per variant the best backend at batch 1 and at its largest batch, on the named GPU."""
    rows = []
    for b in benches:
        n = b.spec.get("particles")
        at_n = [r for r in b.results if r.get("particles") == n]
        row: dict[str, Any] = {"variant": b.variant, "model": variant_label(b.variant, b.spec)}
        one = _fastest([r for r in at_n if r.get("batch") == 1])
        if one is not None:
            row.update(latency_us_batch1=one["latency_ms"] * 1000.0, best_batch1=_config_name(one))
        if at_n:
            largest = max(r["batch"] for r in at_n)
            big = _fastest([r for r in at_n if r["batch"] == largest])
            if big is not None:
                row.update(batch=largest, latency_ms=big["latency_ms"], ns_per_jet=big.get("ns_per_jet"),
                           best_largest=_config_name(big))
        rows.append(row)
    names = ", ".join(sorted({device_name(b) for b in benches}))
    n_particles = benches[0].spec.get("particles") if benches else None
    return Table(title=f"{dataset_label(dataset)} ({dataset}, N = {n_particles}) on {device}: {names}, "
                       "best backend per variant",
                 columns=GPU_COLUMNS, rows=rows, notes=[GPU_NOTE],
                 context={"dataset": dataset, "device": device, "device_name": names, "particles": n_particles,
                          "selection": "best backend"},
                 label=f"resources-{dataset}-{device}-best")


def resource_tables(benches: Sequence[Bench], costs: Costs) -> list[Table]:
    tables = []
    for dataset in ordered_datasets(b.dataset for b in benches):
        ds = [b for b in benches if b.dataset == dataset]
        for device in ordered_datasets(b.device for b in ds):
            on = [b for b in ds if b.device == device]
            order = ordered_variants((b.variant, b.spec) for b in on)
            rows: list[dict[str, Any]] = []
            notes = [RESOURCE_NOTE]
            for variant in order:
                for b in (b for b in on if b.variant == variant):
                    r, n = bench_rows(b, cost=costs[(b.dataset, b.variant)])
                    rows += r
                    notes += n
                    for note in n:
                        log.warning("resources table: %s", note)
            names = sorted({device_name(b) for b in on})
            n_particles = on[0].spec.get("particles")
            tables.append(Table(
                title=f"{dataset_label(dataset)} ({dataset}, N = {n_particles}) on {device}: {', '.join(names)}",
                columns=RESOURCE_COLUMNS, rows=rows, notes=list(dict.fromkeys(notes)),
                context={"dataset": dataset, "device": device, "device_name": ", ".join(names),
                         "particles": n_particles, "selection": "every configuration"},
                label=f"resources-{dataset}-{device}"))
            if device.startswith("cuda"):
                tables.append(gpu_latency_table(dataset, device, [b for v in order for b in on if b.variant == v]))
    if not tables:
        tables.append(Table("No benchmarks", RESOURCE_COLUMNS, notes=["No benchmark files were given."],
                            context={"dataset": None, "device": None, "device_name": None, "particles": None},
                            label="resources"))
    return tables


# ----------------------------------------------------------------------------- Table 7: partitions

PARTITION_COLUMNS = [
    Column("variant", "Variant"),
    Column("model", "Model", display=False),
    Column("partitions", "p", "number", 0),
    Column("sort", "Sort"),
    Column("n_seeds", "Seeds", "number", 0),
    Column("accuracy", "Accuracy (%)", "stat", 2, 100.0, latex=r"Accuracy (\%)"),
    Column("auc", "AUC", "stat", 4),
    Column("rejection", "Rejection", "stat", 1),
    Column("rejection_definition", "Rejection definition", display=False),
    Column("params", "Params", "number", 0),
    Column("flops_paper", "FLOPs (paper)", "number", 0),
    Column("flops", "FLOPs (full)", "number", 0),
]
NO_SWEEP = ("No partition sweep in this run: no variants that differ from each other only in `partitions` "
            "(add e.g. salt_p8: {model: salt, partitions: 8} to variants and runs).")


def partition_tables(evals: Sequence[Evaluation], costs: Costs) -> list[Table]:
    tables = []
    for dataset in ordered_datasets(e.dataset for e in evals):
        ds = [e for e in evals if e.dataset == dataset]
        specs = _specs(ds)
        defs = metric_defs(ds)
        rej = primary_rejection(defs)
        auc = next(d for d in defs if d.key == "auc")
        groups = group(ds, "variant", "sort")
        for sweep in partition_sweeps(specs):
            fam = specs[sweep[0]].get("model")
            rows = []
            for sort in ordered_sorts(s for v, s in groups if v in sweep):
                for variant in sweep:
                    runs = groups.get((variant, sort))
                    if not runs:
                        continue
                    stats = seed_stats(runs, [d for d in (ACCURACY, auc, rej) if d is not None])
                    cost = costs[(dataset, variant)]
                    rows.append({
                        "variant": variant, "model": fam, "partitions": specs[variant]["partitions"],
                        "sort": _sort_cell(sort), "n_seeds": len(runs), "accuracy": stats["accuracy"],
                        "auc": stats["auc"], "rejection": stats.get(rej.key) if rej else None,
                        "rejection_definition": rej.header if rej else None,
                        "params": cost.get("params"), "flops_paper": cost.get("flops_paper"), "flops": cost.get("flops"),
                    })
            columns = [c if c.key != "rejection" or rej is None else Column("rejection", rej.header, "stat", 1)
                       for c in PARTITION_COLUMNS]
            tables.append(Table(
                title=f"{dataset_label(dataset)} ({dataset}): {variant_label(fam, specs[sweep[0]])} "
                      f"with p = {', '.join(str(specs[v]['partitions']) for v in sweep)}",
                columns=columns, rows=rows, notes=[COMMON_NOTE],
                context={"dataset": dataset}, label=f"partitions-{dataset}-{fam}"))
    if not tables:
        tables.append(Table("Partition sweep", PARTITION_COLUMNS, notes=[NO_SWEEP], context={"dataset": None},
                            label="partitions"))
    return tables


# ----------------------------------------------------------------------------- summary

SUMMARY_COLUMNS = [
    Column("quantity", "Quantity"),
    Column("best", "Best"),
    Column("value", "Value", "stat", 2),
    Column("runner_up", "Runner-up"),
    Column("runner_up_value", "Runner-up value", "stat", 2),
    Column("tied", "Tied within uncertainty"),
    Column("candidates", "Compared", "number", 0),
]
SUMMARY_NOTE = ("Accuracy in %. Means over seeds ± std over seeds ± the test set's statistical error. 'Tied within "
                "uncertainty' lists the models whose mean differs from the best by less than the two combined "
                "uncertainties (each the statistical error and the seeds' std/sqrt(seeds), in quadrature): the "
                "test set does not tell them apart, and the best is marked '(tie)'. Latency: eager fp32 where "
                "measured.")


def uncertainty(stat: Stat) -> float | None:
    """The uncertainty of a mean over seeds: statistical error and std/sqrt(n), in quadrature."""
    parts = [stat.error] + ([stat.std / math.sqrt(stat.n)] if stat.std is not None and stat.n > 1 else [])
    known = [p for p in parts if p is not None]
    return math.sqrt(sum(p * p for p in known)) if known else None


@dataclass
class Candidate:
    name: str
    stat: Stat


def _best_row(quantity: str, candidates: list[Candidate], higher: bool, digits: int, scale: float = 1.0
              ) -> dict[str, Any] | None:
    """Rank by mean; an unbounded rejection ranks above every finite one."""
    valid = [c for c in candidates if c.stat.mean is not None and c.stat.n > 0]
    if not valid:
        return None
    valid.sort(key=lambda c: c.stat.mean, reverse=higher)
    for c in valid:
        c.stat.digits, c.stat.scale = digits, scale
    best = valid[0]
    second = valid[1] if len(valid) > 1 else None
    tied = [c.name for c in valid[1:] if _tie(best.stat, c.stat)]
    return {"quantity": quantity, "best": best.name + (" (tie)" if tied else ""), "value": best.stat,
            "runner_up": second.name if second else None, "runner_up_value": second.stat if second else None,
            "tied": "; ".join(tied) or None, "candidates": len(valid)}


def _tie(a: Stat, b: Stat) -> bool:
    """Equal means, or a gap within the combined uncertainty (finite means only)."""
    if a.mean == b.mean:
        return True
    if math.isinf(a.mean) or math.isinf(b.mean):
        return False
    ua, ub = uncertainty(a), uncertainty(b)
    if ua is None and ub is None:
        return False
    return abs(a.mean - b.mean) <= math.hypot(ua or 0.0, ub or 0.0)


def summary_tables(evals: Sequence[Evaluation], benches: Sequence[Bench], costs: Costs) -> list[Table]:
    tables = []
    for dataset in ordered_datasets([e.dataset for e in evals] + [b.dataset for b in benches]):
        ds = [e for e in evals if e.dataset == dataset]
        rows = []
        if ds:
            defs = metric_defs(ds)
            specs = _specs(ds)
            groups = group(ds, "variant", "sort")
            shown = [d for d in defs if d.key in ("accuracy", "auc") or d.primary]
            per_group = {k: seed_stats(v, shown) for k, v in groups.items()}
            for d in shown:
                cands = [Candidate(f"{variant_label(v, specs[v])}, {sort_label(s)}", Stat(**vars(st[d.key])))
                         for (v, s), st in per_group.items()]
                row = _best_row(f"{d.header} (highest)", cands, True, d.digits, d.scale)
                if row:
                    rows.append(row)
            for key, header in (("params", "Params"), ("flops_paper", "FLOPs, paper convention"), ("flops", "FLOPs, full")):
                cands = [Candidate(variant_label(v, specs[v]), Stat(costs[(dataset, v)][key], n=1))
                         for (v,) in group(ds, "variant")]
                row = _best_row(f"{header} (fewest)", cands, False, 0)
                if row:
                    rows.append(row)
        for device in ordered_datasets(b.device for b in benches if b.dataset == dataset):
            on = [b for b in benches if b.dataset == dataset and b.device == device]
            cands = []
            for b in on:
                rows_b, _ = bench_rows(b, cost=costs[(b.dataset, b.variant)])
                ref = [r for r in rows_b if r.get("backend") == REFERENCE_BACKEND and r.get("precision") == REFERENCE_PRECISION]
                for r in ref or rows_b:
                    if r.get("ns_per_jet") is not None:
                        name = r["model"] if ref else f"{r['model']} ({r['backend']}, {r['precision']})"
                        cands.append(Candidate(f"{name}, threads={r['threads']}" if device == "cpu" else name,
                                               Stat(r["ns_per_jet"], n=1)))
            row = _best_row(f"ns/jet on {device}, largest batch (lowest)", cands, False, 1)
            if row:
                rows.append(row)
        tables.append(Table(f"{dataset_label(dataset)} ({dataset})", SUMMARY_COLUMNS, rows,
                            notes=[SUMMARY_NOTE],
                            context={"dataset": dataset}, label=f"summary-{dataset}"))
    if not tables:
        tables.append(Table("Summary", SUMMARY_COLUMNS, notes=["No metrics or benchmark files were given."],
                            context={"dataset": None}, label="summary"))
    return tables


# ----------------------------------------------------------------------------- Tables 3, 4: binary taggers

BINARY_HEADERS = {  # the two conventions, named by what they are
    "rej50": ("1/εB @ εS = 0.5", r"$1/\varepsilon_B$ @ $\varepsilon_S = 0.5$"),
    "rej30": ("1/εB @ εS = 0.3", r"$1/\varepsilon_B$ @ $\varepsilon_S = 0.3$"),
    "rej80": ("1/FPR @ TPR = 0.8 (paper)", r"1/FPR @ TPR $= 0.8$ (paper)"),
}
BINARY_COST_COLUMNS = [Column("params", "Params", "number", 0), Column("flops_paper", "FLOPs (paper)", "number", 0)]
BINARY_NOTE = ("Signal: {signal}, background: {background}. 1/εB @ εS: the community's background rejection "
               "(as in the Top-tagging comparison, arXiv 1902.09914) at 50 % and 30 % signal efficiency; 1/FPR @ "
               "TPR = 0.8: the SAL-T paper's. All are 1/FPR interpolated on the ROC curve. FLOPs (paper): the "
               "TF-profiler convention of the resources table.")
NO_BINARY = "No two-class dataset (Top tagging, quark-gluon) in this run."


def binary_defs(names: Sequence[str]) -> list[MetricDef]:
    """The paper's Top/QG columns: accuracy, AUC and the three rejections in table order."""
    defs = {d.key: d for d in _binary(names)}
    rejections = [dataclasses.replace(defs[k], header=h, latex=t) for k, (h, t) in BINARY_HEADERS.items()]
    return [defs["accuracy"], defs["auc"], *rejections]


def binary_tables(evals: Sequence[Evaluation], costs: Costs) -> list[Table]:
    tables = []
    for dataset in ordered_datasets(e.dataset for e in evals):
        ds = [e for e in evals if e.dataset == dataset]
        if scheme_of(ds) != "binary":
            continue
        defs = binary_defs(ds[0].class_names)
        rows = model_rows(ds, defs, costs)
        tables.append(Table(
            title=f"{dataset_label(dataset)} ({dataset}, N = {ds[0].spec.get('particles')}, "
                  f"{ds[0].spec.get('classes')} output{'s' if ds[0].spec.get('classes') != 1 else ''})",
            columns=BASE_COLUMNS + [d.column() for d in defs] + BINARY_COST_COLUMNS
            + [d.background_column() for d in defs if d.is_rejection],
            rows=rows, notes=[BINARY_NOTE.format(signal=ds[0].class_names[1], background=ds[0].class_names[0]),
                              COMMON_NOTE], context={"dataset": dataset}, label=f"binary-{dataset}"))
    if not tables:
        tables.append(Table("Binary taggers", BASE_COLUMNS + BINARY_COST_COLUMNS, notes=[NO_BINARY],
                            context={"dataset": None}, label="binary"))
    return tables


# ----------------------------------------------------------------------------- writing

def build_tables(evals: Sequence[Evaluation], benches: Sequence[Bench]) -> dict[str, list[Table]]:
    costs = model_costs(evals, benches)
    return {
        "accuracy": accuracy_tables(evals, costs),
        "resources": resource_tables(benches, costs),
        "partitions": partition_tables(evals, costs),
        "summary": summary_tables(evals, benches, costs),
        "binary": binary_tables(evals, costs),
    }


def write_tables(tables: dict[str, list[Table]], output_dir: str | Path) -> list[Path]:
    """Each table as .csv, .md, .tex and .html (the report's view), written atomically."""
    out = Path(output_dir)
    written = []
    for name, sections in tables.items():
        title = TITLES.get(name, name)
        for ext, text in (("csv", to_csv(sections)), ("md", to_markdown(title, sections)),
                          ("tex", to_latex(title, sections)), ("html", to_html(title, sections))):
            path = out / f"{name}.{ext}"
            write_text(path, text)
            written.append(path)
    return written
