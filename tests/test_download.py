"""Downloads against a real HTTP server on 127.0.0.1 (tests/httpserver.py)."""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from salt.cli import main as salt_main
from salt.data import download as dl

DATA = os.urandom(300_000) + b"end"
MD5 = hashlib.md5(DATA).hexdigest()
FAST = {"backoff": 0.01, "progress": False, "chunk_size": 16_384}


def _table(md5: str | None = MD5, size: int | None = None) -> dict[str, dl.Catalogue]:
    return {"toy": dl.Catalogue("http://127.0.0.1:9/unused/{name}", {"toy.bin": dl.FileSpec(md5, size)})}


def test_plain_download_verifies_and_renames(http_server, tmp_path):
    url = http_server.add("toy.bin", DATA, mode="plain")
    out = tmp_path / "raw" / "toy.bin"
    assert dl.download(url, out, md5=MD5, **FAST) == MD5
    assert out.read_bytes() == DATA
    assert not (tmp_path / "raw" / "toy.bin.part").exists()
    [req] = http_server.requests_for("toy.bin")
    assert req.range is None and req.status == 200 and req.sent == len(DATA)


def test_resume_transfers_only_the_rest(http_server, tmp_path):
    url = http_server.add("toy.bin", DATA, mode="range")
    out = tmp_path / "toy.bin"
    k = 123_457
    (tmp_path / "toy.bin.part").write_bytes(DATA[:k])
    assert dl.download(url, out, md5=MD5, **FAST) == MD5
    assert out.read_bytes() == DATA
    [req] = http_server.requests_for("toy.bin")
    assert req.range == f"bytes={k}-" and req.status == 206 and req.sent == len(DATA) - k


def test_bad_partial_bytes_trigger_one_fresh_download(http_server, tmp_path):
    url = http_server.add("toy.bin", DATA)
    (tmp_path / "toy.bin.part").write_bytes(b"\0" * 5000)  # e.g. left by another version of the file
    assert dl.download(url, tmp_path / "toy.bin", md5=MD5, **FAST) == MD5
    assert [(r.range, r.status) for r in http_server.requests_for("toy.bin")] == [("bytes=5000-", 206), (None, 200)]


def test_server_ignoring_range_restarts_cleanly(http_server, tmp_path):
    url = http_server.add("toy.bin", DATA, mode="ignore-range")
    out = tmp_path / "toy.bin"
    (tmp_path / "toy.bin.part").write_bytes(DATA[:1000])
    assert dl.download(url, out, md5=MD5, **FAST) == MD5
    assert out.read_bytes() == DATA  # not the first 1000 bytes twice
    [req] = http_server.requests_for("toy.bin")
    assert req.range == "bytes=1000-" and req.status == 200


def test_complete_partial_file_gets_416_and_finishes(http_server, tmp_path):
    url = http_server.add("toy.bin", DATA)
    (tmp_path / "toy.bin.part").write_bytes(DATA)
    assert dl.download(url, tmp_path / "toy.bin", md5=MD5, **FAST) == MD5
    assert [r.status for r in http_server.requests_for("toy.bin")] == [416]


def test_dropped_connection_resumes_where_it_stopped(http_server, tmp_path):
    url = http_server.add("toy.bin", DATA, mode="drop", failures=1)
    out = tmp_path / "toy.bin"
    assert dl.download(url, out, md5=MD5, retries=3, **FAST) == MD5
    assert out.read_bytes() == DATA
    first, second = http_server.requests_for("toy.bin")
    assert first.sent < len(DATA)
    assert second.range == f"bytes={first.sent}-" and second.status == 206
    assert first.sent + second.sent == len(DATA)  # nothing transferred twice


def test_429_honours_retry_after(http_server, tmp_path):
    url = http_server.add("toy.bin", DATA, mode="429", failures=1, retry_after="1")
    out = tmp_path / "toy.bin"
    # a 1 s Retry-After must win over the (tiny) backoff
    assert dl.download(url, out, md5=MD5, **FAST) == MD5
    first, second = http_server.requests_for("toy.bin")
    assert first.status == 429 and second.status == 200
    assert second.time - first.time >= 0.95


def test_500_is_retried_with_backoff(http_server, tmp_path):
    url = http_server.add("toy.bin", DATA, mode="500", failures=2)
    waits: list[float] = []
    assert dl.download(url, tmp_path / "toy.bin", md5=MD5, sleep=waits.append, retries=3,
                       **{**FAST, "backoff": 0.5}) == MD5
    assert [r.status for r in http_server.requests_for("toy.bin")] == [500, 500, 200]
    assert waits == [0.5, 1.0]  # exponential


def test_retries_are_bounded(http_server, tmp_path):
    url = http_server.add("toy.bin", DATA, mode="500", failures=100)
    out = tmp_path / "toy.bin"
    with pytest.raises(dl.DownloadError, match=r"giving up after 2 retries.*HTTP 500"):
        dl.download(url, out, md5=MD5, retries=2, **FAST)
    assert len(http_server.requests_for("toy.bin")) == 3
    assert not out.exists()


def test_checksum_mismatch_keeps_nothing(http_server, tmp_path):
    url = http_server.add("toy.bin", DATA, mode="corrupt")
    out = tmp_path / "toy.bin"
    with pytest.raises(dl.ChecksumError) as err:
        dl.download(url, out, md5=MD5, **FAST)
    msg = str(err.value)
    assert "toy.bin" in msg and MD5 in msg and err.value.actual in msg and err.value.actual != MD5
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_size_mismatch_is_an_error(http_server, tmp_path):
    url = http_server.add("toy.bin", DATA)
    with pytest.raises(dl.ChecksumError, match="size"):
        dl.download(url, tmp_path / "toy.bin", md5=MD5, size=len(DATA) + 5, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_http_404_fails_at_once(http_server, tmp_path):
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download(http_server.url + "/missing.bin", tmp_path / "m.bin", **FAST)
    assert len(http_server.log) == 1
    assert list(tmp_path.iterdir()) == []


def test_fetch_from_mirror_and_keep_existing(http_server, tmp_path):
    http_server.add("mirror/toy.bin", DATA)
    out = tmp_path / "toy.bin"
    dl.fetch("toy", "toy.bin", out, base_url=http_server.url + "/mirror/", datasets=_table(), **FAST)
    assert out.read_bytes() == DATA
    dl.fetch("toy", "toy.bin", out, base_url=http_server.url + "/mirror", datasets=_table(), **FAST)
    assert len(http_server.log) == 1  # second call found a verified file: no transfer


def test_unknown_md5_is_pinned_by_a_sidecar(http_server, tmp_path):
    http_server.add("toy.bin", DATA)
    out = tmp_path / "toy.bin"
    dl.fetch("toy", "toy.bin", out, base_url=http_server.url, datasets=_table(md5=None), **FAST)
    assert dl.sidecar_path(out).read_text() == f"{MD5}  toy.bin\n"
    # upstream changes: a later fetch to the same place is checked against the recorded md5
    out.unlink()
    http_server.add("toy.bin", DATA[::-1])
    with pytest.raises(dl.ChecksumError, match=MD5):
        dl.fetch("toy", "toy.bin", out, base_url=http_server.url, datasets=_table(md5=None), **FAST)
    assert not out.exists()


def test_local_dir_is_verified_and_symlinked(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "toy.bin").write_bytes(DATA)
    out = tmp_path / "raw" / "toy.bin"
    dl.fetch("toy", "toy.bin", out, local_dir=staged, datasets=_table())
    assert out.is_symlink() and os.readlink(out) == str((staged / "toy.bin").resolve())
    assert out.read_bytes() == DATA
    bad = tmp_path / "raw" / "bad.bin"
    with pytest.raises(dl.ChecksumError, match="staged"):
        dl.fetch("toy", "toy.bin", bad, local_dir=staged, datasets=_table(md5="0" * 32))
    assert not bad.exists() and not os.path.lexists(bad)


def test_real_tables_are_complete():
    jc = dl.DATASETS["jetclass"].files
    assert len(jc) == 12 and "JetClass_Pythia_val_5M.tar" in jc
    assert {f"JetClass_Pythia_train_100M_part{i}.tar" for i in range(10)} <= set(jc)
    for ds in dl.DATASETS.values():
        for spec in ds.files.values():
            assert spec.md5 is None or re.fullmatch(r"[0-9a-f]{32}", spec.md5)
    assert dl.DATASETS["modelnet10"].files["ModelNet10.zip"].md5 is None
    assert dl.file_url(dl.DATASETS["hls4ml"], "hls4ml_LHCjet_150p_val.tar.gz").startswith(
        "https://zenodo.org/records/3602260/files/hls4ml_LHCjet_150p_val.tar.gz")


def test_cli_download_from_mirror(http_server, tmp_path, capsys):
    http_server.add("ModelNet10.zip", DATA)
    out = tmp_path / "resources" / "raw" / "modelnet10" / "ModelNet10.zip"
    rc = salt_main(["download", "--dataset", "modelnet10", "--file", "ModelNet10.zip", "--output", str(out),
                    "--base-url", http_server.url, "--no-progress"])
    assert rc == 0 and out.read_bytes() == DATA
    assert dl.sidecar_path(out).read_text().startswith(MD5)
    rc = salt_main(["download", "--dataset", "jetclass", "--file", "nope.tar", "--output", str(out), "--no-progress"])
    assert rc == 1 and "nope.tar" in capsys.readouterr().err
