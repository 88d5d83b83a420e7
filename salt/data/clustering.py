"""Sort keys from each jet's Cambridge/Aachen (C/A) clustering history.

The SAL-T paper asks whether ordering particles by the clustering history (the Lund jet
plane) beats ordering them by kT. Two orders answer it:

* ``ca_depth``: depth-first through the C/A tree, at every node the harder parent (larger
  pT) first; the particles of every subjet are contiguous, hardest subjet first, and the
  first particle is the end of the primary (hardest) branch.
* ``lund_kt``: primary Lund-plane order. Decluster the jet along its primary branch; every
  particle belongs to the softer branch of exactly one primary splitting, and particles are
  ordered by that splitting's kT = pT_softer * ΔR(harder, softer), descending (like the kt
  sort). The one particle at the end of the primary branch (it never leaves it) comes first,
  as if its kT were infinite. Within one softer branch the particles keep the ``ca_depth``
  order; splittings with equal kT keep the declustering order (earlier, i.e. wider, first).

Reclustering: FastJet's C/A with R = 1000 (``JetDefinition.max_allowable_R``, what the Lund
plane tools use), so every particle of a jet ends in one C/A jet whatever the jet's own radius:
at each step the two pseudojets nearest in ΔR² = Δy² + Δφ² (rapidity, E-scheme sums) merge.
Ties, precisely:

* equal ΔR² between pairs: FastJet's choice (deterministic for a given particle order, which
  is the record's);
* equal pT of the two parents of a merge: the parent holding the lower-indexed particle (in
  the record's order) counts as harder;
* a single-particle jet is its own order (key 1); padding has no key (0, sorts last).

FastJet's Python interface clusters all jets of a record in one call but hands back no merge
tree, only a post-order walk of each jet's history (``unique_history_order``); the tree is
rebuilt from it with a stack machine run on all jets at once, and the subjets' four-momenta
are re-summed in float64 as FastJet sums them (E scheme).

Keys are per particle and descending like every other sort: a particle at position p
(0-based) of a jet with n particles gets n - p, so a stable descending sort gives the order,
padding (0) sorts last, and cutting to the N hardest particles before or after sorting keeps
a consistent order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

# FastJet's JetDefinition.max_allowable_R: C/A at this radius merges every particle of a jet
RECLUSTER_R = 1000.0
_TWO_PI = 2.0 * np.pi
# fastjet::MaxRap, the rapidity FastJet gives a particle along the beam (pT = 0, E = |pz|)
_MAX_RAP = 1e5
# jets x slots per chunk of the tree walks: bounds memory, keeps the arrays in cache
_CHUNK_ELEMENTS = 1 << 16
SORTS = ("ca_depth", "lund_kt")


class History(NamedTuple):
    """C/A merges of a chunk of jets, one column per merge t in clustering order (padding: -1 / 0).

    Node ids: particle k is node k; merge t of a chunk with `width` slots creates node width + t
    (the public `ca_history` renumbers to n + t per jet)."""

    harder: np.ndarray       # (B, width - 1) int64: node id of the harder parent
    softer: np.ndarray       # (B, width - 1) int64
    kt: np.ndarray           # (B, width - 1) float64: pT_softer * ΔR(harder, softer)
    delta: np.ndarray        # (B, width - 1) float64: ΔR(harder, softer)
    harder_size: np.ndarray  # (B, width - 1) int64: particles in the harder parent


def rap_phi(px: np.ndarray, py: np.ndarray, pz: np.ndarray, energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rapidity and φ in [0, 2π) exactly as FastJet's PseudoJet computes them, so distances and
    therefore merge orders agree with FastJet to the last bit where it matters."""
    pt2 = px * px + py * py
    m2 = np.maximum((energy + pz) * (energy - pz) - pt2, 0.0)
    e_plus_pz = energy + np.abs(pz)
    with np.errstate(divide="ignore", invalid="ignore"):
        rap = 0.5 * np.log((pt2 + m2) / (e_plus_pz * e_plus_pz))
    rap = np.where(pz > 0, -rap, rap)
    beam = (pt2 == 0) & (energy == np.abs(pz))
    if np.any(beam):
        rap = np.where(beam, np.copysign(_MAX_RAP + np.abs(pz), np.where(pz >= 0, 1.0, -1.0)), rap)
    phi = np.where(pt2 == 0, 0.0, np.arctan2(py, px))
    phi = np.where(phi < 0, phi + _TWO_PI, phi)
    return rap, phi


def _fastjet_postorder(p4: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster every jet with FastJet's C/A and return its history as a post-order walk: flat
    history indices (FastJet's unique_history_order: particle k is index k, the t-th merge of a
    jet of n particles is n + t, the final beam step 2n - 1 comes last) and each walk's start."""
    import awkward as ak
    import fastjet

    # FastJet prints its banner to stdout on the first clustering (salt.data.sources.pythia
    # silences it the same way); the citation is in the README.
    fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    fields = [ak.contents.NumpyArray(np.ascontiguousarray(c)) for c in p4]
    jets = ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets),
                                                ak.contents.RecordArray(fields, ["px", "py", "pz", "E"])))
    cs = fastjet.ClusterSequence(jets, fastjet.JetDefinition(fastjet.cambridge_algorithm, RECLUSTER_R))
    walk = np.asarray(ak.flatten(cs.unique_history_order()), dtype=np.int64)
    if len(walk) != 2 * offsets[-1]:
        raise RuntimeError(f"FastJet's C/A history has {len(walk)} steps for {offsets[-1]} particles; "
                           f"expected one jet per input jet ({2 * offsets[-1]} steps)")
    return walk, 2 * offsets[:-1]


def _history(walk: np.ndarray, p4: np.ndarray, n: np.ndarray) -> History:
    """The merges of B jets (sorted by multiplicity, descending) from their post-order walks
    (B, 2 * width - 1; the beam step is cut off): a stack machine run on all jets at once, where
    a particle is pushed and a merge pops its two parents. p4 (4, B, width): the particles."""
    batch, width = p4.shape[1:]
    merges = width - 1
    nodes = width + merges
    parents = np.full((2, batch, merges), -1, dtype=np.int64)
    stack = np.zeros((batch, width + 1), dtype=np.int64)
    sp = np.zeros(batch, dtype=np.int64)
    walk_live = np.searchsorted(-(2 * n - 1), -np.arange(2 * width - 1), side="left")  # walks longer than k
    for k in range(2 * width - 1):
        live = int(walk_live[k])
        r = np.arange(live)
        e = walk[:live, k]
        m = n[:live]
        leaf = e < m
        top = sp[:live]
        first, second = stack[r, top - 1], stack[r, top - 2]
        stack[r, np.where(leaf, top, top - 2)] = np.where(leaf, e, e - m + width)
        sp[:live] = np.where(leaf, top + 1, top - 1)
        merge = ~leaf
        rows, t = r[merge], e[merge] - m[merge]
        parents[0, rows, t] = second[merge]
        parents[1, rows, t] = first[merge]

    # four-momentum, size and lowest particle index of every node, parents before children
    mom = np.zeros((4, batch, nodes))
    mom[:, :, :width] = p4
    size = np.ones((batch, nodes), dtype=np.int64)
    low = np.broadcast_to(np.arange(nodes), (batch, nodes)).copy()
    merge_live = np.searchsorted(-n, -(np.arange(merges) + 1), side="left")  # jets with n > t + 1
    for t in range(merges):
        live = int(merge_live[t])
        r = np.arange(live)
        x, y = parents[0, :live, t], parents[1, :live, t]
        mom[:, r, width + t] = mom[:, r, x] + mom[:, r, y]
        size[r, width + t] = size[r, x] + size[r, y]
        low[r, width + t] = np.minimum(low[r, x], low[r, y])

    valid = parents[0] >= 0
    x, y = np.where(valid, parents[0], 0), np.where(valid, parents[1], 0)
    mx = np.take_along_axis(mom, x[None], axis=2)
    my = np.take_along_axis(mom, y[None], axis=2)
    pt2x, pt2y = mx[0] ** 2 + mx[1] ** 2, my[0] ** 2 + my[1] ** 2
    x_harder = (pt2x > pt2y) | ((pt2x == pt2y) & (np.take_along_axis(low, x, axis=1) < np.take_along_axis(low, y, axis=1)))
    rx, fx = rap_phi(*mx)
    ry, fy = rap_phi(*my)
    dphi = np.abs(fx - fy)
    dphi = np.where(dphi > np.pi, _TWO_PI - dphi, dphi)
    delta = np.where(valid, np.sqrt((rx - ry) ** 2 + dphi * dphi), 0.0)
    harder = np.where(valid, np.where(x_harder, x, y), -1)
    softer = np.where(valid, np.where(x_harder, y, x), -1)
    harder_size = np.where(valid, np.take_along_axis(size, np.maximum(harder, 0), axis=1), 0)
    return History(harder, softer, np.sqrt(np.minimum(pt2x, pt2y)) * delta, delta, harder_size)


def _positions(hist: History, n: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each particle's 0-based position in the ca_depth and the lund_kt order, (B, width) each
    (padding slots: width); walks the tree top down, root first, one merge column at a time."""
    batch = len(n)
    nodes = 2 * width - 1 if width else 0
    offset = np.zeros((batch, nodes), dtype=np.int64)
    primary = np.ones((batch, nodes), dtype=bool)
    group_kt = np.full((batch, nodes), np.inf)
    group_t = np.full((batch, nodes), width, dtype=np.int64)
    live_at = np.searchsorted(-n, -(np.arange(max(width - 1, 0)) + 1), side="left")
    for t in range(width - 2, -1, -1):
        live = int(live_at[t])
        if live == 0:
            continue
        r = np.arange(live)
        parent = width + t
        h, s = hist.harder[:live, t], hist.softer[:live, t]
        o = offset[:live, parent]
        offset[r, h] = o
        offset[r, s] = o + hist.harder_size[:live, t]
        p = primary[:live, parent]
        primary[r, h] = p
        primary[r, s] = False
        gk, gt = group_kt[:live, parent], group_t[:live, parent]
        group_kt[r, h], group_t[r, h] = gk, gt
        group_kt[r, s] = np.where(p, hist.kt[:live, t], gk)
        group_t[r, s] = np.where(p, t, gt)
    pad = np.arange(width)[None, :] >= n[:, None]
    depth = offset[:, :width]
    depth[pad] = width
    kt = group_kt[:, :width]
    kt[pad] = -np.inf
    order = np.lexsort((depth, -group_t[:, :width], -kt), axis=1)
    lund = np.empty_like(order)
    np.put_along_axis(lund, order, np.arange(width)[None, :], axis=1)
    lund[pad] = width
    return depth, lund


def _flat_starts(counts: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


def _padded(flat: np.ndarray, starts: np.ndarray, n: np.ndarray, width: int, fill=0) -> tuple[np.ndarray, np.ndarray]:
    """Gather a chunk's rows from flat arrays into (..., B, width) slots (`fill` on padding), with
    the flat index of every real slot."""
    col = np.arange(width)[None, :]
    real = col < n[:, None]
    index = np.where(real, starts[:, None] + col, 0)
    out = flat[..., index]
    out[..., ~real] = fill
    return out, index[real]


def _chunk_histories(p4: np.ndarray, counts: np.ndarray
                     ) -> Iterator[tuple[np.ndarray, np.ndarray, int, np.ndarray, History]]:
    """Cluster all jets, then rebuild their trees chunk by chunk: jets sorted by multiplicity
    (descending, so the jets still active at a step are a prefix), padded to the chunk's largest.
    Yields (jet indices, multiplicities, width, flat index of every real slot, History)."""
    counts = np.asarray(counts, dtype=np.int64)
    if len(counts) and counts.min() < 1:
        raise ValueError(f"every jet needs a particle; jet {int(np.argmin(counts))} has none")
    p4 = np.asarray(p4, dtype=np.float64)
    walk, walk_starts = _fastjet_postorder(p4, counts)
    starts = _flat_starts(counts)
    order = np.argsort(-counts, kind="stable")
    first = 0
    while first < len(order):
        width = int(counts[order[first]])
        jets = order[first:first + max(1, _CHUNK_ELEMENTS // width)]
        first += len(jets)
        n = counts[jets]
        padded, flat_index = _padded(p4, starts[jets], n, width)
        walks, _ = _padded(walk, walk_starts[jets], 2 * n - 1, 2 * width - 1, fill=-1)
        yield jets, n, width, flat_index, _history(walks, padded, n)


def declustering_positions(p4: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Position (0-based) of every particle in each C/A order, flat like the input.

    p4: (4, total) px, py, pz, E of all particles, jet after jet; counts: particles per jet (>= 1).
    Returns {"ca_depth": positions, "lund_kt": positions}, int64 (total,)."""
    out = {name: np.zeros(np.shape(p4)[1], dtype=np.int64) for name in SORTS}
    for _, n, width, flat_index, hist in _chunk_histories(p4, counts):
        depth, lund = _positions(hist, n, width)
        real = np.arange(width)[None, :] < n[:, None]
        out["ca_depth"][flat_index] = depth[real]
        out["lund_kt"][flat_index] = lund[real]
    return out


def declustering_keys(p4: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Descending float32 sort keys (n - position) for both orders, flat like the input."""
    counts = np.asarray(counts, dtype=np.int64)
    n = np.repeat(counts, counts)
    return {name: (n - pos).astype(np.float32) for name, pos in declustering_positions(p4, counts).items()}


def ca_history(p4: np.ndarray, counts: np.ndarray) -> History:
    """The C/A merges of every jet, in input order, (n_jets, max(counts) - 1) per field; node ids
    per jet: particle k is node k, merge t creates node n + t (the root is 2n - 2). For tests and
    analysis; preprocessing needs only the positions."""
    counts = np.asarray(counts, dtype=np.int64)
    merges = max(int(counts.max(initial=1)) - 1, 0)
    shape = (len(counts), merges)
    out = History(np.full(shape, -1, dtype=np.int64), np.full(shape, -1, dtype=np.int64),
                  np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=np.int64))
    for jets, n, width, _, hist in _chunk_histories(p4, counts):
        for name in History._fields:
            values = getattr(hist, name)
            if name in ("harder", "softer"):
                values = np.where(values >= width, values - width + n[:, None], values)
            getattr(out, name)[jets, :width - 1] = values
    return out
