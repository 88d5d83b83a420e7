"""Quark and gluon jets of EnergyFlow (Komiske, Metodiev, Thaler; Zenodo 3164691, Pythia 8.226).

Twenty ``.npz`` files (``QG_jets.npz``, ``QG_jets_1.npz`` … ``QG_jets_19.npz``) of 100k jets
each: ``X`` (100000, M, 4) float64 = (pT, rapidity y, phi, PDG id) per particle, zero-padded to
the file's largest multiplicity M (a slot with pT = 0 is padding), and ``y`` (100000,) with
quark = 1, gluon = 0. Physics: 14 TeV Z(->nu nu) + jet, anti-kT R = 0.4, pT in [500, 550] GeV,
|y| < 1.7, hadronisation and underlying event on, no detector simulation.

Each particle's four-vector is built from (pT, y, phi) and the mass of its PDG id (as
EnergyFlow's ``p4s_from_ptyphipids``); the jet axis is the sum of the four-vectors, and deta /
dphi are each particle's pseudorapidity and azimuth relative to it, as for the other datasets.
The rapidity and the PDG id are kept as the extra particle fields ``rapidity`` and ``pid``.

The recommended split is 1.6M / 200k / 200k (EnergyFlow's documentation). The paper
configuration follows ParT: the last two files are the test set, and the other 1.8M jets are
split at random (seeded by the split seed and the file name) with a validation fraction of 1/9.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Sequence

import numpy as np

from salt.data.kinematics import wrap_phi
from salt.data.record import Record, RecordError
from salt.data.sources import Catalogue, FileSpec, Source, constituent_jets, entry_range, jagged_record

KIND = "jet"
CLASS_NAMES = ("gluon", "quark")  # class index = y

# Quark-gluon jets (Pythia, u/d/s quarks): md5s as published in EnergyFlow's qg_jets.py (HASHES), in
# file order QG_jets.npz, QG_jets_1.npz ... QG_jets_19.npz.
_MD5S = (
    "f5d052f10a79c6e8b9382637aca0ef52", "f6a1081c76a47386bc11abcf0e499552", "2628367c57ba598f4473c870d1381041",
    "dd3ad998b0a1bd9acea2ecf029a8a921", "a56d6bb98361b55382aa8c06225e05d8", "266c688e9e6ff1cd20840692d45eaaf8",
    "95a9f7e555fb7b1073967056b9030b11", "4ae72aaabe121bd489532c99a6bdde95", "a2b80bd4199468fde4f302d346a8c9d8",
    "1157cbace488c70c9dcfc250f3345b06", "4b424b553e1e7f852e47ea9904bc2dcf", "ccd29c9d1abb34dd7cfb48cfc57a9695",
    "1ed1f6f19fb8439c9811dced41d5127d", "af45818c361e11ca9b3adaba30db06ad", "488ced3ea409d7e2b196da67f7d182ec",
    "c5e083019de6cd6a0ef12bcec1ea566b", "48605d55edff665f0c7d2f800b5a622e", "8fd47760957b5fd9adec9048b50cd1a9",
    "d43d611484b55391e891ba31c605f792", "6753508e34014cc69714a01fca20ec38",
)
FILES = tuple(f"QG_jets{'' if i == 0 else f'_{i}'}.npz" for i in range(20))
SOURCE = Source("quarkgluon", reader=__name__, kind=KIND, class_names=CLASS_NAMES, extra_features=("rapidity", "pid"),
                catalogue=Catalogue("https://zenodo.org/records/3164691/files/{name}?download=1",
                                    {name: FileSpec(md5, plain=True) for name, md5 in zip(FILES, _MD5S, strict=True)}))
DEFAULT_STEP = 50_000

# GeV, by |PDG id|: the stable particles Pythia leaves in these jets (EnergyFlow's table).
PDG_MASSES = {
    0: 0.0, 22: 0.0, 11: 0.000511, 13: 0.105658, 211: 0.139570, 321: 0.493677, 130: 0.497611,
    310: 0.497611, 2112: 0.939565, 2212: 0.938272, 3122: 1.115683, 3112: 1.197449, 3222: 1.189370,
    3312: 1.321710, 3322: 1.314860, 3334: 1.672450,
}


def num_entries(path: str | os.PathLike[str]) -> int:
    x, _ = _load(os.fspath(path))
    return int(x.shape[0])


def read(path: str | os.PathLike[str], entry_start: int | None = None, entry_stop: int | None = None) -> Record:
    """Jets [entry_start, entry_stop) of one file as a validated Record."""
    source = os.fspath(path)
    x, y = _load(source)
    start, stop = entry_range(source, x.shape[0], entry_start, entry_stop)
    return _record(source, x[start:stop], y[start:stop], start)


def iter_records(path: str | os.PathLike[str], step: int = DEFAULT_STEP, entry_start: int | None = None,
                 entry_stop: int | None = None, fields: Sequence[str] | None = None) -> Iterator[Record]:
    """Records of at most `step` jets. An npz member cannot be read in part, so the file's arrays
    are loaded once (about 0.5 GB for 100k jets) and cut into records.

    `fields` is accepted for the sources' common signature; every field is computed."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    source = os.fspath(path)
    x, y = _load(source)
    start, stop = entry_range(source, x.shape[0], entry_start, entry_stop)
    for lo in range(start, stop, step):
        hi = min(lo + step, stop)
        yield _record(source, x[lo:hi], y[lo:hi], lo)


# -- internals ----------------------------------------------------------------------------

def _load(source: str) -> tuple[np.ndarray, np.ndarray]:
    if not os.path.isfile(source):
        raise FileNotFoundError(source)
    try:
        with np.load(source, allow_pickle=False) as f:
            missing = [k for k in ("X", "y") if k not in f.files]
            if missing:
                raise RecordError(f"{source}: arrays {missing} missing (have {f.files})")
            x, y = f["X"], f["y"]
    except RecordError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise RecordError(f"{source}: not a readable npz file ({type(exc).__name__}: {exc})") from exc
    if x.ndim != 3 or x.shape[2] < 3:
        raise RecordError(f"{source}: X has shape {x.shape}, expected (n, max_particles, 4) = (pT, y, phi, pid)")
    if y.shape != (x.shape[0],):
        raise RecordError(f"{source}: y has shape {y.shape}, expected ({x.shape[0]},)")
    return x, y


def _record(source: str, x: np.ndarray, y: np.ndarray, start: int) -> Record:
    finite = np.isfinite(x).all(axis=(1, 2))
    if not finite.all():
        raise RecordError(f"{source}: entry {start + int(np.flatnonzero(~finite)[0])}: non-finite value in X")
    ok = (y == 0) | (y == 1)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise RecordError(f"{source}: entry {start + bad}: label y = {y[bad]!r}, expected 0 (gluon) or 1 (quark)")
    real = x[:, :, 0] > 0  # pT = 0 marks padding
    counts = real.sum(axis=1)
    if np.any(counts == 0):
        raise RecordError(f"{source}: entry {start + int(np.flatnonzero(counts == 0)[0])}: no particles")
    flat = x[real]
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)  # for the per-jet error entries of _masses
    np.cumsum(counts, out=offsets[1:])
    pt, rap, phi = flat[:, 0], flat[:, 1], flat[:, 2]
    pid = flat[:, 3] if x.shape[2] > 3 else np.zeros(len(flat))
    mass = _masses(pid, source, start, offsets)
    mt = np.sqrt(pt**2 + mass**2)
    px, py, pz, energy = pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(rap), mt * np.cosh(rap)
    eta = np.arcsinh(pz / pt)
    _, relative, jets = constituent_jets(counts, px, py, pz, energy, eta, phi)
    particles = {"px": px, "py": py, "pz": pz, "energy": energy, "pt": pt, "eta": eta, "phi": wrap_phi(phi),
                 **relative, "rapidity": rap, "pid": pid}
    record = Record(
        particles=jagged_record(offsets, particles), jets={k: np.asarray(v, np.float32) for k, v in jets.items()},
        labels=y.astype(np.int64), class_names=CLASS_NAMES, source=source, entry_start=start, kind=KIND,
        extra={"entry_stop": start + len(y)},
    )
    return record.validate()


def _masses(pid: np.ndarray, source: str, start: int, offsets: np.ndarray) -> np.ndarray:
    ids = np.abs(pid).astype(np.int64)
    known = np.array(sorted(PDG_MASSES))
    pos = np.clip(np.searchsorted(known, ids), 0, len(known) - 1)
    unknown = known[pos] != ids
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        jet = int(np.searchsorted(offsets, i, side="right") - 1)
        raise RecordError(f"{source}: entry {start + jet}: PDG id {int(pid[i])} has no known mass "
                          f"(known |id|: {sorted(PDG_MASSES)})")
    return np.array([PDG_MASSES[k] for k in known])[pos]
