"""The C/A clustering-history sorts: hand-made jets whose clustering is known, ties, single
particles, padding, and agreement with FastJet and with a direct per-jet implementation."""

import awkward as ak
import numpy as np
import pytest

from clustering_reference import orders as reference_orders
from salt.data import clustering
from salt.data.clustering import ca_history, declustering_keys, declustering_positions
from salt.data.kinematics import sort_and_pad, sort_key
from test_kinematics import make_record


def four_momenta(pt, eta, phi, mass=0.0):
    pt, eta, phi = (np.asarray(v, dtype=np.float64) for v in (pt, eta, phi))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return np.stack([px, py, pz, np.sqrt(px * px + py * py + pz * pz + np.asarray(mass) ** 2)])


def random_jets(rng, n_jets, max_particles=30, single=True):
    counts = rng.integers(1 if single else 2, max_particles + 1, n_jets)
    total = int(counts.sum())
    p4 = four_momenta(rng.exponential(20.0, total) + 0.1, rng.normal(0, 0.4, total), rng.normal(0, 0.4, total),
                      np.where(rng.random(total) < 0.3, 0.14, 0.0))
    return p4.astype(np.float32).astype(np.float64), counts   # what a float32 record holds


def order_of(positions, counts, jet):
    start = int(np.sum(counts[:jet]))
    return list(np.argsort(positions[start:start + counts[jet]]))


# Two tight pairs far apart: (A, B) 0.05 apart, (C, D) 0.1 apart, the pairs 0.5 apart. C/A merges
# A+B, C+D, then the two; AB (110 GeV) is harder than CD (55 GeV). File order: D, B, C, A.
PAIRS = {"pt": [5.0, 10.0, 50.0, 100.0], "eta": [0.0, 0.0, 0.0, 0.0], "phi": [0.6, 0.05, 0.5, 0.0]}


def test_two_pairs_depth_first_and_lund_orders():
    p4 = four_momenta(**PAIRS)
    pos = declustering_positions(p4, np.array([4]))
    # depth-first, harder first: AB (A, B), then CD (C, D)
    assert order_of(pos["ca_depth"], [4], 0) == [3, 1, 2, 0]
    # Lund: A ends the primary branch; CD leaves at kT ~ 55 * 0.5, B at 10 * 0.05
    assert order_of(pos["lund_kt"], [4], 0) == [3, 2, 0, 1]


def test_merge_history_values_of_a_known_jet():
    # A (10 GeV, phi 0), B (50, 0.1), C (30, 0.3): A+B first, then AB+C; AB is harder.
    p4 = four_momenta([10.0, 50.0, 30.0], [0.0, 0.0, 0.0], [0.0, 0.1, 0.3])
    h = ca_history(p4, np.array([3]))
    assert h.harder[0].tolist() == [1, 3] and h.softer[0].tolist() == [0, 2]
    assert h.harder_size[0].tolist() == [1, 2]
    phi_ab = np.arctan2(p4[1, :2].sum(), p4[0, :2].sum())
    np.testing.assert_allclose(h.delta[0], [0.1, 0.3 - phi_ab], rtol=1e-9)
    np.testing.assert_allclose(h.kt[0], [10.0 * 0.1, 30.0 * (0.3 - phi_ab)], rtol=1e-9)
    pos = declustering_positions(p4, np.array([3]))
    assert order_of(pos["ca_depth"], [3], 0) == [1, 0, 2]
    assert order_of(pos["lund_kt"], [3], 0) == [1, 2, 0]


def test_keys_are_n_minus_position_and_sort_descending():
    p4 = four_momenta(**PAIRS)
    keys = declustering_keys(p4, np.array([4]))
    assert keys["ca_depth"].dtype == np.float32
    assert keys["ca_depth"].tolist() == [1.0, 3.0, 2.0, 4.0]
    assert keys["lund_kt"].tolist() == [2.0, 1.0, 3.0, 4.0]


def test_single_particle_jets_get_key_one():
    p4 = np.concatenate([four_momenta([7.0], [0.1], [0.2]), four_momenta(**PAIRS), four_momenta([3.0], [0.0], [0.0])],
                        axis=1)
    keys = declustering_keys(p4, np.array([1, 4, 1]))
    for name in clustering.SORTS:
        assert keys[name][0] == 1.0 and keys[name][-1] == 1.0
    assert ca_history(four_momenta([7.0], [0.1], [0.2]), np.array([1])).harder.shape == (1, 0)


def test_equal_pt_parents_put_the_lower_index_first():
    # two identical particles (ΔR = 0) and two equal-pT particles at mirror angles
    p4 = np.concatenate([four_momenta([5.0, 5.0], [0.2, 0.2], [0.1, 0.1]),
                         four_momenta([8.0, 8.0, 1.0], [0.0, 0.0, 0.0], [0.1, -0.1, 0.5])], axis=1)
    pos = declustering_positions(p4, np.array([2, 3]))
    assert order_of(pos["ca_depth"], np.array([2, 3]), 0) == [0, 1]
    assert order_of(pos["lund_kt"], np.array([2, 3]), 0) == [0, 1]
    assert order_of(pos["ca_depth"], np.array([2, 3]), 1) == [0, 1, 2]


def test_jets_without_particles_are_refused():
    with pytest.raises(ValueError, match="jet 1 has none"):
        declustering_positions(np.zeros((4, 2)), np.array([2, 0]))


@pytest.mark.parametrize("block, chunk", [(7, 64), (5000, 1 << 16)])
def test_orders_agree_with_a_direct_implementation(monkeypatch, block, chunk):
    # small blocks and chunks exercise the blocking (several FastJet calls, jets of many widths)
    monkeypatch.setattr(clustering, "_CLUSTER_BLOCK", block)
    monkeypatch.setattr(clustering, "_CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(7)
    p4, counts = random_jets(rng, 120)
    pos = declustering_positions(p4, counts)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for j in range(len(counts)):
        depth, lund = reference_orders(list(map(tuple, p4[:, starts[j]:starts[j + 1]].T)))
        assert order_of(pos["ca_depth"], counts, j) == depth, f"jet {j}"
        assert order_of(pos["lund_kt"], counts, j) == lund, f"jet {j}"


def fastjet_sequence(p4, counts):
    import fastjet

    arrays = {k: ak.unflatten(v, counts) for k, v in zip(("px", "py", "pz", "E"), p4)}
    jets = ak.zip(arrays, with_name="Momentum4D")
    return fastjet.ClusterSequence(jets, fastjet.JetDefinition(fastjet.cambridge_algorithm, clustering.RECLUSTER_R))


def test_primary_declusterings_match_fastjet_lund_plane():
    rng = np.random.default_rng(3)
    p4, counts = random_jets(rng, 200)
    lund = fastjet_sequence(p4, counts).exclusive_jets_lund_declusterings(1)
    h = ca_history(p4, counts)
    for j, n in enumerate(counts):
        node, delta, kt = 2 * n - 2, [], []
        while node >= n:
            delta.append(h.delta[j, node - n])
            kt.append(h.kt[j, node - n])
            node = h.harder[j, node - n]
        np.testing.assert_allclose(delta, ak.to_numpy(lund[j][0].Delta), rtol=1e-12, err_msg=f"jet {j}")
        np.testing.assert_allclose(kt, ak.to_numpy(lund[j][0].kt), rtol=1e-12, err_msg=f"jet {j}")


@pytest.mark.parametrize("n_subjets", [2, 3, 5])
def test_tree_cuts_match_fastjet_exclusive_jets(n_subjets):
    # undoing the last k - 1 merges leaves FastJet's k exclusive C/A jets
    rng = np.random.default_rng(11)
    p4, counts = random_jets(rng, 150, single=False)
    keep = counts >= n_subjets
    starts = np.concatenate([[0], np.cumsum(counts)])
    p4 = np.concatenate([p4[:, starts[j]:starts[j + 1]] for j in np.flatnonzero(keep)], axis=1)
    counts = counts[keep]
    fj = fastjet_sequence(p4, counts).exclusive_jets_constituent_index(n_subjets)
    h = ca_history(p4, counts)
    for j, n in enumerate(counts):
        members = {k: {k} for k in range(n)}
        for t in range(n - n_subjets):
            members[n + t] = members.pop(h.harder[j, t]) | members.pop(h.softer[j, t])
        expected = sorted(sorted(m) for m in members.values())
        assert sorted(sorted(s) for s in ak.to_list(fj[j])) == expected, f"jet {j}"


def test_keys_follow_the_particles_when_the_file_order_changes():
    rng = np.random.default_rng(5)
    p4, counts = random_jets(rng, 50)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    perm = np.concatenate([s + rng.permutation(n) for s, n in zip(starts, counts)])
    keys, shuffled = declustering_keys(p4, counts), declustering_keys(p4[:, perm], counts)
    for name in clustering.SORTS:
        np.testing.assert_array_equal(shuffled[name], keys[name][perm])


def test_sort_and_pad_with_clustering_sorts_pads_last():
    # jets of 4, 1 and 3 particles, N = 3: the 4-particle jet is cut, the others padded
    pt = [[5.0, 10.0, 50.0, 100.0], [7.0], [10.0, 50.0, 30.0]]
    deta = [[0.0] * 4, [0.1], [0.0] * 3]
    dphi = [[0.6, 0.05, 0.5, 0.0], [0.2], [0.0, 0.1, 0.3]]
    rec = make_record(pt, deta, dphi)
    x, mask, value = sort_and_pad(rec, ["pt"], "lund_kt", 3, "key")  # sort, then cut
    np.testing.assert_allclose(x[0, :, 0], [100.0, 50.0, 5.0], rtol=1e-6)
    np.testing.assert_allclose(x[1, :, 0], [7.0, 0.0, 0.0])
    np.testing.assert_allclose(x[2, :, 0], [50.0, 30.0, 10.0], rtol=1e-6)
    assert mask.tolist() == [[True] * 3, [True, False, False], [True] * 3]
    assert value.tolist() == [[4.0, 3.0, 2.0], [1.0, 0.0, 0.0], [3.0, 2.0, 1.0]]
    # the default cuts first: the 3 hardest (100, 50, 10), in the key's order of the whole jet
    x, _, value = sort_and_pad(rec, ["pt"], "lund_kt", 3)
    np.testing.assert_allclose(x[0, :, 0], [100.0, 50.0, 10.0], rtol=1e-6)
    assert value[0].tolist() == [4.0, 3.0, 1.0]
    x, _, value = sort_and_pad(rec, ["pt"], "ca_depth", 3)
    np.testing.assert_allclose(x[0, :, 0], [100.0, 10.0, 50.0], rtol=1e-6)
    key = sort_key(rec, "ca_depth")
    assert ak.to_list(ak.num(key)) == [4, 1, 3]
