"""Bad raw input through preprocessing: the error names the file (and entry), and nothing is left
under a final name (shared by the reader tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from salt.data.preprocess import preprocess
from salt.data.record import RecordError
from salt.data.shards import SPLITS


def assert_preprocess_fails(source: str, raw: Path, match: str, step: int = 50_000) -> None:
    """Preprocess `raw` (kT, N = 16) into shards beside it; expect a RecordError matching `match`
    and no file in `raw`'s folder but `raw` itself afterwards."""
    outputs = {s: raw.parent / "shards" / s / f"{raw.stem}.h5" for s in SPLITS}
    with pytest.raises(RecordError, match=match):
        preprocess(source, [raw], outputs, sort="kt", n_particles=16, features=["pt", "deta", "dphi"], step=step)
    assert [p for p in raw.parent.rglob("*") if p.is_file()] == [raw]
