"""Kinematics and sort keys on hand-made jets whose answers are known."""

import awkward as ak
import numpy as np
import pytest

from salt.data.kinematics import delta_phi, delta_r, feature, kt, sort_and_pad, sort_key, wrap_phi
from salt.data.record import Record, RecordError


def make_record(pt, deta, dphi, labels=None):
    """A jet record from per-jet lists of (pt, deta, dphi); the other fields are consistent."""
    pt, deta, dphi = (ak.Array(v) for v in (pt, deta, dphi))
    eta, phi = deta + 0.5, dphi + 1.0
    particles = ak.zip({"pt": pt, "deta": deta, "dphi": dphi, "eta": eta, "phi": phi,
                        "px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pt * np.sinh(eta),
                        "energy": pt * np.cosh(eta)})
    n = len(pt)
    jets = {"pt": np.asarray(ak.sum(pt, axis=1), dtype=np.float32), "eta": np.full(n, 0.5, np.float32),
            "phi": np.ones(n, np.float32), "energy": np.asarray(ak.sum(particles.energy, axis=1)),
            "mass": np.zeros(n, np.float32), "n_particles": np.asarray(ak.num(pt), dtype=np.float32)}
    labels = np.zeros(n, np.int64) if labels is None else np.asarray(labels)
    return Record(particles, jets, labels, ("a", "b"), source="hand-made.root")


def test_wrap_phi_range_and_values():
    x = np.array([0.0, np.pi - 1e-6, np.pi + 0.1, -np.pi - 0.1, 3 * np.pi, -7.0])
    w = wrap_phi(x)
    assert np.all(w >= -np.pi) and np.all(w < np.pi)
    np.testing.assert_allclose(np.cos(w), np.cos(x), atol=1e-12)
    np.testing.assert_allclose(np.sin(w), np.sin(x), atol=1e-12)
    np.testing.assert_allclose(w[2], -np.pi + 0.1)
    np.testing.assert_allclose(w[3], np.pi - 0.1)


def test_delta_phi_wraps_across_the_branch_cut():
    # particles at phi = 3.1 and jet at -3.1 are 0.083 apart, not 6.2
    np.testing.assert_allclose(delta_phi(3.1, -3.1), 3.1 - (-3.1) - 2 * np.pi)
    np.testing.assert_allclose(abs(delta_phi(-3.1, 3.1)), 2 * np.pi - 6.2, atol=1e-12)


def test_delta_r_and_kt():
    np.testing.assert_allclose(delta_r(0.3, 0.4), 0.5)
    np.testing.assert_allclose(kt(10.0, 0.3, 0.4), 5.0)


def test_kt_sort_differs_from_pt_sort():
    # three particles: kT = 100*0.05 = 5, 20*0.5 = 10, 50*0.06 = 3
    rec = make_record([[100.0, 20.0, 50.0]], [[0.03, 0.3, 0.0]], [[0.04, 0.4, 0.06]])
    x, mask, key = sort_and_pad(rec, ["pt", "deta"], "kt", 4)
    np.testing.assert_allclose(x[0, :3, 0], [20.0, 100.0, 50.0])
    np.testing.assert_allclose(key[0, :3], [10.0, 5.0, 3.0], rtol=1e-6)
    x, _, _ = sort_and_pad(rec, ["pt"], "pt", 4)
    np.testing.assert_allclose(x[0, :3, 0], [100.0, 50.0, 20.0])
    x, _, _ = sort_and_pad(rec, ["pt"], "deltaR", 4)   # outermost first
    np.testing.assert_allclose(x[0, :3, 0], [20.0, 50.0, 100.0])


def test_padding_sorts_last_even_with_negative_keys():
    # a sort key can be negative ("none" uses -index); padding must still come after real particles
    rec = make_record([[1.0, 2.0, 3.0], [5.0]], [[0.1, 0.2, 0.3], [0.1]], [[0.0, 0.0, 0.0], [0.0]])
    for sort in ("kt", "pt", "deltaR", "none"):
        x, mask, key = sort_and_pad(rec, ["pt"], sort, 5)
        assert mask.tolist() == [[True] * 3 + [False] * 2, [True] + [False] * 4]
        assert np.all(x[~mask] == 0) and np.all(key[~mask] == 0)
        assert np.all(x[mask] != 0)


def test_ties_are_stable():
    # equal keys keep file order
    rec = make_record([[5.0, 5.0, 5.0, 7.0]], [[0.1, 0.1, 0.1, 0.1]], [[0.0, 0.0, 0.0, 0.0]])
    rec.particles["tag"] = ak.Array([[1.0, 2.0, 3.0, 4.0]])
    x, _, _ = sort_and_pad(rec, ["tag"], "pt", 4)
    assert x[0, :, 0].tolist() == [4.0, 1.0, 2.0, 3.0]
    x, _, _ = sort_and_pad(rec, ["tag"], "none", 4)
    assert x[0, :, 0].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_truncation_keeps_the_leading_particles_of_the_sort():
    rec = make_record([[1.0, 4.0, 2.0, 3.0]], [[0.1] * 4], [[0.0] * 4])
    x, mask, _ = sort_and_pad(rec, ["pt"], "pt", 2)
    assert x[0, :, 0].tolist() == [4.0, 3.0] and mask.all()


def _direct(pt, key, n, truncation):
    """One jet, by hand: the kept particles' pT in slot order (stable descending sorts)."""
    by_key = sorted(range(len(pt)), key=lambda i: -key[i])
    if truncation == "key":
        return [pt[i] for i in by_key[:n]]
    hardest = set(sorted(range(len(pt)), key=lambda i: -pt[i])[:n])
    return [pt[i] for i in by_key if i in hardest]


def test_truncation_by_pt_keeps_the_hardest_then_sorts():
    # a hard core and soft wide-angle particles: ΔR-first cutting keeps the soft periphery
    pt, deta = [100.0, 50.0, 30.0, 2.0, 1.0, 0.5], [0.01, 0.02, 0.05, 0.5, 0.6, 0.7]
    rec = make_record([pt], [deta], [[0.0] * 6])
    x_pt, mask, key = sort_and_pad(rec, ["pt"], "deltaR", 3, "pt")
    x_key, _, _ = sort_and_pad(rec, ["pt"], "deltaR", 3, "key")
    assert x_pt[0, :, 0].tolist() == _direct(pt, deta, 3, "pt") == [30.0, 50.0, 100.0]
    assert x_key[0, :, 0].tolist() == _direct(pt, deta, 3, "key") == [0.5, 1.0, 2.0]
    np.testing.assert_allclose(key[0], [0.05, 0.02, 0.01], rtol=1e-6)  # the kept particles' own keys
    assert mask.all()


@pytest.mark.parametrize("shuffle", [False, True])  # pT-ordered files take a shortcut; shuffled ones rank by pT
def test_truncation_matches_a_direct_computation(shuffle):
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 14, size=40)
    pt = rng.exponential(10.0, counts.sum()).astype(np.float32)
    pt[1::7] = pt[::7][: len(pt[1::7])]  # some pT ties
    deta = rng.normal(0, 0.3, counts.sum()).astype(np.float32)
    dphi = rng.normal(0, 0.3, counts.sum()).astype(np.float32)
    jets = np.split(np.arange(counts.sum()), np.cumsum(counts)[:-1])
    if not shuffle:
        jets = [j[np.argsort(-pt[j], kind="stable")] for j in jets]
    else:
        jets = [rng.permutation(j) for j in jets]
    cols = [[v[j].tolist() for j in jets] for v in (pt, deta, dphi)]
    rec = make_record(*cols)
    for sort in ("kt", "deltaR", "pt", "none"):
        keys = [ak.to_list(k) for k in sort_key(rec, sort)]
        for cut in ("pt", "key"):
            x, mask, _ = sort_and_pad(rec, ["pt"], sort, 5, cut)
            for i, (p, k) in enumerate(zip(cols[0], keys)):
                expect = _direct(np.float32(p).tolist(), k, 5, cut)
                assert x[i, : len(expect), 0].tolist() == expect, (sort, cut, i)
                assert mask[i].sum() == len(expect)
    # the two orders of operations differ on these jets
    a, _, _ = sort_and_pad(rec, ["pt"], "deltaR", 5, "pt")
    b, _, _ = sort_and_pad(rec, ["pt"], "deltaR", 5, "key")
    assert not np.array_equal(np.sort(a, axis=1), np.sort(b, axis=1))


def test_truncation_by_pt_needs_jets():
    from salt.data.kinematics import resolve_truncation

    assert resolve_truncation("auto", "jet") == "pt" and resolve_truncation("auto", "points") == "key"
    with pytest.raises(ValueError, match="points records have no pT"):
        resolve_truncation("pt", "points")
    with pytest.raises(ValueError, match="expected one of"):
        resolve_truncation("hardest", "jet")


def test_derived_features():
    rec = make_record([[10.0, 30.0]], [[0.3, 0.0]], [[0.4, 0.1]])
    np.testing.assert_allclose(ak.to_list(feature(rec, "pt_rel")[0]), [0.25, 0.75])
    np.testing.assert_allclose(ak.to_list(feature(rec, "delta_r")[0]), [0.5, 0.1])
    np.testing.assert_allclose(ak.to_list(feature(rec, "log_pt")[0]), np.log([10.0, 30.0]), rtol=1e-6)
    with pytest.raises(RecordError, match="hand-made.root.*'nonsense'"):
        feature(rec, "nonsense")


def test_unknown_sort_names_the_choices():
    rec = make_record([[1.0]], [[0.1]], [[0.1]])
    with pytest.raises(KeyError, match="kt"):
        sort_key(rec, "eta_phi_magic")


def test_record_validation_names_file_and_entry():
    rec = make_record([[1.0], [2.0, float("nan")]], [[0.1], [0.1, 0.2]], [[0.1], [0.1, 0.2]])
    rec.entry_start = 100
    with pytest.raises(RecordError, match=r"hand-made.root: entry 101: non-finite .*'p[xt]'"):
        rec.validate()
    empty = make_record([[1.0], []], [[0.1], []], [[0.1], []])
    with pytest.raises(RecordError, match="entry 1: no particles"):
        empty.validate()


def test_wrap_phi_keeps_values_inside_exact_and_takes_awkward():
    small = np.array([1e-7, -3e-6, 0.5], dtype=np.float32)
    assert np.array_equal(wrap_phi(small), small) and wrap_phi(small).dtype == np.float32
    jagged = ak.Array([[0.1, 4.0], [-4.0]])
    out = wrap_phi(jagged)
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(out)), [0.1, 4.0 - 2 * np.pi, -4.0 + 2 * np.pi])


def test_required_fields_are_enough_for_every_feature_and_sort():
    from salt.data.kinematics import JET_SORTS, _FEATURES, required_fields

    rng = np.random.default_rng(0)
    counts = rng.integers(1, 9, size=12)
    cols = [ak.unflatten(rng.uniform(0.5, 2.0, counts.sum()).astype(np.float32), counts)] + \
        [ak.unflatten(rng.normal(0, 0.3, counts.sum()).astype(np.float32), counts) for _ in range(2)]
    full = make_record(*cols)
    for name in _FEATURES:
        for sort in JET_SORTS:
            for cut in ("pt", "key"):
                need = required_fields([name], sort, cut)
                part = Record(particles=full.particles[list(need)], jets=full.jets, labels=full.labels,
                              class_names=full.class_names, source="partial")
                part.validate(need)
                expect = sort_and_pad(full, [name], sort, 6, cut)
                got = sort_and_pad(part, [name], sort, 6, cut)
                for a, b in zip(expect, got, strict=True):
                    np.testing.assert_array_equal(a, b, err_msg=f"{name} sorted by {sort}, cut by {cut}")
    # a field that is not derived is its own requirement; the sort's fields come after
    assert required_fields(["charge", "pt"], "deltaR") == ("charge", "pt", "deta", "dphi")
