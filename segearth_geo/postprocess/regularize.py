"""Building footprints with right angles, 45° diagonals where the shape has them, walls shared with neighbours.

Per arc (:mod:`~segearth_geo.postprocess.topology`), in processing-grid pixels scaled to square ground pixels:

1. **straighten**: Douglas–Peucker with :data:`TOLERANCE` px turns pixel stairs into straight edges (a 45°
   staircase becomes one diagonal, not stairs); each straightened edge's direction is the principal axis of
   the pixel edges it replaces (its chord joins two stair corners and is off by a degree or two);
2. **orient**: each group of touching polygons gets one orientation θ, the length²-weighted mean of its
   straightened edges' directions taken modulo 45° (angles × 8 on the unit circle), so a row of houses
   shares one grid and a footprint with 45° wings is not pulled off its axes;
3. **snap**: each edge takes the nearest direction θ + k·45°; consecutive edges of one direction form a
   **run**; a run shorter than :data:`MIN_RUN` px where two runs meet at an angle (a chamfer) or inside one
   wall (a jog) is stair residue and is dropped;
4. **fit**: each run becomes a line of its snapped direction through the length-weighted centre line of the
   original pixel edges it covers (so the area stays where the pixels were);
5. **corners**: consecutive lines meet at their intersection; parallel ones (a step in a wall) are joined by a
   perpendicular through the middle of the original step;
6. **nodes**: where arcs meet (the ends of a party wall), the node moves to the least-squares meeting point
   of the lines of every arc that ends there, so all neighbours take the same corner.

Nothing here is random and no step depends on the order of the polygons: the same input gives the same output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely

from segearth_geo.postprocess.topology import Topology

TOLERANCE = 1.5  # px: a digital straight line stays within sqrt(2) px of its chord, so this straightens any stair
MIN_RUN = 3 * TOLERANCE  # px: shorter runs where two walls meet, or inside one wall, are stair residue
STEP = math.pi / 4  # snapped directions: θ + k·45°
NODE_PRIOR = 1e-3  # weight of a node's original position in its least-squares solve (keeps it defined)


@dataclass
class Straightened:
    """Every arc straightened at once (vectorised over all arcs; the per-arc work then only walks short lists).

    Attributes:
        start: ``(A+1,)`` first vertex of each arc in the concatenated vertices (the total at the end).
        keep: ``(N,)`` bool, the vertex is kept by Douglas–Peucker (each arc's end points always are).
        first_kept: ``(A,)`` index of each arc's first kept vertex among all kept vertices.
        direction: per kept vertex, the direction (radians, along the arc) of the straightened edge it starts;
            ``length``: that edge's chord length (0 for an arc's last vertex).
        prefix: ``(3, N)`` running sums over each arc's original edges of ``w``, ``w·mx``, ``w·my`` (edge length
            ``w``, midpoint ``m``) before each vertex, so a run's line is fitted in O(1).
    """

    start: np.ndarray
    keep: np.ndarray
    first_kept: np.ndarray
    direction: np.ndarray
    length: np.ndarray
    prefix: np.ndarray

    def kept(self, a: int) -> np.ndarray:
        """Arc ``a``'s kept vertices (indices into the arc)."""
        return np.flatnonzero(self.keep[self.start[a]:self.start[a + 1]])

    def sums(self, a: int, first: int, last: int, period: int) -> tuple[float, float, float]:
        """``Σw, Σw·mx, Σw·my`` over arc ``a``'s original edges from vertex ``first`` to ``last`` (a closed
        ring's ``last`` may be on the second lap, ``period`` vertices on)."""
        s, q = int(self.start[a]), self.prefix
        if period == 0 or last <= period:
            return tuple(float(q[i, s + last] - q[i, s + first]) for i in range(3))
        return tuple(float(q[i, s + period] - q[i, s + first] + q[i, s + last - period] - q[i, s]) for i in range(3))


def straighten(topo: Topology) -> Straightened:
    """Douglas–Peucker at :data:`TOLERANCE` on every arc, with the fitted direction of each straightened edge."""
    counts = np.array([len(c) for c in topo.arcs], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(counts)])
    coords = np.concatenate(topo.arcs) if topo.arcs else np.zeros((0, 2))
    arc = np.repeat(np.arange(len(counts)), counts)
    simple = shapely.simplify(shapely.linestrings(coords, indices=arc), TOLERANCE, preserve_topology=False)
    kept_xy, kept_arc = shapely.get_coordinates(simple, return_index=True)
    # a vertex is (arc, x, y) as one integer key: find the kept vertices among the originals
    both = np.ascontiguousarray(np.concatenate([coords, kept_xy]))
    _, xy_id = np.unique(both.view(np.complex128).ravel(), return_inverse=True)  # (x, y) as one sortable value
    n_xy = int(xy_id.max()) + 1 if len(xy_id) else 1
    keep = np.isin(arc * n_xy + xy_id[:len(coords)], kept_arc * n_xy + xy_id[len(coords):])
    inner = np.ones(max(len(coords) - 1, 0), dtype=bool)  # edge i -> i+1 lies inside one arc
    inner[start[1:-1] - 1] = False
    e = np.where(inner[:, None], np.diff(coords, axis=0), 0.0)  # (N-1, 2)
    w = np.hypot(e[:, 0], e[:, 1])
    mid = (coords[1:] + coords[:-1]) / 2
    prefix = np.zeros((3, len(coords)))
    for i, value in enumerate((w, w * mid[:, 0], w * mid[:, 1])):
        prefix[i, 1:] = np.cumsum(value)
    n = int(keep.sum())
    seg = (np.cumsum(keep) - 1)[:-1]  # (N-1,) straightened edge of each original edge (its first kept vertex)
    total = np.bincount(seg, w, n)
    safe = np.where(total > 0, total, 1.0)
    mean = np.column_stack([np.bincount(seg, w * mid[:, i], n) / safe for i in (0, 1)])
    d = mid - mean[seg]
    # second moments about the mean: the midpoints' spread plus each edge's own extent (length²/12 along it)
    cxx = np.bincount(seg, w * d[:, 0] ** 2 + w * e[:, 0] ** 2 / 12, n)
    cyy = np.bincount(seg, w * d[:, 1] ** 2 + w * e[:, 1] ** 2 / 12, n)
    cxy = np.bincount(seg, w * d[:, 0] * d[:, 1] + w * e[:, 0] * e[:, 1] / 12, n)
    axis = 0.5 * np.arctan2(2 * cxy, cxx - cyy)  # modulo 180°
    kept_arc_of = arc[keep]
    chord = np.zeros((n, 2))
    chord[:-1] = np.diff(coords[keep], axis=0)
    chord[np.r_[kept_arc_of[1:] != kept_arc_of[:-1], True]] = 0.0  # an arc's last kept vertex starts no edge
    chord_angle = np.arctan2(chord[:, 1], chord[:, 0])
    direction = np.where(np.cos(axis - chord_angle) < 0, axis + math.pi, axis)
    first_kept = np.searchsorted(np.flatnonzero(keep), start[:-1])
    return Straightened(start, keep, first_kept, direction, np.hypot(chord[:, 0], chord[:, 1]), prefix)


def group_orientations(topo: Topology, straight: Straightened) -> np.ndarray:
    """Per group, θ in ``[0, 45°)`` (radians): the dominant direction of its straightened edges modulo 45°,
    each weighing its length² (long walls decide)."""
    groups = int(topo.group.max()) + 1 if len(topo.group) else 0
    arc_group = np.array([topo.group[users[0]] for users in topo.users], dtype=np.int64)
    kept_arc = np.repeat(np.arange(len(topo.arcs)), np.diff(straight.start))[straight.keep]
    g = arc_group[kept_arc]
    weight = straight.length ** 2
    c = np.bincount(g, weight * np.cos(8 * straight.direction), groups)
    s = np.bincount(g, weight * np.sin(8 * straight.direction), groups)
    return np.mod(np.arctan2(s, c) / 8, STEP)


class Run:
    """Consecutive straightened edges of one snapped direction ``k`` (``θ + k·45°``) covering the original
    vertices ``first..last``, and the line fitted to them: ``(nx, ny) · p = offset``."""

    __slots__ = ("k", "first", "last", "nx", "ny", "offset")

    def __init__(self, k: int, first: int, last: int) -> None:
        self.k, self.first, self.last = k, first, last
        self.nx = self.ny = self.offset = 0.0

    def fit(self, straight: Straightened, a: int, period: int, theta: float, ring: np.ndarray) -> None:
        """The line of direction ``θ + k·45°`` through the length-weighted centre of the original edges."""
        angle = theta + self.k * STEP
        self.nx, self.ny = -math.sin(angle), math.cos(angle)
        w, mx, my = straight.sums(a, self.first, self.last, period)
        if w <= 0:
            mx, my, w = float(ring[self.first, 0]), float(ring[self.first, 1]), 1.0
        self.offset = (self.nx * mx + self.ny * my) / w


def arc_runs(straight: Straightened, a: int, original: np.ndarray, closed: bool, theta: float) -> list[Run] | None:
    """The fitted runs of arc ``a`` (vertices ``original`` ``(n, 2)``), in arc order; ``None`` for a closed arc
    left with fewer than 3. A closed arc's run may cross the ring's start: ``first`` is on the first lap,
    ``last`` may be on the second (:func:`unrolled`)."""
    keep = straight.kept(a).tolist()
    base = int(straight.first_kept[a])
    directions = straight.direction[base:base + len(keep) - 1].tolist()
    chords = straight.length[base:base + len(keep) - 1].tolist()
    runs: list[Run] = []
    lengths: list[float] = []
    for j, (angle, length) in enumerate(zip(directions, chords)):
        k = int(round((angle - theta) / STEP)) % 8
        if runs and runs[-1].k == k:
            runs[-1].last = keep[j + 1]
            lengths[-1] += length
        else:
            runs.append(Run(k, keep[j], keep[j + 1]))
            lengths.append(length)
    period = len(original) - 1 if closed else 0
    if closed and len(runs) > 1 and runs[0].k == runs[-1].k:  # the ring's start cut one run in two
        runs[-1].last = runs[0].last + period
        lengths[-1] += lengths[0]
        del runs[0], lengths[0]
    _drop_chamfers(runs, lengths, period)
    if closed and len(runs) < 3:
        return None
    ring = unrolled(original) if closed else original
    for run in runs:
        run.fit(straight, a, period, theta, ring)
    return runs


def unrolled(ring: np.ndarray) -> np.ndarray:
    """A closed ring ``(n, 2)`` twice over (``2n - 1`` vertices): vertex ``i`` and ``i + n - 1`` are the same."""
    return np.concatenate([ring[:-1], ring])


def _drop_chamfers(runs: list[Run], lengths: list[float], period: int) -> None:
    """Remove stair residue, shortest first: a run shorter than :data:`MIN_RUN` whose neighbours meet at an angle
    (a chamfer cut into a corner) or run the same way (a jog in a wall; they become one run). A short run between
    two antiparallel runs is a real short wall (a narrow wing, a small building) and stays, as do the end runs
    of an open arc (they reach its nodes). ``period``: a closed ring's vertex count (0 for an open arc)."""
    closed = period > 0
    while len(runs) > (3 if closed else 2):
        n = len(runs)
        candidates = [j for j in (range(n) if closed else range(1, n - 1))
                      if lengths[j] < MIN_RUN and (runs[j - 1].k - runs[(j + 1) % n].k) % 8 != 4]
        if not candidates:
            return
        j = min(candidates, key=lambda i: (lengths[i], i))
        del runs[j], lengths[j]
        before, after = (j - 1) % len(runs), j % len(runs)
        if runs[before].k == runs[after].k and len(runs) > (3 if closed else 1):
            wraps = after < before  # a closed ring: the merged run crosses the ring's start
            runs[before].last = runs[after].last + (period if wraps else 0)
            lengths[before] += lengths[after]
            del runs[after], lengths[after]


def corner(a: Run, b: Run, ring: np.ndarray) -> list[tuple[float, float]]:
    """Where run ``a`` ends and ``b`` begins: their intersection, or for parallel runs the two feet of a
    perpendicular through the middle of the original step (``ring``: the vertices the runs' indices refer to)."""
    if (a.k - b.k) % 4 != 0:
        det = a.nx * b.ny - a.ny * b.nx
        return [((a.offset * b.ny - a.ny * b.offset) / det, (a.nx * b.offset - a.offset * b.nx) / det)]
    qx = (float(ring[a.last, 0]) + float(ring[b.first, 0])) / 2
    qy = (float(ring[a.last, 1]) + float(ring[b.first, 1])) / 2
    da = qx * a.nx + qy * a.ny - a.offset
    db = qx * b.nx + qy * b.ny - b.offset
    feet = [(qx - da * a.nx, qy - da * a.ny), (qx - db * b.nx, qy - db * b.ny)]
    return feet if abs(da - db) > 1e-9 else feet[:1]


def node_position(lines: list[Run], prior: tuple[float, float]) -> tuple[float, float]:
    """The point closest (least squares) to every run's line, pulled weakly to ``prior``."""
    sxx = syy = NODE_PRIOR
    sxy = 0.0
    vx, vy = NODE_PRIOR * prior[0], NODE_PRIOR * prior[1]
    for r in lines:
        sxx += r.nx * r.nx
        sxy += r.nx * r.ny
        syy += r.ny * r.ny
        vx += r.nx * r.offset
        vy += r.ny * r.offset
    det = sxx * syy - sxy * sxy
    return ((syy * vx - sxy * vy) / det, (sxx * vy - sxy * vx) / det)


def regularize_arcs(topo: Topology, frozen: np.ndarray, arcs: np.ndarray, theta: np.ndarray,
                    straight: Straightened) -> dict[int, np.ndarray]:
    """New vertices of ``arcs`` (indices; every arc of the groups concerned): frozen arcs keep theirs, the
    others are regularized; nodes of frozen arcs stay where they are."""
    runs: dict[int, list[Run] | None] = {}
    for a in arcs.tolist():
        coords = topo.arcs[a]
        # a loop through a node (a pixel hole touching another at a corner) has no direction to snap: kept
        if not frozen[a] and (topo.closed[a] or not np.array_equal(coords[0], coords[-1])):
            group = topo.group[topo.users[a][0]]
            runs[a] = arc_runs(straight, a, topo.arcs[a], bool(topo.closed[a]), float(theta[group]))
    positions = _node_positions(topo, frozen, runs, set(arcs.tolist()))
    out: dict[int, np.ndarray] = {}
    for a in arcs.tolist():
        original = topo.arcs[a]
        arc_run = runs.get(a)
        if frozen[a] or arc_run is None:
            out[a] = original
            continue
        ring = unrolled(original) if topo.closed[a] else original
        corners = [p for r in range(len(arc_run) - 1) for p in corner(arc_run[r], arc_run[r + 1], ring)]
        if topo.closed[a]:
            corners = corner(arc_run[-1], arc_run[0], ring) + corners
            out[a] = np.array(corners + corners[:1])
        else:
            start = positions[(float(original[0, 0]), float(original[0, 1]))]
            end = positions[(float(original[-1, 0]), float(original[-1, 1]))]
            out[a] = np.array([start, *corners, end])
    return out


def _node_positions(topo: Topology, frozen: np.ndarray, runs: dict[int, list[Run] | None],
                    wanted: set[int]) -> dict[tuple[float, float], tuple[float, float]]:
    """Where each node of the ``wanted`` arcs goes: the meeting point of its arcs' end lines, or where it was
    when one of its arcs is kept as it was."""
    positions: dict[tuple[float, float], tuple[float, float]] = {}
    for node, ends in topo.nodes().items():
        if not any(a in wanted for a, _ in ends):
            continue
        if any(frozen[a] or runs.get(a) is None for a, _ in ends):
            positions[node] = node
            continue
        positions[node] = node_position([runs[a][0] if starts else runs[a][-1] for a, starts in ends], node)
    return positions


__all__ = ["MIN_RUN", "TOLERANCE", "Straightened", "group_orientations", "regularize_arcs", "straighten"]
