"""The hls4ml reader on h5 files in the real layout (tests/formats.py)."""

from __future__ import annotations

import awkward as ak
import h5py
import numpy as np
import pytest

from formats import hls4ml_arrays, write_hls4ml_h5, write_hls4ml_tarball
from salt.cli import main as salt_main
from salt.data.archive import extract, slim_h5
from salt.data.record import RecordError
from salt.data.sources import hls4ml

N = 60


@pytest.fixture(scope="module")
def arrays():
    return hls4ml_arrays(N, seed=2, empty_jets=(4, 31))


@pytest.fixture(scope="module")
def h5_file(tmp_path_factory, arrays):
    return write_hls4ml_h5(tmp_path_factory.mktemp("hls") / "jetImage_0_150p_0_60.h5", arrays)


def test_cut_features_and_labels(h5_file, arrays, caplog):
    with caplog.at_level("INFO", logger="salt.data.sources.hls4ml"):
        rec = hls4ml.read(h5_file)
    assert f"{h5_file}: entries 0-{N - 1}: 2 jets have no constituent above 2 GeV and are dropped (first: entry 4)" \
        in caplog.text
    const, jets = arrays["jetConstituentList"], arrays["jets"]
    kept = np.setdiff1d(np.arange(N), [4, 31])
    assert len(rec) == N - 2 and rec.extra["dropped_empty_jets"] == 2
    np.testing.assert_array_equal(rec.extra["kept_entries"], kept)
    np.testing.assert_array_equal(rec.labels, jets[kept, 53:58].argmax(axis=1))
    assert rec.class_names == ("g", "q", "W", "Z", "t")
    for row, j in enumerate(kept[:10]):
        real = const[j, :, 5] > 2.0  # strict cut, which also removes the zero padding
        expect = const[j, real]
        got = rec.particles[row]
        assert len(got) == real.sum() < (const[j, :, 3] != 0).sum()
        np.testing.assert_allclose(got.pt, expect[:, 5], rtol=1e-6)
        np.testing.assert_allclose(got.deta, expect[:, 8], rtol=1e-6)
        np.testing.assert_allclose(got.dphi, expect[:, 11], rtol=1e-6)
        np.testing.assert_allclose(got.energy, expect[:, 3], rtol=1e-6)
        np.testing.assert_allclose(got.phi, expect[:, 10], rtol=1e-6)
    assert ak.min(rec.particles.pt) > 2.0
    np.testing.assert_allclose(rec.jets["pt"], jets[kept, 1], rtol=1e-6)
    np.testing.assert_allclose(rec.jets["mass"], jets[kept, 3], rtol=1e-5)
    # jet phi recovered from phi - phi_rel of the constituents
    jet_phi = np.angle(np.exp(1j * (const[kept, 0, 10] - const[kept, 0, 11])))
    np.testing.assert_allclose(np.angle(np.exp(1j * (rec.jets["phi"] - jet_phi))), 0, atol=1e-5)


def test_min_pt_zero_still_drops_padding(h5_file, arrays):
    rec = hls4ml.read(h5_file, min_pt=0.0)
    counts = (arrays["jetConstituentList"][:, :, 3] != 0).sum(axis=1)
    np.testing.assert_array_equal(rec.jets["n_particles"], counts)
    assert rec.extra["dropped_empty_jets"] == 0


def test_ranges_and_iteration(h5_file):
    whole = hls4ml.read(h5_file)
    recs = list(hls4ml.iter_records(h5_file, step=25))
    assert [r.entry_start for r in recs] == [0, 25, 50]
    assert sum(len(r) for r in recs) == len(whole)
    assert ak.all(ak.concatenate([r.particles.pt for r in recs]) == whole.particles.pt)
    assert hls4ml.num_entries(h5_file) == N


def test_labels_must_be_one_hot(tmp_path, arrays):
    bad = {k: v.copy() for k, v in arrays.items()}
    bad["jets"][9, 53:59] = [0, 0, 0, 0, 0, 1]  # "undefined" only
    path = write_hls4ml_h5(tmp_path / "undef.h5", bad, image_shape=(2, 2))
    with pytest.raises(RecordError, match=r"undef.h5: entry 9: labels"):
        hls4ml.read(path)


def test_nan_missing_and_damaged(tmp_path, arrays, h5_file):
    bad = {k: v.copy() for k, v in arrays.items()}
    bad["jetConstituentList"][12, 0, 5] = np.nan
    with pytest.raises(RecordError, match=r"nan.h5: entry 12: non-finite value in jetConstituentList"):
        hls4ml.read(write_hls4ml_h5(tmp_path / "nan.h5", bad, image_shape=(2, 2)))

    with h5py.File(tmp_path / "nojets.h5", "w") as f:
        f["jetConstituentList"] = arrays["jetConstituentList"]
    with pytest.raises(RecordError, match=r"nojets.h5: datasets \['jets'\] missing"):
        hls4ml.read(tmp_path / "nojets.h5")

    data = h5_file.read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(RecordError, match="truncated.h5"):
        hls4ml.read(tmp_path / "truncated.h5")


def test_tarball_extract_slim_and_split(tmp_path):
    train = write_hls4ml_tarball(tmp_path / "hls4ml_LHCjet_150p_train.tar.gz", "train", n_files=3,
                                 jets_per_file=12, seed=1)
    val = write_hls4ml_tarball(tmp_path / "hls4ml_LHCjet_150p_val.tar.gz", "val", n_files=2,
                               jets_per_file=12, seed=2)
    out = tmp_path / "extracted"
    slim = lambda p: slim_h5(p, hls4ml.SOURCE.keep_on_extraction)  # noqa: E731
    extract(train, out, on_member=slim)
    assert salt_main(["extract", str(val), "--output-dir", str(out), "--h5-keep", ",".join(hls4ml.KEEP_DATASETS)]) == 0
    train_files, val_files = sorted((out / "train").glob("*.h5")), sorted((out / "val").glob("*.h5"))
    assert [p.name for p in train_files] == ["jetImage_0_150p_0_12.h5", "jetImage_1_150p_12_24.h5",
                                             "jetImage_2_150p_24_36.h5"]
    assert len(val_files) == 2
    for path in (train_files[0], val_files[0]):
        with h5py.File(path) as f:
            assert sorted(f) == sorted(hls4ml.KEEP_DATASETS)  # the jet images are gone
    assert len(hls4ml.read(val_files[1])) > 0
