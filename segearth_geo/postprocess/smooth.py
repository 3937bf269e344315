"""Smooth outlines for natural features (water, forest, fields), edge by shared edge.

Each arc (:mod:`~segearth_geo.postprocess.topology`) is densified to at most one pixel between vertices and
its vertices are averaged with a Gaussian of :data:`SIGMA` pixels along the line. A closed ring wraps around;
an open arc (a boundary shared with a neighbour, between two nodes) is mirrored through its end points, so
its ends stay exactly on the nodes. A shared edge is smoothed once for both neighbours, so no gap or overlap
opens between them; nodes do not move. Stairs of pixels become their centre line (at most ~0.35 px away) and
corners are rounded over a few pixels.
"""

from __future__ import annotations

import math

import numpy as np
import shapely

from segearth_geo.postprocess.topology import Topology

SIGMA = 1.5  # px along the line: rounds pixel stairs and corners of a few pixels, keeps shapes of ~10 px
DENSIFY = 1.0  # px: longest edge before smoothing (pixel edges already are 1 px; simplified ones are longer)
CLEAN = 0.05  # px: vertices within this of the line through their neighbours are dropped after smoothing
_RADIUS = int(math.ceil(3 * SIGMA))
_KERNEL = np.exp(-0.5 * (np.arange(-_RADIUS, _RADIUS + 1) / SIGMA) ** 2)
_KERNEL /= _KERNEL.sum()


def smooth_line(coords: np.ndarray, closed: bool) -> np.ndarray:
    """Gaussian-smoothed ``coords`` ``(n, 2)`` (dense, at most :data:`DENSIFY` apart); a closed ring (first =
    last) wraps around, an open line keeps its end points."""
    if closed:
        body = coords[:-1]  # (n-1, 2) without the repeated end
        padded = np.pad(body, ((_RADIUS, _RADIUS), (0, 0)), mode="wrap")
    else:
        body = coords
        padded = np.pad(body, ((_RADIUS, _RADIUS), (0, 0)), mode="reflect", reflect_type="odd")
    out = np.column_stack([np.convolve(padded[:, i], _KERNEL, mode="valid") for i in (0, 1)])  # (len(body), 2)
    if closed:
        return np.concatenate([out, out[:1]])
    out[0], out[-1] = coords[0], coords[-1]  # exact already (odd mirror); kept bit-identical for the nodes
    return out


def smooth_arcs(topo: Topology, frozen: np.ndarray, arcs: np.ndarray) -> dict[int, np.ndarray]:
    """New vertices of ``arcs`` (indices): frozen arcs keep theirs, the others are smoothed."""
    todo = [a for a in arcs.tolist() if not frozen[a]]
    out: dict[int, np.ndarray] = {a: topo.arcs[a] for a in arcs.tolist() if frozen[a]}
    if not todo:
        return out
    lines = shapely.linestrings(np.concatenate([topo.arcs[a] for a in todo]),
                                indices=np.repeat(np.arange(len(todo)), [len(topo.arcs[a]) for a in todo]))
    dense = shapely.segmentize(lines, DENSIFY)
    coords, index = shapely.get_coordinates(dense, return_index=True)
    pieces = np.split(coords, np.cumsum(np.bincount(index, minlength=len(todo)))[:-1])
    smoothed = [smooth_line(c, bool(topo.closed[a])) for a, c in zip(todo, pieces)]
    cleaned = shapely.simplify(shapely.linestrings(np.concatenate(smoothed), indices=np.repeat(
        np.arange(len(todo)), [len(c) for c in smoothed])), CLEAN, preserve_topology=False)
    coords, index = shapely.get_coordinates(cleaned, return_index=True)
    for a, c in zip(todo, np.split(coords, np.cumsum(np.bincount(index, minlength=len(todo)))[:-1])):
        out[a] = c
    return out


__all__ = ["SIGMA", "smooth_arcs", "smooth_line"]
