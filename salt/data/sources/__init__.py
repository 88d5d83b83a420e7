"""Dataset sources: what the pipeline knows about each dataset, and how its raw files are read.

Each dataset module defines ``SOURCE``, a `Source` descriptor holding every fact about the
dataset that code outside the module needs: its kind (jets or point clouds), its class order,
the reader options it defaults, the suffix of its raw files inside archives, what survives
extraction and its download catalogue (URL and md5 per file). The workflow's checks, the
shard naming and the downloader look these up instead of branching on the source's name.

A reader module provides ``iter_records(path, *, step, fields, **options)`` yielding
validated `salt.data.record.Record` objects of at most `step` objects each, so that
preprocessing never holds a whole raw file in memory. `fields` names the particle
fields the caller needs (None: all); a source may return more, never fewer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np

from salt.data.record import Record, RecordError


@dataclass(frozen=True)
class FileSpec:
    """One downloadable file of a dataset."""

    md5: str | None  # None: no published checksum; pinned by the sidecar on first download
    size: int | None = None  # exact bytes, checked before the md5 (no real entry has a verified one yet)
    # Members of an archive known in advance: raw files, or folders (ending in "/") read as one
    # unit. None: the members are only known after extraction (the workflow then lists them).
    members: tuple[str, ...] | None = None
    # True: the download is itself one raw file (an h5 or npz, no archive), read where it lies.
    plain: bool = False


@dataclass(frozen=True)
class Catalogue:
    """Where a dataset's files are published, and what each must hash to."""

    url: str  # template with {name}; a mirror base URL replaces it by "<base>/{name}"
    files: Mapping[str, FileSpec]


@dataclass(frozen=True)
class Source:
    """Everything the pipeline needs to know about one data source, in one place."""

    name: str
    reader: str  # module whose iter_records reads the raw files
    kind: str  # "jet" or "points": decides the valid sorts and features
    # The files' own label order, which the config's classes must repeat; None: the config chooses.
    class_names: tuple[str, ...] | None = None
    # Label branches a config's classes map to one to one (JetClass schema); None: no such mapping.
    label_branches: tuple[str, ...] | None = None
    # The reader option that receives the config's class list (None: the files fix the classes).
    classes_option: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)  # reader options before the config's
    extra_features: tuple[str, ...] = ()  # per-particle features beyond the derived kinematics
    raw_suffix: str | None = None  # raw files inside archives whose members are listed on extraction
    keep_on_extraction: tuple[str, ...] = ()  # HDF5 datasets kept as members are extracted (empty: all)
    # The class an archive member holds, for sources whose members are per class (a config's
    # classes then select members); None: every member holds every class.
    member_class: Callable[[str], str] | None = None
    catalogue: Catalogue | None = None  # None: generated, not downloaded

    @property
    def generated(self) -> bool:
        return self.catalogue is None

    def reader_options(self, classes: list[str] | None = None, options: Mapping[str, Any] | None = None
                       ) -> dict[str, Any]:
        """The reader's options: the source's defaults, the config's classes where the reader takes
        them (their order is the label order, which must not depend on what is extracted yet),
        then the config's own options."""
        out = dict(self.defaults)
        if self.classes_option and classes is not None:
            out[self.classes_option] = list(classes)
        return out | dict(options or {})

    def iter_records(self, path: Any, **kwargs: Any) -> Iterator[Record]:
        return importlib.import_module(self.reader).iter_records(path, **kwargs)


# source name -> the module defining its SOURCE. Generated files are written in the JetClass
# schema, so the generator's descriptor names the JetClass reader.
MODULES: dict[str, str] = {
    "pythia": "salt.data.pythia",
    "jetclass": "salt.data.sources.jetclass",
    "hls4ml": "salt.data.sources.hls4ml",
    "modelnet10": "salt.data.sources.modelnet10",
    "toptagging": "salt.data.sources.toptagging",
    "quarkgluon": "salt.data.sources.quarkgluon",
}


def get(name: str) -> Source:
    """The descriptor of source `name`."""
    if name not in MODULES:
        raise KeyError(f"unknown dataset source {name!r}; expected one of {sorted(MODULES)}")
    return importlib.import_module(MODULES[name]).SOURCE


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
