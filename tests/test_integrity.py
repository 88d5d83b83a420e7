"""Jobs refuse inputs they cannot trust and leave nothing behind: shard checksums, unwritable
outputs, stale temporaries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import pytest

from jetshards import write_dataset
from salt.atomic import write_text
from salt.cli import main
from salt.data.shards import load_manifest

TRAIN = json.dumps({"schedule": [[64, 1]], "loader": "memory", "workers": 0})


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "shards", n_train=200, n_val=60, chunk_jets=64)


def edit_in_place(path: Path) -> None:
    """Change one stored value without changing the file's size or mtime (what a bad disk or copy does)."""
    stat = path.stat()
    with h5py.File(path, "r+") as f:
        f["label"][0] = (f["label"][0] + 1) % 3
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size


def train_cli(manifest: Path, out: Path) -> int:
    return main(["train", "--manifest", str(manifest), "--spec", '{"model": "salt"}', "--train-config", TRAIN,
                 "--seed", "1", "--output-dir", str(out)])


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"salt {command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_training_refuses_a_shard_that_changed_after_the_manifest(data, tmp_path, capsys):
    entry = load_manifest(data)["splits"]["train"]["shards"][1]
    edit_in_place(Path(entry["path"]))
    assert train_cli(data, tmp_path / "model") == 1
    line = one_error_line(capsys, "train")
    assert entry["path"] in line and entry["md5"] in line
    assert not (tmp_path / "model/model.pt").exists()


def test_evaluation_refuses_a_test_shard_that_changed(data, tmp_path, capsys):
    assert train_cli(data, tmp_path / "model") == 0
    entry = load_manifest(data)["splits"]["test"]["shards"][0]
    edit_in_place(Path(entry["path"]))
    rc = main(["evaluate", "--model", str(tmp_path / "model/model.pt"), "--manifest", str(data),
               "--dataset", "pythia", "--variant", "salt", "--sort", "kt", "--seed", "1",
               "--metrics", str(tmp_path / "metrics.json"), "--predictions", str(tmp_path / "p.npz"),
               "--attention", str(tmp_path / "attention.npz")])
    assert rc == 1
    line = one_error_line(capsys, "evaluate")
    assert entry["path"] in line and entry["md5"] in line
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "attention.npz").exists()


def test_an_unwritable_output_directory_fails_before_the_first_epoch(data, tmp_path, capsys):
    blocked = tmp_path / "not_a_directory"
    blocked.write_text("a file where the model directory should go\n")
    os.chmod(tmp_path, 0o555)   # and, for a non-root user, a parent that cannot be written
    try:
        assert train_cli(data, blocked / "model") == 1
    finally:
        os.chmod(tmp_path, 0o755)
    assert str(blocked / "model") in one_error_line(capsys, "train")


def test_the_next_write_removes_temporaries_a_killed_writer_left(tmp_path):
    target = tmp_path / "metrics.json"
    stale = [tmp_path / ".metrics.json.k1ll3d.part", tmp_path / ".metrics.json.0ld.part"]
    other = tmp_path / ".model.pt.busy.part"   # another output's: not ours to remove
    for path in (*stale, other):
        path.write_text("half")
    write_text(target, "{}\n")
    assert target.read_text() == "{}\n"
    assert not any(p.exists() for p in stale) and other.exists()
