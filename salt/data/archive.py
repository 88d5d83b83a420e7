"""Safe, restartable extraction of the downloaded tar / tar.gz / zip archives.

An archive is untrusted input: every member is checked before anything is written, and
members with absolute paths, ``..`` components, links (sym or hard), devices or fifos are
refused with an error naming the member and the archive. Members are streamed one at a
time into a staging directory beside the output, moved into place, and a done-marker
(JSON listing the extracted files) is written last: an interrupted extraction leaves no
marker, so it is never taken for complete and the next run simply extracts again.
Several archives may share one output directory (the ten JetClass train parts do).

``__MACOSX/`` (AppleDouble junk in ModelNet10.zip) is always skipped. A members glob
keeps only matching members, and a per-member hook can shrink a member right after it is
written (``--h5-keep`` drops the large jet images from hls4ml h5 files one file at a
time, so the full extracted size is never on disk at once).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from salt.atomic import write_json

SKIPPED = ("__MACOSX", "__MACOSX/*")


class ArchiveError(ValueError):
    """An unsafe, damaged or unsupported archive; the message names it (and the member)."""


@dataclass(frozen=True)
class Member:
    name: str  # normalised relative POSIX path
    size: int
    is_dir: bool


def done_path(archive: str | os.PathLike[str], output_dir: str | os.PathLike[str]) -> Path:
    """Default done-marker of extracting `archive` into `output_dir`."""
    return Path(output_dir) / f".{Path(archive).name}.extracted.json"


def list_members(archive: str | os.PathLike[str]) -> list[Member]:
    """All members, checked for safety; raises ArchiveError on the first unsafe one."""
    with _Reader.open(archive) as reader:
        return reader.members


def extract(
    archive: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    members_glob: Sequence[str] = (),
    done: str | os.PathLike[str] | None = None,
    on_member: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Extract `archive` into `output_dir` safely; return the extracted files.

    `members_glob`: fnmatch patterns on member paths (``*`` crosses ``/``); empty = all.
    `on_member(path)` runs on each file in the staging directory before it is moved in.
    The done-marker (default `done_path(archive, output_dir)`) is written last.
    """
    archive, output_dir = Path(archive), Path(output_dir)
    done = Path(done) if done is not None else done_path(archive, output_dir)
    done.unlink(missing_ok=True)
    with _Reader.open(archive) as reader:  # every member is checked here, before any write
        wanted = [m for m in reader.members if not m.is_dir and not _skipped(m.name)
                  and (not members_glob or any(fnmatch.fnmatchcase(m.name, g) for g in members_glob))]
        if members_glob and not wanted:
            raise ArchiveError(f"{archive}: no member matches {list(members_glob)}")
        output_dir.mkdir(parents=True, exist_ok=True)
        prefix = _staging_prefix(archive, done)
        _remove_stale_staging(prefix, output_dir)
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=output_dir.parent))
        try:
            extracted = []
            for member in wanted:
                tmp = staging / member.name
                tmp.parent.mkdir(parents=True, exist_ok=True)
                with reader.open_member(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                if on_member is not None:
                    on_member(tmp)
                final = output_dir / member.name
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
                extracted.append(final)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise ArchiveError(f"{archive}: damaged while extracting ({type(exc).__name__}: {exc})") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    write_json(done, {"archive": str(archive), "output_dir": str(output_dir),
                      "members_glob": list(members_glob),
                      "files": [str(p.relative_to(output_dir)) for p in extracted]})
    return extracted


# -- member checks ----------------------------------------------------------------------

def _safe_name(archive: Path, raw: str) -> str:
    """The member's relative path, or ArchiveError if it could escape the output directory."""
    path = PurePosixPath(raw.replace("\\", "/"))
    if path.is_absolute() or re.match(r"[A-Za-z]:[/\\]", raw):
        raise ArchiveError(f"{archive}: member {raw!r} has an absolute path; refusing to extract")
    if ".." in path.parts:
        raise ArchiveError(f"{archive}: member {raw!r} contains '..'; refusing to extract")
    return "/".join(p for p in path.parts if p != ".")


def _skipped(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in SKIPPED)


def _staging_prefix(archive: Path, done: Path) -> str:
    """Staging prefix of one extraction (archive + done-marker): several extractions from one
    archive into one directory (one member each) may run at once and must not share it."""
    key = zlib.crc32(os.fspath(done.resolve()).encode())
    return f".extract-{archive.name}-{key:08x}-"


def _remove_stale_staging(prefix: str, output_dir: Path) -> None:
    """Staging left by a killed run of the same extraction."""
    for old in output_dir.parent.glob(glob_escape(prefix) + "*"):
        shutil.rmtree(old, ignore_errors=True)


def glob_escape(name: str) -> str:
    """`name` as an fnmatch/glob pattern that matches only itself."""
    return re.sub(r"([*?\[])", r"[\1]", name)


# -- readers ----------------------------------------------------------------------------

class _Reader:
    """Uniform view of tar and zip archives: checked members, and a stream per member."""

    path: Path
    members: list[Member]

    @staticmethod
    def open(path: str | os.PathLike[str]) -> _Reader:
        path = Path(path)
        if not path.is_file():
            raise ArchiveError(f"{path}: archive not found")
        if zipfile.is_zipfile(path):
            return _ZipReader(path)
        try:
            return _TarReader(path)
        except tarfile.TarError as exc:
            raise ArchiveError(f"{path}: not a readable tar or zip archive ({exc})") from exc

    def open_member(self, member: Member) -> IO[bytes]:
        raise NotImplementedError

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class _TarReader(_Reader):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar = tarfile.open(path, "r:*")
        try:
            infos = self.tar.getmembers()  # reads the whole archive once: checks before any write
        except (tarfile.TarError, EOFError, OSError) as exc:
            self.tar.close()
            raise ArchiveError(f"{path}: damaged archive ({type(exc).__name__}: {exc})") from exc
        self._infos: dict[str, tarfile.TarInfo] = {}
        self.members = []
        try:
            for info in infos:
                name = _safe_name(path, info.name)
                if info.issym() or info.islnk():
                    raise ArchiveError(f"{path}: member {info.name!r} is a link to {info.linkname!r}; "
                                       "refusing to extract")
                if info.ischr() or info.isblk() or info.isfifo() or not (info.isfile() or info.isdir()):
                    raise ArchiveError(f"{path}: member {info.name!r} is a device, fifo or other special "
                                       "file; refusing to extract")
                if not name:
                    continue
                self._infos[name] = info
                self.members.append(Member(name, info.size, info.isdir()))
        except ArchiveError:
            self.tar.close()
            raise

    def open_member(self, member: Member) -> IO[bytes]:
        f = self.tar.extractfile(self._infos[member.name])
        if f is None:
            raise ArchiveError(f"{self.path}: member {member.name!r} has no data")
        return f

    def close(self) -> None:
        self.tar.close()


class _ZipReader(_Reader):
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ArchiveError(f"{path}: damaged zip ({exc})") from exc
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self.members = []
        try:
            for info in self.zip.infolist():
                name = _safe_name(path, info.filename)
                kind = stat.S_IFMT(info.external_attr >> 16)  # Unix file type; 0 when not recorded
                if kind == stat.S_IFLNK:
                    raise ArchiveError(f"{path}: member {info.filename!r} is a symlink; refusing to extract")
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise ArchiveError(f"{path}: member {info.filename!r} is a device, fifo or other special "
                                       "file; refusing to extract")
                if not name:
                    continue
                self._infos[name] = info
                self.members.append(Member(name, info.file_size, info.is_dir()))
        except ArchiveError:
            self.zip.close()
            raise

    def open_member(self, member: Member) -> IO[bytes]:
        return self.zip.open(self._infos[member.name])

    def close(self) -> None:
        self.zip.close()


# -- CLI ---------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("archive", help="tar, tar.gz or zip file")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--members-glob", action="append", default=[], metavar="GLOB",
                        help="extract only members matching this pattern ('*' crosses '/'); repeatable")
    parser.add_argument("--done", help="done-marker written last (default: OUTPUT_DIR/.ARCHIVE.extracted.json)")
    parser.add_argument("--h5-keep", metavar="DATASETS",
                        help="comma-separated datasets to keep in each extracted .h5 member, dropping the rest "
                             "(the workflow passes a source's keep_on_extraction)")


def slim_h5(path: str | os.PathLike[str], keep: Sequence[str]) -> None:
    """Rewrite `path` with only the datasets in `keep` (atomically), so that an archive whose HDF5
    members are mostly unused data (hls4ml's jet images) never sits on disk whole."""
    import h5py

    from salt.atomic import atomic_path

    path = Path(path)
    try:
        src = h5py.File(path, "r")
    except OSError as exc:
        raise ArchiveError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with src:
        missing = [k for k in keep if k not in src]
        if missing:
            raise ArchiveError(f"{path}: datasets {missing} missing (have {sorted(src)})")
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as dst:
                for name in keep:
                    src.copy(src[name], dst, name=name)


def _h5_slimmer(keep: list[str]) -> Callable[[Path], None]:
    """An on_member hook keeping only the datasets `keep` of each extracted .h5 file."""

    def hook(path: Path) -> None:
        if path.suffix == ".h5":
            slim_h5(path, keep)
    return hook


def main(args: argparse.Namespace) -> int:
    hook = _h5_slimmer([name for name in args.h5_keep.split(",") if name]) if args.h5_keep else None
    try:
        files = extract(args.archive, args.output_dir, members_glob=args.members_glob, done=args.done,
                        on_member=hook)
    except ArchiveError as exc:
        print(f"salt extract: error: {exc}", file=sys.stderr)
        return 1
    print(f"extracted {len(files)} files from {args.archive} into {args.output_dir}")
    return 0
