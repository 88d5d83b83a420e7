"""Outputs that appear whole or not at all.

Snakemake (and a physicist) must never mistake a file left by a killed job for a
finished one, so every writer goes through a temporary name in the same directory
and an atomic rename.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # a writer killed outright (SIGKILL, node failure) leaves its temporary behind; the next writer
    # of the same output removes it (one output has one writer at a time: Snakemake's job)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.part"):
        if stale != tmp_path:
            stale.unlink(missing_ok=True)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); results are meant to be shared like any output
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented, strict JSON (no NaN/Infinity literals), atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, paths
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
