"""Fetch a dataset's raw files: resumable, retried, md5-checked; or link files staged locally.

What to fetch (URL and md5 per file) is each source's catalogue (`salt.data.sources`).

The real files are large (JetClass is ~190 GB in 12 tars) and come from Zenodo, which
throttles (429) and drops connections, so a download must survive interruptions without
starting over and must never leave a file that looks finished but is not:

- bytes go to ``<output>.part``; a later call resumes it with an HTTP Range request
  (hashing the bytes already there first) and starts clean if the server ignores Range;
- dropped connections, timeouts, 5xx and 429 are retried with exponential backoff
  (``Retry-After`` honoured); the retry budget is per stretch without progress;
- the md5 is computed while streaming and checked against the source's catalogue (hard-coded,
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
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

from salt.data.sources import MODULES, Catalogue, FileSpec, get
from salt.provenance import file_md5

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT = (15.0, 120.0)  # (connect, read) seconds
RETRIES = 8
BACKOFF = 2.0  # seconds before the first retry; doubles each time
MAX_BACKOFF = 300.0  # cap on any single wait, Retry-After included


def _catalogues() -> dict[str, Catalogue]:
    """Every downloadable dataset's catalogue, from the sources' descriptors (plus JetClass's
    100k-jet example file, which no dataset config uses but users fetch to look at the format)."""
    from salt.data.sources.jetclass import EXAMPLE

    out = {name: get(name).catalogue for name in MODULES if get(name).catalogue is not None}
    return out | {"jetclass_example": EXAMPLE}


DATASETS: dict[str, Catalogue] = _catalogues()


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


def file_url(dataset: Catalogue, name: str, base_url: str | None = None) -> str:
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
    datasets: Mapping[str, Catalogue] = DATASETS,
    **download_options,
) -> Path:
    """Make `output` the verified file `name` of `dataset`; return `output`.

    From `local_dir/name` (symlinked) if given, else from `base_url` or the dataset's URL.
    An existing `output` with the right md5 is kept without any transfer.
    `md5` replaces the catalogue's checksum (a mirror or staging area holding other bytes, tests):
    the catalogue is the safety net for the real data, so an override is logged as a warning.
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
