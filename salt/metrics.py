"""Physics metrics for jet tagging: accuracy, AUC and background rejection.

The numbers in the SAL-T, PHAT-JeT and ParT tables are defined slightly differently from
paper to paper (the SAL-T code averages 1/FPR at TPR 0.8 over the five one-vs-rest classes, or
over q, W, Z, t against g ∪ q; the follow-up PHAT-JeT paper averages over W, Z, t). This module computes every definition a
table needs, each under its own key, so a comparison never silently mixes two of them.

Conventions (all working points are signal efficiencies = TPR):

* ``rejXX`` is 1/FPR at TPR = XX %, read off the ROC curve by linear interpolation
  (:func:`fpr_at_tpr`). One definition everywhere, also where the efficiency is hit exactly
  (a test set with 800 signal jets hits TPR = 0.5 exactly): the FPR of the tightest cut that
  keeps at least that fraction of the signal, i.e. the smallest FPR of the horizontal ROC run
  at that TPR. That is the limit of the interpolation from below, so
  the rejection is continuous as the efficiency rises to the hit point. ``np.interp`` takes the
  largest FPR of the run instead; on a small test set the two can differ by a few % (the bin
  width of the ROC), well inside the test set's statistical error (``stat``).
* FPR = 0 at the working point gives ``float('inf')`` in memory. No background jet passed,
  so the honest statement is "rejection > n_bkg"; every comparison therefore carries its
  ``n_bkg`` and :func:`format_rejection` prints "> N" (or "∞"). On disk, use
  :func:`json_safe` (inf -> the string "inf") and :func:`from_json_safe` to read it back:
  strict JSON has no Infinity.
* ``stat`` (:func:`statistical_errors`): the test set's statistical uncertainty of every scalar
  metric, under the same '/'-path: binomial sqrt(p(1-p)/n) for accuracies, a bootstrap over
  the test jets for AUCs and rejections (half the central 68 % interval of the replicas, so a
  replica with no background passing does not make it infinite; inf where more than 16 % of
  the replicas are unbounded: too few background jets pass to bound the rejection). It is what a second, independent test set of the same size
  would move the number by, and is separate from the spread over training seeds.
* A metric that cannot be computed (a class absent from the test set) is ``None`` and its
  key (as a '/'-path) appears in ``result["undefined"]`` with the reason. No NaN is ever
  returned.

Schemes (chosen from the class names by ``scheme="auto"``; classes are mapped by name,
never by position):

* ``hls4ml`` (g, q, W, Z, t; also the Pythia demo): W, Z, t each against g ∪ q with the
  score p_X on X ∪ g ∪ q jets; q against g. Averages ``rej_avg_wzt`` (PHAT-JeT's "Avg Bkg
  Rej") and ``rej_avg_qwzt``, both interpolated (the primary numbers), and
  ``rej_avg_qwzt_legacy``, the SAL-T4HEP code's definition (train_linformer.py
  run_testing): same four comparisons, but the ROC point *nearest* to TPR = 0.8
  (``argmin |tpr - 0.8|`` on sklearn's default, intermediate-dropped curve) instead of
  interpolation, and inf kept in the mean. Its working point wanders with the ROC's
  granularity, so it is reported for parity only. (Their code labels the classes
  [q, g, W, Z, t]; the data are [g, q, W, Z, t], so their "q" loop entry is really q vs g.)
* ``jetclass`` (QCD, Hbb, ..., Tbl): ParT's convention (arXiv 2202.03772, Table 2): for
  each signal X, rejection of QCD with s = p_X / (p_X + p_QCD) on X ∪ QCD jets, at 50 %
  efficiency for all classes and additionally at ParT's reported point, 99 % for H→lνqq'
  and 99.5 % for t→blν (:data:`PART_WORKING_POINTS`; confirmed in two independent JetClass
  evaluation scripts found with the code search, ParT's own evaluation code is not
  public). ParT's "AUC" is weaver's ``roc_auc_score(y, p, multi_class='ovo')``
  (hqucms/weaver-core weaver/utils/nn/metrics.py), given here as ``auc_macro_ovo``.
* ``binary`` (Top, QG; class index 1 is the signal): AUC and rejection at 30/50/80 %.
* ``generic``: only the common part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import auc as area_under, confusion_matrix, roc_auc_score, roc_curve

# The class names each scheme recognises: those of the HLS4ML (and the Pythia demo's) and the JetClass
# files. Kept here rather than imported from the readers so that the report, which uses these
# conventions, does not depend on the data code (tests/test_metrics.py checks they agree).
HLS4ML_CLASSES = ("g", "q", "W", "Z", "t")
JETCLASS_CLASSES = ("QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl")
SCHEMES = ("auto", "hls4ml", "jetclass", "binary", "generic")

OVR_EFFICIENCIES = (0.5, 0.8)
HLS4ML_EFFICIENCIES = (0.5, 0.8)
BINARY_EFFICIENCIES = (0.3, 0.5, 0.8)
LEGACY_EFFICIENCY = 0.8
JETCLASS_EFFICIENCY = 0.5
# ParT Table 2 reports each JetClass signal at one efficiency: 50 % except these two.
PART_WORKING_POINTS: Mapping[str, float] = {
    "Hbb": 0.5, "Hcc": 0.5, "Hgg": 0.5, "H4q": 0.5, "Hqql": 0.99,
    "Zqq": 0.5, "Wqq": 0.5, "Tbqq": 0.5, "Tbl": 0.995,
}
# Constituent-multiplicity bins for the paper's Figure 3. Only the last bin ("115–150") is
# known from the reviews; the inner edges are our choice until the PDF is read (TODO(PDF)).
DEFAULT_MULTIPLICITY_BINS = (0, 25, 40, 55, 70, 85, 100, 115, 150)
ROC_MAX_POINTS = 500
MIN_CLASS_JETS = 10  # a class enters a multiplicity bin's balanced accuracy with at least this many jets
BOOTSTRAP_REPLICAS = 50  # the error of a 68 % half-width from 50 replicas is ~10 % of itself
BOOTSTRAP_MAX_JETS = 100_000  # bigger test sets: replicas of this many jets, errors scaled by sqrt(m/n)
# Paths whose value is a count or a bookkeeping entry, not a measurement: no uncertainty.
_COUNT_KEYS = ("n", "n_sig", "n_bkg", "count", "out_of_range", "lo", "hi")


# ----------------------------------------------------------------------------- primitives

def rej_key(efficiency: float) -> str:
    """0.5 -> 'rej50', 0.995 -> 'rej99.5' (ParT's Rej_{50%} naming)."""
    return f"rej{efficiency * 100:g}"


def fpr_at_tpr(fpr: np.ndarray, tpr: np.ndarray, efficiency: float) -> float:
    """FPR of the ROC curve (sklearn order: both non-decreasing) at TPR = `efficiency`."""
    if not 0.0 < efficiency <= 1.0:
        raise ValueError(f"signal efficiency must be in (0, 1], got {efficiency}")
    j = int(np.searchsorted(tpr, efficiency - 1e-12, side="left"))
    j = min(j, len(tpr) - 1)
    if abs(tpr[j] - efficiency) <= 1e-12 or j == 0:
        return float(fpr[j])  # first point reaching the efficiency: the smallest FPR
    t0, t1, f0, f1 = tpr[j - 1], tpr[j], fpr[j - 1], fpr[j]
    return float(f0 + (efficiency - t0) * (f1 - f0) / (t1 - t0))


def _inverse(fpr: float) -> float:
    return math.inf if fpr <= 0.0 else 1.0 / fpr


def nearest_point_fpr(fpr: np.ndarray, tpr: np.ndarray, efficiency: float = LEGACY_EFFICIENCY) -> float:
    """SAL-T4HEP's working point: the FPR of the ROC point nearest the efficiency (first on ties),
    no interpolation. Expects sklearn's default (drop_intermediate=True) curve, as theirs."""
    return float(fpr[int(np.argmin(np.abs(tpr - efficiency)))])


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values; inf propagates (one unbounded class makes the mean unbounded)."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def canonical_name(name: str) -> str:
    """Class name without the dataset's column prefix, lower case: 'label_QCD' -> 'qcd', 'j_w' -> 'w'."""
    low = str(name).strip().lower()
    for prefix in ("label_", "j_"):
        if low.startswith(prefix):
            low = low[len(prefix):]
    return low


# ----------------------------------------------------------------------------- input checks

def _as_probabilities(scores: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, C) probabilities; a binary (n,) or (n, 1) sigmoid output becomes [1 - p, p]."""
    s = np.asarray(scores)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)  # float32 stays float32: a 20M-jet JetClass test set is big enough
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim == 1:
        if n_classes != 2:
            raise ValueError(
                f"scores have shape {np.shape(scores)} (one sigmoid output per jet), which needs exactly "
                f"2 class names, got {n_classes}")
        s = np.stack([1.0 - s, s], axis=1)
    if s.ndim != 2:
        raise ValueError(f"scores must have shape (n,), (n, 1) or (n, C); got {np.shape(scores)}")
    if s.shape[1] != n_classes:
        raise ValueError(f"scores have {s.shape[1]} columns but {n_classes} class names were given")
    if not np.all(np.isfinite(s)):
        bad = int(np.argwhere(~np.isfinite(s))[0, 0])
        raise ValueError(f"scores contain NaN or inf (first at jet {bad})")
    if s.size and (s.min() < -1e-6 or s.max() > 1 + 1e-6):
        bad = int(np.argwhere((s < -1e-6) | (s > 1 + 1e-6))[0, 0])
        raise ValueError(
            f"scores must be probabilities in [0, 1] (softmax or sigmoid outputs, not logits); "
            f"jet {bad} has {s[bad].tolist()}")
    return s


def _as_labels(labels: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"labels have {len(y)} entries but scores have {n} jets")
    if n == 0:
        raise ValueError("no jets: labels and scores are empty")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= n_classes:
        bad = int(np.argwhere((y < 0) | (y >= n_classes))[0, 0])
        raise ValueError(f"label {int(y[bad])} at jet {bad} is outside 0..{n_classes - 1} ({n_classes} classes)")
    return y.astype(np.int64)


def detect_scheme(class_names: Sequence[str]) -> str:
    """hls4ml for {g, q, W, Z, t}; jetclass for JetClass names (QCD and >= 2 others); binary for 2 classes."""
    canon = [canonical_name(c) for c in class_names]
    if sorted(canon) == sorted(canonical_name(c) for c in HLS4ML_CLASSES):
        return "hls4ml"
    jet = {canonical_name(c) for c in JETCLASS_CLASSES}
    if len(canon) >= 3 and "qcd" in canon and set(canon) <= jet:
        return "jetclass"
    if len(canon) == 2:
        return "binary"
    return "generic"


def _check_scheme(scheme: str, class_names: Sequence[str]) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown metrics scheme {scheme!r}; expected one of {SCHEMES}")
    if scheme == "auto":
        return detect_scheme(class_names)
    canon = {canonical_name(c) for c in class_names}
    if scheme == "hls4ml":
        missing = [c for c in HLS4ML_CLASSES if canonical_name(c) not in canon]
        if missing or len(class_names) != 5:
            raise ValueError(f"scheme 'hls4ml' needs exactly the classes {HLS4ML_CLASSES}; got {list(class_names)}")
    elif scheme == "jetclass":
        unknown = [c for c in class_names if canonical_name(c) not in {canonical_name(j) for j in JETCLASS_CLASSES}]
        if "qcd" not in canon or unknown:
            raise ValueError(f"scheme 'jetclass' needs QCD and JetClass class names {JETCLASS_CLASSES}; "
                             f"got {list(class_names)}")
    elif scheme == "binary" and len(class_names) != 2:
        raise ValueError(f"scheme 'binary' needs 2 class names, got {list(class_names)}")
    return scheme


class _Undefined:
    """Collects metric paths that could not be computed, with the reason."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def note(self, path: str, reason: str) -> None:
        self.reasons[path] = reason


# ----------------------------------------------------------------------------- comparisons

def _signal_vs_background(y: np.ndarray, score: np.ndarray, sig: Sequence[int], bkg: Sequence[int],
                          efficiencies: Sequence[float], path: str, undefined: _Undefined,
                          names: Sequence[str], legacy: bool = False) -> dict[str, Any]:
    """Rejection (and AUC) of `bkg` classes at fixed `sig` efficiency, on sig ∪ bkg jets only."""
    keep = np.isin(y, list(sig) + list(bkg))
    is_sig = np.isin(y[keep], list(sig))
    n_sig, n_bkg = int(is_sig.sum()), int((~is_sig).sum())
    out: dict[str, Any] = {"n_sig": n_sig, "n_bkg": n_bkg}
    keys = [rej_key(e) for e in efficiencies] + ["auc"] + (["rej_legacy"] if legacy else [])
    if n_sig == 0 or n_bkg == 0:
        who = [names[i] for i in (sig if n_sig == 0 else bkg)]
        for k in keys:
            out[k] = None
            undefined.note(f"{path}/{k}", f"no {' or '.join(who)} jets in the test set")
        return out
    s = score[keep]
    fpr, tpr, _ = roc_curve(is_sig, s)
    for e in efficiencies:
        out[rej_key(e)] = _inverse(fpr_at_tpr(fpr, tpr, e))
    out["auc"] = float(area_under(fpr, tpr))  # trapezoids on the ROC = the pair-counting AUC, ties as 1/2
    if legacy:
        out["rej_legacy"] = _inverse(nearest_point_fpr(fpr, tpr))
    return out


def _common(y: np.ndarray, p: np.ndarray, names: Sequence[str], undefined: _Undefined) -> dict[str, Any]:
    n_classes = p.shape[1]
    pred = p.argmax(axis=1)  # for a sigmoid output [1-p, p] this is p > 0.5, ties to class 0
    counts = np.bincount(y, minlength=n_classes)
    auc_ovr: dict[str, float | None] = {}
    rej_ovr: dict[str, dict[str, float | None]] = {}
    for k, name in enumerate(names):
        is_k = y == k
        if counts[k] == 0 or counts[k] == len(y):
            why = f"no {name} jets in the test set" if counts[k] == 0 else f"only {name} jets in the test set"
            auc_ovr[name] = None
            undefined.note(f"auc_ovr/{name}", why)
            rej_ovr[name] = {rej_key(e): None for e in OVR_EFFICIENCIES}
            for e in OVR_EFFICIENCIES:
                undefined.note(f"rej_ovr/{name}/{rej_key(e)}", why)
            continue
        fpr, tpr, _ = roc_curve(is_k, p[:, k])
        auc_ovr[name] = float(area_under(fpr, tpr))
        rej_ovr[name] = {rej_key(e): _inverse(fpr_at_tpr(fpr, tpr, e)) for e in OVR_EFFICIENCIES}
    defined = [v for v in auc_ovr.values() if v is not None]
    if not defined:
        undefined.note("auc_macro", "no class has both its own and other jets in the test set")
    elif len(defined) < n_classes:
        undefined.note("auc_macro", f"mean over the {len(defined)} of {n_classes} classes present")
    return {
        "n": int(len(y)),
        "class_counts": {name: int(c) for name, c in zip(names, counts)},
        "accuracy": float(np.mean(pred == y)),
        "auc_macro": _mean(defined),
        "auc_ovr": auc_ovr,
        "rej_ovr": rej_ovr,
        "rej_ovr_mean": {rej_key(e): _mean([r[rej_key(e)] for r in rej_ovr.values()]) for e in OVR_EFFICIENCIES},
        "confusion_matrix": confusion_matrix(y, pred, labels=np.arange(n_classes)).tolist(),
    }


def _comparisons(scheme: str, names: Sequence[str], p: np.ndarray) -> list[tuple[str, list[int], list[int], np.ndarray]]:
    """The scheme's signal-vs-background tests as (signal name, signal classes, background classes, score)."""
    canon = [canonical_name(n) for n in names]
    if scheme == "hls4ml":
        g, q = canon.index("g"), canon.index("q")
        tests = []
        for key in ("q", "w", "z", "t"):
            sig = canon.index(key)
            bkg = [g] if key == "q" else [g, q]  # the legacy mask g ∪ q ∪ X: for X = q that is q vs g
            tests.append((names[sig], [sig], bkg, p[:, sig]))
        return tests
    if scheme == "jetclass":
        qcd = canon.index("qcd")
        tests = []
        for k, name in enumerate(names):
            if k != qcd:
                den = p[:, k] + p[:, qcd]
                ratio = np.divide(p[:, k], den, out=np.zeros_like(den), where=den > 0)  # ParT's p_X/(p_X+p_QCD)
                tests.append((name, [k], [qcd], ratio))
        return tests
    if scheme == "binary":
        return [(names[1], [1], [0], p[:, 1])]
    return []


def _hls4ml(y: np.ndarray, p: np.ndarray, names: Sequence[str], undefined: _Undefined) -> dict[str, Any]:
    per = {name: _signal_vs_background(y, score, sig, bkg, HLS4ML_EFFICIENCIES, f"rej_vs_gq/{name}",
                                       undefined, names, legacy=True)
           for name, sig, bkg, score in _comparisons("hls4ml", names, p)}
    q_name, *wzt = per  # in the order q, W, Z, t
    return {
        "rej_vs_gq": per,
        "rej_avg_wzt": {rej_key(e): _mean([per[n][rej_key(e)] for n in wzt]) for e in HLS4ML_EFFICIENCIES},
        "rej_avg_qwzt": {rej_key(e): _mean([per[n][rej_key(e)] for n in [q_name, *wzt]]) for e in HLS4ML_EFFICIENCIES},
        "rej_avg_qwzt_legacy": _mean([per[n]["rej_legacy"] for n in [q_name, *wzt]]),
    }


def _jetclass(y: np.ndarray, p: np.ndarray, names: Sequence[str], undefined: _Undefined) -> dict[str, Any]:
    part_wp = {canonical_name(k): v for k, v in PART_WORKING_POINTS.items()}
    per = {}
    for name, sig, bkg, score in _comparisons("jetclass", names, p):
        effs = sorted({JETCLASS_EFFICIENCY, part_wp.get(canonical_name(name), JETCLASS_EFFICIENCY)})
        per[name] = _signal_vs_background(y, score, sig, bkg, effs, f"rej_vs_qcd/{name}", undefined, names)
    return {"auc_macro_ovo": _macro_ovo_auc(y, p, names, undefined), "rej_vs_qcd": per}


def _macro_ovo_auc(y: np.ndarray, p: np.ndarray, names: Sequence[str], undefined: _Undefined) -> float | None:
    """sklearn's multi_class='ovo' macro AUC (Hand & Till), over the pairs of classes present."""
    present = [k for k in range(p.shape[1]) if np.any(y == k)]
    pairs = []
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            keep = (y == a) | (y == b)
            is_a = y[keep] == a
            pairs.append(0.5 * (roc_auc_score(is_a, p[keep, a]) + roc_auc_score(~is_a, p[keep, b])))
    if len(present) < p.shape[1]:
        absent = [names[k] for k in range(p.shape[1]) if k not in present]
        undefined.note("auc_macro_ovo", f"pairs with {', '.join(absent)} skipped: no such jets in the test set")
    return float(np.mean(pairs)) if pairs else None


def _binary(y: np.ndarray, p: np.ndarray, names: Sequence[str], undefined: _Undefined) -> dict[str, Any]:
    [(name, sig, bkg, score)] = _comparisons("binary", names, p)
    res = _signal_vs_background(y, score, sig, bkg, BINARY_EFFICIENCIES, "rej_signal", undefined, names)
    auc = res.pop("auc")
    if auc is None:
        undefined.reasons["auc"] = undefined.reasons.pop("rej_signal/auc")
    return {"signal": name, "auc": auc, "rej_signal": res}


def accuracy_by_multiplicity(y: np.ndarray, pred: np.ndarray, n_particles: np.ndarray,
                             bins: Sequence[float] = DEFAULT_MULTIPLICITY_BINS,
                             names: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy per constituent-multiplicity bin [lo, hi) (the last bin includes hi), as in Figure 3.

    The classes' multiplicities differ (top and gluon jets are busier than quark and W/Z jets),
    so a bin's plain accuracy mostly shows its class mix. Each bin therefore also holds the
    accuracy per class (`per_class`, with `names`) and their mean over the classes with at
    least MIN_CLASS_JETS jets there (`balanced_accuracy`; a class with 2 jets would swing it by
    25 points), each with its binomial error."""
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"multiplicity bins must be at least 2 strictly increasing edges, got {list(bins)}")
    m = np.asarray(n_particles, dtype=np.float64)
    if m.shape != y.shape:
        raise ValueError(f"n_particles has shape {m.shape}, expected one value per jet {y.shape}")
    which = np.searchsorted(edges, m, side="right") - 1
    which[m == edges[-1]] = len(edges) - 2
    inside = (which >= 0) & (which < len(edges) - 1)
    correct = pred == y
    out: dict[str, Any] = {}
    for b in range(len(edges) - 1):
        sel = inside & (which == b)
        n = int(sel.sum())
        entry: dict[str, Any] = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n,
                                 "accuracy": float(correct[sel].mean()) if n else None,
                                 "accuracy_error": binomial_error(correct[sel])}
        if names is not None:
            per = {}
            for k, name in enumerate(names):
                in_k = sel & (y == k)
                per[name] = {"count": int(in_k.sum()), "accuracy": float(correct[in_k].mean()) if in_k.any() else None,
                             "accuracy_error": binomial_error(correct[in_k])}
            enough = [v for v in per.values() if v["count"] >= MIN_CLASS_JETS]
            present = [v["accuracy"] for v in enough]
            errors = [v["accuracy_error"] for v in enough]
            entry["per_class"] = per
            entry["balanced_accuracy"] = float(np.mean(present)) if present else None
            entry["balanced_accuracy_error"] = (float(np.sqrt(np.sum(np.square(errors)))) / len(errors)
                                                if present else None)
        out[f"{edges[b]:g}-{edges[b + 1]:g}"] = entry
    out["out_of_range"] = int((~inside).sum())
    return out


# ----------------------------------------------------------------------------- public API

def compute_metrics(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str], *,
                    scheme: str = "auto", n_particles: np.ndarray | None = None,
                    multiplicity_bins: Sequence[float] | None = None, errors: bool = False) -> dict:
    """All metrics of one evaluation as a JSON-able dict of plain Python values (see module doc).

    labels: (n,) class indices. scores: (n, C) probabilities, or (n,) / (n, 1) sigmoid
    outputs of class 1 for a binary task. n_particles: (n,) constituent counts, which adds
    accuracy per multiplicity bin (edges `multiplicity_bins`, default
    DEFAULT_MULTIPLICITY_BINS). errors: also the test-set statistical uncertainties under
    "stat" (statistical_errors; a bootstrap, so it costs ~50 evaluations of the metrics).
    """
    names = [str(c) for c in class_names]
    if len({canonical_name(c) for c in names}) != len(names):
        raise ValueError(f"class names must be distinct, got {names}")
    p = _as_probabilities(scores, len(names))
    y = _as_labels(labels, len(p), len(names))
    chosen = _check_scheme(scheme, names)
    undefined = _Undefined()
    result: dict[str, Any] = {"scheme": chosen, "class_names": names}
    result.update(_common(y, p, names, undefined))
    if chosen == "hls4ml":
        result.update(_hls4ml(y, p, names, undefined))
    elif chosen == "jetclass":
        result.update(_jetclass(y, p, names, undefined))
    elif chosen == "binary":
        result.update(_binary(y, p, names, undefined))
    if n_particles is not None:
        bins = DEFAULT_MULTIPLICITY_BINS if multiplicity_bins is None else multiplicity_bins
        result["multiplicity"] = accuracy_by_multiplicity(y, p.argmax(axis=1), n_particles, bins, names)
    for key in ("rej_ovr_mean", "rej_avg_wzt", "rej_avg_qwzt", "rej_avg_qwzt_legacy"):
        if key not in result:
            continue
        entries = result[key] if isinstance(result[key], dict) else {"": result[key]}
        for sub, value in entries.items():
            if value is None:
                undefined.note(f"{key}/{sub}".rstrip("/"), "none of the classes it averages could be scored")
    result["undefined"] = undefined.reasons
    if errors:
        result["stat"] = statistical_errors(y, p, names, scheme=chosen)
    return result


def binomial_error(successes: np.ndarray) -> float | None:
    """sqrt(p (1 - p) / n) of a fraction of n trials (None for none): an accuracy's test-set error."""
    n = len(successes)
    if n == 0:
        return None
    p = float(np.mean(successes))
    return math.sqrt(p * (1.0 - p) / n)


def statistical_errors(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str], *,
                       scheme: str = "auto", replicas: int = BOOTSTRAP_REPLICAS,
                       max_jets: int = BOOTSTRAP_MAX_JETS, seed: int = 0) -> dict[str, float | None]:
    """Test-set statistical uncertainty of every scalar metric of compute_metrics, by '/'-path.

    Accuracy: binomial. Everything else (AUCs, rejections, their means): a bootstrap over the
    test jets, `replicas` resamples, the error being half the central 68 % interval. A test
    set above `max_jets` is resampled `max_jets` at a time and the errors scaled by
    sqrt(max_jets / n) (the 1/sqrt(n) law), so JetClass's millions of jets cost no more than
    100k. Counts (n, n_bkg, ...) get no entry; a metric that is None on the full set neither."""
    names = [str(c) for c in class_names]
    p = _as_probabilities(scores, len(names))
    y = _as_labels(labels, len(p), len(names))
    full = flatten(compute_metrics(y, p, names, scheme=scheme))
    keys = [k for k, v in full.items() if _is_number(v) and k.rsplit("/", 1)[-1] not in _COUNT_KEYS
            and not k.startswith(("class_counts/", "confusion_matrix", "multiplicity/", "undefined/"))]
    n = len(y)
    m = min(n, max_jets)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(replicas):
        idx = rng.integers(0, n, size=m)
        flat = flatten(compute_metrics(y[idx], p[idx], names, scheme=scheme))
        for k in keys:
            v = flat.get(k)
            draws[k].append(math.nan if v is None else float(v))
    out: dict[str, float | None] = {}
    for k in keys:
        a = np.asarray(draws[k])
        a = a[~np.isnan(a)]  # a replica without some class leaves that metric undefined
        if len(a) < max(2, replicas // 2):
            out[k] = None
            continue
        with np.errstate(invalid="ignore"):  # inf - inf between two unbounded replicas: nan, caught below
            lo, hi = np.quantile(a, [0.15865, 0.84135])
        # more than 16 % of the replicas unbounded (no background passing): the error is too
        out[k] = float(0.5 * (hi - lo) * math.sqrt(m / n)) if math.isfinite(hi) and math.isfinite(lo) else math.inf
    out["accuracy"] = binomial_error(np.asarray(p.argmax(axis=1) == y))
    return out


def _downsample(fpr: np.ndarray, tpr: np.ndarray, max_points: int = ROC_MAX_POINTS) -> tuple[list[float], list[float]]:
    """At most `max_points` true ROC points: half evenly in index, half nearest an even TPR grid."""
    if len(fpr) > max_points:
        half = max_points // 2
        by_index = np.linspace(0, len(fpr) - 1, half).round().astype(int)
        by_tpr = np.clip(np.searchsorted(tpr, np.linspace(0, 1, max_points - half)), 0, len(tpr) - 1)
        keep = np.unique(np.concatenate([by_index, by_tpr, [0, len(fpr) - 1]]))[:max_points]
        keep[-1] = len(fpr) - 1
        fpr, tpr = fpr[keep], tpr[keep]
    return [float(v) for v in fpr], [float(v) for v in tpr]


def roc_curves(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str],
               scheme: str = "auto") -> dict[str, tuple[list[float], list[float]]]:
    """ROC curves for figures: 'ovr/<class>' for every class, plus the scheme's signal-vs-background
    curves ('vs_gq/<X>', 'vs_qcd/<X>' or 'signal/<class 1>'), each as (fpr, tpr) lists of ≤ 500 points.
    Curves that need an absent class are left out."""
    names = [str(c) for c in class_names]
    p = _as_probabilities(scores, len(names))
    y = _as_labels(labels, len(p), len(names))
    chosen = _check_scheme(scheme, names)
    curves: dict[str, tuple[list[float], list[float]]] = {}

    for k, name in enumerate(names):
        is_k = y == k
        if 0 < is_k.sum() < len(y):
            curves[f"ovr/{name}"] = _downsample(*roc_curve(is_k, p[:, k])[:2])
    prefix = {"hls4ml": "vs_gq", "jetclass": "vs_qcd", "binary": "signal"}.get(chosen)
    for name, sig, bkg, score in _comparisons(chosen, names, p):
        keep = np.isin(y, sig + bkg)
        is_sig = np.isin(y[keep], sig)
        if 0 < is_sig.sum() < len(is_sig):
            curves[f"{prefix}/{name}"] = _downsample(*roc_curve(is_sig, score[keep])[:2])
    return curves


# ----------------------------------------------------------------------------- seeds, JSON, display

def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one level with '/'-joined keys."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}/"))
        else:
            flat[path] = value
    return flat


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def aggregate(metrics_list: list[dict]) -> dict[str, dict[str, float | int | None]]:
    """Mean and std (ddof=1, or 0 for one seed) over seeds of every scalar metric, keyed by '/'-path.

    Seeds where a metric is None are left out of it (`n` says how many were used). If any seed
    has an infinite rejection the mean is inf and the std is None (undefined)."""
    if not metrics_list:
        raise ValueError("aggregate needs at least one metrics dict")
    values: dict[str, list[float]] = {}
    for m in metrics_list:
        for key, v in flatten(from_json_safe(m)).items():
            if key.startswith("undefined/"):
                continue
            if _is_number(v):
                values.setdefault(key, []).append(float(v))
            elif v is None:
                values.setdefault(key, [])
    out: dict[str, dict[str, float | int | None]] = {}
    for key, vals in values.items():
        a = np.asarray(vals, dtype=np.float64)
        if len(a) == 0:
            out[key] = {"mean": None, "std": None, "n": 0}
        elif np.all(np.isfinite(a)):
            out[key] = {"mean": float(a.mean()), "std": float(a.std(ddof=1 if len(a) > 1 else 0)), "n": len(a)}
        else:
            out[key] = {"mean": float(a.mean()), "std": None, "n": len(a)}
    return out


def json_safe(obj: Any) -> Any:
    """Copy with inf/-inf as the strings 'inf'/'-inf' (and NaN as None), so strict JSON can hold it."""
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if _is_number(obj) and not math.isfinite(float(obj)):
        return None if math.isnan(float(obj)) else ("inf" if obj > 0 else "-inf")
    return obj


def from_json_safe(obj: Any) -> Any:
    """Inverse of json_safe: the strings 'inf'/'-inf' become floats again."""
    if isinstance(obj, Mapping):
        return {k: from_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json_safe(v) for v in obj]
    if isinstance(obj, str) and obj in ("inf", "-inf"):
        return float(obj)
    return obj


def format_rejection(value: float | str | None, n_bkg: int | None = None, digits: int = 1) -> str:
    """Table text for a rejection: '64.5', '> 1234' (no background passed, n_bkg known), '∞' or '—'."""
    if value is None:
        return "—"
    v = float(value)
    if math.isinf(v):
        return f"> {n_bkg}" if n_bkg else "∞"
    return f"{v:.{digits}f}"
