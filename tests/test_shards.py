"""Shard write/read round trip, atomicity, manifest and normalisation."""

import json

import h5py
import numpy as np
import pytest

from salt.data.shards import (ShardError, ShardWriter, apply_normalisation, build_manifest, fit_normalisation,
                              read_attrs, read_shard)


def write(path, n, split="train", seed=0, n_particles=6, classes=("a", "b", "c"), sort="kt"):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, n_particles + 1, n)
    mask = np.arange(n_particles)[None] < counts[:, None]
    x = rng.normal(3.0, 2.0, (n, n_particles, 2)).astype(np.float32) * mask[..., None]
    key = rng.random((n, n_particles)).astype(np.float32) * mask
    labels = rng.integers(0, len(classes), n)
    jet = np.stack([rng.random(n), counts], 1).astype(np.float32)
    attrs = {"classes": list(classes), "sort": sort, "kind": "jet", "split": split, "source": ["raw.root"]}
    with ShardWriter(path, n_particles, ["pt", "deta"], ["pt", "n_particles"], attrs) as w:
        w.append(x[: n // 2], mask[: n // 2], key[: n // 2], labels[: n // 2], jet[: n // 2])
        w.append(x[n // 2:], mask[n // 2:], key[n // 2:], labels[n // 2:], jet[n // 2:])
    return x, mask, key, labels, jet


def test_round_trip(tmp_path):
    path = tmp_path / "s.h5"
    x, mask, key, labels, jet = write(path, 1000)
    back = read_shard(path)
    np.testing.assert_array_equal(back["particles"], x)
    np.testing.assert_array_equal(back["mask"], mask)
    np.testing.assert_array_equal(back["sort_value"], key)
    np.testing.assert_array_equal(back["label"], labels)
    np.testing.assert_array_equal(back["jet"], jet)
    attrs = read_attrs(path)
    assert attrs["features"] == ["pt", "deta"] and attrs["classes"] == ["a", "b", "c"]
    assert attrs["n_jets"] == 1000 and attrs["n_particles"] == 6 and attrs["sort"] == "kt"
    part = read_shard(path, 10, 20, fields=("label",))
    np.testing.assert_array_equal(part["label"], labels[10:20])
    with h5py.File(path) as f:  # chunked along the jet axis for streaming reads
        assert f["particles"].chunks[1:] == (6, 2)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "s.h5"
    with pytest.raises(RuntimeError):
        with ShardWriter(path, 4, ["pt"], ["pt"], {"split": "train"}) as w:
            w.append(np.zeros((3, 4, 1), np.float32), np.ones((3, 4), bool), np.zeros((3, 4), np.float32),
                     np.zeros(3, np.int64), np.zeros((3, 1), np.float32))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_wrong_batch_shape_names_the_dataset(tmp_path):
    with pytest.raises(ShardError, match="mask"):
        with ShardWriter(tmp_path / "s.h5", 4, ["pt"], ["pt"], {}) as w:
            w.append(np.zeros((3, 4, 1), np.float32), np.ones((3, 5), bool), np.zeros((3, 4), np.float32),
                     np.zeros(3, np.int64), np.zeros((3, 1), np.float32))
    assert not (tmp_path / "s.h5").exists()


def test_not_a_shard(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(ShardError, match="bad.h5"):
        read_attrs(bad)


def test_normalisation_fitted_on_real_particles_only(tmp_path):
    x, mask, *_ = write(tmp_path / "t.h5", 2000)
    norm = fit_normalisation([tmp_path / "t.h5"], "robust", ["pt", "deta"])
    real = x[mask].astype(np.float64)
    np.testing.assert_allclose(norm["center"], np.median(real, axis=0), rtol=1e-6)
    p5, p95 = np.percentile(real, [5, 95], axis=0)
    np.testing.assert_allclose(norm["scale"], p95 - p5, rtol=1e-6)
    out = apply_normalisation(x, mask, norm)
    assert np.all(out[~mask] == 0)  # padding stays exactly zero
    np.testing.assert_allclose(np.median(out[mask], axis=0), 0, atol=1e-5)
    std = fit_normalisation([tmp_path / "t.h5"], "standard", ["pt", "deta"])
    np.testing.assert_allclose(std["center"], real.mean(0), rtol=1e-5)


def test_manifest_counts_and_consistency(tmp_path):
    _, _, _, ltr, _ = write(tmp_path / "train.h5", 300, "train", seed=1)
    _, _, _, lva, _ = write(tmp_path / "val.h5", 50, "val", seed=2)
    write(tmp_path / "test.h5", 0, "test", seed=3)
    m = build_manifest({"train": [tmp_path / "train.h5"], "val": [tmp_path / "val.h5"],
                        "test": [tmp_path / "test.h5"]})
    assert m["splits"]["train"]["n_jets"] == 300 and m["splits"]["test"]["n_jets"] == 0
    assert m["splits"]["train"]["class_counts"] == np.bincount(ltr, minlength=3).tolist()
    assert m["splits"]["val"]["class_counts"] == np.bincount(lva, minlength=3).tolist()
    assert m["features"] == ["pt", "deta"] and m["sort"] == "kt"
    json.dumps(m)  # JSON-able
    write(tmp_path / "other.h5", 10, "val", sort="pt")
    with pytest.raises(ShardError, match="other.h5.*'sort'"):
        build_manifest({"train": [tmp_path / "train.h5"], "val": [tmp_path / "other.h5"]})
    with pytest.raises(ShardError, match="val.h5: holds split 'val' but was listed as 'train'"):
        build_manifest({"train": [tmp_path / "val.h5"]})


def test_outputs_are_not_private(tmp_path):
    import os

    from salt.atomic import write_json

    write_json(tmp_path / "x.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~umask
