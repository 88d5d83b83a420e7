"""The hls4ml LHC jet dataset, 150-particle version (Zenodo 3602260): HDF5 files of 10k jets.

Each file holds ``jetConstituentList`` (n, 150, 16) float64, zero-padded and pT-descending,
and ``jets`` (n, 59) whose columns 53..57 are the one-hot labels g, q, W, Z, t (58 is
"undefined"). The preprocessing follows the authors' fast_jetclass / SAL-T4HEP code:
constituents with pT <= 2 GeV are dropped (strict cut), then jets left empty, and the
features are the stored (pT, eta_rel, phi_rel) = columns [5, 8, 11] relative to the jet
axis as stored (no recomputation). Momentum and absolute angles come from columns 0-3, 7, 10.

The jet table has no phi and no energy: phi is recovered from the leading kept constituent
(phi - phi_rel) and the energy from (pT, eta, mass). The official "val" tarball is the
test set; the train/val split of the train files is seeded later, in preprocessing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np

from salt.data.record import Record, RecordError
from salt.data.kinematics import wrap_phi
from salt.data.sources import Catalogue, FileSpec, Source, entry_range, jagged_record

log = logging.getLogger(__name__)

KIND = "jet"
CLASS_NAMES = ("g", "q", "W", "Z", "t")
CONSTITUENTS = "jetConstituentList"
JETS = "jets"
# what `salt extract --h5-keep` keeps: the jet images are most of each file and unused
KEEP_DATASETS = (CONSTITUENTS, JETS, "jetFeatureNames", "particleFeatureNames")
MIN_PT = 2.0

SOURCE = Source(
    "hls4ml", reader=__name__, kind=KIND, class_names=CLASS_NAMES, raw_suffix=".h5", keep_on_extraction=KEEP_DATASETS,
    catalogue=Catalogue("https://zenodo.org/records/3602260/files/{name}?download=1", {
        # md5s as published on the Zenodo record; 2,725,115,104 bytes by a third party's count for
        # the train tarball: not enforced, the md5 decides
        "hls4ml_LHCjet_150p_train.tar.gz": FileSpec("af12d3a500414924e70a73b56fc49aec"),
        "hls4ml_LHCjet_150p_val.tar.gz": FileSpec("ff902e6a02bfb4247a9068bf7ff7f6db"),
    }))
DEFAULT_STEP = 5_000

# constituent columns (j1_px, j1_py, j1_pz, j1_e, j1_erel, j1_pt, j1_ptrel, j1_eta, j1_etarel, ...)
PX, PY, PZ, E, PT, ETA, ETA_REL, PHI, PHI_REL = 0, 1, 2, 3, 5, 7, 8, 10, 11
N_COLUMNS = 16
# jet columns
JET_PT, JET_ETA, JET_MASS = 1, 2, 3
LABELS = slice(53, 58)
N_JET_COLUMNS = 59


def num_entries(path: str | os.PathLike[str]) -> int:
    with _open(path) as f:
        return int(_datasets(f, os.fspath(path))[0].shape[0])


def read(path: str | os.PathLike[str], entry_start: int | None = None, entry_stop: int | None = None,
         min_pt: float = MIN_PT) -> Record:
    """Jets [entry_start, entry_stop) of one h5 file, constituents with pT > `min_pt` only.

    Jets left without constituents are dropped; Record.extra has their count
    ("dropped_empty_jets") and the file entries of the jets kept ("kept_entries").
    """
    with _open(path) as f:
        return _read_range(f, os.fspath(path), entry_start, entry_stop, min_pt)


def iter_records(path: str | os.PathLike[str], step: int = DEFAULT_STEP, entry_start: int | None = None,
                 entry_stop: int | None = None, min_pt: float = MIN_PT,
                 fields: Sequence[str] | None = None) -> Iterator[Record]:
    """Records of at most `step` jets (fewer after dropping empty ones), opening the file once.

    `fields` is accepted for the sources' common signature; every field is returned, because an
    HLS4ML row holds all 16 columns of a particle and reading fewer saves nothing."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    source = os.fspath(path)
    with _open(path) as f:
        n = _datasets(f, source)[0].shape[0]
        start, stop = entry_range(source, n, entry_start, entry_stop)
        for lo in range(start, stop, step):
            yield _read_range(f, source, lo, min(lo + step, stop), min_pt)


# -- internals ----------------------------------------------------------------------------


def _open(path: str | os.PathLike[str]):
    import h5py

    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(source)
    try:
        return h5py.File(source, "r")
    except OSError as exc:
        raise RecordError(f"{source}: not a readable HDF5 file ({exc})") from exc


def _datasets(f, source: str):
    missing = [k for k in (CONSTITUENTS, JETS) if k not in f]
    if missing:
        raise RecordError(f"{source}: datasets {missing} missing (have {sorted(f)})")
    const, jets = f[CONSTITUENTS], f[JETS]
    if const.ndim != 3 or const.shape[2] != N_COLUMNS:
        raise RecordError(f"{source}: {CONSTITUENTS} has shape {const.shape}, expected (n, n_slots, {N_COLUMNS})")
    if jets.shape != (const.shape[0], N_JET_COLUMNS):
        raise RecordError(f"{source}: {JETS} has shape {jets.shape}, expected ({const.shape[0]}, {N_JET_COLUMNS})")
    return const, jets


def _read_range(f, source: str, entry_start: int | None, entry_stop: int | None, min_pt: float) -> Record:
    const_ds, jets_ds = _datasets(f, source)
    start, stop = entry_range(source, const_ds.shape[0], entry_start, entry_stop)
    try:
        const = const_ds[start:stop, :, : PHI_REL + 1]  # a plain hyperslab; columns 12-15 are unused
        jets = jets_ds[start:stop]
    except (OSError, RuntimeError) as exc:
        raise RecordError(f"{source}: cannot read jets {start}..{stop - 1} ({exc})") from exc

    used = [PX, PY, PZ, E, PT, ETA, ETA_REL, PHI, PHI_REL]
    _check_finite(np.isfinite(const[:, :, used]).all(axis=(1, 2)), source, start, CONSTITUENTS)
    _check_finite(np.isfinite(jets[:, [JET_PT, JET_ETA, JET_MASS]]).all(axis=1), source, start, JETS)

    onehot = jets[:, LABELS]
    valid = np.all((onehot == 0) | (onehot == 1), axis=1) & (onehot.sum(axis=1) == 1)
    if not np.all(valid):
        bad = int(np.flatnonzero(~valid)[0])
        raise RecordError(f"{source}: entry {start + bad}: labels jets[:, 53:58] = {onehot[bad].tolist()} "
                          f"are not one-hot over {CLASS_NAMES}")

    pt = const[:, :, PT]
    keep = (pt > min_pt) & (const[:, :, E] != 0)  # also removes zero padding when min_pt <= 0
    counts = keep.sum(axis=1)
    kept_jets = counts > 0
    flat = const[keep]  # (n_particles, 12), jet-major order
    counts = counts[kept_jets]
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])

    fields = {
        "px": flat[:, PX], "py": flat[:, PY], "pz": flat[:, PZ], "energy": flat[:, E],
        "pt": flat[:, PT], "eta": flat[:, ETA], "phi": flat[:, PHI],
        "deta": flat[:, ETA_REL], "dphi": wrap_phi(flat[:, PHI_REL].astype(np.float32)),
    }
    if dropped := int((~kept_jets).sum()):
        log.info("%s: entries %d-%d: %d jets have no constituent above %g GeV and are dropped "
                 "(first: entry %d)", source, start, stop - 1, dropped, min_pt,
                 start + int(np.flatnonzero(~kept_jets)[0]))
    jets = jets[kept_jets]
    lead = flat[offsets[:-1]]  # first kept constituent of each jet
    jet_pt, jet_eta, jet_mass = jets[:, JET_PT], jets[:, JET_ETA], jets[:, JET_MASS]
    jet_fields = {
        "pt": jet_pt, "eta": jet_eta,
        "phi": wrap_phi(lead[:, PHI] - lead[:, PHI_REL]),
        "energy": np.sqrt(jet_mass**2 + (jet_pt * np.cosh(jet_eta)) ** 2),
        "mass": jet_mass,
        "n_particles": counts,
    }
    jet_fields = {k: np.asarray(v, dtype=np.float32) for k, v in jet_fields.items()}
    record = Record(
        particles=jagged_record(offsets, fields), jets=jet_fields,
        labels=np.argmax(onehot[kept_jets], axis=1).astype(np.int64), class_names=CLASS_NAMES,
        source=source, entry_start=start, kind=KIND,
        extra={"dropped_empty_jets": dropped, "kept_entries": start + np.flatnonzero(kept_jets),
               "min_pt": float(min_pt), "entry_stop": stop},
    )
    return record.validate()


def _check_finite(ok: np.ndarray, source: str, start: int, dataset: str) -> None:
    if not np.all(ok):
        raise RecordError(f"{source}: entry {start + int(np.flatnonzero(~ok)[0])}: non-finite value in {dataset}")
