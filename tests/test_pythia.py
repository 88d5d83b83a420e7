"""salt generate: real Pythia8 + FastJet jets in the JetClass ROOT schema.

Every test generates its own (small) sample; nothing is mocked. The per-class sample
(40 jets of each of the five classes) takes some seconds, so tests using it are slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from salt import cli
from salt.data import pythia
from salt.data.sources import jetclass
from salt.data.pythia import CLASSES, LABEL_BRANCHES, METADATA_KEY, GenerationError, generate

N_JETS = 40
PART_FLOAT = ("part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi", "part_charge")
PART_INT = ("part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron", "part_isMuon")
JET_FLOAT = ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_sdmass", "jet_nparticles",
             "jet_tau1", "jet_tau2", "jet_tau3")


def read(path: Path) -> dict[str, object]:
    with uproot.open(path) as f:
        return f["tree"].arrays(filter_name=["part_*", "jet_*", "label_*", "aux_*"], how=dict)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """40 jets of every class, generated once for the module. A pTHatMin of 0.9 pt_min (the
    default is lower, for an unshaped spectrum) makes them in far fewer events."""
    out = tmp_path_factory.mktemp("pythia")
    result = {}
    for i, process in enumerate(CLASSES):
        path = out / f"{process}_000.root"
        summary = generate(process, N_JETS, seed=100 + i, output=path, pthat_min=450.0, progress=False)
        result[process] = (path, summary)
    return result


# --------------------------------------------------------------------------------------
# reproducibility
# --------------------------------------------------------------------------------------

def test_same_seed_same_jets_whatever_the_batch_size(tmp_path, monkeypatch):
    a = generate("W", 15, seed=7, output=tmp_path / "a.root", progress=False)
    monkeypatch.setattr(pythia, "_FLUSH_JETS", 6)  # several extend() calls into the tree
    b = generate("W", 15, seed=7, output=tmp_path / "b.root", progress=False, batch_events=4)
    c = generate("W", 15, seed=8, output=tmp_path / "c.root", progress=False)
    ra, rb, rc = read(tmp_path / "a.root"), read(tmp_path / "b.root"), read(tmp_path / "c.root")
    assert a["jets_written"] == b["jets_written"] == 15
    assert sorted(ra) == sorted(rb)
    for key in ra:
        assert ak.array_equal(ra[key], rb[key]), key  # bit-identical values
    assert not ak.array_equal(ra["jet_pt"], rc["jet_pt"])  # another seed, other jets
    with uproot.open(tmp_path / "b.root") as f:
        assert f["tree"]["jet_pt"].num_baskets >= 2  # really written in several chunks
    assert c["seed"] == 8


# --------------------------------------------------------------------------------------
# file format
# --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_schema_is_a_jetclass_ttree(samples):
    path, _ = samples["t"]
    with uproot.open(path) as f:
        assert f.classnames()["tree;1"] == "TTree"  # not an RNTuple
        tree = f["tree"]
        assert tree.num_entries == N_JETS
        for name in PART_FLOAT:
            assert tree[name].interpretation == uproot.AsJagged(uproot.AsDtype(">f4")), name
        for name in PART_INT:
            assert tree[name].interpretation == uproot.AsJagged(uproot.AsDtype(">i4")), name
        for name in JET_FLOAT + ("jet_tau4",):
            assert tree[name].interpretation == uproot.AsDtype(">f4"), name
        for name in LABEL_BRANCHES:
            assert tree[name].interpretation == uproot.AsDtype(">i4"), name
        parts = tree.arrays(filter_name=["part_*"])
        assert str(parts.type.content) == (
            "{" + ", ".join(f"{n}: var * {'float32' if n in PART_FLOAT else 'int32'}"
                            for n in PART_FLOAT + PART_INT) + "}")
        meta = json.loads(str(f[METADATA_KEY]))
    assert meta["process"] == "t" and meta["seed"] == 104 and "Random:seed = 104" in meta["pythia_settings"]


@pytest.mark.slow
def test_labels_are_one_hot_with_all_five_branches(samples):
    for index, process in enumerate(CLASSES):
        arrays = read(samples[process][0])
        matrix = np.stack([np.asarray(arrays[b]) for b in LABEL_BRANCHES], axis=1)
        expected = np.zeros((N_JETS, len(CLASSES)), dtype=np.int32)
        expected[:, index] = 1
        np.testing.assert_array_equal(matrix, expected)


@pytest.mark.slow
def test_jetclass_reader_reads_the_files(samples):
    record = jetclass.read(samples["Z"][0], label_branches=LABEL_BRANCHES, class_names=CLASSES,
                           extra_particle_branches=PART_INT)
    assert len(record) == N_JETS and set(record.labels) == {CLASSES.index("Z")}


# --------------------------------------------------------------------------------------
# physics
# --------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("process", CLASSES)
def test_jets_are_consistent(samples, process):
    path, summary = samples[process]
    a = read(path)
    assert summary["jets_written"] == N_JETS and summary["events_generated"] > 0
    jet = {k: np.asarray(a[k], dtype=np.float64) for k in JET_FLOAT}
    assert np.all((jet["jet_pt"] > 500) & (jet["jet_pt"] < 1000))
    assert np.all(np.abs(jet["jet_eta"]) < 2)
    counts = np.asarray(ak.num(a["part_px"]))
    np.testing.assert_array_equal(counts, jet["jet_nparticles"])

    px, py, pz, e = (ak.values_astype(a[k], np.float64) for k in ("part_px", "part_py", "part_pz", "part_energy"))
    # the jet is the E-scheme sum of its particles
    spx, spy, spz, se = (np.asarray(ak.sum(v, axis=1)) for v in (px, py, pz, e))
    np.testing.assert_allclose(np.hypot(spx, spy), jet["jet_pt"], rtol=1e-5)
    np.testing.assert_allclose(se, jet["jet_energy"], rtol=1e-5)
    np.testing.assert_allclose(np.arcsinh(spz / np.hypot(spx, spy)), jet["jet_eta"], atol=1e-5)
    np.testing.assert_allclose(np.arctan2(spy, spx), jet["jet_phi"], atol=1e-5)

    # particles in descending pT, dphi wrapped, deta in JetClass's sign convention
    pt = np.hypot(px, py)
    assert ak.all(pt[:, :-1] >= pt[:, 1:] * (1 - 1e-6))
    assert ak.min(pt) >= pythia.PART_PT_MIN * (1 - 1e-6) > 0  # the constituent threshold holds
    assert summary["settings"]["part_pt_min"] == pythia.PART_PT_MIN
    dphi = ak.flatten(a["part_dphi"])
    assert np.all(np.abs(dphi) <= np.float32(np.pi))
    jet_eta_per_part = np.repeat(jet["jet_eta"], counts)
    true_deta = np.asarray(ak.flatten(np.arcsinh(pz / pt))) - jet_eta_per_part
    stored = np.asarray(ak.flatten(a["part_deta"]), dtype=np.float64)
    np.testing.assert_allclose(np.where(jet_eta_per_part > 0, true_deta, -true_deta), stored, atol=1e-4)
    np.testing.assert_allclose(jetclass.stored_deta(stored, jet_eta_per_part), true_deta, atol=1e-4)
    true_dphi = np.asarray(ak.flatten(np.arctan2(py, px))) - np.repeat(jet["jet_phi"], counts)
    true_dphi = np.mod(true_dphi + np.pi, 2 * np.pi) - np.pi
    np.testing.assert_allclose(np.asarray(dphi, dtype=np.float64), true_dphi, atol=1e-4)
    # anti-kT clusters in rapidity: nearly all constituents lie within R of the axis in (y, phi)
    # (in eta a slow massive hadron can sit far out, so no bound on deta itself)
    rap = lambda en, z: 0.5 * np.log((en + z) / (en - z))  # noqa: E731
    dy = np.asarray(ak.flatten(rap(e, pz))) - np.repeat(rap(se, spz), counts)
    assert np.quantile(np.hypot(dy, true_dphi), 0.99) < 0.8

    # every particle is exactly one of the five kinds; charge agrees with the kind
    flags = np.stack([np.asarray(ak.flatten(a[k])) for k in PART_INT], axis=1)
    np.testing.assert_array_equal(flags.sum(axis=1), 1)
    charge = np.asarray(ak.flatten(a["part_charge"]))
    charged_kind = flags[:, 0] | flags[:, 3] | flags[:, 4]
    np.testing.assert_array_equal(charge != 0, charged_kind.astype(bool))
    assert set(np.unique(charge)) <= {-1.0, 0.0, 1.0}
    assert flags[:, 0].sum() > 0 and flags[:, 2].sum() > 0  # jets have charged hadrons and photons

    # soft-drop mass never exceeds the jet mass; taus fall with N, though one-pass kT axes are a
    # local minimum, so a jet may break the order slightly (seen: tau3 0.6 % above tau2)
    mass = np.sqrt(np.maximum(se**2 - spx**2 - spy**2 - spz**2, 0))
    assert np.all(jet["jet_sdmass"] <= mass * (1 + 1e-4) + 1e-3)
    for lower, higher in (("jet_tau1", "jet_tau2"), ("jet_tau2", "jet_tau3")):
        assert np.all(jet[higher] <= 1.05 * jet[lower] + 1e-6)
        assert np.mean(jet[higher] <= jet[lower] + 1e-6) >= 0.9


@pytest.mark.slow
def test_signal_jets_carry_the_resonance_mass(samples):
    medians = {p: float(np.median(read(samples[p][0])["jet_sdmass"])) for p in CLASSES}
    assert 65 < medians["W"] < 95, medians
    assert 75 < medians["Z"] < 105, medians
    assert 145 < medians["t"] < 200, medians
    assert medians["q"] < 50 and medians["g"] < 60, medians


@pytest.mark.slow
def test_truth_matching(samples):
    expected_ids = {"W": {24}, "Z": {23}, "t": {6}, "g": {21}, "q": {1, 2, 3}}
    for process, ids in expected_ids.items():
        a = read(samples[process][0])
        assert set(np.abs(np.asarray(a["aux_truth_pid"]))) <= ids, process
        dr = np.asarray(a["aux_truth_dr"])
        assert np.all(dr < 0.8), process
        # the matched object points along the jet
        jet_eta, jet_phi = np.asarray(a["jet_eta"]), np.asarray(a["jet_phi"])
        dphi = np.mod(np.asarray(a["aux_truth_phi"]) - jet_phi + np.pi, 2 * np.pi) - np.pi
        assert np.all(np.hypot(np.asarray(a["aux_truth_eta"]) - jet_eta, dphi) <= dr + 1e-4), process


def _reference_softdrop_mass(p: np.ndarray, z_cut: float = 0.1) -> float:
    """Plain Cambridge/Aachen clustering then beta = 0 soft drop, written out by hand."""
    nodes = [(row, None) for row in p]  # (four-momentum, children)
    active = list(range(len(nodes)))
    while len(active) > 1:
        mom = np.array([nodes[i][0] for i in active])
        y = 0.5 * np.log((mom[:, 3] + mom[:, 2]) / (mom[:, 3] - mom[:, 2]))
        phi = np.arctan2(mom[:, 1], mom[:, 0])
        dphi = np.mod(phi[:, None] - phi[None, :] + np.pi, 2 * np.pi) - np.pi
        d2 = (y[:, None] - y[None, :]) ** 2 + dphi**2
        np.fill_diagonal(d2, np.inf)
        i, j = np.unravel_index(np.argmin(d2), d2.shape)
        a, b = active[i], active[j]
        nodes.append((nodes[a][0] + nodes[b][0], (a, b)))
        active = [k for k in active if k not in (a, b)] + [len(nodes) - 1]
    node = active[0]
    while nodes[node][1] is not None:
        a, b = nodes[node][1]
        pta, ptb = np.hypot(*nodes[a][0][:2]), np.hypot(*nodes[b][0][:2])
        if min(pta, ptb) / (pta + ptb) > z_cut:
            break
        node = a if pta > ptb else b
    v = nodes[node][0]
    return float(np.sqrt(max(v[3] ** 2 - v[0] ** 2 - v[1] ** 2 - v[2] ** 2, 0.0)))


@pytest.mark.slow
@pytest.mark.parametrize("process", ["t", "g"])
def test_softdrop_mass_matches_a_hand_written_reference(samples, process):
    a = read(samples[process][0])
    for k in range(8):
        p = np.stack([np.asarray(a[b][k], dtype=np.float64)
                      for b in ("part_px", "part_py", "part_pz", "part_energy")], axis=1)
        assert float(a["jet_sdmass"][k]) == pytest.approx(_reference_softdrop_mass(p), rel=1e-3, abs=0.05)


# --------------------------------------------------------------------------------------
# CLI and errors
# --------------------------------------------------------------------------------------

def test_cli_writes_file_and_summary_only_when_asked(tmp_path, capsys):
    out = tmp_path / "raw" / "q_000.root"
    rc = cli.main(["generate", "--process", "q", "--jets", "5", "--seed", "3", "--output", str(out), "--quiet"])
    assert rc == 0 and out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["q_000.root"]  # no summary, no temp file
    summary_path = tmp_path / "q_000.json"
    rc = cli.main(["generate", "--process", "q", "--jets", "5", "--seed", "3", "--output", str(out),
                   "--summary", str(summary_path), "--quiet"])
    assert rc == 0
    summary = json.loads(summary_path.read_text())
    assert summary["jets_written"] == 5 and summary["process"] == "q" and summary["seed"] == 3
    assert summary["events_generated"] >= 1 and 0 < summary["efficiency_jets_per_event"] <= 2
    assert "provenance" in summary
    assert read(out)["label_q"].tolist() == [1] * 5


@pytest.mark.parametrize("seed", [0, -1, 900_000_001])
def test_seeds_outside_pythias_range_are_refused(tmp_path, capsys, seed):
    out = tmp_path / "x.root"
    rc = cli.main(["generate", "--process", "W", "--jets", "5", "--seed", str(seed), "--output", str(out)])
    assert rc == 2
    assert "seed" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"process": "H"}, "unknown process"),
    ({"n_jets": 0}, "n_jets"),
    ({"pt_min": 900.0, "pt_max": 500.0}, "pt_min < pt_max"),
    ({"radius": -0.4}, "radius"),
    ({"part_pt_min": -1.0}, "part_pt_min"),
])
def test_bad_arguments_name_the_problem(tmp_path, kwargs, message):
    args = {"process": "W", "n_jets": 5, "seed": 1, "output": tmp_path / "x.root", **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(**args, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_window_without_jets_stops_and_leaves_nothing(tmp_path):
    out = tmp_path / "none.root"
    with pytest.raises(GenerationError, match="only 0 of 5 jets after 20 events"):
        generate("W", 5, seed=1, output=out, eta_max=1e-6, max_events=20, progress=False)
    assert list(tmp_path.iterdir()) == []
