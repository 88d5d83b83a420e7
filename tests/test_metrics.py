"""salt.metrics against cases worked out by hand (ROC points listed in the comments)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from salt.metrics import (
    aggregate,
    compute_metrics,
    detect_scheme,
    flatten,
    format_rejection,
    fpr_at_tpr,
    from_json_safe,
    json_safe,
    roc_curves,
)

INF = math.inf


def _no_nan(obj) -> bool:
    return all(not (isinstance(v, float) and math.isnan(v)) for v in flatten(obj).values())


# --------------------------------------------------------------------------- binary

# 4 signal, 4 background, all scores distinct. Descending: .9S .8B .7S .6B .5S .3B .2S .1B
# ROC (fpr, tpr): (0,0) (0,.25) (.25,.25) (.25,.5) (.5,.5) (.5,.75) (.75,.75) (.75,1) (1,1)
BIN_Y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
BIN_P = np.array([0.9, 0.7, 0.5, 0.2, 0.8, 0.6, 0.3, 0.1])


def test_binary_hand_computed():
    m = compute_metrics(BIN_Y, BIN_P, ["qcd", "top"])
    assert m["scheme"] == "binary" and m["signal"] == "top"
    # pairs (sig > bkg): .9 beats 4, .7 beats 3, .5 beats 2, .2 beats 1 -> 10 of 16
    assert m["auc"] == pytest.approx(10 / 16)
    assert m["auc_ovr"] == {"qcd": pytest.approx(10 / 16), "top": pytest.approx(10 / 16)}
    # > 0.5: .9 .7 correct, .5 and .2 wrong; bkg .8 .6 wrong, .3 .1 correct
    assert m["accuracy"] == pytest.approx(4 / 8)
    r = m["rej_signal"]
    # TPR .3 lies on the vertical step at fpr .25; TPR .5 is first reached at fpr .25;
    # TPR .8 lies on the step at fpr .75
    assert r["rej30"] == pytest.approx(4.0)
    assert r["rej50"] == pytest.approx(4.0)
    assert r["rej80"] == pytest.approx(4 / 3)
    assert (r["n_sig"], r["n_bkg"]) == (4, 4)
    # rows = true class, columns = predicted
    assert m["confusion_matrix"] == [[2, 2], [2, 2]]
    assert m["class_counts"] == {"qcd": 4, "top": 4}
    assert m["n"] == 8 and m["undefined"] == {}


def test_rejection_takes_best_point_on_a_tpr_tie_where_np_interp_takes_worst():
    fpr = np.array([0, 0, .25, .25, .5, .5, .75, .75, 1])
    tpr = np.array([0, .25, .25, .5, .5, .75, .75, 1, 1])
    assert fpr_at_tpr(fpr, tpr, 0.5) == 0.25
    assert np.interp(0.5, tpr, fpr) == 0.5  # the documented difference


def test_interpolation_along_a_diagonal_segment_from_tied_scores():
    # sig .9 .5, bkg .5 .1: the tie at .5 gives ROC (0,0) (0,.5) (.5,1) (1,1)
    m = compute_metrics(np.array([1, 1, 0, 0]), np.array([0.9, 0.5, 0.5, 0.1]), ["b", "s"])
    # at TPR .8: fpr = 0 + (.8 - .5) * (.5 - 0) / (1 - .5) = .3
    assert m["rej_signal"]["rej80"] == pytest.approx(1 / 0.3)
    assert m["rej_signal"]["rej50"] == INF  # (0, .5) reached with no background


def test_fpr_at_tpr_equals_np_interp_off_the_tie_points():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    s = rng.normal(size=2000) + y
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    for e in (0.1234, 0.3001, 0.5011, 0.8123, 0.9502):  # no k / n_sig equals these
        assert fpr_at_tpr(fpr, tpr, e) == pytest.approx(np.interp(e, tpr, fpr))


def test_binary_input_shapes_agree():
    a = compute_metrics(BIN_Y, BIN_P, ["qcd", "top"])
    b = compute_metrics(BIN_Y, BIN_P[:, None], ["qcd", "top"])
    c = compute_metrics(BIN_Y, np.stack([1 - BIN_P, BIN_P], axis=1), ["qcd", "top"])
    assert a == b == c
    with pytest.raises(ValueError, match="2 class names"):
        compute_metrics(BIN_Y, BIN_P, ["a", "b", "c"])


def test_binary_threshold_at_half_goes_to_class_zero():
    m = compute_metrics(np.array([0, 1]), np.array([0.5, 0.51]), ["g", "q"])
    assert m["accuracy"] == 1.0


# --------------------------------------------------------------------------- hls4ml

HLS_NAMES = ["g", "q", "W", "Z", "t"]
# columns g, q, W, Z, t. Only the scores each comparison reads matter (see test below).
HLS_P = np.array([
    [0.00, 0.50, 0.70, 0.60, 0.90],  # g1 -> argmax t (wrong)
    [0.95, 0.10, 0.20, 0.10, 0.10],  # g2 -> g
    [0.00, 0.70, 0.40, 0.10, 0.85],  # q1 -> t (wrong)
    [0.00, 0.20, 0.10, 0.10, 0.10],  # q2 -> q
    [0.00, 0.00, 0.90, 0.00, 0.00],  # W1
    [0.00, 0.00, 0.60, 0.00, 0.00],  # W2
    [0.00, 0.00, 0.30, 0.00, 0.00],  # W3
    [0.00, 0.00, 0.00, 0.50, 0.00],  # Z1
    [0.00, 0.00, 0.00, 0.00, 0.80],  # t1
])
HLS_Y = np.array([0, 0, 1, 1, 2, 2, 2, 3, 4])


def test_hls4ml_hand_computed():
    m = compute_metrics(HLS_Y, HLS_P, HLS_NAMES)
    assert m["scheme"] == "hls4ml"
    assert m["accuracy"] == pytest.approx(7 / 9)
    r = m["rej_vs_gq"]
    # W vs g∪q: .9S .7B .6S .4B .3S .2B .1B -> ROC (0,1/3) (.25,1/3) (.25,2/3) (.5,2/3) (.5,1) ...
    #   TPR .5 first reached at fpr .25; TPR .8 on the step at fpr .5;
    #   legacy: nearest TPR to .8 is 2/3 (|d| = .13 < .2), first such point has fpr .25
    assert (r["W"]["rej50"], r["W"]["rej80"], r["W"]["rej_legacy"]) == pytest.approx((4, 2, 4))
    # W AUC: .9 beats 4, .6 beats 3 (.4 .2 .1), .3 beats 2 -> 9/12
    assert r["W"]["auc"] == pytest.approx(9 / 12)
    # Z vs g∪q: .6B .5S -> every working point at fpr .25
    assert (r["Z"]["rej50"], r["Z"]["rej80"], r["Z"]["rej_legacy"]) == pytest.approx((4, 4, 4))
    # t vs g∪q: .9B .85B .8S -> fpr .5
    assert (r["t"]["rej50"], r["t"]["rej80"], r["t"]["rej_legacy"]) == pytest.approx((2, 2, 2))
    # q vs g (q is not its own background): .7S .5B .2S .1B -> TPR .5 at fpr 0; .8 at fpr .5
    assert r["q"]["rej50"] == INF
    assert (r["q"]["rej80"], r["q"]["rej_legacy"]) == pytest.approx((2, 2))
    assert (r["q"]["n_sig"], r["q"]["n_bkg"], r["W"]["n_bkg"]) == (2, 2, 4)
    assert m["rej_avg_wzt"]["rej50"] == pytest.approx((4 + 4 + 2) / 3)
    assert m["rej_avg_wzt"]["rej80"] == pytest.approx((2 + 4 + 2) / 3)
    assert m["rej_avg_qwzt"]["rej50"] == INF
    assert m["rej_avg_qwzt"]["rej80"] == pytest.approx((2 + 2 + 4 + 2) / 4)
    # the legacy nearest-point average differs from the interpolated one on the same jets
    assert m["rej_avg_qwzt_legacy"] == pytest.approx((2 + 4 + 4 + 2) / 4)
    assert m["rej_avg_qwzt_legacy"] != pytest.approx(m["rej_avg_qwzt"]["rej80"])


def test_hls4ml_maps_classes_by_name_not_position():
    base = compute_metrics(HLS_Y, HLS_P, HLS_NAMES)
    order = [4, 2, 0, 3, 1]  # new column j holds old class order[j]
    new_of_old = np.argsort(order)
    shuffled = compute_metrics(new_of_old[HLS_Y], HLS_P[:, order], [HLS_NAMES[i] for i in order])
    assert shuffled["scheme"] == "hls4ml"
    for key in ("accuracy", "auc_macro", "auc_ovr", "rej_ovr", "rej_vs_gq", "rej_avg_wzt",
                "rej_avg_qwzt", "rej_avg_qwzt_legacy", "class_counts"):
        assert shuffled[key] == base[key], key


def test_absent_class_gives_none_with_reason_not_a_crash():
    keep = HLS_Y != 3  # drop the Z jet
    m = compute_metrics(HLS_Y[keep], HLS_P[keep], HLS_NAMES)
    assert m["auc_ovr"]["Z"] is None
    assert "no Z jets" in m["undefined"]["auc_ovr/Z"]
    assert m["rej_vs_gq"]["Z"]["rej80"] is None and "rej_vs_gq/Z/rej80" in m["undefined"]
    assert m["class_counts"]["Z"] == 0
    assert m["auc_macro"] == pytest.approx(np.mean([v for v in m["auc_ovr"].values() if v is not None]))
    assert "auc_macro" in m["undefined"]
    # the averages use the classes that are there
    assert m["rej_avg_wzt"]["rej80"] == pytest.approx((2 + 2) / 2)
    assert _no_nan(m)
    assert {k for k, v in flatten(m).items() if v is None} <= set(m["undefined"])  # every None says why
    json.dumps(json_safe(m), allow_nan=False)


# --------------------------------------------------------------------------- jetclass

JC_NAMES = ["QCD", "Hbb", "Tbl"]
JC_P = np.array([
    [0.1, 0.4, 0.5],  # Hbb: s_Hbb = .4/.5 = .8
    [0.6, 0.3, 0.1],  # Hbb: .3/.9 = .333
    [0.2, 0.6, 0.2],  # QCD: s_Hbb = .6/.8 = .75,  s_Tbl = .2/.4 = .5
    [0.5, 0.2, 0.3],  # QCD: s_Hbb = .2/.7 = .286, s_Tbl = .3/.8 = .375
    [0.6, 0.1, 0.3],  # Tbl: s_Tbl = .3/.9 = .333
    [0.1, 0.1, 0.8],  # Tbl: .8/.9 = .889
])
JC_Y = np.array([1, 1, 0, 0, 2, 2])


def test_jetclass_uses_the_part_discriminant_and_working_points():
    m = compute_metrics(JC_Y, JC_P, JC_NAMES)
    assert m["scheme"] == "jetclass"
    hbb, tbl = m["rej_vs_qcd"]["Hbb"], m["rej_vs_qcd"]["Tbl"]
    # Hbb with s = p/(p + p_QCD): .8S .75B .333S .286B -> TPR .5 at fpr 0. (Ranking by raw p_Hbb,
    # .6B .4S .3S .2B, would give fpr .5: the ratio matters.)
    assert hbb["rej50"] == INF and set(hbb) == {"rej50", "auc", "n_sig", "n_bkg"}
    assert hbb["auc"] == pytest.approx(3 / 4)
    # Tbl: .889S .5B .375B .333S -> TPR .5 at fpr 0; 99.5 % needs the last jet: fpr 1
    assert tbl["rej50"] == INF
    assert tbl["rej99.5"] == pytest.approx(1.0)
    assert format_rejection(hbb["rej50"], hbb["n_bkg"]) == "> 2"


def test_jetclass_ovo_auc_matches_sklearn_and_all_ten_classes_get_their_points():
    rng = np.random.default_rng(0)
    names = ["label_QCD", "label_Hbb", "label_Hcc", "label_Hgg", "label_H4q",
             "label_Hqql", "label_Zqq", "label_Wqq", "label_Tbqq", "label_Tbl"]
    y = np.repeat(np.arange(10), 40)
    logits = rng.normal(size=(400, 10)) + 1.5 * np.eye(10)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = compute_metrics(y, p, names)
    assert m["scheme"] == "jetclass"
    assert m["auc_macro_ovo"] == pytest.approx(roc_auc_score(y, p, multi_class="ovo"))
    assert "rej99" in m["rej_vs_qcd"]["label_Hqql"] and "rej99.5" in m["rej_vs_qcd"]["label_Tbl"]
    assert set(m["rej_vs_qcd"]["label_Hbb"]) == {"rej50", "auc", "n_sig", "n_bkg"}
    # the paper's AUC call: with one-hot labels sklearn's 'ovo' is macro one-vs-rest
    assert m["auc_macro"] == pytest.approx(roc_auc_score(np.eye(10)[y], p, average="macro", multi_class="ovo"))


# --------------------------------------------------------------------------- invariances

@pytest.mark.parametrize("names", [HLS_NAMES, ["QCD", "Hbb", "Hcc", "Tbqq", "Tbl"]])
def test_monotone_transform_leaves_auc_and_rejection_unchanged(names):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 300)
    p = rng.dirichlet(np.ones(5), 300)
    p[np.arange(300), y] += 0.3
    p /= p.sum(1, keepdims=True)
    a = compute_metrics(y, p, names)
    # the same increasing map on every column keeps the argmax, every one-vs-rest ranking and
    # (p_X / p_QCD)^3 keeps the ranking of JetClass's p_X / (p_X + p_QCD)
    b = compute_metrics(y, p ** 3, names)
    fa, fb = flatten(a), flatten(b)
    assert fa.keys() == fb.keys()
    for k, v in fa.items():
        if isinstance(v, float):
            assert fb[k] == pytest.approx(v), k
        else:
            assert fb[k] == v, k


def test_permuting_classes_keeps_accuracy_and_per_class_numbers():
    rng = np.random.default_rng(4)
    names = ["a", "b", "c"]
    y = rng.integers(0, 3, 200)
    p = rng.dirichlet(np.ones(3), 200)
    perm = [2, 0, 1]
    a = compute_metrics(y, p, names)
    b = compute_metrics(np.argsort(perm)[y], p[:, perm], [names[i] for i in perm])
    assert a["scheme"] == b["scheme"] == "generic"
    assert a["accuracy"] == b["accuracy"]
    assert a["auc_ovr"] == b["auc_ovr"] and a["rej_ovr"] == b["rej_ovr"]


def test_macro_auc_counts_pairs():
    # class c: p_c of c-jets vs the rest. Two jets per class, chosen so each AUC is easy to count.
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([[.8, .1, .1], [.3, .4, .3], [.5, .4, .1], [.1, .8, .1], [.2, .2, .6], [.1, .3, .6]])
    m = compute_metrics(y, p, ["a", "b", "c"])
    # a: sig .8 .3 vs rest .5 .1 .2 .1 -> .8 beats 4, .3 beats 3 -> 7/8
    # b: sig .4 .8 vs .1 .4 .2 .3 -> .4 beats 3 and ties 1 (half), .8 beats 4 -> 7.5/8
    # c: sig .6 .6 vs .1 .3 .1 .1 -> 8/8
    assert m["auc_ovr"] == pytest.approx({"a": 7 / 8, "b": 7.5 / 8, "c": 1.0})
    assert m["auc_macro"] == pytest.approx((7 + 7.5 + 8) / 24)


# --------------------------------------------------------------------------- schemes and input errors

@pytest.mark.parametrize("names, scheme", [
    (["g", "q", "W", "Z", "t"], "hls4ml"),
    (["t", "Z", "W", "q", "g"], "hls4ml"),
    (["j_g", "j_q", "j_w", "j_z", "j_t"], "hls4ml"),
    (["QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl"], "jetclass"),
    (["QCD", "Tbqq", "Wqq"], "jetclass"),
    (["qcd", "top"], "binary"),
    (["gluon", "quark"], "binary"),
    (["g", "q", "W", "Z"], "generic"),
    (["Hbb", "Hcc", "Hgg"], "generic"),
])
def test_detect_scheme(names, scheme):
    assert detect_scheme(names) == scheme


def test_explicit_scheme_must_fit_the_classes():
    with pytest.raises(ValueError, match="hls4ml"):
        compute_metrics(BIN_Y, BIN_P, ["qcd", "top"], scheme="hls4ml")
    with pytest.raises(ValueError, match="unknown metrics scheme"):
        compute_metrics(BIN_Y, BIN_P, ["qcd", "top"], scheme="ovr")
    generic = compute_metrics(HLS_Y, HLS_P, HLS_NAMES, scheme="generic")
    assert "rej_vs_gq" not in generic and generic["scheme"] == "generic"


def test_bad_inputs_name_what_is_wrong():
    with pytest.raises(ValueError, match="logits"):
        compute_metrics(BIN_Y, BIN_P * 5 - 2, ["qcd", "top"])
    with pytest.raises(ValueError, match="label 7 at jet 1"):
        compute_metrics(np.array([0, 7]), np.array([0.1, 0.2]), ["qcd", "top"])
    with pytest.raises(ValueError, match="3 entries but scores have 2"):
        compute_metrics(np.array([0, 1, 1]), np.array([0.1, 0.2]), ["qcd", "top"])
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(np.array([0, 1]), np.array([0.1, np.nan]), ["qcd", "top"])
    with pytest.raises(ValueError, match="4 columns but 5"):
        compute_metrics(HLS_Y, HLS_P[:, :4], HLS_NAMES)


# --------------------------------------------------------------------------- inf, JSON, multiplicity, seeds

def test_perfect_separation_gives_inf_that_survives_json():
    m = compute_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]), ["qcd", "top"])
    assert m["rej_signal"]["rej80"] == INF and m["auc"] == 1.0
    text = json.dumps(json_safe(m), allow_nan=False)
    back = from_json_safe(json.loads(text))
    assert back["rej_signal"]["rej80"] == INF
    assert back == m
    assert format_rejection(back["rej_signal"]["rej80"], back["rej_signal"]["n_bkg"]) == "> 2"
    assert format_rejection(INF) == "∞" and format_rejection(None) == "—"
    assert format_rejection(64.54) == "64.5"


def test_accuracy_by_multiplicity_counts():
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    p = np.array([0.1, 0.9, 0.8, 0.7, 0.2, 0.3, 0.4, 0.6])  # correct: all but jets 2 and 5
    n_particles = np.array([5, 10, 10, 19, 20, 30, 31, 40])
    m = compute_metrics(y, p, ["qcd", "top"], n_particles=n_particles, multiplicity_bins=[0, 10, 20, 30])
    mult = m["multiplicity"]
    assert list(mult) == ["0-10", "10-20", "20-30", "out_of_range"]
    # [0,10): jet 0. [10,20): jets 1,2,3 (2 wrong). [20,30] closed: jets 4,5 (5 wrong). 31, 40 outside.
    assert [mult[k]["count"] for k in ("0-10", "10-20", "20-30")] == [1, 3, 2]
    assert [mult[k]["accuracy"] for k in ("0-10", "10-20", "20-30")] == pytest.approx([1, 2 / 3, 1 / 2])
    assert mult["out_of_range"] == 2
    assert (mult["20-30"]["lo"], mult["20-30"]["hi"]) == (20.0, 30.0)
    default = compute_metrics(y, p, ["qcd", "top"], n_particles=n_particles)["multiplicity"]
    assert "115-150" in default and sum(v["count"] for k, v in default.items() if k != "out_of_range") == 8
    empty_bin = compute_metrics(y, p, ["qcd", "top"], n_particles=n_particles, multiplicity_bins=[0, 1, 100])
    assert {k: empty_bin["multiplicity"]["0-1"][k] for k in ("lo", "hi", "count", "accuracy", "balanced_accuracy")} \
        == {"lo": 0.0, "hi": 1.0, "count": 0, "accuracy": None, "balanced_accuracy": None}
    # per class in [10, 20): qcd jet 2 wrong, top jets 1 and 3 right; each with its binomial error
    b = mult["10-20"]
    assert b["per_class"]["qcd"] == {"count": 1, "accuracy": 0.0, "accuracy_error": 0.0}
    assert b["per_class"]["top"]["count"] == 2 and b["per_class"]["top"]["accuracy"] == 1.0
    assert b["balanced_accuracy"] is None  # no class has MIN_CLASS_JETS jets in the bin
    assert b["accuracy_error"] == pytest.approx(np.sqrt(2 / 3 * 1 / 3 / 3))
    with pytest.raises(ValueError, match="increasing"):
        compute_metrics(y, p, ["qcd", "top"], n_particles=n_particles, multiplicity_bins=[0, 20, 10])


def test_balanced_accuracy_per_multiplicity_bin():
    # one bin: 10 qcd jets (8 right) and 12 top jets (6 right); balanced = (0.8 + 0.5) / 2
    y = np.array([0] * 10 + [1] * 12)
    p = np.array([0.2] * 8 + [0.8] * 2 + [0.9] * 6 + [0.1] * 6)
    m = compute_metrics(y, p, ["qcd", "top"], n_particles=np.full(22, 30), multiplicity_bins=[0, 50])
    b = m["multiplicity"]["0-50"]
    assert b["accuracy"] == pytest.approx(14 / 22)
    assert b["balanced_accuracy"] == pytest.approx(0.65)
    assert b["balanced_accuracy_error"] == pytest.approx(np.sqrt(0.8 * 0.2 / 10 + 0.5 * 0.5 / 12) / 2)


def test_aggregate_mean_and_std_over_seeds():
    seeds = [
        {"accuracy": 0.80, "rej": {"W": 10.0, "Z": 5.0}, "n": 100, "scheme": "x", "cm": [[1]]},
        {"accuracy": 0.82, "rej": {"W": 14.0, "Z": None}, "n": 100, "scheme": "x", "cm": [[1]]},
        {"accuracy": 0.84, "rej": {"W": "inf", "Z": 7.0}, "n": 100, "scheme": "x", "cm": [[1]]},
    ]
    agg = aggregate(seeds)
    assert agg["accuracy"]["mean"] == pytest.approx(0.82)
    assert agg["accuracy"]["std"] == pytest.approx(0.02)  # ddof=1: sqrt((.02² + 0 + .02²) / 2)
    assert agg["accuracy"]["n"] == 3
    assert agg["rej/Z"] == {"mean": pytest.approx(6.0), "std": pytest.approx(math.sqrt(2)), "n": 2}
    assert agg["rej/W"]["mean"] == INF and agg["rej/W"]["std"] is None
    assert agg["n"]["std"] == 0.0
    assert "scheme" not in agg and "cm" not in agg
    one = aggregate(seeds[:1])
    assert one["accuracy"] == {"mean": 0.80, "std": 0.0, "n": 1}
    real = aggregate([compute_metrics(HLS_Y, HLS_P, HLS_NAMES)] * 2)
    assert real["rej_vs_gq/W/rej80"] == {"mean": pytest.approx(2.0), "std": 0.0, "n": 2}


def test_roc_curves_keys_and_size():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 5, 6000)
    p = rng.dirichlet(np.ones(5), 6000)
    curves = roc_curves(y, p, HLS_NAMES, "auto")
    assert set(curves) == {f"ovr/{n}" for n in HLS_NAMES} | {f"vs_gq/{n}" for n in ("q", "W", "Z", "t")}
    for fpr, tpr in curves.values():
        assert 2 <= len(fpr) == len(tpr) <= 500
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert set(roc_curves(BIN_Y, BIN_P, ["qcd", "top"], "auto")) == {"ovr/qcd", "ovr/top", "signal/top"}
    jc = roc_curves(JC_Y, JC_P, JC_NAMES, "auto")
    assert set(jc) == {"ovr/QCD", "ovr/Hbb", "ovr/Tbl", "vs_qcd/Hbb", "vs_qcd/Tbl"}
    json.dumps(jc, allow_nan=False)


# --------------------------------------------------------------------------- statistical errors

def test_rejection_at_an_exactly_hit_efficiency_is_the_limit_from_below():
    fpr = np.array([0, 0, .25, .25, .5, .5, .75, .75, 1])
    tpr = np.array([0, .25, .25, .5, .5, .75, .75, 1, 1])
    assert fpr_at_tpr(fpr, tpr, 0.5 - 1e-9) == pytest.approx(fpr_at_tpr(fpr, tpr, 0.5), abs=1e-8)


def _binary_sample(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * y)))


def test_statistical_errors_match_the_analytic_ones():
    from salt.metrics import statistical_errors

    y, p = _binary_sample(4000, 2)
    m = compute_metrics(y, p, ["qcd", "top"])
    err = statistical_errors(y, p, ["qcd", "top"], replicas=200)
    acc = m["accuracy"]
    assert err["accuracy"] == pytest.approx(np.sqrt(acc * (1 - acc) / 4000))
    # Hanley & McNeil (1982) for the AUC
    a, n1, n0 = m["auc"], int(y.sum()), int((1 - y).sum())
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    hm = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    assert err["auc"] == pytest.approx(hm, rel=0.25)
    # rejection: at least the background's binomial error on the FPR (the cut's own error adds to it)
    rej = m["rej_signal"]["rej50"]
    fpr = 1 / rej
    binomial = rej * np.sqrt(fpr * (1 - fpr) / n0) / fpr
    assert binomial * 0.8 < err["rej_signal/rej50"] < binomial * 3
    assert "n" not in err and "rej_signal/n_bkg" not in err and "class_counts/qcd" not in err


def test_statistical_errors_of_a_big_test_set_scale_from_a_subsample():
    from salt.metrics import statistical_errors

    y, p = _binary_sample(8000, 3)
    full = statistical_errors(y, p, ["qcd", "top"], replicas=100)
    sub = statistical_errors(y, p, ["qcd", "top"], replicas=100, max_jets=2000)
    for key in ("auc", "rej_signal/rej50", "rej_signal/rej80"):
        assert sub[key] == pytest.approx(full[key], rel=0.35), key


def test_compute_metrics_adds_errors_on_request_and_they_survive_aggregation():
    y, p = _binary_sample(600, 4)
    m = compute_metrics(y, p, ["qcd", "top"], errors=True)
    assert "stat" not in compute_metrics(y, p, ["qcd", "top"])
    assert set(m["stat"]) >= {"accuracy", "auc", "rej_signal/rej50"}
    agg = aggregate([json_safe(m), json_safe(m)])
    assert agg["stat/auc"]["mean"] == pytest.approx(m["stat"]["auc"])


def test_statistical_error_of_an_unbounded_rejection_is_infinite():
    from salt.metrics import statistical_errors

    y = np.repeat([0, 1], 200)
    p = np.where(y == 1, 0.6, 0.4) + np.linspace(0, 0.01, 400)  # fully separated: no background passes
    err = statistical_errors(y, p, ["qcd", "top"], replicas=20)
    assert err["rej_signal/rej50"] == INF and err["accuracy"] == 0.0
    assert json.loads(json.dumps(json_safe(err)))["rej_signal/rej50"] == "inf"


def test_the_schemes_class_names_are_the_readers():
    from salt.data import pythia
    from salt.data.sources import hls4ml, jetclass

    from salt import metrics

    assert metrics.HLS4ML_CLASSES == hls4ml.CLASS_NAMES == pythia.CLASSES
    assert metrics.JETCLASS_CLASSES == jetclass.JETCLASS_CLASS_NAMES
