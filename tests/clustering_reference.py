"""A direct, one-jet-at-a-time C/A reclustering and the two declustering orders, written from
their definitions (salt/data/clustering.py's docstring) with no vectorisation, to check the
fast path against."""

from __future__ import annotations

import math


def _rap_phi(px: float, py: float, pz: float, e: float) -> tuple[float, float]:
    pt2 = px * px + py * py
    if pt2 == 0 and e == abs(pz):
        rap = math.copysign(1e5 + abs(pz), 1.0 if pz >= 0 else -1.0)
    else:
        m2 = max((e + pz) * (e - pz) - pt2, 0.0)
        rap = 0.5 * math.log((pt2 + m2) / (e + abs(pz)) ** 2)
        rap = -rap if pz > 0 else rap
    phi = 0.0 if pt2 == 0 else math.atan2(py, px)
    return rap, phi + 2 * math.pi if phi < 0 else phi


def _dr2(a: tuple[float, float], b: tuple[float, float]) -> float:
    dphi = abs(a[1] - b[1])
    if dphi > math.pi:
        dphi = 2 * math.pi - dphi
    return (a[0] - b[0]) ** 2 + dphi * dphi


def cluster(p4: list[tuple[float, float, float, float]]):
    """Merges of one jet: list of (harder node, softer node, kt, delta); particle k is node k,
    merge t creates node n + t. Every step scans all pairs."""
    n = len(p4)
    # pseudojets alive: name (lowest particle index) -> (node, four-momentum, size)
    alive = {k: (k, tuple(map(float, p4[k]))) for k in range(n)}
    merges = []
    for t in range(n - 1):
        best = None
        names = sorted(alive)
        for x, lo in enumerate(names):
            for hi in names[x + 1:]:
                d = _dr2(_rap_phi(*alive[lo][1]), _rap_phi(*alive[hi][1]))
                if best is None or d < best[0]:
                    best = (d, lo, hi)
        d, lo, hi = best
        (node_lo, p_lo), (node_hi, p_hi) = alive.pop(lo), alive.pop(hi)
        pt2_lo, pt2_hi = p_lo[0] ** 2 + p_lo[1] ** 2, p_hi[0] ** 2 + p_hi[1] ** 2
        hard, soft = (node_lo, node_hi) if pt2_lo >= pt2_hi else (node_hi, node_lo)
        merges.append((hard, soft, math.sqrt(min(pt2_lo, pt2_hi)) * math.sqrt(d), math.sqrt(d)))
        alive[lo] = (n + t, tuple(u + v for u, v in zip(p_lo, p_hi)))
    return merges


def orders(p4: list[tuple[float, float, float, float]]) -> tuple[list[int], list[int]]:
    """(ca_depth order, lund_kt order) of one jet, as lists of particle indices."""
    n = len(p4)
    merges = cluster(p4)
    children = {n + t: (h, s) for t, (h, s, _, _) in enumerate(merges)}
    root = 2 * n - 2

    def leaves(node: int) -> list[int]:
        if node < n:
            return [node]
        h, s = children[node]
        return leaves(h) + leaves(s)

    depth = leaves(root)
    # primary branch: follow the harder parent; each softer parent is one group
    groups = []  # (kt, t, particles in depth-first order)
    node = root
    while node >= n:
        t = node - n
        h, s = children[node]
        groups.append((merges[t][2], t, leaves(s)))
        node = h
    groups.append((math.inf, n, [node]))
    groups.sort(key=lambda g: (-g[0], -g[1]))
    return depth, [k for g in groups for k in g[2]]
