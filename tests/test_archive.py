"""Safe extraction of tar, tar.gz and zip archives."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile

import pytest

from formats import modelnet10_members, write_tar, write_zip
from salt.cli import main as salt_main
from salt.data.archive import ArchiveError, done_path, extract, list_members


def _tar_with(path, info: tarfile.TarInfo, data: bytes = b"", safe_first: bool = True):
    with tarfile.open(path, "w") as tar:
        if safe_first:
            ok = tarfile.TarInfo("val_5M/ok.root")
            ok.size = 3
            tar.addfile(ok, io.BytesIO(b"abc"))
        tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    return info


@pytest.mark.parametrize("compression", ["", "gz"])
def test_extracts_tar_and_writes_done_marker_last(tmp_path, compression):
    members = {"val_5M/HToBB_120.root": b"r" * 1000, "val_5M/TTBar_121.root": b"t" * 10}
    arc = write_tar(tmp_path / f"JetClass_Pythia_val_5M.tar{'.gz' if compression else ''}", members, compression)
    out = tmp_path / "raw"
    files = extract(arc, out)
    assert sorted(p.relative_to(out).as_posix() for p in files) == sorted(members)
    assert (out / "val_5M" / "HToBB_120.root").read_bytes() == b"r" * 1000
    marker = json.loads(done_path(arc, out).read_text())
    assert sorted(marker["files"]) == sorted(members)
    assert not list(tmp_path.glob(".extract-*"))  # staging removed


def test_several_archives_share_an_output_dir(tmp_path):
    a = write_tar(tmp_path / "part0.tar", {"HToBB_000.root": b"a"})
    b = write_tar(tmp_path / "part1.tar", {"HToBB_010.root": b"b"})
    out = tmp_path / "train_100M"
    extract(a, out)
    extract(b, out, done=tmp_path / "part1.done")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["HToBB_000.root",
                                                                                 "HToBB_010.root"]
    assert (tmp_path / "part1.done").exists() and done_path(a, out).exists()


def test_members_glob(tmp_path):
    arc = write_tar(tmp_path / "a.tar.gz", {"train/x.h5": b"1", "train/notes.txt": b"2", "train/y.h5": b"3"}, "gz")
    files = extract(arc, tmp_path / "out", members_glob=["*.h5"])
    assert sorted(p.name for p in files) == ["x.h5", "y.h5"]
    assert not (tmp_path / "out" / "train" / "notes.txt").exists()
    with pytest.raises(ArchiveError, match=r"no member matches \['\*.root'\]"):
        extract(arc, tmp_path / "out2", members_glob=["*.root"])


def test_zip_skips_macosx(tmp_path):
    arc = write_zip(tmp_path / "ModelNet10.zip", modelnet10_members(classes=("chair",), n_train=1, n_test=1))
    files = extract(arc, tmp_path / "raw")
    assert sorted(p.relative_to(tmp_path / "raw").as_posix() for p in files) == [
        "ModelNet10/chair/test/chair_0001.off", "ModelNet10/chair/train/chair_0001.off"]
    assert not (tmp_path / "raw" / "__MACOSX").exists()


@pytest.mark.parametrize("info, why", [
    (_info("/etc/evil"), "absolute path"),
    (_info("val_5M/../../evil"), "'..'"),
    (_info("link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
    (_info("hard", tarfile.LNKTYPE, "val_5M/ok.root"), "link"),
    (_info("dev", tarfile.CHRTYPE), "device"),
    (_info("blk", tarfile.BLKTYPE), "device"),
    (_info("pipe", tarfile.FIFOTYPE), "fifo"),
])
def test_unsafe_tar_members_are_refused_before_writing(tmp_path, info, why):
    arc = _tar_with(tmp_path / "evil.tar", info)
    out = tmp_path / "out"
    with pytest.raises(ArchiveError) as err:
        extract(arc, out)
    msg = str(err.value)
    assert "evil.tar" in msg and repr(info.name) in msg and why in msg
    assert not out.exists()  # not even the safe member was written
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("name, mode, why", [
    ("../evil.off", stat.S_IFREG | 0o644, "'..'"),
    ("/abs.off", stat.S_IFREG | 0o644, "absolute"),
    ("C:/win.off", stat.S_IFREG | 0o644, "absolute"),
    ("link.off", stat.S_IFLNK | 0o777, "symlink"),
    ("fifo", stat.S_IFIFO | 0o644, "fifo"),
])
def test_unsafe_zip_members_are_refused(tmp_path, name, mode, why):
    arc = tmp_path / "evil.zip"
    with zipfile.ZipFile(arc, "w") as z:
        z.writestr("ModelNet10/ok.off", "OFF\n")
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        z.writestr(info, "payload")
    with pytest.raises(ArchiveError, match=why) as err:
        extract(arc, tmp_path / "out")
    assert "evil.zip" in str(err.value) and name in str(err.value)
    assert not (tmp_path / "out").exists()


def test_damaged_archives_name_the_file(tmp_path):
    arc = write_tar(tmp_path / "big.tar.gz", {f"train/f{i}.h5": bytes(range(256)) * 400 for i in range(5)}, "gz")
    data = arc.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="cut.tar.gz"):
        extract(cut, tmp_path / "out")
    assert not done_path(cut, tmp_path / "out").exists()
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    with pytest.raises(ArchiveError, match="junk.zip"):
        list_members(junk)


def test_interrupted_extraction_is_never_complete(tmp_path):
    arc = write_tar(tmp_path / "a.tar", {"d/one": b"1", "d/two": b"2", "d/three": b"3"})
    out = tmp_path / "out"
    extract(arc, out)
    seen = []

    def die_on_second(path):
        seen.append(path.name)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(arc, out, on_member=die_on_second)
    assert not done_path(arc, out).exists()  # the old marker went first, no new one
    assert not list(tmp_path.glob(".extract-*"))
    extract(arc, out)  # a rerun completes
    assert json.loads(done_path(arc, out).read_text())["files"] == ["d/one", "d/two", "d/three"]


def test_cli_extract(tmp_path, capsys):
    arc = write_tar(tmp_path / "a.tar", {"x/y.root": b"data", "x/z.txt": b"no", "w/v.root": b"no"})
    done = tmp_path / "flags" / "a.done"
    assert salt_main(["extract", str(arc), "--output-dir", str(tmp_path / "out"), "--done", str(done),
                      "--members-glob", "x/*.root", "--members-glob", "x/q*"]) == 0
    assert (tmp_path / "out" / "x" / "y.root").read_bytes() == b"data" and done.exists()
    assert json.loads(done.read_text())["files"] == ["x/y.root"]
    evil = _tar_with(tmp_path / "evil.tar", _info("../x"))
    assert salt_main(["extract", str(evil), "--output-dir", str(tmp_path / "o2")]) == 1
    assert "evil.tar" in capsys.readouterr().err
