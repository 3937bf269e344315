"""Change polygons arc by arc, with one guard: a polygon that the change spoils keeps its original shape.

:func:`reshape` builds the arcs of the polygons (:func:`~segearth_geo.postprocess.topology.build_topology`),
lets a change function move the arcs of whole groups of touching polygons, rebuilds the polygons and checks
each one:

* it is a valid, non-empty polygon (no self-intersection);
* its IoU with the original is at least ``min_iou`` (the regularization bound, or the smoothing floor);
* its interior meets no other polygon's interior that the original did not meet (no new overlap; gaps
  cannot open between neighbours, since they share their arcs).

A polygon that fails has its arcs **frozen** (kept as they were, end nodes included) and its group is
changed again, so that its neighbours follow the original shared walls; this repeats until every polygon
passes (at most :data:`MAX_ROUNDS` times, after which a group still failing keeps all its originals).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import shapely

from segearth_geo.pipeline import available_cores
from segearth_geo.postprocess.topology import Topology, build_topology, rings_of

MAX_ROUNDS = 8
THREAD_CHUNK = 1024  # polygons per thread task of an overlay
ChangeArcs = Callable[[Topology, np.ndarray, np.ndarray], dict[int, np.ndarray]]  # (topo, frozen, arcs) -> new


def reshape(polygons: np.ndarray, change: ChangeArcs, min_iou: float,
            topo: Topology | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``polygons`` ``(P,)`` changed by ``change`` under the guard (module docstring).

    Returns the new polygons ``(P,)`` and ``(P,)`` bool: the polygon kept its original shape.
    """
    polygons = np.asarray(polygons, dtype=object)
    topo = topo or build_topology(polygons)
    frozen = np.zeros(len(topo.arcs), dtype=bool)
    arcs_of_group = _arcs_of_groups(topo)
    arcs_of_polygon = [sorted({a for ring in rings for a, _ in ring}) for rings in topo.rings]
    new_arcs = list(topo.arcs)
    out = polygons.copy()
    groups = np.unique(topo.group)
    for _ in range(MAX_ROUNDS):
        _change_screened(topo, change, frozen, new_arcs, arcs_of_group, groups, min_iou)
        members = np.flatnonzero(np.isin(topo.group, groups))
        out[members] = topo.polygons(new_arcs, members)
        bad = members[_spoiled(out[members], polygons[members], min_iou)]
        bad = np.union1d(bad, _new_overlaps(out, polygons, members))
        bad = np.array([p for p in bad.tolist() if not frozen[arcs_of_polygon[p]].all()], dtype=np.int64)
        if len(bad) == 0:
            break
        for p in bad.tolist():
            frozen[arcs_of_polygon[p]] = True
        groups = np.unique(topo.group[bad])
    else:  # still failing: those groups keep their originals
        members = np.flatnonzero(np.isin(topo.group, groups))
        out[members] = polygons[members]
        frozen[np.concatenate([arcs_of_group[g] for g in groups.tolist()])] = True
    kept = np.array([bool(frozen[a].all()) if a else True for a in arcs_of_polygon], dtype=bool)
    out[kept] = polygons[kept]
    return out, kept


def _change_screened(topo: Topology, change: ChangeArcs, frozen: np.ndarray, new_arcs: list[np.ndarray],
                     arcs_of_group: dict[int, np.ndarray], groups: np.ndarray, min_iou: float) -> None:
    """Change the arcs of ``groups`` into ``new_arcs``; the arcs of a ring that comes out degenerate or crossing
    itself, or of a hole whose IoU with its original falls below ``min_iou``, are frozen and the group changed
    again, so one spoiled ring (a pixel hole) does not cost its polygon every other edge."""
    for _ in range(MAX_ROUNDS):
        arcs = np.concatenate([arcs_of_group[g] for g in groups.tolist()]) if len(groups) else np.zeros(0, int)
        changed = change(topo, frozen, arcs)
        for a, coords in changed.items():
            new_arcs[a] = coords
        bad = _bad_rings(topo, new_arcs, frozen, np.flatnonzero(np.isin(topo.group, groups)), min_iou)
        if not bad:
            return
        for p, r in bad:
            for a, _ in topo.rings[p][r]:
                frozen[a] = True
                new_arcs[a] = topo.arcs[a]
        groups = np.unique([topo.group[p] for p, _ in bad])


def _bad_rings(topo: Topology, new_arcs: list[np.ndarray], frozen: np.ndarray, members: np.ndarray,
               min_iou: float) -> list[tuple[int, int]]:
    """``(polygon, ring)`` of ``members`` with a changed arc whose new ring is degenerate or not simple, or (a
    hole) spoiled as a polygon."""
    keys = [(p, r) for p in members.tolist() for r, sequence in enumerate(topo.rings[p])
            if not all(frozen[a] for a, _ in sequence)]
    if not keys:
        return []
    sequences = [topo.rings[p][r] for p, r in keys]
    rings, ok = rings_of(sequences, new_arcs)
    ok[ok] &= shapely.is_simple(rings[ok])
    found = [key for key, good in zip(keys, ok.tolist()) if not good]
    inner = np.array([good and r > 0 for (_, r), good in zip(keys, ok.tolist())], dtype=bool)
    if inner.any():
        old, _ = rings_of([s for s, i in zip(sequences, inner.tolist()) if i], topo.arcs)
        spoiled = _spoiled(shapely.polygons(rings[inner]), shapely.polygons(old), min_iou)
        found += [key for key, bad in zip([k for k, i in zip(keys, inner.tolist()) if i], spoiled.tolist()) if bad]
    return found


def in_threads(operation: Callable[..., np.ndarray], *arrays: np.ndarray) -> np.ndarray:
    """``operation(*arrays)`` (a vectorised shapely function) on chunks in threads: GEOS releases the GIL, so an
    overlay of many polygons uses every core available."""
    n = len(arrays[0])
    workers = min(available_cores(), -(-n // THREAD_CHUNK))
    if workers <= 1:
        return operation(*arrays)
    starts = range(0, n, THREAD_CHUNK)
    with ThreadPoolExecutor(workers, thread_name_prefix="segearth-postprocess") as pool:
        parts = pool.map(lambda s: operation(*(a[s:s + THREAD_CHUNK] for a in arrays)), starts)
        return np.concatenate(list(parts))


def _arcs_of_groups(topo: Topology) -> dict[int, np.ndarray]:
    found: dict[int, list[int]] = {}
    for a, users in enumerate(topo.users):
        found.setdefault(int(topo.group[users[0]]), []).append(a)
    return {g: np.array(v, dtype=np.int64) for g, v in found.items()}


def _spoiled(new: np.ndarray, old: np.ndarray, min_iou: float) -> np.ndarray:
    """``(n,)`` bool: not a valid non-empty polygon, or IoU with the original below ``min_iou``."""
    ok = (shapely.get_type_id(new) == 3) & ~shapely.is_empty(new)
    ok[ok] &= shapely.is_valid(new[ok])
    iou = np.zeros(len(new))
    if ok.any():
        inter = shapely.area(in_threads(shapely.intersection, new[ok], old[ok]))
        union = shapely.area(new[ok]) + shapely.area(old[ok]) - inter
        iou[ok] = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
    return ~ok | (iou < min_iou)


def _new_overlaps(new: np.ndarray, old: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Polygons of ``members`` whose interior now meets another polygon's interior where the originals' did not
    (both polygons of each such pair are returned)."""
    valid = (shapely.get_type_id(new) == 3) & ~shapely.is_empty(new)
    valid[valid] &= shapely.is_valid(new[valid])
    idx = np.flatnonzero(valid)
    if len(idx) < 2:
        return np.zeros(0, dtype=np.int64)
    tree = shapely.STRtree(new[idx])
    query = members[valid[members]]
    left, right = tree.query(new[query], predicate="intersects")
    a, b = query[left], idx[right]
    pairs = a != b
    a, b = a[pairs], b[pairs]
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64)
    now = ~shapely.touches(new[a], new[b])
    before = shapely.intersects(old[a], old[b]) & ~shapely.touches(old[a], old[b])
    hit = now & ~before
    return np.unique(np.concatenate([a[hit], b[hit]]))


__all__ = ["MAX_ROUNDS", "in_threads", "reshape"]
