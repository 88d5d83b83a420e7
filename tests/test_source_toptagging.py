"""The Top-tagging reader on pandas HDF stores written as the real files are (tests/formats.py)."""

from __future__ import annotations

import numpy as np
import pytest

from badinput import assert_preprocess_fails
from formats import top_frame, write_top_store
from salt.data import download as dl
from salt.data.record import RecordError
from salt.data.sources import toptagging

N = 40


@pytest.fixture(scope="module")
def frame():
    return top_frame(N, seed=3, ttv=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory, frame):
    return write_top_store(tmp_path_factory.mktemp("top") / "test.h5", frame)


def test_store_has_the_real_layout(store):
    import h5py

    with h5py.File(store) as f:
        assert sorted(f["table"]) == ["_i_table", "table"]  # PyTables "table" format, indexed
    assert len(toptagging.COLUMNS) == 806 and toptagging.COLUMNS[:5] == ("E_0", "PX_0", "PY_0", "PZ_0", "E_1")


def test_constituents_jet_axis_and_labels(store, frame):
    rec = toptagging.read(store)
    values = frame[toptagging.particle_columns()].to_numpy(np.float64).reshape(N, 200, 4)
    real = values[:, :, 0] > 0
    np.testing.assert_array_equal(rec.jets["n_particles"], real.sum(axis=1))
    np.testing.assert_array_equal(rec.labels, frame["is_signal_new"].to_numpy())
    assert rec.class_names == ("QCD", "top") and len(rec) == N
    for j in (0, 7, N - 1):
        e, px, py, pz = values[j, real[j]].T
        jet = values[j, real[j]].sum(axis=0)
        jet_pt = np.hypot(jet[1], jet[2])
        jet_eta, jet_phi = np.arcsinh(jet[3] / jet_pt), np.arctan2(jet[2], jet[1])
        got = rec.particles[j]
        np.testing.assert_allclose(got.pt, np.hypot(px, py), rtol=1e-6)
        np.testing.assert_allclose(got.deta, np.arcsinh(pz / np.hypot(px, py)) - jet_eta, atol=1e-5)
        np.testing.assert_allclose(got.dphi, np.angle(np.exp(1j * (np.arctan2(py, px) - jet_phi))), atol=1e-5)
        np.testing.assert_allclose(rec.jets["pt"][j], jet_pt, rtol=1e-6)
        np.testing.assert_allclose(rec.jets["energy"][j], jet[0], rtol=1e-6)


def test_chunks_cover_the_file(store):
    whole = toptagging.read(store)
    parts = list(toptagging.iter_records(store, step=15))
    assert [(p.entry_start, len(p)) for p in parts] == [(0, 15), (15, 15), (30, 10)]
    np.testing.assert_array_equal(np.concatenate([p.labels for p in parts]), whole.labels)
    assert toptagging.num_entries(store) == N


def _broken(tmp_path, frame, edit):
    bad = frame.copy()
    edit(bad)
    return write_top_store(tmp_path / "train.h5", bad)


def test_nan_names_file_and_entry(tmp_path, frame):
    """Found in the second chunk, after the first was written: no shard is left under any name."""
    path = _broken(tmp_path, frame, lambda f: f.__setitem__("PX_1", np.where(np.arange(N) == 11, np.nan, f["PX_1"])))
    assert_preprocess_fails("toptagging", path, rf"{path}: entry 11: non-finite", step=8)


def test_nan_in_a_padding_slot_is_not_hidden_as_padding(tmp_path, frame):
    path = _broken(tmp_path, frame, lambda f: f.__setitem__("E_199", np.where(np.arange(N) == 5, np.nan, 0.0)))
    with pytest.raises(RecordError, match=rf"{path}: entry 5: non-finite"):
        toptagging.read(path)


def test_jet_without_particles_names_the_entry(tmp_path, frame):
    def empty(f):
        for c in toptagging.particle_columns():
            f.loc[f.index[23], c] = 0.0
    path = _broken(tmp_path, frame, empty)
    with pytest.raises(RecordError, match=rf"{path}: entry 23: no particles"):
        toptagging.read(path)


def test_truncated_store_fails_and_preprocessing_leaves_no_shard(tmp_path, store):
    data = store.read_bytes()
    cut = tmp_path / "cut" / "val.h5"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    assert_preprocess_fails("toptagging", cut, rf"{cut}: (not a readable pandas HDF store|cannot read)")


def test_files_are_in_the_download_table():
    files = dl.DATASETS["toptagging"].files
    assert sorted(files) == ["test.h5", "train.h5", "val.h5"]
    assert all(spec.plain and spec.md5 is None for spec in files.values())  # no published md5: pinned on download
