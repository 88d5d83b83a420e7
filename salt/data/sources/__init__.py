"""Dataset sources: one module per dataset, each turning raw files into `Record`s.

A source module provides ``iter_records(path, *, step, fields, **options)`` yielding
validated `salt.data.record.Record` objects of at most `step` objects each, so that
preprocessing never holds a whole raw file in memory. `fields` names the particle
fields the caller needs (None: all); a source may return more, never fewer.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import awkward as ak
import numpy as np

from salt.data.record import RecordError

# source name -> module; "pythia" files are written in the JetClass schema, so one reader serves both.
SOURCES: dict[str, str] = {
    "pythia": "salt.data.sources.jetclass",
    "jetclass": "salt.data.sources.jetclass",
    "hls4ml": "salt.data.sources.hls4ml",
    "modelnet10": "salt.data.sources.modelnet10",
    "toptagging": "salt.data.sources.toptagging",
    "quarkgluon": "salt.data.sources.quarkgluon",
}


def get(name: str) -> ModuleType:
    """The reader module of source `name`."""
    if name not in SOURCES:
        raise KeyError(f"unknown dataset source {name!r}; expected one of {sorted(SOURCES)}")
    return importlib.import_module(SOURCES[name])


# -- helpers shared by the readers -------------------------------------------------------

def jagged_record(offsets: np.ndarray, fields: dict[str, np.ndarray]) -> ak.Array:
    """n * var * {fields} (float32) built straight from flat arrays: no per-object Python work."""
    contents = [ak.contents.NumpyArray(np.ascontiguousarray(v, dtype=np.float32)) for v in fields.values()]
    inner = ak.contents.RecordArray(contents, list(fields), length=int(offsets[-1]))
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(np.asarray(offsets, dtype=np.int64)), inner))


def constituent_jets(counts: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray, energy: np.ndarray,
                     eta: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """For files that store only constituents (flat, jet-major, `counts` per jet), the jet is their
    four-momentum sum. Returns the offsets, each particle's (deta, dphi) to that axis, and the jet
    fields (pt, eta, phi, energy, mass, n_particles)."""
    from salt.data.kinematics import wrap_phi

    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    j_px, j_py, j_pz, j_energy = np.add.reduceat(np.stack([px, py, pz, energy], axis=1), offsets[:-1], axis=0).T
    j_pt = np.hypot(j_px, j_py)
    with np.errstate(divide="ignore", invalid="ignore"):
        j_eta = np.arcsinh(j_pz / j_pt)
    j_phi = np.arctan2(j_py, j_px)
    j_mass = np.sqrt(np.maximum(j_energy**2 - j_pt**2 - j_pz**2, 0.0))
    relative = {"deta": eta - np.repeat(j_eta, counts), "dphi": wrap_phi(phi - np.repeat(j_phi, counts))}
    jets = {"pt": j_pt, "eta": j_eta, "phi": j_phi, "energy": j_energy, "mass": j_mass, "n_particles": counts}
    return offsets, relative, jets


def entry_range(source: str, n: int, entry_start: int | None, entry_stop: int | None) -> tuple[int, int]:
    """[entry_start, entry_stop) of a file of `n` objects: None means the file's start or end, a stop
    past the end is clipped; anything else out of range is a RecordError naming the file."""
    start = 0 if entry_start is None else int(entry_start)
    stop = n if entry_stop is None else min(int(entry_stop), n)
    if start < 0 or start > n or stop < start:
        raise RecordError(f"{source}: entry range [{entry_start}, {entry_stop}) invalid for a file of {n} entries")
    return start, stop
