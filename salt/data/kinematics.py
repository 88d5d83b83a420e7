"""Jet kinematics, particle features and the sort keys that define SAL-T's partitions.

Everything here works on physical values (GeV, radians) held in jagged awkward
arrays, before any normalisation: the authors' code computed kT on normalised
inputs, which makes "ΔR" unphysical and can sort soft particles behind the
padding. Sorting is stable and descending; padding is
added afterwards, so it always comes last.

Truncation to N particles follows the authors by default: keep the N hardest particles (their
raw files are pT-ordered and they cut the arrays before sorting), then order those by the key.
Sorting first and cutting after ("key") keeps the N particles that lead the key instead: with
ΔR (outermost first) and N = 64 that throws away the hard core of a busy jet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import awkward as ak
import numpy as np

from salt.data.clustering import declustering_keys
from salt.data.record import Record, RecordError

TWO_PI = 2.0 * np.pi


def wrap_phi(dphi):
    """Wrap angles into [-π, π), for numpy or awkward arrays. Values already inside come back
    bit for bit: adding π in float32 would cost small angles their precision."""
    where = ak.where if isinstance(dphi, ak.Array) else np.where
    inside = (dphi >= -np.pi) & (dphi < np.pi)
    return where(inside, dphi, (dphi + np.pi) % TWO_PI - np.pi)


def delta_phi(phi1, phi2):
    return wrap_phi(phi1 - phi2)


def delta_r(deta, dphi):
    return np.sqrt(deta * deta + dphi * dphi)


def kt(pt, deta, dphi):
    """kT = pT · ΔR to the jet axis, the paper's ordering variable."""
    return pt * delta_r(deta, dphi)


# ---------------------------------------------------------------------------
# Sort keys: each maps a record to a jagged key; particles are ordered by the
# key, descending. "none" keeps the file order.


def _key_kt(rec: Record) -> ak.Array:
    p = rec.particles
    return kt(p.pt, p.deta, p.dphi)


def _key_pt(rec: Record) -> ak.Array:
    return rec.particles.pt


def _key_delta_r(rec: Record) -> ak.Array:
    # descending: outermost particles first, as in the reference code
    p = rec.particles
    return delta_r(p.deta, p.dphi)


def _key_none(rec: Record) -> ak.Array:
    # file order: a decreasing key keeps the original order under a descending sort
    index = ak.local_index(rec.particles[rec.particles.fields[0]], axis=1)
    return -ak.values_astype(index, np.float32)


def _key_declustering(name: str) -> Callable[[Record], ak.Array]:
    """The C/A clustering-history orders (salt.data.clustering): the key is n - position, so the
    descending sort gives the order; both orders come from one clustering, this keeps one."""
    def key(rec: Record) -> ak.Array:
        p = rec.particles
        counts = np.asarray(ak.num(p.px, axis=1), dtype=np.int64)
        p4 = np.stack([_flat(p[f], np.float64) for f in ("px", "py", "pz", "energy")])
        return ak.unflatten(declustering_keys(p4, counts)[name], counts)
    return key


def _key_radius(rec: Record) -> ak.Array:
    # Point clouds: distance from the centroid, sorted descending ("outermost first"). kT = pT·ΔR
    # weights a particle's distance from the axis by its momentum; points carry none (each is an
    # equal share of the surface), so kT reduces to the distance from the axis, the centroid
    # (clouds are centred there). Partitions are then concentric shells, extremities first.
    p = rec.particles
    return np.sqrt(p.x * p.x + p.y * p.y + p.z * p.z)


JET_SORTS: dict[str, Callable[[Record], ak.Array]] = {
    "kt": _key_kt,
    "pt": _key_pt,
    "deltaR": _key_delta_r,
    "none": _key_none,
    "ca_depth": _key_declustering("ca_depth"),
    "lund_kt": _key_declustering("lund_kt"),
}
POINT_SORTS: dict[str, Callable[[Record], ak.Array]] = {
    "radius": _key_radius,
    "none": _key_none,
}


# Record fields each sort key reads, so a reader can skip the rest (see required_fields).
SORT_FIELDS: dict[str, tuple[str, ...]] = {
    "kt": ("pt", "deta", "dphi"),
    "pt": ("pt",),
    "deltaR": ("deta", "dphi"),
    "none": (),
    "ca_depth": ("px", "py", "pz", "energy"),
    "lund_kt": ("px", "py", "pz", "energy"),
    "radius": ("x", "y", "z"),
}


def sort_key(rec: Record, name: str) -> ak.Array:
    """The jagged float key of sort `name` for every particle of `rec`."""
    table = JET_SORTS if rec.kind == "jet" else POINT_SORTS
    if name not in table:
        raise KeyError(f"unknown sort {name!r} for {rec.kind} data; expected one of {sorted(table)}")
    return ak.values_astype(table[name](rec), np.float32)


# ---------------------------------------------------------------------------
# Per-particle features, computed on demand from the record's fields.


def _log(x):
    # soft particles can have E or pT at float32 underflow; clip to keep logs finite
    return np.log(np.maximum(x, 1e-8))


_FEATURES: dict[str, Callable[[Record], ak.Array]] = {
    "pt": lambda r: r.particles.pt,
    "deta": lambda r: r.particles.deta,
    "dphi": lambda r: r.particles.dphi,
    "eta": lambda r: r.particles.eta,
    "phi": lambda r: r.particles.phi,
    "energy": lambda r: r.particles.energy,
    "px": lambda r: r.particles.px,
    "py": lambda r: r.particles.py,
    "pz": lambda r: r.particles.pz,
    "log_pt": lambda r: _log(r.particles.pt),
    "log_energy": lambda r: _log(r.particles.energy),
    "pt_rel": lambda r: r.particles.pt / r.jets["pt"],
    "energy_rel": lambda r: r.particles.energy / r.jets["energy"],
    "log_pt_rel": lambda r: _log(r.particles.pt / r.jets["pt"]),
    "log_energy_rel": lambda r: _log(r.particles.energy / r.jets["energy"]),
    "delta_r": lambda r: delta_r(r.particles.deta, r.particles.dphi),
    "kt": _key_kt,
}


# the features every jet record gives, computed from its kinematics (others are record fields)
DERIVED_FEATURES = tuple(_FEATURES)

# Record fields each derived feature reads; any other feature name is a record field itself.
FEATURE_FIELDS: dict[str, tuple[str, ...]] = {
    "log_pt": ("pt",), "log_energy": ("energy",),
    "pt_rel": ("pt",), "energy_rel": ("energy",), "log_pt_rel": ("pt",), "log_energy_rel": ("energy",),
    "delta_r": ("deta", "dphi"), "kt": ("pt", "deta", "dphi"),
}


def required_fields(features: Sequence[str], sort: str, truncation: str = "key") -> tuple[str, ...]:
    """The particle fields a record must hold to give `features` sorted by `sort` and cut by
    `truncation`: preprocessing asks the reader for these alone, which spares a JetClass read a
    third of its baskets when the features are (pt, deta, dphi)."""
    needed = [f for name in features for f in FEATURE_FIELDS.get(name, (name,))]
    needed += SORT_FIELDS.get(sort, ())
    needed += ("pt",) if truncation == "pt" else ()
    return tuple(dict.fromkeys(needed))


def feature_names(rec: Record) -> list[str]:
    """Features available for this record: the derived ones plus any extra particle fields."""
    if rec.kind == "points":
        return list(rec.particles.fields)
    return sorted(set(_FEATURES) | set(rec.particles.fields))


def feature(rec: Record, name: str) -> ak.Array:
    if rec.kind == "jet" and name in _FEATURES:
        return _FEATURES[name](rec)
    if name in rec.particles.fields:
        return rec.particles[name]
    raise RecordError(f"{rec.source}: feature {name!r} is not available; "
                      f"choose from {feature_names(rec)}")


# ---------------------------------------------------------------------------
# Truncation: which N particles of an object are kept.
#   pt:  the N hardest (highest pT; ties keep file order), then ordered by the sort key.
#   key: the first N in the sort key's order.
#   auto: pt for jets, key for point clouds (they have no pT).
TRUNCATIONS = ("auto", "pt", "key")


def resolve_truncation(truncation: str, kind: str) -> str:
    """The concrete truncation ('pt' or 'key') for records of `kind`."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"unknown truncation {truncation!r}; expected one of {TRUNCATIONS}")
    if truncation == "auto":
        return "pt" if kind == "jet" else "key"
    if truncation == "pt" and kind != "jet":
        raise ValueError(f"truncation 'pt' needs jets; {kind} records have no pT (use 'key')")
    return truncation


def _outside_hardest(rec: Record, counts: np.ndarray, starts: np.ndarray, n_particles: int) -> np.ndarray:
    """Flat mask of the particles that are not among their object's `n_particles` hardest.

    The raw files are pT-ordered, so that case is a comparison of local indices; otherwise
    only the objects longer than N are ranked by pT (stable, so pT ties keep file order)."""
    first = np.repeat(starts, counts)
    local = np.arange(int(counts.sum()), dtype=np.int64) - first
    pt = _flat(rec.particles.pt, np.float32)
    inner = local > 0
    if not np.any(pt[1:][inner[1:]] > pt[:-1][inner[1:]]):  # already descending inside every object
        return local >= n_particles
    outside = np.zeros(len(pt), dtype=bool)
    long_ = np.flatnonzero(counts > n_particles)
    if len(long_):
        sub = rec.particles.pt[long_]
        order = _flat(ak.argsort(sub, axis=1, ascending=False, stable=True), np.int64)
        sub_counts = counts[long_]
        sub_first = np.repeat(starts[long_], sub_counts)
        rank = np.arange(len(order), dtype=np.int64) - np.repeat(np.cumsum(sub_counts) - sub_counts, sub_counts)
        outside[(order + sub_first)[rank >= n_particles]] = True
    return outside


def sort_and_pad(rec: Record, features: Sequence[str], sort: str, n_particles: int, truncation: str = "auto"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep `n_particles` per object (see TRUNCATIONS), order them by `sort` (descending,
    stable) and zero-pad: returns particles (n, N, F) float32, mask (n, N) bool and the sort
    key per slot (n, N) float32 (0 on padding).

    Works on the flat particle arrays: awkward sorts within each object (one C++ pass),
    then every kept particle is scattered to its (object, rank) slot with one numpy
    fancy-index per feature. Padding with awkward (pad_none + fill_none) cost ~10x more.
    Truncation by pT gives the dropped particles a key of -inf, so they sort after the kept
    ones and fall past N."""
    truncation = resolve_truncation(truncation, rec.kind)
    key = sort_key(rec, sort)
    counts = np.asarray(ak.num(key, axis=1), dtype=np.int64)
    n = len(counts)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    flat_key = _flat(key, np.float32)
    if truncation == "pt" and np.any(counts > n_particles):
        flat_key = np.where(_outside_hardest(rec, counts, starts, n_particles), np.float32(-np.inf), flat_key)
        key = ak.unflatten(flat_key, counts)
    local = _flat(ak.argsort(key, axis=1, ascending=False, stable=True), np.int64)
    first = np.repeat(starts, counts)            # flat index of each slot's object start
    rank = np.arange(len(local), dtype=np.int64) - first
    keep = rank < n_particles
    src = (local + first)[keep]                  # flat particle that goes to each kept slot
    slot = (np.repeat(np.arange(n, dtype=np.int64) * n_particles, counts) + rank)[keep]

    out = np.zeros((n * n_particles, len(features)), dtype=np.float32)
    for i, name in enumerate(features):
        out[slot, i] = _flat(feature(rec, name), np.float32)[src]
    sort_value = np.zeros(n * n_particles, dtype=np.float32)
    sort_value[slot] = flat_key[src]
    mask = np.arange(n_particles)[None, :] < np.minimum(counts, n_particles)[:, None]
    return out.reshape(n, n_particles, len(features)), mask, sort_value.reshape(n, n_particles)


def _flat(jagged: ak.Array, dtype) -> np.ndarray:
    """The flat values of a one-level jagged array, in object order."""
    return np.asarray(ak.to_numpy(ak.flatten(jagged, axis=1)), dtype=dtype)
