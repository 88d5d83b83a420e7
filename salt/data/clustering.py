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
rebuilt from the walks of many jets at once with array operations (no loop over particles, see
`_trees`), and each subjet's four-momentum is re-summed from its particles in float64 (E scheme).

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
# jets per FastJet call (bounds the memory its histories take) and jets x slots per chunk of the
# tree rebuilding (keeps its arrays in cache)
_CLUSTER_BLOCK = 5000
_CHUNK_ELEMENTS = 1 << 14
SORTS = ("ca_depth", "lund_kt")


class History(NamedTuple):
    """C/A merges of jets, one column per merge t in clustering order (padding: -1 / 0). Node ids
    per jet of n particles: particle k is node k, merge t creates node n + t (FastJet's history
    indices)."""

    harder: np.ndarray       # (jets, merges) int64: node id of the harder parent
    softer: np.ndarray       # (jets, merges) int64
    kt: np.ndarray           # (jets, merges) float64: pT_softer * ΔR(harder, softer)
    delta: np.ndarray        # (jets, merges) float64: ΔR(harder, softer)
    harder_size: np.ndarray  # (jets, merges) int64: particles in the harder parent


def rap_phi(px: np.ndarray, py: np.ndarray, pz: np.ndarray, energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rapidity and φ in [0, 2π) computed as FastJet's PseudoJet computes them, so ΔR and kT of a
    splitting agree with FastJet's Lund-plane values."""
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

    # FastJet prints its banner to stdout on the first clustering (salt.data.pythia
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


def _ranges_sum(rows: np.ndarray, first: np.ndarray, last: np.ndarray, values: np.ndarray, shape: tuple[int, int]
                ) -> np.ndarray:
    """Sum of `values` over the walk ranges [first, last] of each row, at every position (B, K)."""
    batch, length = shape
    diff = np.bincount(np.concatenate([rows * (length + 1) + first, rows * (length + 1) + last + 1]),
                       np.concatenate([values, -values]), minlength=batch * (length + 1))
    return np.cumsum(diff.reshape(batch, length + 1)[:, :length], axis=1)


def _trees(walk: np.ndarray, p4: np.ndarray, starts: np.ndarray, n: np.ndarray, full: bool = False
           ) -> tuple[History | None, np.ndarray, np.ndarray]:
    """Merge tree and both orders of B jets from their FastJet post-order walks, with no loop over
    particles: walk (B, K = 2 * width - 1; -1 after a jet's 2n - 1 steps, the beam step cut off),
    p4 (4, total) flat, the jets' particles from `starts` on. Returns the History with `full`
    (node ids per jet: particle k, merge t -> n + t; else None: the orders need ΔR and kT of the
    primary merges only) and each particle's position in the ca_depth and lund_kt orders,
    (B, width) each (padding: width).

    In a post-order walk every subtree is a contiguous range ending at its root, and the stack
    height after each step (+1 for a particle, -1 for a merge) tells parents apart: a merge's
    second parent is the step just before it, its first parent the latest earlier step at the
    merge's own height. A subtree starts at its leftmost particle (found by pointer doubling),
    so its four-momentum is a difference of running sums and its size is its length; the two
    orders are sums over ranges (difference arrays), never a walk down the tree."""
    batch, length = walk.shape
    width = (length + 1) // 2
    rows = np.arange(batch)[:, None]
    pos = np.broadcast_to(np.arange(length), (batch, length))
    nn = n[:, None]
    leaf = (walk >= 0) & (walk < nn)
    merge = walk >= nn
    height = np.cumsum(leaf.astype(np.int16) - merge.astype(np.int16), axis=1, dtype=np.int16)
    height[walk < 0] = np.iinfo(np.int16).max
    by_height = np.argsort(height, axis=1, kind="stable")    # by height, then by position
    sorted_height = np.take_along_axis(height, by_height, axis=1)
    previous = np.full((batch, length), -1, dtype=np.int64)   # latest earlier step at the same height
    np.put_along_axis(previous, by_height[:, 1:],
                      np.where(sorted_height[:, 1:] == sorted_height[:, :-1], by_height[:, :-1], -1), axis=1)
    # flat indices from here on: (row, position) -> row * length + position
    base = rows * length
    start = np.where(merge, previous, pos) + base
    start = start.ravel()
    for _ in range(int(width).bit_length() + 1):
        start = start[start]
    start = start.reshape(batch, length) - base
    size = (pos - start) // 2 + 1

    # four-momentum of a subtree: its particles' sum, a difference of running sums along the walk
    leaf_rows, leaf_pos = np.nonzero(leaf)
    leaf_particle = walk[leaf_rows, leaf_pos]
    exact = np.zeros((4, batch, length + 1))       # a particle's four-momentum after its step
    exact[:, leaf_rows, leaf_pos + 1] = p4[:, starts[leaf_rows] + leaf_particle]
    running = np.cumsum(exact, axis=2).reshape(4, -1)   # column 0 of a row: nothing summed yet
    exact = exact.reshape(4, -1)
    start_flat = (start + rows * (length + 1)).ravel()
    end_flat = (pos + 1 + rows * (length + 1)).ravel()
    leaf_flat = leaf.ravel()

    def momentum(i: np.ndarray, components: slice = slice(None)) -> np.ndarray:
        """Four-momentum (or some components) of the subtrees ending at flat positions i;
        a particle's own, exactly."""
        end = end_flat[i]
        summed = running[components, end] - running[components, start_flat[i]]
        return np.where(leaf_flat[i], exact[components, end], summed)

    # every merge: its parents and which is harder (FastJet's walk puts the parent with the lower
    # particle index first, so ties go to it); ΔR and kT where they are needed
    mr, mk = np.nonzero(merge)
    left, right = previous[mr, mk], mk - 1
    left_flat, right_flat = mr * length + left, mr * length + right
    pxyl, pxyr = momentum(left_flat, slice(0, 2)), momentum(right_flat, slice(0, 2))
    pt2l, pt2r = pxyl[0] ** 2 + pxyl[1] ** 2, pxyr[0] ** 2 + pxyr[1] ** 2
    left_harder = pt2l >= pt2r
    hard = np.where(left_harder, left, right)
    soft = np.where(left_harder, right, left)
    t = walk[mr, mk] - n[mr]
    soft_start = start[mr, soft]
    softness = _ranges_sum(mr, soft_start, soft, np.ones(len(mr), dtype=np.int64), (batch, length))
    primary = softness[mr, mk] == 0
    where = slice(None) if full else primary
    yl, fl = rap_phi(*momentum(left_flat[where]))
    yr, fr = rap_phi(*momentum(right_flat[where]))
    dphi = np.abs(fl - fr)
    dphi = np.where(dphi > np.pi, _TWO_PI - dphi, dphi)
    delta = np.sqrt((yl - yr) ** 2 + dphi * dphi)
    kt = np.sqrt(np.minimum(pt2l[where], pt2r[where])) * delta
    merges = max(width - 1, 0)
    kt_of_merge = np.zeros((batch, merges))
    kt_of_merge[mr[where], t[where]] = kt
    hist = None
    if full:
        hist = History(np.full((batch, merges), -1, dtype=np.int64), np.full((batch, merges), -1, dtype=np.int64),
                       kt_of_merge, np.zeros((batch, merges)), np.zeros((batch, merges), dtype=np.int64))
        hist.harder[mr, t] = walk[mr, hard]
        hist.softer[mr, t] = walk[mr, soft]
        hist.delta[mr, t] = delta
        hist.harder_size[mr, t] = size[mr, hard]

    # ca_depth: a particle's position is the summed size of the harder siblings of the softer
    # subtrees it lies in; lund_kt: particles in the softer subtree of a primary merge (a merge
    # in no softer subtree) form that merge's group
    depth = _ranges_sum(mr, soft_start, soft, size[mr, hard], (batch, length))
    group = _ranges_sum(mr[primary], soft_start[primary], soft[primary], t[primary] + 1, (batch, length))
    out_depth = np.full((batch, width), width, dtype=np.int64)
    out_depth[leaf_rows, leaf_particle] = depth[leaf_rows, leaf_pos].astype(np.int64)
    leaf_group = np.full((batch, width), -1, dtype=np.int64)     # -1: padding, 0: the primary particle
    leaf_group[leaf_rows, leaf_particle] = group[leaf_rows, leaf_pos].astype(np.int64)
    group_kt = np.where(leaf_group > 0, np.take_along_axis(kt_of_merge, np.maximum(leaf_group - 1, 0), axis=1)
                        if merges else 0.0, np.where(leaf_group == 0, np.inf, -np.inf))
    order = np.lexsort((out_depth, -leaf_group, -group_kt), axis=1)
    lund = np.empty_like(order)
    np.put_along_axis(lund, order, np.broadcast_to(np.arange(width), (batch, width)), axis=1)
    lund[leaf_group < 0] = width
    return hist, out_depth, lund


def _flat_starts(counts: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


def _padded(flat: np.ndarray, starts: np.ndarray, n: np.ndarray, width: int, fill: int) -> np.ndarray:
    """Rows of a flat array, n[i] values from starts[i], in (B, width) slots (`fill` on padding)."""
    col = np.arange(width)[None, :]
    real = col < n[:, None]
    return np.where(real, flat[np.where(real, starts[:, None] + col, 0)], fill)


def _chunk_trees(p4: np.ndarray, counts: np.ndarray, full: bool = False
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, History | None, np.ndarray, np.ndarray]]:
    """Cluster the jets block by block (FastJet keeps every jet's history until the block is
    done, ~10 kB a jet), then rebuild their trees chunk by chunk: jets sorted by multiplicity,
    so each chunk's padding is small. Yields (jet indices, flat index of every real slot,
    History, ca_depth positions, lund_kt positions), the last three as `_trees(..., full)`."""
    counts = np.asarray(counts, dtype=np.int64)
    if len(counts) and counts.min() < 1:
        raise ValueError(f"every jet needs a particle; jet {int(np.argmin(counts))} has none")
    p4 = np.asarray(p4, dtype=np.float64)
    starts = _flat_starts(counts)
    for block in range(0, len(counts), _CLUSTER_BLOCK):
        in_block = slice(block, block + _CLUSTER_BLOCK)
        first_particle = starts[block]
        block_counts = counts[in_block]
        block_starts = starts[in_block] - first_particle
        block_p4 = p4[:, first_particle:first_particle + block_counts.sum()]
        walk, walk_starts = _fastjet_postorder(block_p4, block_counts)
        order = np.argsort(-block_counts, kind="stable")
        first = 0
        while first < len(order):
            width = int(block_counts[order[first]])
            jets = order[first:first + max(1, _CHUNK_ELEMENTS // width)]
            first += len(jets)
            n = block_counts[jets]
            walks = _padded(walk, walk_starts[jets], 2 * n - 1, 2 * width - 1, fill=-1)
            col = np.arange(width)[None, :]
            flat_index = (block_starts[jets][:, None] + col)[col < n[:, None]]
            yield (jets + block, flat_index + first_particle, *_trees(walks, block_p4, block_starts[jets], n, full))


def declustering_positions(p4: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Position (0-based) of every particle in each C/A order, flat like the input.

    p4: (4, total) px, py, pz, E of all particles, jet after jet; counts: particles per jet (>= 1).
    Returns {"ca_depth": positions, "lund_kt": positions}, int64 (total,)."""
    out = {name: np.zeros(np.shape(p4)[1], dtype=np.int64) for name in SORTS}
    for _, flat_index, _, depth, lund in _chunk_trees(p4, counts):
        real = depth < depth.shape[1]
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
    for jets, _, hist, _, _ in _chunk_trees(p4, counts, full=True):
        for name in History._fields:
            getattr(out, name)[jets, :hist.harder.shape[1]] = getattr(hist, name)
    return out
