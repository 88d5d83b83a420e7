"""The Top Quark Tagging Reference Dataset (Kasieczka et al., Zenodo 2603256): pandas HDF stores.

``train.h5``, ``val.h5`` and ``test.h5`` (1,211,000 / 403,000 / 404,000 jets; the official
split is the file) each hold one pandas DataFrame under the key ``table``, written in PyTables'
"table" format (``table/table`` plus its index ``table/_i_table``). Its 806 columns are
``E_i, PX_i, PY_i, PZ_i`` for the 200 leading constituents (interleaved per particle, float32,
zero-padded: E = 0 marks a padding slot), ``truthE, truthPX, truthPY, truthPZ`` (the top parton,
zero for QCD), ``ttv`` (0/1/2 for train/test/val, redundant with the file) and ``is_signal_new``
(1 top, 0 QCD). Physics: 14 TeV, Pythia 8 + Delphes (ATLAS card), anti-kT R = 0.8 jets with
pT in [550, 650] GeV and |eta| < 2.

As the SAL-T authors (and ParT) do, the jet axis is the four-vector sum of the constituents,
and deta / dphi are the constituents' pseudorapidity and azimuth relative to it (no sign flip).
Reading goes through pandas (PyTables): a row range of the table format is read without the rest.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import numpy as np

from salt.data.record import Record, RecordError
from salt.data.sources import Catalogue, FileSpec, Source, constituent_jets, entry_range, jagged_record

KIND = "jet"
KEY = "table"
CLASS_NAMES = ("QCD", "top")  # class index = is_signal_new
LABEL = "is_signal_new"
MAX_PARTICLES = 200

# pandas HDF stores, one per official split (1,211,000 / 403,000 / 404,000 jets). No md5 is
# published with the files, so the first download's is pinned beside the file.
SOURCE = Source("toptagging", reader=__name__, kind=KIND, class_names=CLASS_NAMES,
                catalogue=Catalogue("https://zenodo.org/records/2603256/files/{name}?download=1",
                                    {name: FileSpec(None, plain=True) for name in ("train.h5", "val.h5", "test.h5")}))
COMPONENTS = ("E", "PX", "PY", "PZ")
TRUTH_COLUMNS = ("truthE", "truthPX", "truthPY", "truthPZ")
DEFAULT_STEP = 50_000


def particle_columns(n: int = MAX_PARTICLES) -> list[str]:
    """The constituent columns in file order: E_0, PX_0, PY_0, PZ_0, E_1, ..."""
    return [f"{c}_{i}" for i in range(n) for c in COMPONENTS]


COLUMNS = (*particle_columns(), *TRUTH_COLUMNS, "ttv", LABEL)


def num_entries(path: str | os.PathLike[str]) -> int:
    with _open(path) as store:
        return _nrows(store, os.fspath(path))


def read(path: str | os.PathLike[str], entry_start: int | None = None, entry_stop: int | None = None) -> Record:
    """Jets [entry_start, entry_stop) of one store as a validated Record."""
    source = os.fspath(path)
    with _open(path) as store:
        start, stop = entry_range(source, _nrows(store, source), entry_start, entry_stop)
        return _read_range(store, source, start, stop)


def iter_records(path: str | os.PathLike[str], step: int = DEFAULT_STEP, entry_start: int | None = None,
                 entry_stop: int | None = None, fields: Sequence[str] | None = None) -> Iterator[Record]:
    """Records of at most `step` jets, opening the store once.

    `fields` is accepted for the sources' common signature: a table-format row holds every
    column, so reading fewer saves nothing."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    source = os.fspath(path)
    with _open(path) as store:
        start, stop = entry_range(source, _nrows(store, source), entry_start, entry_stop)
        for lo in range(start, stop, step):
            yield _read_range(store, source, lo, min(lo + step, stop))


# -- internals ----------------------------------------------------------------------------

@contextlib.contextmanager
def _open(path: str | os.PathLike[str]):
    import pandas as pd

    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(source)
    try:
        store = pd.HDFStore(source, mode="r")
    except Exception as exc:  # PyTables raises HDF5ExtError, OSError, ValueError for damaged files
        raise RecordError(f"{source}: not a readable pandas HDF store ({type(exc).__name__}: {exc})") from exc
    try:
        if f"/{KEY}" not in store.keys():
            raise RecordError(f"{source}: no key {KEY!r} in the store (keys: {store.keys()})")
        yield store
    finally:
        store.close()


def _nrows(store, source: str) -> int:
    try:
        storer = store.get_storer(KEY)
        return int(storer.nrows if storer.is_table else storer.shape[0])
    except Exception as exc:
        raise RecordError(f"{source}: cannot read the size of {KEY!r} ({type(exc).__name__}: {exc})") from exc


def _read_range(store, source: str, start: int, stop: int) -> Record:
    try:
        frame = store.select(KEY, start=start, stop=stop)
    except Exception as exc:  # truncated or damaged chunks
        raise RecordError(f"{source}: cannot read entries {start}..{stop - 1} ({type(exc).__name__}: {exc})") from exc
    n_slots = sum(1 for c in frame.columns if str(c).startswith("E_"))
    wanted = particle_columns(n_slots) + [LABEL]
    missing = [c for c in wanted if c not in frame.columns]
    if n_slots == 0 or missing:
        raise RecordError(f"{source}: table lacks columns {missing[:8] or ['E_0', '...']} "
                          f"(expected E_i, PX_i, PY_i, PZ_i for i < {n_slots or MAX_PARTICLES} and {LABEL!r})")
    values = frame[particle_columns(n_slots)].to_numpy(dtype=np.float64).reshape(len(frame), n_slots, 4)
    finite = np.isfinite(values).all(axis=(1, 2))
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise RecordError(f"{source}: entry {start + bad}: non-finite constituent value")
    labels = frame[LABEL].to_numpy()
    ok = (labels == 0) | (labels == 1)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise RecordError(f"{source}: entry {start + bad}: {LABEL} = {labels[bad]!r}, expected 0 or 1")

    real = values[:, :, 0] > 0  # E = 0 marks padding; it never counts as a particle
    counts = real.sum(axis=1)
    if np.any(counts == 0):
        bad = int(np.flatnonzero(counts == 0)[0])
        raise RecordError(f"{source}: entry {start + bad}: no particles (every E_i is 0)")
    flat = values[real]  # (n_particles, 4) in jet-major order
    energy, px, py, pz = flat.T
    pt, eta, phi = _pt_eta_phi(px, py, pz)
    offsets, relative, jets = constituent_jets(counts, px, py, pz, energy, eta, phi)
    particles = {"px": px, "py": py, "pz": pz, "energy": energy, "pt": pt, "eta": eta, "phi": phi, **relative}
    record = Record(
        particles=jagged_record(offsets, particles), jets={k: np.asarray(v, np.float32) for k, v in jets.items()},
        labels=labels.astype(np.int64), class_names=CLASS_NAMES, source=source, entry_start=start, kind=KIND,
        extra={"entry_stop": stop},
    )
    return record.validate()


def _pt_eta_phi(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(pz / pt)  # a particle along the beam (pT = 0) has no eta: validate names it
    return pt, eta, np.arctan2(py, px)
