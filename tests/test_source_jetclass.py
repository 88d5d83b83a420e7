"""The JetClass reader on files written in the real schema (tests/formats.py)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from formats import jetclass_branches, write_jetclass_file, write_jetclass_root
from salt.data.record import RecordError
from salt.data.sources import jetclass

N = 600


@pytest.fixture(scope="module")
def branches():
    return jetclass_branches(N, seed=3)


@pytest.fixture(scope="module")
def root_file(tmp_path_factory, branches):
    return write_jetclass_root(tmp_path_factory.mktemp("jc") / "HToBB_120.root", branches)


def test_reads_the_real_schema(root_file, branches):
    # the file really has the mixed label dtypes and vector branches of JetClass
    with uproot.open(root_file) as f:
        types = {k: f["tree"][k].typename for k in ("label_QCD", "label_Hbb", "label_Zqq", "part_px")}
    assert types == {"label_QCD": "float", "label_Hbb": "bool", "label_Zqq": "int32_t", "part_px": "float[]"}

    rec = jetclass.read(root_file)
    assert len(rec) == N and rec.kind == "jet" and rec.class_names == jetclass.JETCLASS_CLASS_NAMES
    onehot = np.stack([np.asarray(branches[b], dtype=float) for b in jetclass.JETCLASS_LABELS], axis=1)
    np.testing.assert_array_equal(rec.labels, onehot.argmax(axis=1))
    assert len(set(rec.labels.tolist())) > 5
    np.testing.assert_array_equal(rec.jets["n_particles"], ak.num(branches["part_px"]).to_numpy())
    for f in rec.particles.fields:
        assert rec.particles[f].type.content.content.primitive == "float32"


def test_derived_kinematics_and_true_deta_sign(root_file, branches):
    rec = jetclass.read(root_file)
    px, py, pz = (np.asarray(ak.flatten(branches[f"part_{c}"]), dtype=np.float64) for c in ("px", "py", "pz"))
    p = rec.particles
    np.testing.assert_allclose(ak.flatten(p.pt), np.hypot(px, py), rtol=1e-6)
    np.testing.assert_allclose(ak.flatten(p.eta), np.arcsinh(pz / np.hypot(px, py)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ak.flatten(p.phi), np.arctan2(py, px), rtol=1e-6, atol=1e-6)
    # Record.deta is the true eta difference, whichever side the jet is on ...
    true_deta = ak.flatten(p.eta - rec.jets["eta"])
    np.testing.assert_allclose(ak.flatten(p.deta), true_deta, atol=2e-5)
    # ... while the file stores it sign-flipped unless the jet has eta > 0
    negative = np.repeat(rec.jets["eta"] <= 0, ak.num(p.deta).to_numpy())
    stored = ak.flatten(branches["part_deta"]).to_numpy()
    assert negative.any() and (~negative).any()
    np.testing.assert_allclose(stored[negative], -ak.flatten(p.deta).to_numpy()[negative], atol=1e-7)
    dphi = ak.flatten(p.dphi).to_numpy()
    assert np.all((dphi >= -np.pi) & (dphi < np.pi))


def test_jet_mass_and_energy_from_the_jet_four_vector(root_file, branches):
    rec = jetclass.read(root_file)
    sums = {c: ak.sum(branches[f"part_{c}"], axis=1).to_numpy().astype(np.float64)
            for c in ("px", "py", "pz", "energy")}
    mass = np.sqrt(sums["energy"] ** 2 - sums["px"] ** 2 - sums["py"] ** 2 - sums["pz"] ** 2)
    np.testing.assert_allclose(rec.jets["mass"], mass, rtol=2e-3)
    np.testing.assert_allclose(rec.jets["energy"], sums["energy"], rtol=1e-5)
    np.testing.assert_allclose(rec.jets["pt"], np.hypot(sums["px"], sums["py"]), rtol=1e-5)


def test_entry_ranges_and_iteration(root_file):
    whole = jetclass.read(root_file)
    part = jetclass.read(root_file, entry_start=100, entry_stop=250)
    assert len(part) == 150 and part.entry_start == 100
    assert ak.all(part.particles.px == whole.particles.px[100:250])
    recs = list(jetclass.iter_records(root_file, step=250))
    assert [len(r) for r in recs] == [250, 250, 100] and [r.entry_start for r in recs] == [0, 250, 500]
    np.testing.assert_array_equal(np.concatenate([r.labels for r in recs]), whole.labels)
    assert ak.all(ak.concatenate([r.particles.deta for r in recs]) == whole.particles.deta)
    assert jetclass.num_entries(root_file) == N


def test_extra_branches_on_request(root_file, branches):
    rec = jetclass.read(root_file, extra_particle_branches=jetclass.PID_BRANCHES + jetclass.TRACK_BRANCHES,
                        extra_jet_branches=("jet_sdmass", "jet_tau2"))
    assert {"charge", "isMuon", "d0val", "dzerr"} <= set(rec.particles.fields)
    assert ak.all(rec.particles.isPhoton == branches["part_isPhoton"])
    assert "sdmass" in rec.jets and "tau2" in rec.jets
    assert "charge" not in jetclass.read(root_file, entry_stop=5).particles.fields
    with pytest.raises(RecordError, match=r"HToBB_120.root.*part_nope"):
        jetclass.read(root_file, extra_particle_branches=("part_nope",))


def test_custom_label_branches_for_pythia_files(tmp_path):
    labels = ("label_g", "label_q", "label_Wqq", "label_Zqq", "label_Tbqq")
    path = write_jetclass_file(tmp_path / "pythia.root", 50, seed=1, label_branches=labels, classes=4,
                               with_pid=False, with_tracks=False)
    rec = jetclass.read(path, label_branches=labels)
    assert rec.class_names == ("g", "q", "Wqq", "Zqq", "Tbqq") and set(rec.labels) == {4}
    rec = jetclass.read(path, label_branches=labels, class_names=("g", "q", "W", "Z", "t"))
    assert rec.class_names[4] == "t"
    with pytest.raises(RecordError, match="label_QCD"):
        jetclass.read(path)  # JetClass labels are not in this file


def _write_modified(tmp_path, name, edit, n=40):
    b = jetclass_branches(n, seed=5)
    edit(b)
    return write_jetclass_root(tmp_path / name, b)


def test_labels_must_be_one_hot(tmp_path):
    def two_labels(b):
        b["label_Hbb"] = b["label_Hbb"].copy()
        b["label_Hbb"][17] = not b["label_Hbb"][17]
    path = _write_modified(tmp_path, "twolabels.root", two_labels)
    with pytest.raises(RecordError, match=r"twolabels.root: entry 17: labels are not one-hot"):
        jetclass.read(path)
    # absolute entry numbers in a later range
    with pytest.raises(RecordError, match=r"entry 17"):
        jetclass.read(path, entry_start=10, entry_stop=20)


def test_nan_and_empty_jets_are_errors(tmp_path):
    def nan(b):
        flat = ak.flatten(b["part_px"]).to_numpy().copy()
        start = int(ak.sum(ak.num(b["part_px"])[:7]))
        flat[start + 1] = np.nan
        b["part_px"] = ak.unflatten(flat, ak.num(b["part_px"]))
    with pytest.raises(RecordError, match=r"nan.root: entry 7: non-finite"):
        jetclass.read(_write_modified(tmp_path, "nan.root", nan))

    def empty(b):
        limit = ak.Array(np.where(np.arange(40) == 3, 0, 10**6))
        for k in [k for k in b if k.startswith("part_")]:
            b[k] = b[k][ak.local_index(b[k], axis=1) < limit]
    with pytest.raises(RecordError, match=r"empty.root: entry 3: no particles"):
        jetclass.read(_write_modified(tmp_path, "empty.root", empty))


def test_missing_branch(tmp_path):
    path = _write_modified(tmp_path, "nodeta.root", lambda b: b.pop("part_deta"))
    with pytest.raises(RecordError, match=r"nodeta.root: tree 'tree' lacks branches \['part_deta'\]"):
        jetclass.read(path)


def test_damaged_files_name_the_file(tmp_path, root_file):
    data = root_file.read_bytes()
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(RecordError, match="truncated.root"):
        jetclass.read(truncated)

    corrupt = tmp_path / "corrupt.root"
    mid = len(data) // 2
    corrupt.write_bytes(data[:mid] + bytes(4096) + data[mid + 4096:])
    with pytest.raises(RecordError, match="corrupt.root"):
        jetclass.read(corrupt)

    junk = tmp_path / "junk.root"
    junk.write_bytes(b"this is not ROOT" * 100)
    with pytest.raises(RecordError, match="junk.root: not a readable ROOT file"):
        jetclass.read(junk)


def test_stored_deta_is_an_involution():
    deta = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    eta = np.array([1.0, -1.0, 0.0])
    assert np.array_equal(jetclass.stored_deta(jetclass.stored_deta(deta, eta), eta), deta)
    # JetClass's convention np.where(jet_eta > 0, deta, -deta): a jet at eta = 0 is stored flipped
    assert np.array_equal(jetclass.stored_deta(deta, eta), np.float32([0.1, 0.2, -0.3]))


def test_rntuple_files_read_like_ttrees(tmp_path):
    # uproot >= 5.7 writes an RNTuple for `file[name] = {...}`; a writer that forgets mktree still works
    b = jetclass_branches(80, seed=9, with_pid=False, with_tracks=False)
    with uproot.recreate(tmp_path / "rn.root") as f:
        f["tree"] = dict(b)
    ttree = jetclass.read(write_jetclass_root(tmp_path / "tt.root", b))
    rntuple = jetclass.read(tmp_path / "rn.root")
    np.testing.assert_array_equal(rntuple.labels, ttree.labels)
    assert ak.all(rntuple.particles.deta == ttree.particles.deta)


def test_download_extract_read_chain(http_server, tmp_path):
    """A JetClass-style val tar served over HTTP -> fetch (md5-checked) -> safe extract -> read."""
    import hashlib

    from formats import write_jetclass_tar
    from salt.data import download as dl
    from salt.data.archive import extract

    roots = [write_jetclass_file(tmp_path / "src" / f"{p}_120.root", 30, seed=i, classes=c)
             for i, (p, c) in enumerate((("ZJetsToNuNu", 0), ("TTBar", 8)))]
    tar = write_jetclass_tar(tmp_path / "src" / "JetClass_Pythia_val_5M.tar", roots)
    http_server.add("records/JetClass_Pythia_val_5M.tar", tar.read_bytes(), mode="drop")
    md5 = hashlib.md5(tar.read_bytes()).hexdigest()
    table = {"jetclass": dl.Catalogue("unused/{name}", {tar.name: dl.FileSpec(md5)})}
    raw = tmp_path / "resources" / "raw" / "jetclass"
    dl.fetch("jetclass", tar.name, raw / tar.name, base_url=http_server.url + "/records", datasets=table,
             progress=False, backoff=0.01)
    files = extract(raw / tar.name, raw)
    assert sorted(p.relative_to(raw).as_posix() for p in files) == ["val_5M/TTBar_120.root",
                                                                    "val_5M/ZJetsToNuNu_120.root"]
    recs = {p.name: jetclass.read(p) for p in files}
    assert set(recs["TTBar_120.root"].labels) == {8} and set(recs["ZJetsToNuNu_120.root"].labels) == {0}


def test_fields_read_only_the_branches_they_need(tmp_path, root_file):
    full = jetclass.read(root_file)
    part = jetclass.read(root_file, fields=("pt", "deta", "dphi"))
    assert sorted(part.particles.fields) == ["deta", "dphi", "pt"]
    for name in part.particles.fields:
        np.testing.assert_array_equal(ak.flatten(part.particles[name]), ak.flatten(full.particles[name]))
    # a file without part_pz / part_energy serves (pt, deta, dphi) but not eta
    path = _write_modified(tmp_path, "nopz.root", lambda b: (b.pop("part_pz"), b.pop("part_energy")))
    records = list(jetclass.iter_records(path, step=15, fields=("pt", "deta", "dphi", "phi")))
    assert [len(r) for r in records] == [15, 15, 10]
    with pytest.raises(RecordError, match=r"nopz.root: tree 'tree' lacks branches \['part_pz'\]"):
        jetclass.read(path, fields=("eta",))


def test_fields_do_not_hide_bad_values_in_what_is_read(tmp_path):
    def nan(b):
        flat = ak.flatten(b["part_dphi"]).to_numpy().copy()
        flat[int(ak.sum(ak.num(b["part_dphi"])[:9]))] = np.inf
        b["part_dphi"] = ak.unflatten(flat, ak.num(b["part_dphi"]))
    path = _write_modified(tmp_path, "infdphi.root", nan)
    with pytest.raises(RecordError, match=r"infdphi.root: entry 9: non-finite value in particle field 'dphi'"):
        jetclass.read(path, fields=("dphi",))
