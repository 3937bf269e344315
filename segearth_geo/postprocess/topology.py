"""Polygons as shared arcs: what regularizing and smoothing change once per edge, so neighbours stay neighbours.

Polygons that touch (a shared wall, a shared corner, overlapping labels) form a **group**. The boundaries of
a group are noded and cut into **arcs**: maximal lines between **nodes** (points where three or more boundary
lines meet, or where a boundary touches another at a point). An arc is shared by every ring that runs along it
(a party wall belongs to both houses), so changing the arc once changes every polygon that uses it the same
way: no gap and no overlap can open between neighbours. A polygon that touches nothing is its own group and
each of its rings is one closed arc (no noding needed: the common case, kept fast).

Notation: P polygons, A arcs, R rings; coordinates are ``(x, y)`` in the caller's working frame (the
post-processing works in processing-grid pixels), snapped to a ``GRID`` so that shared vertices are exactly
equal and noding is exact.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import shapely

GRID = 1e-6  # coordinate grid of the working frame (pixels): noise below it is rounded away before noding


@dataclass
class Topology:
    """Polygons described by their arcs.

    Attributes:
        arcs: per arc, float64 ``(n, 2)`` vertices; a closed arc repeats its first vertex at the end.
        closed: ``(A,)`` bool, the arc is a whole ring (no node on it).
        rings: per polygon, its rings (exterior first, then holes), each a list of ``(arc, forward)`` in ring order.
        group: ``(P,)`` int, the group of touching polygons each polygon belongs to.
        users: per arc, the polygons whose rings run along it.
    """

    arcs: list[np.ndarray]
    closed: np.ndarray
    rings: list[list[list[tuple[int, bool]]]]
    group: np.ndarray
    users: list[list[int]]

    def polygons(self, arcs: list[np.ndarray] | None = None, which: np.ndarray | None = None) -> np.ndarray:
        """The polygons rebuilt from ``arcs`` (default: the original ones) as a ``(P,)`` object array (or only
        ``which``); a polygon with a ring of fewer than 3 vertices comes back empty."""
        arcs = self.arcs if arcs is None else arcs
        indices = np.arange(len(self.rings)) if which is None else np.asarray(which, dtype=np.int64)
        keys = [(k, sequence) for k, p in enumerate(indices.tolist()) for sequence in self.rings[p]]
        rings, ok = rings_of([sequence for _, sequence in keys], arcs)
        owner = np.array([k for k, _ in keys], dtype=np.int64)
        out = np.full(len(indices), shapely.Polygon(), dtype=object)
        whole = np.ones(len(indices), dtype=bool)
        whole[owner[~ok]] = False
        use = whole[owner] if len(owner) else np.zeros(0, dtype=bool)
        if use.any():
            present, dense = np.unique(owner[use], return_inverse=True)
            out[present] = shapely.polygons(rings[use], indices=dense.ravel())  # each polygon's first ring: its shell
        return out

    def nodes(self) -> dict[tuple[float, float], list[tuple[int, bool]]]:
        """Each node's arcs: ``{(x, y): [(arc, starts_here), ...]}`` (closed arcs have no node)."""
        found: dict[tuple[float, float], list[tuple[int, bool]]] = defaultdict(list)
        for a, coords in enumerate(self.arcs):
            if self.closed[a]:
                continue
            found[(float(coords[0, 0]), float(coords[0, 1]))].append((a, True))
            found[(float(coords[-1, 0]), float(coords[-1, 1]))].append((a, False))
        return found


def rings_of(sequences: list[list[tuple[int, bool]]], arcs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rings from their arcs in order (each arc's last vertex is the next one's first): ``(R,)`` linear rings
    (``None`` where fewer than 3 vertices are left) and ``(R,)`` bool, built."""
    parts: list[np.ndarray] = []
    sizes = np.zeros(len(sequences), dtype=np.int64)
    for r, sequence in enumerate(sequences):
        for a, forward in sequence:
            part = (arcs[a] if forward else arcs[a][::-1])[:-1]
            parts.append(part)
            sizes[r] += len(part)
    ok = sizes >= 3
    rings = np.full(len(sequences), None, dtype=object)
    if ok.any():
        coords = np.concatenate(parts)
        ring_index = np.repeat(np.arange(len(sequences)), sizes)
        keep = ok[ring_index]
        present, dense = np.unique(ring_index[keep], return_inverse=True)  # shapely wants indices without gaps
        rings[present] = shapely.linearrings(coords[keep], indices=dense.ravel())  # closed by shapely
    return rings, ok


def touching_groups(polygons: np.ndarray, distance: float = 0.0) -> np.ndarray:
    """``(P,)`` group index per polygon: connected components of "intersects" (or "within ``distance``")."""
    n = len(polygons)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    tree = shapely.STRtree(polygons)
    if distance > 0:
        left, right = tree.query(polygons, predicate="dwithin", distance=distance)
    else:
        left, right = tree.query(polygons, predicate="intersects")
    label = np.arange(n)
    while True:  # label propagation: each pair takes the smaller label, until nothing changes
        low = np.minimum(label[left], label[right])
        new = label.copy()
        np.minimum.at(new, left, low)
        np.minimum.at(new, right, low)
        new = new[new]  # shortcut chains
        if np.array_equal(new, label):
            break
        label = new
    _, group = np.unique(label, return_inverse=True)
    return group


def build_topology(polygons: np.ndarray, groups: np.ndarray | None = None) -> Topology:
    """The arcs of ``polygons`` (``(P,)`` valid ``Polygon`` objects, coordinates on :data:`GRID`).

    A polygon in a group of its own keeps each ring as one closed arc; the rings of larger groups are noded
    together and cut at their nodes.
    """
    polygons = np.asarray(polygons, dtype=object)
    groups = touching_groups(polygons) if groups is None else groups
    topo = Topology(arcs=[], closed=np.zeros(0, dtype=bool), rings=[[] for _ in polygons], group=groups,
                    users=[])
    closed: list[bool] = []
    sizes = np.bincount(groups, minlength=int(groups.max()) + 1 if len(groups) else 0)
    alone = np.flatnonzero(sizes[groups] == 1)
    if len(alone):
        rings, owner = shapely.get_rings(polygons[alone], return_index=True)
        coords, ring_of = shapely.get_coordinates(rings, return_index=True)
        splits = np.cumsum(np.bincount(ring_of, minlength=len(rings)))[:-1]
        for ring_coords, k in zip(np.split(coords, splits), owner.tolist()):
            p = int(alone[k])
            topo.rings[p].append([(len(topo.arcs), True)])
            topo.arcs.append(ring_coords)
            topo.users.append([p])
            closed.append(True)
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    for members in np.split(order, bounds):
        if len(members) > 1:
            _add_group(topo, polygons, members, closed)
    topo.closed = np.array(closed, dtype=bool)
    return topo


def _add_group(topo: Topology, polygons: np.ndarray, members: np.ndarray, closed: list[bool]) -> None:
    """Node the rings of one group, cut them into arcs and record each ring's arcs in order."""
    rings, owner = shapely.get_rings(polygons[members], return_index=True)  # (R,), (R,) member index
    position = np.zeros(len(rings), dtype=np.int64)  # ring number within its polygon (0: exterior)
    for r in range(1, len(rings)):
        position[r] = position[r - 1] + 1 if owner[r] == owner[r - 1] else 0
    merged = shapely.line_merge(shapely.union_all(rings, grid_size=GRID))
    lines = shapely.get_parts(merged)
    first = len(topo.arcs)
    arc_coords = [shapely.get_coordinates(line) for line in lines]
    probes = shapely.points(np.array([(c[0] + c[1]) / 2 for c in arc_coords]))  # middle of each first segment
    seconds = shapely.points(np.array([c[1] for c in arc_coords]))
    arc_idx, ring_idx = shapely.STRtree(rings).query(probes, predicate="dwithin", distance=GRID / 10)
    ring_lines = shapely.linestrings(shapely.get_coordinates(rings), indices=np.repeat(
        np.arange(len(rings)), shapely.get_num_coordinates(rings)))
    at = shapely.line_locate_point(ring_lines[ring_idx], probes[arc_idx])
    nxt = shapely.line_locate_point(ring_lines[ring_idx], seconds[arc_idx])
    length = shapely.length(ring_lines[ring_idx])
    forward = np.mod(nxt - at, length) < length / 2
    per_ring: dict[int, list[tuple[float, int, bool]]] = defaultdict(list)
    users: list[list[int]] = [[] for _ in arc_coords]
    for a, r, d, f in zip(arc_idx.tolist(), ring_idx.tolist(), at.tolist(), forward.tolist()):
        per_ring[r].append((d, first + a, f))
        users[a].append(int(members[owner[r]]))
    for r in range(len(rings)):
        p = int(members[owner[r]])
        sequence = [(a, f) for _, a, f in sorted(per_ring.get(r, []))]
        rings_of_p = topo.rings[p]
        while len(rings_of_p) <= position[r]:
            rings_of_p.append([])
        rings_of_p[position[r]] = sequence
    # A loop whose end point no other arc shares is a whole ring without a node (its start is arbitrary); a loop
    # through a point where another ring touches it keeps that point fixed as a node.
    ends: dict[tuple[float, float], int] = defaultdict(int)
    for coords in arc_coords:
        ends[(float(coords[0, 0]), float(coords[0, 1]))] += 1
        ends[(float(coords[-1, 0]), float(coords[-1, 1]))] += 1
    for coords, used_by in zip(arc_coords, users):
        topo.arcs.append(coords)
        topo.users.append(sorted(set(used_by)))
        loop = len(coords) > 2 and np.array_equal(coords[0], coords[-1])
        closed.append(bool(loop and ends[(float(coords[0, 0]), float(coords[0, 1]))] == 2))


__all__ = ["GRID", "Topology", "build_topology", "rings_of", "touching_groups"]
