"""Fetch a dataset's raw files: resumable, retried, md5-checked; or link files staged locally.

The real files are large (JetClass is ~190 GB in 12 tars) and come from Zenodo, which
throttles (429) and drops connections, so a download must survive interruptions without
starting over and must never leave a file that looks finished but is not:

- bytes go to ``<output>.part``; a later call resumes it with an HTTP Range request
  (hashing the bytes already there first) and starts clean if the server ignores Range;
- dropped connections, timeouts, 5xx and 429 are retried with exponential backoff
  (``Retry-After`` honoured); the retry budget is per stretch without progress;
- the md5 is computed while streaming and checked against the table below (hard-coded,
  so no API call is needed at run time) before the rename to the final name; a mismatch
  deletes the partial file and raises an error naming file, expected and actual md5 (after
  one fresh download if the bad bytes may have come from an earlier run's partial file).

Files without a published checksum (ModelNet10) have ``md5=None``: the md5 of the first
download is recorded in a sidecar ``<output>.md5`` (``md5sum`` format) and every later
fetch to that path is verified against it; delete the sidecar to accept a new upstream file.

HPC sites often stage the data already: ``local_dir`` verifies the staged file's md5 and
makes the output an absolute **symlink** to it. A hardlink fails across file systems
(staging areas usually are another one) and a copy would duplicate ~190 GB.
"""

from __future__ import annotations

import argparse
import email.utils
import fcntl
import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

from salt.provenance import file_md5

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT = (15.0, 120.0)  # (connect, read) seconds
RETRIES = 8
BACKOFF = 2.0  # seconds before the first retry; doubles each time
MAX_BACKOFF = 300.0  # cap on any single wait, Retry-After included


@dataclass(frozen=True)
class FileSpec:
    md5: str | None  # None: no published checksum; pinned by the sidecar on first download
    size: int | None = None  # exact bytes, checked before the md5 (no real entry has a verified one yet)
    # What an archive holds, when the layout is known in advance: member paths, or folders
    # (ending in "/") that are read as one unit. None: the members are only known after
    # extraction (the workflow then lists them with a checkpoint).
    members: tuple[str, ...] | None = None
    # True: the download is itself one raw file (an h5 or npz, no archive), read where it lies.
    plain: bool = False


@dataclass(frozen=True)
class Dataset:
    url: str  # template with {name}; a mirror base URL replaces it by "<base>/{name}"
    files: Mapping[str, FileSpec]


# JetClass file-name prefixes in label order (QCD, Hbb, Hcc, Hgg, H4q, Hqql, Zqq, Wqq, Tbqq, Tbl).
JETCLASS_PROCESSES = ("ZJetsToNuNu", "HToBB", "HToCC", "HToGG", "HToWW4Q", "HToWW2Q1L", "ZToQQ", "WToQQ",
                      "TTBar", "TTBarLep")
MODELNET10_CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table",
                      "toilet")


def _jetclass_members(folder: str, indices: range) -> tuple[str, ...]:
    return tuple(f"{folder}/{p}_{i:03d}.root" for p in JETCLASS_PROCESSES for i in indices)


def _jetclass_files() -> dict[str, FileSpec]:
    md5s = ["de4fd2dca2e68ab3c85d5cfd3bcc65c3", "9722a359c5ef697bea0fbf79bf50f003",
            "1e9f66cd1f915f9d10e90ae1d7761720", "47348fc8985319fa4806da87500482fa",
            "6b0ce16bd93b442a8d51914466990279", "416e347512e716de51d392bee327b8e9",
            "e9b9c1557b1b39bf0a16e4ab631ae451", "5bfc6cb285ccb7680cefa9ac82ad1a2e",
            "540c1a0d66dfad78d2b363c5740ccf86", "668f40b3275167ff7104c48317c0ae2a"]
    # Which of the train files 000-099 each train part holds (and under which folder) is not
    # documented: those members are listed after extraction. Val and test are known.
    files = {f"JetClass_Pythia_train_100M_part{i}.tar": FileSpec(m) for i, m in enumerate(md5s)}
    files["JetClass_Pythia_val_5M.tar"] = FileSpec("7235ccb577ed85023ea3ab4d5e6160cf",
                                                   members=_jetclass_members("val_5M", range(120, 125)))
    files["JetClass_Pythia_test_20M.tar"] = FileSpec("64e5156d26d101adeb43b8388207d767",
                                                     members=_jetclass_members("test_20M", range(100, 120)))
    return files


# Quark-gluon jets (Pythia, u/d/s quarks): md5s as published in EnergyFlow's qg_jets.py (HASHES), in
# file order QG_jets.npz, QG_jets_1.npz ... QG_jets_19.npz.
_QG_MD5S = (
    "f5d052f10a79c6e8b9382637aca0ef52", "f6a1081c76a47386bc11abcf0e499552", "2628367c57ba598f4473c870d1381041",
    "dd3ad998b0a1bd9acea2ecf029a8a921", "a56d6bb98361b55382aa8c06225e05d8", "266c688e9e6ff1cd20840692d45eaaf8",
    "95a9f7e555fb7b1073967056b9030b11", "4ae72aaabe121bd489532c99a6bdde95", "a2b80bd4199468fde4f302d346a8c9d8",
    "1157cbace488c70c9dcfc250f3345b06", "4b424b553e1e7f852e47ea9904bc2dcf", "ccd29c9d1abb34dd7cfb48cfc57a9695",
    "1ed1f6f19fb8439c9811dced41d5127d", "af45818c361e11ca9b3adaba30db06ad", "488ced3ea409d7e2b196da67f7d182ec",
    "c5e083019de6cd6a0ef12bcec1ea566b", "48605d55edff665f0c7d2f800b5a622e", "8fd47760957b5fd9adec9048b50cd1a9",
    "d43d611484b55391e891ba31c605f792", "6753508e34014cc69714a01fca20ec38",
)
QG_FILES = tuple(f"QG_jets{'' if i == 0 else f'_{i}'}.npz" for i in range(20))


# md5s: JetClass from ParT's get_datasets.py; hls4ml as published on its Zenodo record; QG from EnergyFlow.
# Top tagging: no md5 is published with the files, so the first download's is pinned (sidecar).
DATASETS: dict[str, Dataset] = {
    "jetclass": Dataset("https://zenodo.org/records/6619768/files/{name}?download=1", _jetclass_files()),
    "jetclass_example": Dataset("https://hqu.web.cern.ch/datasets/JetClass/example/{name}",
                                {"JetClass_example_100k.root": FileSpec(None)}),
    "hls4ml": Dataset("https://zenodo.org/records/3602260/files/{name}?download=1", {
        # 2,725,115,104 bytes by a third party's count: not enforced, the md5 decides
        "hls4ml_LHCjet_150p_train.tar.gz": FileSpec("af12d3a500414924e70a73b56fc49aec"),
        "hls4ml_LHCjet_150p_val.tar.gz": FileSpec("ff902e6a02bfb4247a9068bf7ff7f6db"),
    }),
    # read per class/split folder: ModelNet10/<class>/{train,test}/*.off
    "modelnet10": Dataset("http://3dvision.princeton.edu/projects/2014/3DShapeNets/{name}",
                          {"ModelNet10.zip": FileSpec(None, members=tuple(
                              f"ModelNet10/{c}/{s}/" for c in MODELNET10_CLASSES for s in ("train", "test")))}),
    # pandas HDF stores, one per official split (1,211,000 / 403,000 / 404,000 jets)
    "toptagging": Dataset("https://zenodo.org/records/2603256/files/{name}?download=1",
                          {name: FileSpec(None, plain=True) for name in ("train.h5", "val.h5", "test.h5")}),
    "quarkgluon": Dataset("https://zenodo.org/records/3164691/files/{name}?download=1",
                          {name: FileSpec(md5, plain=True) for name, md5 in zip(QG_FILES, _QG_MD5S, strict=True)}),
}


class DownloadError(RuntimeError):
    """A file could not be obtained; the message names it and says why."""


class ChecksumError(DownloadError):
    def __init__(self, name: str, expected: str, actual: str, detail: str = "") -> None:
        super().__init__(f"{name}: md5 mismatch: expected {expected}, got {actual}{detail}")
        self.name, self.expected, self.actual = name, expected, actual


class _Transient(Exception):
    """A failure worth retrying; `wait` is the server's Retry-After, if any."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


_NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                   urllib3.exceptions.HTTPError)


def file_url(dataset: Dataset, name: str, base_url: str | None = None) -> str:
    if base_url:
        return f"{base_url.rstrip('/')}/{name}"
    return dataset.url.format(name=name)


def sidecar_path(output: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(output)}.md5")


def fetch(
    dataset: str,
    name: str,
    output: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    local_dir: str | os.PathLike[str] | None = None,
    md5: str | None = None,
    datasets: Mapping[str, Dataset] = DATASETS,
    **download_options,
) -> Path:
    """Make `output` the verified file `name` of `dataset`; return `output`.

    From `local_dir/name` (symlinked) if given, else from `base_url` or the dataset's URL.
    An existing `output` with the right md5 is kept without any transfer.
    `md5` replaces the table's checksum (a mirror or staging area holding other bytes, tests):
    the table is the safety net for the real data, so an override is logged as a warning.
    """
    if dataset not in datasets:
        raise DownloadError(f"unknown dataset {dataset!r}; expected one of {sorted(datasets)}")
    ds = datasets[dataset]
    if name not in ds.files:
        raise DownloadError(f"{dataset}: unknown file {name!r}; expected one of {sorted(ds.files)}")
    if base_url and local_dir:
        raise DownloadError("give either a mirror base URL or a local directory, not both")
    spec = ds.files[name]
    output = Path(output)
    sidecar = sidecar_path(output)
    if md5 is not None:
        if not re.fullmatch(r"[0-9a-f]{32}", md5):
            raise DownloadError(f"{dataset}/{name}: md5 override {md5!r} is not 32 lowercase hex digits")
        if md5 != spec.md5:
            log.warning("%s: md5 OVERRIDDEN: expecting %s instead of the %s", name, md5,
                        f"published {spec.md5}" if spec.md5 else "unpublished (sidecar-pinned) value")
    expected = md5 or spec.md5 or _read_sidecar(sidecar)

    if output.exists() and (local_dir is None or output.resolve() == (Path(local_dir) / name).resolve()):
        actual = file_md5(output)
        if expected is None or actual == expected:
            log.info("%s: already present, md5 %s", output, actual)
            _record(sidecar, spec, actual, name)
            return output
        log.warning("%s: present but md5 %s != expected %s; fetching again", output, actual, expected)
        output.unlink()

    if local_dir is not None:
        actual = link_local(Path(local_dir) / name, output, md5=expected)
    else:
        actual = download(file_url(ds, name, base_url), output, md5=expected, size=spec.size, **download_options)
    _record(sidecar, spec, actual, name)
    return output


def download(
    url: str,
    output: str | os.PathLike[str],
    *,
    md5: str | None = None,
    size: int | None = None,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    max_backoff: float = MAX_BACKOFF,
    timeout: tuple[float, float] = TIMEOUT,
    chunk_size: int = CHUNK,
    progress: bool = True,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Stream `url` into `output` (via `<output>.part`, resumed if present); return its md5.

    Raises ChecksumError (partial file deleted) on a size or md5 mismatch and DownloadError
    after `retries` consecutive failed attempts without progress (partial file kept, so the
    next call resumes) or on a non-retryable HTTP status.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    session = session or _session()
    with _PartFile(Path(f"{output}.part"), size, output.name, progress) as part:
        failures = 0
        while size is None or part.offset < size:
            before = part.offset
            try:
                if _attempt(session, url, part, timeout, chunk_size):
                    break
            except (_Transient, *_NETWORK_ERRORS) as exc:
                failures = 1 if part.offset > before else failures + 1
                if failures > retries:
                    raise DownloadError(f"{url}: giving up after {retries} retries without progress "
                                        f"({part.offset} bytes kept in {part.path}); last error: {exc}") from exc
                wait = getattr(exc, "wait", None)
                delay = min(max_backoff, wait if wait is not None else backoff * 2 ** (failures - 1))
                log.warning("%s: %s; retry %d/%d in %.1f s", url, exc, failures, retries, delay)
                sleep(delay)
        actual = part.finish()
        if size is not None and part.offset != size:
            part.discard()
            raise ChecksumError(output.name, md5 or "?", actual, f" (size {part.offset} != expected {size}; "
                                "partial file deleted)")
        if md5 is not None and actual != md5:
            part.discard()
            if not part.resumed_from:
                raise ChecksumError(output.name, md5, actual, f" (downloaded from {url}; partial file deleted)")
        else:
            os.replace(part.path, output)
            log.info("%s: complete, md5 %s", output, actual)
            return actual
    # the bytes an earlier run left were bad (another version of the file?): once more from zero
    log.warning("%s: md5 mismatch after resuming at byte %d; downloading the whole file again",
                output, part.resumed_from)
    return download(url, output, md5=md5, size=size, retries=retries, backoff=backoff, max_backoff=max_backoff,
                    timeout=timeout, chunk_size=chunk_size, progress=progress, session=session, sleep=sleep)


def link_local(source: str | os.PathLike[str], output: str | os.PathLike[str], *, md5: str | None) -> str:
    """Verify a staged file and make `output` an absolute symlink to it; return its md5."""
    source = Path(source).resolve()
    output = Path(output)
    if not source.is_file():
        raise DownloadError(f"{source}: staged file not found")
    actual = file_md5(source)
    if md5 is not None and actual != md5:
        raise ChecksumError(str(source), md5, actual, " (staged file; not linked)")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(source, tmp)
    os.replace(tmp, output)
    log.info("%s -> %s (md5 %s)", output, source, actual)
    return actual


# -- one HTTP attempt --------------------------------------------------------------------

class _PartFile:
    """`<output>.part` with its running md5; locked so two processes never write one file."""

    def __init__(self, path: Path, size: int | None, label: str, progress: bool) -> None:
        self.path, self.size, self.label, self.progress = path, size, label, progress

    def __enter__(self) -> _PartFile:
        self.f = open(self.path, "a+b")
        try:
            fcntl.flock(self.f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.close()
            raise DownloadError(f"{self.path}: another process is downloading this file") from None
        # hash what an earlier run left, so the final md5 covers the whole file
        self.hasher = hashlib.md5()
        self.f.seek(0)
        while block := self.f.read(CHUNK):
            self.hasher.update(block)
        self.offset = self.resumed_from = self.f.tell()
        self.bar = tqdm(total=self.size, initial=self.offset, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=self.label, disable=not self.progress, mininterval=1.0)
        if self.size is not None and self.offset > self.size:
            log.warning("%s: %d bytes, more than the expected %d; starting over", self.path, self.offset, self.size)
            self.restart()
        elif self.offset:
            log.info("%s: resuming after %d bytes", self.path, self.offset)
        return self

    def write(self, chunk: bytes) -> None:
        self.f.write(chunk)  # "a" mode: always appends at the end, which is `offset`
        self.hasher.update(chunk)
        self.offset += len(chunk)
        self.bar.update(len(chunk))

    def restart(self) -> None:
        self.f.truncate(0)
        self.hasher, self.offset, self.resumed_from = hashlib.md5(), 0, 0
        self.bar.reset(total=self.bar.total)

    def set_total(self, total: int) -> None:
        if self.bar.total is None:
            self.bar.total = total
            self.bar.refresh()

    def finish(self) -> str:
        self.f.flush()
        os.fsync(self.f.fileno())
        return self.hasher.hexdigest()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)

    def __exit__(self, *exc_info) -> None:
        self.bar.close()
        self.f.close()
        if self.offset == 0:  # nothing worth resuming (e.g. HTTP 404): leave no trace
            self.path.unlink(missing_ok=True)


def _attempt(session: requests.Session, url: str, part: _PartFile, timeout, chunk_size: int) -> bool:
    """One GET from `part.offset`; True when the file is complete. Raises _Transient to retry."""
    offset = part.offset
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        status = resp.status_code
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}", _retry_after(resp.headers.get("Retry-After")))
        if status == 416 and offset:
            total = _content_range_total(resp.headers.get("Content-Range"))
            if total == offset:  # the partial file already holds everything
                return True
            log.warning("%s: server refused the range from byte %d (total %s); starting over", url, offset, total)
            part.restart()
            return False
        if status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != offset:
                log.warning("%s: asked for bytes from %d, got a range from %s; starting over", url, offset, start)
                part.restart()
                return False
        elif status == 200:
            if offset:
                log.warning("%s: server ignored the Range request; starting over from byte 0", url)
                part.restart()
        else:
            raise DownloadError(f"{url}: HTTP {status} {resp.reason}")
        length = resp.headers.get("Content-Length")
        end = part.offset + int(length) if length is not None else None
        if end is not None:
            part.set_total(end)
        for chunk in resp.raw.stream(chunk_size, decode_content=False):
            part.write(chunk)
        if end is not None and part.offset < end:
            raise _Transient(f"connection closed after {part.offset} of {end} bytes")
    return True


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: an integer, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def _content_range_total(value: str | None) -> int | None:
    m = re.match(r"bytes (?:\*|\d+-\d+)/(\d+)", value or "")
    return int(m.group(1)) if m else None


def _session() -> requests.Session:
    from salt import __version__

    s = requests.Session()
    # identity: a server that gzips on the fly would otherwise change the bytes we hash
    s.headers.update({"Accept-Encoding": "identity", "User-Agent": f"salt-pipeline/{__version__}"})
    return s


def _read_sidecar(path: Path) -> str | None:
    if not path.exists():
        return None
    text = path.read_text().split()
    if not text or not re.fullmatch(r"[0-9a-f]{32}", text[0]):
        raise DownloadError(f"{path}: not an md5 sidecar (expected '<md5>  <name>')")
    return text[0]


def _record(sidecar: Path, spec: FileSpec, actual: str, name: str) -> None:
    """Pin the md5 of a file with no published checksum on its first successful fetch."""
    if spec.md5 is None and not sidecar.exists():
        from salt.atomic import write_text

        write_text(sidecar, f"{actual}  {name}\n")
        log.info("%s: no published checksum; recorded md5 %s in %s", name, actual, sidecar)


# -- CLI ---------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--file", help="file name within the dataset (see --list)")
    parser.add_argument("--output", help="where the verified file goes")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--base-url", help="mirror base URL; the file is fetched from <base-url>/<file>")
    source.add_argument("--local-dir", help="directory that already holds the file: verify and symlink")
    parser.add_argument("--md5", help="expected md5 replacing the built-in one (mirrors with other files, tests; "
                                      "logged as a warning)")
    parser.add_argument("--retries", type=int, default=RETRIES, help="retries without progress before giving up")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list", action="store_true", help="list the dataset's files with md5s and exit")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ds = DATASETS[args.dataset]
    if args.list:
        for name, spec in ds.files.items():
            members = ("a raw file, no archive" if spec.plain else f"{len(spec.members)} known members"
                       if spec.members is not None else "members listed on extraction")
            print(f"{name}\t{spec.md5 or '-'}\t{spec.size or '-'}\t{members}")
        return 0
    if not args.file or not args.output:
        print("salt download: error: --file and --output are required", file=sys.stderr)
        return 2
    try:
        fetch(args.dataset, args.file, args.output, base_url=args.base_url, local_dir=args.local_dir, md5=args.md5,
              retries=args.retries, progress=not args.no_progress)
    except DownloadError as exc:
        print(f"salt download: error: {exc}", file=sys.stderr)
        return 1
    return 0
