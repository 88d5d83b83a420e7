"""The paper's figures for one dataset, as PDF and PNG, headless.

Every figure is always written: when its inputs are absent (no predictions, no multiplicity
information, no SAL-T model) it says so on the canvas and in the log, so the workflow's
outputs stay a fixed set and a missing piece is visible rather than silently skipped.

Labels say "Simulation" and name the data set; they never claim an experiment.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402

from salt.atomic import atomic_path  # noqa: E402
from salt.attention import AttentionMaps  # noqa: E402
from salt.metrics import aggregate, canonical_name, roc_curves  # noqa: E402
from salt.report.inputs import (  # noqa: E402
    Bench,
    Costs,
    Evaluation,
    dataset_label,
    group,
    model_costs,
    ordered_sorts,
    ordered_variants,
    preferred_sort,
    sample_kind,
    sort_label,
    variant_label,
)

log = logging.getLogger(__name__)

FIGURES = ("roc", "accuracy_per_sort", "accuracy_vs_multiplicity", "latency_vs_n", "accuracy_vs_flops",
           "attention_maps")
FORMATS = ("pdf", "png")
DPI = 150

# Petroff's colour-blind-safe sequence (the one mplhep's CMS style starts from), extended to 10.
PALETTE = ["#3f90da", "#ffa90e", "#bd1f01", "#94a4a2", "#832db6", "#a96b59", "#e76300", "#b9ac70", "#717581",
           "#92dadd"]
SORT_MARKERS = {"kt": "o", "pt": "s", "deltaR": "^", "ca_depth": "P", "lund_kt": "X", "radius": "D", "none": "v"}
SORT_MATH = {"kt": r"$k_\mathrm{T}$", "pt": r"$p_\mathrm{T}$", "deltaR": r"$\Delta R$", "lund_kt": r"Lund $k_\mathrm{T}$"}
BACKEND_LINES = {"eager": "-", "compile": "--", "onnxruntime": ":", "cudagraph": "-.", "fused": (0, (5, 1, 1, 1, 1, 1))}

STYLE = {
    **hep.style.CMS,
    "font.size": 13,
    "axes.linewidth": 1.0,
    "xtick.major.size": 6, "xtick.minor.size": 3, "ytick.major.size": 6, "ytick.minor.size": 3,
    "figure.figsize": (7.0, 5.5),
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "legend.fontsize": "x-small",
    "axes.titlesize": "small",
}


def sort_text(sort: str | None) -> str:
    return SORT_MATH.get(str(sort), sort_label(str(sort)))


class NoData(Exception):
    """A figure's inputs are absent; the message says which."""


@dataclass
class Context:
    """What every figure of one dataset needs to label itself consistently."""

    dataset: str
    evals: list[Evaluation]
    benches: list[Bench]
    attention: AttentionMaps | None = None  # from the evaluation of the run whose maps are drawn
    colours: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    costs: Costs = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.costs = model_costs(self.evals, self.benches)
        specs = {e.variant: e.spec for e in self.evals}
        specs.update({b.variant: b.spec for b in self.benches if b.variant not in specs})
        for i, v in enumerate(ordered_variants(specs.items())):
            self.colours[v] = PALETTE[i % len(PALETTE)]
            self.labels[v] = variant_label(v, specs[v])

    @property
    def particles(self) -> int | None:
        for item in [*self.evals, *self.benches]:
            return item.spec.get("particles")
        return None


def experiment_label(ax: plt.Axes, ctx: Context, extra: str = "") -> None:
    """'Simulation' on the left, the data set on the right, above the axes (no experiment claimed)."""
    ax.set_title(sample_kind(ctx.dataset), loc="left", fontstyle="italic", fontsize="small")
    right = dataset_label(ctx.dataset)
    if ctx.particles:
        right += f", N = {ctx.particles}"
    if extra:
        right += f", {extra}"
    ax.set_title(right, loc="right", fontsize="x-small")


def _grid(n: int, width: float = 4.6, height: float = 4.0) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = n if n <= 3 else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


# ----------------------------------------------------------------------------- ROC curves

ROC_PREFIX = {"hls4ml": "vs_gq/", "jetclass": "vs_qcd/", "binary": "signal/"}


def _roc_title(key: str, names: Sequence[str], scheme: str) -> str:
    kind, sig = key.split("/", 1)
    canon = {canonical_name(n): n for n in names}
    if kind == "vs_gq":
        return f"{sig} vs {canon['g']}" if canonical_name(sig) == "q" else f"{sig} vs {canon['g']} + {canon['q']}"
    if kind == "vs_qcd":
        return f"{sig} vs {canon['qcd']}"
    if kind == "signal":
        return f"{sig} vs {next(n for n in names if n != sig)}"
    return f"{sig} vs rest"


def fig_roc(ctx: Context) -> plt.Figure:
    """Background rejection vs signal efficiency, one panel per signal class, one curve per model."""
    sort = preferred_sort(e.sort for e in ctx.evals)
    if sort is None:
        raise NoData("no evaluations")
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    seeds: set[int] = set()
    names: list[str] = []
    scheme = "generic"
    for (variant,), runs in group([e for e in ctx.evals if e.sort == sort], "variant").items():
        run = next((r for r in runs if r.predictions.exists()), None)
        if run is None:
            log.warning("roc: no predictions.npz beside %s", runs[0].path)
            continue
        with np.load(run.predictions) as npz:
            labels, scores = npz["labels"], npz["scores"]
        names, scheme = run.class_names, run.scheme
        curves[variant] = roc_curves(labels, scores, names, scheme=scheme)
        seeds.add(run.seed)
    if not curves:
        raise NoData(f"no predictions.npz for the {sort_label(sort)}-sorted runs")
    prefix = ROC_PREFIX.get(scheme, "ovr/")
    keys = []
    for c in curves.values():
        keys += [k for k in c if k.startswith(prefix) and k not in keys]
    order = {n: i for i, n in enumerate(names)}
    keys.sort(key=lambda k: order.get(k.split("/", 1)[1], len(order)))
    if not keys:
        raise NoData("the test sets lack the classes the ROC comparisons need")
    fig, axes = _grid(len(keys))
    for ax, key in zip(axes, keys):
        for variant in ctx.labels:
            if variant not in curves or key not in curves[variant]:
                continue
            fpr, tpr = (np.asarray(a) for a in curves[variant][key])
            keep = fpr > 0
            ax.plot(tpr[keep], 1.0 / fpr[keep], color=ctx.colours[variant], label=ctx.labels[variant], lw=1.6)
        for eff in (0.5, 0.8):
            ax.axvline(eff, color="0.6", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(bottom=1.0)
        ax.set_xlabel("Signal efficiency")
        ax.set_ylabel("Background rejection 1/FPR")
        ax.text(0.95, 0.95, _roc_title(key, names, scheme), transform=ax.transAxes, ha="right", va="top",
                fontsize="small", bbox={"facecolor": "white", "edgecolor": "none", "pad": 2})
    axes[0].legend(loc="lower left")
    experiment_label(axes[0], ctx)
    fig.suptitle(f"{sort_text(sort)}-sorted inputs, seed {', '.join(map(str, sorted(seeds)))}", fontsize="small",
                 y=0.995)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- accuracy per sort

def _accuracy_stats(runs: Sequence[Evaluation]) -> tuple[float, float, int]:
    a = aggregate([r.metrics for r in runs])["accuracy"]
    return a["mean"], (a["std"] if a["n"] > 1 and a["std"] is not None else 0.0), a["n"]


def fig_accuracy_per_sort(ctx: Context) -> plt.Figure:
    """Grouped bars: accuracy of each model under each ordering, ± std over seeds."""
    groups = group(ctx.evals, "variant", "sort")
    if not groups:
        raise NoData("no evaluations")
    variants = [v for v in ctx.labels if any(k[0] == v for k in groups)]
    sorts = ordered_sorts(s for _, s in groups)
    width = 0.8 / len(sorts)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(variants) + 2), 5.5))
    lows, highs, seeds = [], [], set()
    for j, sort in enumerate(sorts):
        xs, ys, es = [], [], []
        for i, v in enumerate(variants):
            if (v, sort) in groups:
                mean, std, n = _accuracy_stats(groups[(v, sort)])
                xs.append(i + (j - (len(sorts) - 1) / 2) * width)
                ys.append(100 * mean)
                es.append(100 * std)
                seeds.add(n)
        if xs:
            ax.bar(xs, ys, width * 0.92, yerr=es, capsize=3, label=sort_text(sort),
                   color=PALETTE[j % len(PALETTE)], edgecolor="black", linewidth=0.5)
            lows += [y - e for y, e in zip(ys, es)]
            highs += [y + e for y, e in zip(ys, es)]
    span = max(max(highs) - min(lows), 0.5)
    ax.set_ylim(max(0.0, min(lows) - 0.6 * span), min(100.0, max(highs) + 0.5 * span))
    ax.set_xticks(range(len(variants)), [ctx.labels[v] for v in variants], rotation=20, ha="right")
    ax.tick_params(axis="x", which="minor", bottom=False, top=False)
    ax.set_ylabel("Accuracy (%)")
    n_text = "/".join(str(n) for n in sorted(seeds))
    ax.legend(title=f"ordering (± std, {n_text} seed{'s' if max(seeds) > 1 else ''})", ncol=len(sorts), loc="upper left")
    ax.text(0.99, 0.02, "y axis zoomed, not from 0", transform=ax.transAxes, ha="right", va="bottom",
            fontsize="xx-small", color="0.4")
    experiment_label(ax, ctx)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- accuracy vs multiplicity (Fig. 3)

def multiplicity_stats(runs: Sequence[Evaluation]) -> list[dict[str, Any]]:
    """Per multiplicity bin: edges, the class-balanced accuracy (the mean of the per-class
    accuracies; plain accuracy for metrics files without per-class bins) as mean and std over the
    seeds that have jets there, the seeds' mean binomial error, and the first seed's count and
    jets per class."""
    balanced = any(isinstance(b, dict) and "balanced_accuracy" in b
                   for r in runs for b in (r.metrics.get("multiplicity") or {}).values())
    key = "balanced_accuracy" if balanced else "accuracy"
    bins: dict[tuple[float, float], dict[str, Any]] = {}
    for r in runs:
        mult = r.metrics.get("multiplicity") or {}
        for b in mult.values():
            if not isinstance(b, dict):
                continue
            per_class = {name: c["count"] for name, c in (b.get("per_class") or {}).items()}
            entry = bins.setdefault((b["lo"], b["hi"]), {"lo": b["lo"], "hi": b["hi"], "acc": [], "err": [],
                                                         "count": b["count"], "per_class": per_class})
            if b.get(key) is not None:
                entry["acc"].append(b[key])
                if b.get(f"{key}_error") is not None:
                    entry["err"].append(b[f"{key}_error"])
    out = []
    for (lo, hi), e in sorted(bins.items()):
        acc = np.asarray(e["acc"], dtype=float)
        out.append({"lo": lo, "hi": hi, "count": e["count"], "per_class": e["per_class"], "n": len(acc),
                    "balanced": balanced, "mean": float(acc.mean()) if len(acc) else None,
                    "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                    "error": float(np.mean(e["err"])) if e["err"] else 0.0})
    return out


def fig_accuracy_vs_multiplicity(ctx: Context) -> plt.Figure:
    """Class-balanced accuracy per constituent-multiplicity bin (the paper's Figure 3), ± the seeds'
    std and the test set's binomial error in quadrature, the jets per class below, N marked.

    Balanced, because the classes' multiplicities differ (few top jets are small, most large
    jets are g or t): a plain accuracy per bin would show the class mix, not the jet size."""
    sort = preferred_sort(e.sort for e in ctx.evals)
    runs_by_variant = group([e for e in ctx.evals if e.sort == sort], "variant")
    stats = {v: multiplicity_stats(runs) for (v,), runs in runs_by_variant.items()}
    stats = {v: s for v, s in stats.items() if any(b["mean"] is not None for b in s)}
    if not stats:
        raise NoData("no multiplicity information in the metrics (evaluate without n_particles?)")
    used = [(b["lo"], b["hi"]) for s in stats.values() for b in s if b["mean"] is not None]
    lo_edge, hi_edge = min(u[0] for u in used), max(u[1] for u in used)
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(7.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    variants = [v for v in ctx.labels if v in stats]
    for i, v in enumerate(variants):
        pts = [b for b in stats[v] if b["mean"] is not None]
        centres = np.array([(b["lo"] + b["hi"]) / 2 for b in pts])
        width = np.array([b["hi"] - b["lo"] for b in pts])
        shift = (i - (len(variants) - 1) / 2) * min(0.6 / len(variants), 0.15) * width
        yerr = [100 * math.hypot(b["std"], b["error"]) for b in pts]
        ax.errorbar(centres + shift, [100 * b["mean"] for b in pts], yerr=yerr,
                    fmt="o-", ms=4.5, lw=0.8, capsize=2, elinewidth=1, color=ctx.colours[v], label=ctx.labels[v])
    first = stats[variants[0]]
    inside = [b for b in first if b["lo"] >= lo_edge and b["hi"] <= hi_edge]
    edges = [inside[0]["lo"]] + [b["hi"] for b in inside]
    for edge in edges:
        ax.axvline(edge, color="0.85", lw=0.8, zorder=0)
    total = sum(b["count"] for b in first) or 1
    classes = list(dict.fromkeys(name for b in inside for name in b["per_class"]))
    if classes:  # stacked: which classes fill each bin
        base = np.zeros(len(inside))
        for k, name in enumerate(classes):
            frac = np.array([b["per_class"].get(name, 0) / total for b in inside])
            axc.stairs(base + frac, edges, baseline=base, fill=True, alpha=0.6, label=name,
                       color=PALETTE[k % len(PALETTE)])
            base += frac
        axc.legend(ncol=len(classes), fontsize="xx-small", loc="upper right")
    else:
        axc.stairs([b["count"] / total for b in inside], edges, color="0.3", fill=True, alpha=0.35)
    if ctx.particles and lo_edge < ctx.particles < hi_edge:
        for a in (ax, axc):
            a.axvline(ctx.particles, color="0.2", ls="--", lw=1.0)
        ax.text(ctx.particles, 0.98, f" N = {ctx.particles}: longer jets are cut", transform=ax.get_xaxis_transform(),
                va="top", ha="left", fontsize="x-small")
    axc.set_ylabel("Jet fraction", fontsize="x-small")
    axc.set_xlabel("Constituents per jet")
    ax.set_ylabel("Class-balanced accuracy (%)" if first[0]["balanced"] else "Accuracy (%)")
    ax.set_xlim(lo_edge, hi_edge)
    n = sorted({len(r) for r in runs_by_variant.values()})
    seeds = "/".join(map(str, n))
    ax.legend(title=f"{sort_text(sort)}-sorted; error: std over {seeds} seed(s) and binomial, in quadrature",
              loc="best", title_fontsize="x-small")
    experiment_label(ax, ctx)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- latency vs N

def _reference_rows(b: Bench) -> list[dict[str, Any]]:
    """fp32 results (or all if none) at the smallest thread count: one line per backend."""
    rows = [r for r in b.results if r.get("precision", "fp32") == "fp32"] or list(b.results)
    threads = sorted({r.get("threads", 1) for r in rows}, key=lambda t: (t == 0, t))
    return [r for r in rows if r.get("threads", 1) == threads[0]] if threads else []


def fig_latency_vs_n(ctx: Context) -> plt.Figure:
    """Time per jet against particles per jet, log-log, with ∝N and ∝N² guides; rows = devices,
    columns = batch 1 and the largest batch."""
    rows_by = [(b, _reference_rows(b)) for b in ctx.benches]
    rows_by = [(b, r) for b, r in rows_by if any(x.get("ns_per_jet") for x in r)]
    order = list(ctx.labels)
    rows_by.sort(key=lambda item: order.index(item[0].variant) if item[0].variant in order else len(order))
    if not rows_by:
        raise NoData("no benchmark results")
    devices = list(dict.fromkeys(b.device for b, _ in rows_by))
    columns = {}  # per device (row): batch 1 and the largest batch measured there
    for device in devices:
        batches = sorted({r["batch"] for b, rs in rows_by if b.device == device for r in rs})
        columns[device] = sorted({batches[0], batches[-1]})
    width = max(len(c) for c in columns.values())
    fig, axes = plt.subplots(len(devices), width, figsize=(5.2 * width, 4.4 * len(devices)), squeeze=False)
    for i, device in enumerate(devices):
        for ax in axes[i][len(columns[device]):]:
            ax.set_axis_off()
        for j, batch in enumerate(columns[device]):
            ax = axes[i][j]
            at_n0: list[float] = []
            ns_all: list[int] = []
            for b, rows in rows_by:
                if b.device != device:
                    continue
                for backend in dict.fromkeys(r.get("backend", "eager") for r in rows):
                    pts = sorted((r for r in rows if r["batch"] == batch and r.get("backend", "eager") == backend
                                  and r.get("ns_per_jet")), key=lambda r: r["particles"])
                    if not pts:
                        continue
                    n = np.array([r["particles"] for r in pts], dtype=float)
                    y = np.array([r["ns_per_jet"] for r in pts], dtype=float)
                    label = ctx.labels.get(b.variant, b.variant) + ("" if backend == "eager" else f" ({backend})")
                    ax.plot(n, y, linestyle=BACKEND_LINES.get(backend, "-"), marker="o", ms=3.5,
                            color=ctx.colours.get(b.variant, "black"), label=label)
                    p10 = [r.get("latency_ms_p10") for r in pts]
                    p90 = [r.get("latency_ms_p90") for r in pts]
                    if all(v is not None for v in p10 + p90):
                        ax.fill_between(n, np.array(p10) * 1e6 / batch, np.array(p90) * 1e6 / batch,
                                        color=ctx.colours.get(b.variant, "black"), alpha=0.15, lw=0)
                    at_n0.append(y[0])
                    ns_all += list(n)
            if not at_n0:
                ax.text(0.5, 0.5, f"no data at batch {batch}", transform=ax.transAxes, ha="center")
                continue
            n_grid = np.geomspace(min(ns_all), max(ns_all), 50)
            y0 = float(np.exp(np.mean(np.log(at_n0))))
            for power, text in ((1, r"$\propto N$"), (2, r"$\propto N^2$")):
                guide = y0 * (n_grid / n_grid[0]) ** power
                ax.plot(n_grid, guide, color="0.5", ls=(0, (4, 3)), lw=1)
                ax.annotate(text, (n_grid[-1], guide[-1]), xytext=(3, 0), textcoords="offset points",
                            fontsize="x-small", color="0.4", va="center")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ticks = sorted(set(ns_all))
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlim(ticks[0] / 1.15, ticks[-1] * 1.45)
            ax.set_xlabel("Particles per jet N")
            ax.set_ylabel("Time per jet (ns)")
            name = next((b.device_info.get("gpu") or b.device_info.get("cpu") for b, _ in rows_by
                         if b.device == device), None) or device
            ax.text(0.03, 0.97, f"{device}: {name}\nbatch {batch}", transform=ax.transAxes, va="top",
                    fontsize="xx-small")
    handles, labels = [], []
    for ax in axes.flat:  # one legend for all panels, below them, so it never hides a point
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    experiment_label(axes[0][0], ctx)
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 4),
               fontsize="small")
    return fig


# ----------------------------------------------------------------------------- accuracy vs FLOPs

def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not beaten by one with fewer (or equal) FLOPs and higher accuracy, by FLOPs."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def fig_accuracy_vs_flops(ctx: Context) -> plt.Figure:
    """Accuracy against FLOPs (the paper's counting convention), every model × ordering, Pareto front marked."""
    groups = group(ctx.evals, "variant", "sort")
    pts, meta = [], []
    for (v, s), runs in groups.items():
        cost = ctx.costs[(runs[0].dataset, v)]
        flops = cost["flops_paper"] or cost["flops"]
        if not flops:
            log.warning("accuracy_vs_flops: %s has no FLOP count", runs[0].path)
            continue
        mean, std, _ = _accuracy_stats(runs)
        pts.append((float(flops), 100 * mean))
        meta.append((v, s, 100 * std))
    if not pts:
        raise NoData("no evaluations with a FLOP count")
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for (x, y), (v, s, e) in zip(pts, meta):
        ax.errorbar(x, y, yerr=e, fmt=SORT_MARKERS.get(s, "o"), color=ctx.colours[v], ms=6, capsize=2)
    front = pareto_front(pts)
    fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
    ax.step(fx + [fx[-1] * 1.5], fy + [fy[-1]], where="post", color="0.35", ls="--", lw=1, label="Pareto front")
    ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="0.2", lw=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per jet (paper convention)")
    ax.set_ylabel("Accuracy (%)")
    handles = [plt.Line2D([], [], color=ctx.colours[v], marker="o", ls="", label=ctx.labels[v])
               for v in ctx.labels if any(m[0] == v for m in meta)]
    handles += [plt.Line2D([], [], color="0.3", marker=SORT_MARKERS.get(s, "o"), ls="", mfc="none", label=sort_text(s))
                for s in ordered_sorts(m[1] for m in meta)]
    handles.append(plt.Line2D([], [], color="0.35", ls="--", label="Pareto front"))
    ax.legend(handles=handles, loc="lower right", ncol=2)
    span = max(fy) - min(y for _, y in pts)
    ax.set_ylim(min(y - e for (_, y), (_, _, e) in zip(pts, meta)) - 0.3 * max(span, 0.3),
                max(y + e for (_, y), (_, _, e) in zip(pts, meta)) + 0.3 * max(span, 0.3))
    experiment_label(ax, ctx)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- attention maps

def fig_attention_maps(ctx: Context) -> plt.Figure:
    """SAL-T's attention weights per head on kT-sorted test jets, averaged over jets of each class."""
    if ctx.attention is None:
        raise NoData("no SAL-T model on kT-sorted jets in this run (needs variant salt, sort kt)")
    a = ctx.attention
    per_class = a.by_class()
    maps = {cls: m for cls, (m, _) in per_class.items()}
    if not maps:
        raise NoData(f"{a.identity.variant} on {a.identity.dataset}: no test jets in the attention maps")
    classes = list(maps)
    heads, _, keys = maps[classes[0]].shape
    square = a.key_axis == "particle"
    # data-driven colour range: a trained head's structure is a few per cent around uniform (1/keys)
    vmin = min(float(np.nanmin(m)) for m in maps.values())
    vmax = max(float(np.nanmax(m)) for m in maps.values())
    panel_w, panel_h = (2.6, 2.6) if square else (3.6, 1.25 + 0.08 * keys)
    fig, axes = plt.subplots(len(classes), heads, figsize=(panel_w * heads + 1.2, panel_h * len(classes) + 0.9),
                             squeeze=False, sharex=True, sharey=True)
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    image = None
    for i, cls in enumerate(classes):
        for h in range(heads):
            ax = axes[i][h]
            m = maps[cls][h]
            shown = m if square else m.T  # (keys, queries): partitions on y, particles on x
            image = ax.imshow(shown, aspect="auto", origin="lower", cmap=cmap, vmin=vmin, vmax=vmax,
                              interpolation="nearest")
            ax.tick_params(which="both", top=False, right=False, labelsize="xx-small")
            ax.minorticks_off()
            if not square:
                ax.set_yticks(range(keys))
            if i == 0:
                ax.set_title(f"head {h + 1}", fontsize="x-small")
            if h == 0:
                ax.set_ylabel(f"{cls} ({per_class[cls][1]} jets)\n" + ("key particle" if square else "partition"),
                              fontsize="xx-small")
            if i == len(classes) - 1:
                ax.set_xlabel("query particle (sorted)", fontsize="xx-small")
    fig.colorbar(image, ax=axes, shrink=0.8, pad=0.02,
                 label=f"mean attention weight (uniform = 1/{keys} = {1 / keys:.3g})")
    spec = a.spec
    fig.suptitle(f"{dataset_label(ctx.dataset)}: {variant_label(a.identity.variant, spec)}, "
                 f"p = {spec.get('partitions')}, block 1 of {a.blocks}, "
                 f"{sort_text(a.identity.sort)}-sorted test jets ({sample_kind(ctx.dataset)})", fontsize="small")
    return fig


# ----------------------------------------------------------------------------- building

BUILDERS: dict[str, Callable[[Context], plt.Figure]] = {
    "roc": fig_roc,
    "accuracy_per_sort": fig_accuracy_per_sort,
    "accuracy_vs_multiplicity": fig_accuracy_vs_multiplicity,
    "latency_vs_n": fig_latency_vs_n,
    "accuracy_vs_flops": fig_accuracy_vs_flops,
    "attention_maps": fig_attention_maps,
}


def no_data_figure(name: str, reason: str, ctx: Context) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    ax.set_axis_off()
    ax.text(0.5, 0.55, f"{name}: no data", ha="center", va="center", fontsize="large", fontweight="bold")
    ax.text(0.5, 0.35, reason, ha="center", va="center", fontsize="small", wrap=True)
    experiment_label(ax, ctx)
    return fig


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """Write stem.pdf and stem.png atomically (the format is given explicitly: the temp name has no suffix)."""
    written = []
    for fmt in FORMATS:
        path = stem.with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight",
                        metadata={"Creator": "salt report figures"} if fmt == "pdf" else None)
        written.append(path)
    plt.close(fig)
    return written


def build_figures(ctx: Context, output_dir: str | Path, names: Sequence[str] = FIGURES) -> dict[str, str]:
    """Write every figure; returns {figure: 'ok' or the no-data reason}."""
    out = Path(output_dir)
    status: dict[str, str] = {}
    with plt.style.context(STYLE):
        for name in names:
            try:
                fig = BUILDERS[name](ctx)
                status[name] = "ok"
            except NoData as why:
                log.warning("figure %s for %s: no data (%s)", name, ctx.dataset, why)
                fig = no_data_figure(name, str(why), ctx)
                status[name] = f"no data: {why}"
            save(fig, out / name)
    return status
