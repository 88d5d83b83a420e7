"""Raw JetClass-schema ROOT -> sorted shards: splits, sorting, padding and errors."""

import json
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest

from formats import jetclass_branches, write_jetclass_file, write_jetclass_root
from salt.data.kinematics import kt
from salt.data.preprocess import preprocess
from salt.data.record import RecordError
from salt.data.shards import read_attrs, read_shard
from salt.data.sources import jetclass


def outputs(tmp_path, stem="f"):
    return {s: tmp_path / s / f"{stem}.h5" for s in ("train", "val", "test")}


def test_random_split_is_seeded_and_complete(tmp_path):
    raw = write_jetclass_file(tmp_path / "HToBB_000.root", 2000, seed=1)
    out = outputs(tmp_path / "a")
    counts = preprocess("jetclass", [raw], out, sort="kt", n_particles=32, features=["pt", "deta", "dphi"],
                        val_fraction=0.2, test_fraction=0.1, seed=5, step=300)
    assert sum(counts.values()) == 2000
    assert 0.15 < counts["val"] / 2000 < 0.25 and 0.06 < counts["test"] / 2000 < 0.14
    # same seed, different chunking -> identical shards
    out2 = outputs(tmp_path / "b")
    preprocess("jetclass", [raw], out2, sort="kt", n_particles=32, features=["pt", "deta", "dphi"],
               val_fraction=0.2, test_fraction=0.1, seed=5, step=2000)
    for s in out:
        a, b = read_shard(out[s]), read_shard(out2[s])
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    attrs = read_attrs(out["train"])
    assert attrs["sort"] == "kt" and attrs["split"] == "train" and attrs["features"] == ["pt", "deta", "dphi"]
    assert attrs["classes"] == list(jetclass.JETCLASS_CLASS_NAMES)


def test_shard_content_is_sorted_by_physical_kt(tmp_path):
    raw = write_jetclass_file(tmp_path / "x.root", 300, seed=2)
    out = outputs(tmp_path)
    preprocess("jetclass", [raw], out, sort="kt", n_particles=64, features=["pt", "deta", "dphi"],
               split="test")
    d = read_shard(out["test"])
    assert read_attrs(out["train"])["n_jets"] == 0 and len(d["label"]) == 300
    x, mask, key = d["particles"], d["mask"], d["sort_value"]
    np.testing.assert_allclose(key[mask], kt(x[..., 0], x[..., 1], x[..., 2])[mask], rtol=1e-5)
    # descending within each jet, padding (zeros) after the real particles
    assert np.all((np.diff(key, axis=1) <= 0)[mask[:, 1:]])
    assert np.all(mask[:, :-1] >= mask[:, 1:])
    assert np.all(x[~mask] == 0)
    rec = jetclass.read(raw)
    n = np.minimum(np.asarray([len(p) for p in rec.particles.pt]), 64)
    np.testing.assert_array_equal(mask.sum(1), n)
    np.testing.assert_array_equal(d["label"], rec.labels)


def test_bad_input_names_file_and_entry_and_leaves_nothing(tmp_path):
    branches = jetclass_branches(50, seed=3)
    px = branches["part_px"]
    flat = np.asarray(ak.flatten(px)).copy()
    flat[int(np.sum(ak.num(px)[:17]))] = np.nan  # first particle of entry 17
    branches["part_px"] = ak.unflatten(flat, ak.num(px))
    raw = write_jetclass_root(tmp_path / "broken.root", branches)
    out = outputs(tmp_path)
    with pytest.raises(RecordError, match=r"broken.root.*entry 17"):
        preprocess("jetclass", [raw], out, sort="kt", n_particles=16, features=["pt"])
    assert not any(p.exists() for p in out.values())
    assert not list(tmp_path.rglob("*.part"))


def test_cli(tmp_path):
    raw = write_jetclass_file(tmp_path / "y.root", 100, seed=4)
    out = outputs(tmp_path)
    cmd = [sys.executable, "-m", "salt", "preprocess", "--source", "jetclass", "--input", str(raw),
           "--sort", "pt", "--particles", "8", "--features", "pt", "log_pt", "delta_r",
           *[a for s, p in out.items() for a in (f"--output-{s}", str(p))]]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert sum(json.loads(proc.stdout.strip().splitlines()[-1]).values()) == 100
    d = read_shard(out["train"])
    np.testing.assert_allclose(d["particles"][..., 1][d["mask"]], np.log(d["particles"][..., 0][d["mask"]]),
                               rtol=1e-5)


def test_files_with_other_classes_than_configured_are_refused_and_the_shards_record_their_settings(tmp_path):
    raw = write_jetclass_file(tmp_path / "z.root", 20, seed=5)
    out = outputs(tmp_path)
    names = list(jetclass.JETCLASS_CLASS_NAMES)
    with pytest.raises(RecordError, match=r"z.root: the file's classes .* differ from the configured classes"):
        preprocess("jetclass", [raw], out, sort="kt", n_particles=8, features=["pt"], classes=names[::-1])
    assert not any(p.exists() for p in out.values())
    preprocess("jetclass", [raw], out, sort="kt", n_particles=8, features=["pt"], classes=names, seed=9)
    settings = read_attrs(out["test"])["config"]
    assert settings["classes"] == names and settings["sort"] == "kt" and settings["particles"] == 8
    assert settings["split"] == {"fixed": None, "val": 0.15, "test": 0.15, "seed": 9}
