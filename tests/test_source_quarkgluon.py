"""The quark-gluon reader on EnergyFlow npz files in the real layout (tests/formats.py)."""

from __future__ import annotations

import numpy as np
import pytest

from badinput import assert_preprocess_fails
from formats import qg_arrays, write_qg_npz
from salt.data import download as dl
from salt.data.sources import quarkgluon

N = 50


@pytest.fixture(scope="module")
def arrays():
    return qg_arrays(N, seed=4)


@pytest.fixture(scope="module")
def npz(tmp_path_factory, arrays):
    return write_qg_npz(tmp_path_factory.mktemp("qg") / "QG_jets_3.npz", arrays)


def test_particles_relative_to_their_own_jet(npz, arrays):
    rec = quarkgluon.read(npz)
    x = arrays["X"]
    real = x[:, :, 0] > 0
    np.testing.assert_array_equal(rec.jets["n_particles"], real.sum(axis=1))
    np.testing.assert_array_equal(rec.labels, arrays["y"].astype(int))
    assert rec.class_names == ("gluon", "quark")
    for j in (0, 9, N - 1):
        pt, y, phi, pid = x[j, real[j]].T
        m = np.array([quarkgluon.PDG_MASSES[abs(int(p))] for p in pid])
        mt = np.sqrt(pt**2 + m**2)
        p4 = np.stack([pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y), mt * np.cosh(y)], axis=1)
        jet = p4.sum(axis=0)
        jet_pt = np.hypot(jet[0], jet[1])
        jet_eta, jet_phi = np.arcsinh(jet[2] / jet_pt), np.arctan2(jet[1], jet[0])
        got = rec.particles[j]
        np.testing.assert_allclose(got.pt, pt, rtol=1e-6)
        np.testing.assert_allclose(got.rapidity, y, rtol=1e-6)
        np.testing.assert_allclose(got.deta, np.arcsinh(p4[:, 2] / pt) - jet_eta, atol=1e-5)
        np.testing.assert_allclose(got.dphi, np.angle(np.exp(1j * (phi - jet_phi))), atol=1e-5)
        assert np.all(np.abs(got.dphi) < 1.0)  # phi in [0, 2 pi) in the file, relative to the jet here
        np.testing.assert_allclose(rec.jets["pt"][j], jet_pt, rtol=1e-5)


def test_chunks_cover_the_file(npz):
    parts = list(quarkgluon.iter_records(npz, step=20))
    assert [(p.entry_start, len(p)) for p in parts] == [(0, 20), (20, 20), (40, 10)]
    assert quarkgluon.num_entries(npz) == N


@pytest.mark.parametrize("edit, message", [
    (lambda a: a["X"].__setitem__((17, 2, 1), np.nan), "entry 17: non-finite value in X"),
    (lambda a: a["X"].__setitem__(31, 0.0), "entry 31: no particles"),
    (lambda a: a["X"].__setitem__((8, 0, 3), 999.0), "entry 8: PDG id 999 has no known mass"),
    (lambda a: a["y"].__setitem__(3, 2.0), "entry 3: label y = "),
])
def test_bad_jets_name_file_and_entry(tmp_path, arrays, edit, message):
    bad = {k: v.copy() for k, v in arrays.items()}
    edit(bad)
    path = write_qg_npz(tmp_path / "QG_jets_5.npz", bad)
    assert_preprocess_fails("quarkgluon", path, f"{path}: {message}", step=10)


def test_truncated_file_fails_and_preprocessing_leaves_no_shard(tmp_path, npz):
    data = npz.read_bytes()
    cut = tmp_path / "QG_jets_7.npz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert_preprocess_fails("quarkgluon", cut, rf"{cut}: not a readable npz file")


def test_twenty_files_with_their_published_md5s():
    files = dl.DATASETS["quarkgluon"].files
    assert list(files)[:3] == ["QG_jets.npz", "QG_jets_1.npz", "QG_jets_2.npz"] and len(files) == 20
    assert files["QG_jets.npz"].md5 == "f5d052f10a79c6e8b9382637aca0ef52" and all(s.plain for s in files.values())


def test_wrong_hash_keeps_nothing(http_server, tmp_path, npz):
    """Bytes that are not the published file: the built-in md5 refuses them, nothing is left."""
    http_server.add("mirror/QG_jets.npz", npz.read_bytes())
    out = tmp_path / "raw" / "QG_jets.npz"
    with pytest.raises(dl.ChecksumError, match="QG_jets.npz: md5 mismatch: expected f5d052f10a79c6e8b9382637aca0ef52"):
        dl.fetch("quarkgluon", "QG_jets.npz", out, base_url=http_server.url + "/mirror", progress=False, backoff=0.01)
    assert not out.parent.exists() or not list(out.parent.iterdir())
