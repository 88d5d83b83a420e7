"""The real datasets through the workflow: download -> extract -> shards, on a loopback HTTP server.

A real HTTP server on 127.0.0.1 serves small files written in each dataset's exact format
(tests/formats.py) under their official names: the JetClass val tar (ROOT TTrees), the HLS4ML
train/val tar.gz (h5 with jet images), and ModelNet10.zip (OFF meshes and the __MACOSX junk).
The config points each dataset at the server (download.base_url) with explicit md5 overrides
(download.md5: the files are not the real ones) and selects a few members, so the production
code paths run unchanged on tiny inputs. Misbehaving server modes check resume, 429 and checksum
handling at the workflow level; broken archives and raw files check that failures name what is
wrong and leave nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from formats import (
    jetclass_branches,
    write_hls4ml_tarball,
    write_jetclass_root,
    write_jetclass_tar,
    write_modelnet10_zip,
    write_tar,
)
from httpserver import LoopbackServer
from workflowrun import ROOT, copy_workflow, snakemake

from salt.data import download as downloads
from salt.data.kinematics import POINT_SORTS
from salt.data.shards import read_shard

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

VAL_TAR = "JetClass_Pythia_val_5M.tar"
HLS_TRAIN, HLS_VAL = "hls4ml_LHCjet_150p_train.tar.gz", "hls4ml_LHCjet_150p_val.tar.gz"
MODELNET = "ModelNet10.zip"
JETCLASS_CLASSES = ["QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl"]
MODELNET_CLASSES = ["bathtub", "bed", "chair"]
SELECTED = ["val_5M/HToBB_120.root", "val_5M/TTBar_120.root"]  # of the three in the served tar


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def jetclass_root(path: Path, cls: int, n_jets: int = 150, seed: int = 0, nan_at: int | None = None) -> Path:
    """A JetClass-format file of one class (as every real file is), optionally with a NaN."""
    branches = jetclass_branches(n_jets, seed=seed, classes=cls, mean_particles=30.0)
    if nan_at is not None:
        import awkward as ak

        px = ak.to_list(branches["part_px"])
        px[nan_at][1] = float("nan")
        branches["part_px"] = ak.Array(px)
    return write_jetclass_root(path, branches)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The files in the real formats, as bytes: {name: bytes}."""
    tmp = tmp_path_factory.mktemp("files")
    roots = [jetclass_root(tmp / "val_5M/HToBB_120.root", 1, seed=1),
             jetclass_root(tmp / "val_5M/TTBar_120.root", 8, seed=2),
             jetclass_root(tmp / "val_5M/ZToQQ_120.root", 6, seed=3)]  # in the tar, not selected
    files = {VAL_TAR: write_jetclass_tar(tmp / VAL_TAR, roots, folder="val_5M").read_bytes()}
    files[HLS_TRAIN] = write_hls4ml_tarball(tmp / HLS_TRAIN, "train", n_files=2, jets_per_file=40, seed=1).read_bytes()
    files[HLS_VAL] = write_hls4ml_tarball(tmp / HLS_VAL, "val", n_files=1, jets_per_file=40, seed=2).read_bytes()
    files[MODELNET] = write_modelnet10_zip(tmp / MODELNET, classes=MODELNET_CLASSES, n_train=3, n_test=1).read_bytes()

    # broken inputs: an archive with a member escaping the output directory; a truncated ROOT
    # file and one with a NaN
    good = roots[0].read_bytes()
    files["unsafe"] = write_tar(tmp / "unsafe.tar", {"val_5M/HToBB_120.root": good,
                                                     "val_5M/../../escape.root": b"not for you"}).read_bytes()
    nan = jetclass_root(tmp / "nan/TTBar_120.root", 8, seed=4, nan_at=7).read_bytes()
    files["corrupt"] = write_tar(tmp / "corrupt.tar", {"val_5M/HToBB_120.root": good[: len(good) * 6 // 10],
                                                       "val_5M/TTBar_120.root": nan}).read_bytes()
    files["hls4ml_counts"] = json.dumps(hls4ml_kept_jets(tmp)).encode()
    return files


def hls4ml_kept_jets(tmp: Path) -> dict[str, int]:
    """Jets with at least one constituent above 2 GeV per extracted HLS4ML file (what the reader keeps)."""
    out = {}
    for split in ("train", "val"):
        for f in sorted((tmp / f".hls4ml_LHCjet_150p_{split}.tar.gz.members" / split).glob("*.h5")):
            with h5py.File(f) as h:
                out[f"{split}/{f.name}"] = int((h["jetConstituentList"][:, :, 5] > 2.0).any(axis=1).sum())
    return out


@pytest.fixture(scope="module")
def server():
    with LoopbackServer() as s:
        yield s


def dataset(source: str, base_url: str | None, files: dict[str, bytes], **extra) -> dict:
    """A dataset block fetching `files` (official names) from `base_url`, md5s overridden."""
    block = {"source": source, "download": {"files": list(files), "base_url": base_url,
                                             "md5": {name: md5(data) for name, data in files.items()}}}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(block.get(key), dict):
            block[key] = block[key] | value
        else:
            block[key] = value
    return block


def jetclass_dataset(base_url: str, tar: bytes, download: dict | None = None) -> dict:
    return dataset("jetclass", base_url, {VAL_TAR: tar}, classes=JETCLASS_CLASSES, particles=32,
                   features=["pt", "deta", "dphi"], split={"val": 0.25, "test": 0.25, "seed": 1},
                   download={"members": SELECTED} | (download or {}))


def write_config(work: Path, datasets: dict, runs: list) -> None:
    config = {"datasets": list(datasets), "dataset": datasets, "seeds": [1],
              "variants": {"salt": {"model": "salt"}}, "runs": runs,
              "train": {"schedule": [[32, 1]]}, "bench": {"devices": ["cpu"]}}
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def manifest(d: str, sort: str) -> str:
    return f"results/shards/{d}/{sort}/manifest.json"


def logs(work: Path, rule: str, d: str) -> str:
    return "\n".join(p.read_text() for p in sorted((work / "logs" / rule / d).rglob("*.log")))


def test_jetclass_reads_in_whole_baskets(tmp_path):
    """Entry ranges end on basket boundaries where one falls inside the step (no basket is
    decompressed twice), and never exceed the step."""
    from salt.data.sources import jetclass

    path = write_jetclass_root(tmp_path / "HToBB_120.root", jetclass_branches(1000, classes=1), batch=300)
    recs = list(jetclass.iter_records(path, step=500))
    assert [(r.entry_start, r.extra["entry_stop"]) for r in recs] == [(0, 300), (300, 600), (600, 1000)]
    # a basket longer than the step is cut at the step
    assert jetclass.entry_ranges([0, 300, 600], 0, 700, 250) == [(0, 250), (250, 300), (300, 550), (550, 700)]
    whole = jetclass.read(path)
    np.testing.assert_array_equal(np.concatenate([r.labels for r in recs]), whole.labels)


# ---------------------------------------------------------------------------------------------
# The three datasets end to end


@pytest.fixture(scope="module")
def real_run(served, server, tmp_path_factory):
    # JetClass: the connection drops mid-file once (the job resumes with a Range request);
    # HLS4ML train: 429 with Retry-After first
    server.add(f"/jetclass/{VAL_TAR}", served[VAL_TAR], mode="drop", failures=1)
    server.add(f"/hls4ml/{HLS_TRAIN}", served[HLS_TRAIN], mode="429", failures=1, retry_after="1")
    server.add(f"/hls4ml/{HLS_VAL}", served[HLS_VAL])
    server.add(f"/modelnet/{MODELNET}", served[MODELNET])
    work = copy_workflow(tmp_path_factory.mktemp("datasets"))
    datasets = {
        "jetclass": jetclass_dataset(server.url + "/jetclass", served[VAL_TAR]),
        "hls4ml": dataset("hls4ml", server.url + "/hls4ml", {HLS_TRAIN: served[HLS_TRAIN], HLS_VAL: served[HLS_VAL]},
                          classes=["g", "q", "W", "Z", "t"], particles=150, features=["pt", "deta", "dphi"],
                          split={"val": 0.2, "test": 0.0, "seed": 42, "fixed": {f"{HLS_VAL}/*": "test"}}),
        "modelnet10": dataset("modelnet10", server.url + "/modelnet", {MODELNET: served[MODELNET]},
                              classes=MODELNET_CLASSES, particles=64, features=["x", "y", "z"],
                              options={"num_points": 64}, normalisation="none",
                              split={"val": 0.3, "test": 0.0, "seed": 5, "fixed": {f"{MODELNET}/*/test": "test"}}),
    }
    write_config(work, datasets, [{"datasets": ["jetclass", "hls4ml"], "variants": ["salt"], "sorts": ["kt"]},
                                  {"datasets": ["modelnet10"], "variants": ["salt"], "sorts": ["radius"]}])
    targets = [manifest("jetclass", "kt"), manifest("hls4ml", "kt"), manifest("modelnet10", "radius")]
    proc = snakemake(work, *targets)
    return work, targets, proc


def test_jetclass_val_tar_to_shards(real_run, served, server):
    work, _, _ = real_run
    m = json.loads((work / manifest("jetclass", "kt")).read_text())
    assert m["classes"] == JETCLASS_CLASSES and m["n_particles"] == 32 and m["sort"] == "kt"
    # the selected members only, one shard per raw file and split; a seeded random split
    shards = {Path(e["path"]).name for s in m["splits"].values() for e in s["shards"]}
    assert shards == {"val_5M-HToBB_120.h5", "val_5M-TTBar_120.h5"}
    counts = {s: m["splits"][s]["n_jets"] for s in ("train", "val", "test")}
    assert sum(counts.values()) == 300 and min(counts.values()) > 30, counts
    assert np.nonzero(np.sum([m["splits"][s]["class_counts"] for s in counts], axis=0))[0].tolist() == [1, 8]
    raw = work / "resources/raw/jetclass"
    assert sorted(p.relative_to(raw / "extracted").as_posix() for p in (raw / "extracted").rglob("*.root")) == SELECTED
    # the dropped connection was resumed where it broke, within the job
    reqs = server.requests_for(f"/jetclass/{VAL_TAR}")
    assert [r.status for r in reqs] == [200, 206] and reqs[1].range == f"bytes={reqs[0].sent}-", reqs
    assert md5((raw / "archives" / VAL_TAR).read_bytes()) == md5(served[VAL_TAR])
    assert not list(raw.rglob("*.part")) and not list(raw.rglob(".extract-*"))
    assert "md5 OVERRIDDEN" in logs(work, "download", "jetclass")
    d = read_shard(work / "results/shards/jetclass/kt/train/val_5M-TTBar_120.h5", fields=("sort_value", "mask"))
    sv, mask = d["sort_value"], d["mask"]
    assert mask.any(axis=1).all() and np.all(np.diff(np.where(mask, sv, -1.0), axis=1) <= 0)


def test_hls4ml_tarballs_to_shards(real_run, served, server):
    work, _, _ = real_run
    m = json.loads((work / manifest("hls4ml", "kt")).read_text())
    kept = json.loads(served["hls4ml_counts"])
    # the official val tarball is the test set, whole; the train tarball is split train/val only
    assert m["splits"]["test"]["n_jets"] == sum(v for k, v in kept.items() if k.startswith("val/"))
    by_split = {s: {Path(e["path"]).name: e["n_jets"] for e in m["splits"][s]["shards"]} for s in m["splits"]}
    for name, n in kept.items():
        shard = name.replace("/", "-").removesuffix(".h5") + ".h5"
        if name.startswith("val/"):
            assert by_split["test"][shard] == n and by_split["train"][shard] == by_split["val"][shard] == 0
        else:
            assert by_split["test"][shard] == 0 and by_split["train"][shard] + by_split["val"][shard] == n
    assert m["splits"]["val"]["n_jets"] > 0 and m["n_particles"] == 150
    # members were discovered by the checkpoint and slimmed: no jet images on disk
    extracted = sorted((work / "resources/raw/hls4ml/extracted").rglob("*.h5"))
    assert len(extracted) == len(kept) == 3
    for f in extracted:
        with h5py.File(f) as h:
            assert "jetImage" not in h and "jetConstituentList" in h
    assert [r.status for r in server.requests_for(f"/hls4ml/{HLS_TRAIN}")] == [429, 200]
    assert len(list((work / "logs/preprocess/hls4ml/kt").glob("*.log"))) == 3  # one job per raw file


def test_modelnet10_zip_to_shards(real_run):
    work, _, _ = real_run
    m = json.loads((work / manifest("modelnet10", "radius")).read_text())
    assert m["classes"] == MODELNET_CLASSES and m["kind"] == "points" and m["features"] == ["x", "y", "z"]
    assert m["splits"]["test"]["n_jets"] == 3 and m["splits"]["test"]["class_counts"] == [1, 1, 1]
    assert m["splits"]["train"]["n_jets"] + m["splits"]["val"]["n_jets"] == 9
    # one preprocessing job per class/split folder; no AppleDouble junk extracted
    assert len(list((work / "logs/preprocess/modelnet10/radius").glob("*.log"))) == 6
    raw = work / "resources/raw/modelnet10"
    assert not list(raw.rglob("__MACOSX")) and len(list(raw.rglob("*.off"))) == 12
    # no published md5: the first download's is pinned beside the archive
    assert (raw / "archives/ModelNet10.zip.md5").read_text().split()[0] == md5((raw / "archives/ModelNet10.zip").read_bytes())
    d = read_shard(work / "results/shards/modelnet10/radius/test/ModelNet10-chair-test.h5",
                   fields=("sort_value", "particles", "mask"))
    sv, x, mask = d["sort_value"], d["particles"], d["mask"]
    assert mask.all() and np.all(np.diff(sv, axis=1) <= 0)
    np.testing.assert_allclose(sv, np.linalg.norm(x, axis=2), rtol=1e-5)


def test_second_run_has_nothing_to_do_even_from_another_mirror(real_run):
    work, targets, _ = real_run
    out = snakemake(work, "-n", *targets).stdout
    assert "Nothing to be done" in out, out[-3000:]
    # where the files come from is not a rerun trigger: verified archives stay
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["dataset"]["jetclass"]["download"]["base_url"] = "http://127.0.0.1:9/another-mirror"
    config["dataset"]["jetclass"]["download"]["retries"] = 3
    out = snakemake(work, "-n", *targets, "--configfile", write_yaml(work / "other_mirror.yaml", config)).stdout
    assert "Nothing to be done" in out, out[-3000:]


def write_yaml(path: Path, obj) -> str:
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path.name


# ---------------------------------------------------------------------------------------------
# Staged files; failures: checksum mismatch, an interrupted download, an unsafe archive, corrupt
# raw files (one run with --keep-going)


@pytest.fixture(scope="module")
def failed_run(served, server, tmp_path_factory):
    server.add(f"/md5/{VAL_TAR}", served[VAL_TAR], mode="corrupt")
    server.add(f"/resume/{VAL_TAR}", served[VAL_TAR], mode="drop", failures=1)
    server.add(f"/unsafe/{VAL_TAR}", served["unsafe"])
    server.add(f"/corrupt/{VAL_TAR}", served["corrupt"])
    work = copy_workflow(tmp_path_factory.mktemp("failures"))
    staged = tmp_path_factory.mktemp("staging")
    (staged / VAL_TAR).write_bytes(served[VAL_TAR])
    datasets = {
        "jc_staged": dataset("jetclass", None, {VAL_TAR: served[VAL_TAR]}, classes=JETCLASS_CLASSES, particles=32,
                             download={"local_dir": str(staged)}),
        "jc_md5": jetclass_dataset(server.url + "/md5", served[VAL_TAR]),
        "jc_resume": jetclass_dataset(server.url + "/resume", served[VAL_TAR], download={"retries": 0}),
        "jc_unsafe": jetclass_dataset(server.url + "/unsafe", served["unsafe"]),
        "jc_corrupt": jetclass_dataset(server.url + "/corrupt", served["corrupt"]),
    }
    write_config(work, datasets, [{"variants": ["salt"], "sorts": ["kt"]}])
    targets = [f"resources/raw/jc_staged/archives/{VAL_TAR}", f"resources/raw/jc_md5/archives/{VAL_TAR}", f"resources/raw/jc_resume/archives/{VAL_TAR}",
               "resources/raw/jc_unsafe/extracted/val_5M/HToBB_120.root", manifest("jc_corrupt", "kt")]
    # --retries 0: each failure as it first happens (profiles/default's retry would resume the dropped
    # download within this run; resuming on the next run is what test_interrupted_download_... checks)
    proc = snakemake(work, "--keep-going", "--retries", "0", *targets, check=False)
    assert proc.returncode != 0
    return work, proc


def test_staged_files_are_verified_and_linked(failed_run, tmp_path_factory):
    work, _ = failed_run
    archive = work / f"resources/raw/jc_staged/archives/{VAL_TAR}"
    assert archive.is_symlink() and archive.resolve().parent.name.startswith("staging")
    assert "md5 OVERRIDDEN" in logs(work, "download", "jc_staged")


def test_checksum_mismatch_fails_and_leaves_no_file(failed_run):
    work, _ = failed_run
    archives = work / "resources/raw/jc_md5/archives"
    assert not archives.exists() or not any(archives.iterdir())  # neither the archive nor a .part
    assert re.search(rf"{VAL_TAR}: md5 mismatch: expected [0-9a-f]{{32}}, got [0-9a-f]{{32}}",
                     logs(work, "download", "jc_md5"))


def test_unsafe_archive_is_refused(failed_run):
    work, _ = failed_run
    assert "refusing to extract" in logs(work, "extract", "jc_unsafe")
    assert not (work / "resources/raw/jc_unsafe/extracted/val_5M/HToBB_120.root").exists()
    assert not list(work.parent.rglob("escape.root"))


def test_corrupt_raw_files_fail_preprocessing_naming_file_and_entry(failed_run):
    work, _ = failed_run
    log = logs(work, "preprocess", "jc_corrupt")
    raw = "resources/raw/jc_corrupt/extracted/val_5M"
    # truncated: unreadable baskets (or, cut elsewhere, no readable header or tree)
    assert re.search(rf"error: {raw}/HToBB_120.root: (cannot read entries \d+\.\.\d+|not a readable ROOT file|no tree)",
                     log), log
    assert f"error: {raw}/TTBar_120.root: entry 7: non-finite value in particle field" in log, log
    shards = work / "results/shards/jc_corrupt"
    assert not shards.exists() or not [p for p in shards.rglob("*") if p.is_file()]


def test_interrupted_download_resumes_on_the_next_run(failed_run, server, served):
    work, _ = failed_run
    target = work / f"resources/raw/jc_resume/archives/{VAL_TAR}"
    part = Path(f"{target}.part")
    assert not target.exists() and 0 < part.stat().st_size < len(served[VAL_TAR])
    kept = part.stat().st_size
    snakemake(work, str(target.relative_to(work)))
    assert md5(target.read_bytes()) == md5(served[VAL_TAR]) and not part.exists()
    last = server.requests_for(f"/resume/{VAL_TAR}")[-1]
    assert last.status == 206 and last.range == f"bytes={kept}-"


# ---------------------------------------------------------------------------------------------
# The paper's config plans; config mistakes are caught before anything runs


def test_paper_config_plans_one_preprocessing_job_per_raw_file(tmp_path):
    work = copy_workflow(tmp_path, config=ROOT / "config.yaml")
    proc = snakemake(work, "-n", "--configfile", "workflow/configs/paper.yaml")
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout.split("Job stats:")[1], re.M))
    paper = yaml.safe_load((ROOT / "workflow/configs/paper.yaml").read_text())
    expected = Counter()
    for d in paper["datasets"]:
        sorts = {s for r in paper["runs"] if d in r.get("datasets", paper["datasets"]) for s in r["sorts"]}
        for archive in paper["dataset"][d]["download"]["files"]:
            spec = downloads.DATASETS[paper["dataset"][d]["source"]].files[archive]
            members = spec.members
            expected["download"] += 1
            if spec.plain:  # the download is the raw file itself: no extraction
                expected["preprocess"] += len(sorts)
                continue
            if members is None:
                expected["extract_archive"] += 1  # its preprocessing jobs appear after the checkpoint
                continue
            folders = members[0].endswith("/")
            expected["extract_folder" if folders else "extract_member"] += len(members)
            expected["preprocess"] += len(members) * len(sorts)
        expected["manifest"] += len(sorts)
    assert {k: int(stats[k]) for k in expected} == dict(expected), proc.stdout[-3000:]
    assert "checkpoint" in proc.stdout


def test_jet_sorts_on_point_clouds_are_refused(tmp_path):
    work = copy_workflow(tmp_path, config=ROOT / "config.yaml")
    paper = yaml.safe_load((ROOT / "workflow/configs/paper.yaml").read_text())
    paper["runs"] = [{"variants": ["salt"], "sorts": ["kt"]}]  # every dataset, modelnet10 included
    (work / "config.yaml").write_text(yaml.safe_dump(paper))
    proc = snakemake(work, "-n", check=False)
    assert proc.returncode != 0
    assert f"sorts dataset 'modelnet10' (point clouds) by ['kt']; point clouds can be sorted by {sorted(POINT_SORTS)}" \
        in proc.stderr + proc.stdout
