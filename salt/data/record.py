"""The common record every dataset source produces.

Readers differ (ROOT, HDF5, OFF meshes); everything after them does not. A source
turns one raw file (or an entry range of it) into a `Record` in physical units,
unsorted and unpadded; `salt.data.preprocess` sorts, cuts and pads records into
shards. Keeping the record jagged (awkward) lets the whole chain stay vectorised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import awkward as ak
import numpy as np

# Per-particle fields a jet source provides (float32, physical units, GeV / rad), all of them
# unless it was asked for fewer:
#   deta is eta_particle - eta_jet with its true sign; dphi is wrapped into [-pi, pi).
JET_PARTICLE_FIELDS = ("px", "py", "pz", "energy", "pt", "eta", "phi", "deta", "dphi")
# Per-jet arrays a jet source must provide.
JET_FIELDS = ("pt", "eta", "phi", "energy", "mass", "n_particles")
# Point clouds (ModelNet10): the "particles" are surface points.
POINT_PARTICLE_FIELDS = ("x", "y", "z")
POINT_FIELDS = ("n_particles",)

KINDS = {"jet": (JET_PARTICLE_FIELDS, JET_FIELDS), "points": (POINT_PARTICLE_FIELDS, POINT_FIELDS)}


class RecordError(ValueError):
    """Bad raw input; the message names the file and the entry."""


@dataclass
class Record:
    """Objects (jets or point clouds) read from one raw file.

    particles: n * var * {field: float32} (awkward), in the file's own order.
    jets: per-object float arrays of length n.
    labels: int64 class indices into `class_names`.
    source: the raw file, so errors and provenance can name it.
    entry_start: entry of the first object in `source` (errors give absolute entries).
    """

    particles: ak.Array
    jets: dict[str, np.ndarray]
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    entry_start: int = 0
    kind: str = "jet"
    extra: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def validate(self, fields: Sequence[str] | None = None) -> "Record":
        """Check the contract; raise RecordError naming file and entry on the first violation.

        `fields`: the particle fields the record must hold and that must be finite (default:
        every field of its kind). A reader asked for fewer fields reads fewer branches."""
        if self.kind not in KINDS:
            raise RecordError(f"{self.source}: unknown record kind {self.kind!r}; expected one of {sorted(KINDS)}")
        particle_fields, object_fields = KINDS[self.kind]
        if fields is not None:
            particle_fields = tuple(fields)
        n = len(self.labels)
        if len(self.particles) != n:
            raise RecordError(f"{self.source}: {len(self.particles)} particle lists for {n} labels")
        missing = [f for f in particle_fields if f not in self.particles.fields]
        if missing:
            raise RecordError(f"{self.source}: particle fields {missing} missing (have {self.particles.fields})")
        missing = [f for f in object_fields if f not in self.jets]
        if missing:
            raise RecordError(f"{self.source}: per-object fields {missing} missing (have {sorted(self.jets)})")
        if np.any((self.labels < 0) | (self.labels >= len(self.class_names))):
            bad = int(np.flatnonzero((self.labels < 0) | (self.labels >= len(self.class_names)))[0])
            raise RecordError(f"{self.source}: entry {self.entry_start + bad}: label {self.labels[bad]} "
                              f"outside 0..{len(self.class_names) - 1}")
        counts = ak.to_numpy(ak.num(self.particles, axis=1))
        if n and np.any(counts == 0):
            bad = int(np.flatnonzero(counts == 0)[0])
            raise RecordError(f"{self.source}: entry {self.entry_start + bad}: no particles")
        for name in particle_fields:
            flat = ak.to_numpy(ak.flatten(self.particles[name]))
            if not np.all(np.isfinite(flat)):
                bad = _first_bad_entry(self.particles[name])
                raise RecordError(f"{self.source}: entry {self.entry_start + bad}: "
                                  f"non-finite value in particle field {name!r}")
        for name in object_fields:
            values = np.asarray(self.jets[name])
            if values.shape != (n,):
                raise RecordError(f"{self.source}: per-object field {name!r} has shape {values.shape}, expected ({n},)")
            if not np.all(np.isfinite(values)):
                bad = int(np.flatnonzero(~np.isfinite(values))[0])
                raise RecordError(f"{self.source}: entry {self.entry_start + bad}: non-finite {name!r}")
        return self


def _first_bad_entry(jagged: ak.Array) -> int:
    finite = ak.all(np.isfinite(jagged), axis=1)
    return int(np.flatnonzero(~ak.to_numpy(finite))[0])
