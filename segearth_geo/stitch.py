"""Per-label assembly of chip masks into scene polygons.

Design (why memory does not grow with the scene):

A chip's probabilities are trusted only inside its **core** and only on valid pixels.
Instead of pasting core masks into a scene-sized array (a 16k x 16k float32 canvas is
1 GiB per label), each core mask is thresholded and **vectorised at once** into
:class:`~segearth_geo.vectorize.Piece` polygons in integer processing-grid pixel
coordinates, and the chip's arrays are dropped. What is kept is only vector output:

* pieces that do not reach an *inner* core edge (one shared with a neighbouring core) are
  already final — no other chip can own a pixel of the same 4-connected region;
* pieces that reach an inner edge are kept per label until :meth:`Stitcher.finish`, which
  unions them per label and splits the union into its polygons.

Cores partition the grid and share edges exactly on integer pixel lines, so the union
of the pieces of one region is the region itself: one polygon, holes kept, no slivers or
seams, the same point set as vectorising the whole stitched mask in one pass (this is
tested). Pieces that only touch at a corner stay separate polygons (4-connectivity, as in
a single pass). The result does not depend on the order in which chips are added:
union is order-free and :meth:`finish` sorts its output. Peak memory is one batch of chips
plus the polygons themselves, i.e. proportional to the output, not to the scene.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine

from segearth_geo.chips import Chip
from segearth_geo.prediction import Target
from segearth_geo.vectorize import Piece, canonical, mask_pieces, normalise_label, to_map


@dataclass(frozen=True)
class Region:
    """One stitched polygon of one label.

    Attributes:
        label: the normalised phrase.
        geometry: valid shapely ``Polygon`` (holes kept) in pixel coordinates, canonical form, or
            in map coordinates when :meth:`Stitcher.finish` was given a transform.
        score: mean probability over its pixels.
        pixels: number of its pixels.
    """

    label: str
    geometry: shapely.Polygon
    score: float
    pixels: int


class Stitcher:
    """Collects chip predictions and yields one :class:`Region` per connected object and label.

    Args:
        width, height: processing-grid size in pixels (edges of the grid are not inner edges).
        threshold: a pixel belongs to a label when its probability is ``>= threshold``.
        default_label: label for targets whose phrase is empty (normalised too).
    """

    def __init__(self, width: int, height: int, threshold: float, default_label: str = "object") -> None:
        self.width, self.height = width, height
        self.threshold = float(threshold)
        self.default_label = normalise_label(default_label) or "object"
        self._final: dict[str, list[Piece]] = defaultdict(list)
        self._border: dict[str, list[Piece]] = defaultdict(list)
        self._lock = threading.Lock()  # add() may run in several threads at once

    def add(self, chip: Chip, targets: Iterable[Target], valid: np.ndarray) -> list[str]:
        """Add one chip's targets; ``valid`` is the chip's bool validity ``(h, w)``.

        Targets with the same normalised label are merged (per-pixel maximum). Returns the
        chip's normalised labels in first-seen order. Thread-safe: chips may be added from
        several threads at once, in any order.
        """
        core = chip.core_in_chip
        rows = slice(int(core.row_off), int(core.row_off + core.height))
        cols = slice(int(core.col_off), int(core.col_off + core.width))
        by_label: dict[str, np.ndarray] = {}
        scores: dict[str, np.ndarray] = {}  # per label, the score of the target owning each pixel
        for target in targets:
            label = normalise_label(target.label) or self.default_label
            prob = target.probability[rows, cols]  # (core_h, core_w) float32
            score = getattr(target, "score", None)
            if label not in by_label:
                by_label[label] = prob
                if score is not None:
                    scores[label] = np.full(prob.shape, score, np.float32)
                continue
            if score is not None or label in scores:  # keep the owning target's score where it wins
                owner_score = scores.get(label, by_label[label])
                this = np.float32(score) if score is not None else prob
                scores[label] = np.where(prob > by_label[label], this, owner_score)
            by_label[label] = np.maximum(by_label[label], prob)
        valid_core = valid[rows, cols]
        origin = (int(chip.core.col_off), int(chip.core.row_off))
        all_valid = valid_core.all()
        for label, prob in by_label.items():
            mask = prob >= self.threshold if all_valid else (prob >= self.threshold) & valid_core
            # A region's score: the mean probability of its pixels, or, when the model scores its targets
            # (SAM3's detection scores), the mean score of the targets owning its pixels.
            pieces = mask_pieces(mask, scores.get(label, prob), origin)
            with self._lock:
                for piece in pieces:
                    target_list = self._border if self._on_inner_edge(piece, chip) else self._final
                    target_list[label].append(piece)
        return list(by_label)

    def pieces(self) -> tuple[dict[str, list[Piece]], dict[str, list[Piece]]]:
        """``(final, border)`` pieces per label collected so far (a batch job writes them to a shard)."""
        with self._lock:
            return ({k: list(v) for k, v in self._final.items()}, {k: list(v) for k, v in self._border.items()})

    def load(self, final: dict[str, list[Piece]], border: dict[str, list[Piece]]) -> None:
        """Add pieces collected elsewhere over the same grid (other chips: a batch job's shards of a scene);
        :meth:`finish` then unions border pieces across them exactly as within one run."""
        with self._lock:
            for label, items in final.items():
                self._final[label].extend(items)
            for label, items in border.items():
                self._border[label].extend(items)

    def _on_inner_edge(self, piece: Piece, chip: Chip) -> bool:
        minx, miny, maxx, maxy = piece.bounds
        c0, r0 = chip.core.col_off, chip.core.row_off
        c1, r1 = c0 + chip.core.width, r0 + chip.core.height
        return (
            (minx == c0 and c0 > 0)
            or (miny == r0 and r0 > 0)
            or (maxx == c1 and c1 < self.width)
            or (maxy == r1 and r1 < self.height)
        )

    def finish(self, transform: Affine | None = None) -> list[Region]:
        """Merge pieces across core edges and return the regions of every label.

        Regions are sorted by label, then top-to-bottom, left-to-right (pixel rows and
        columns). With ``transform`` (pixel -> map) geometries come in map coordinates,
        converted a chunk at a time so that pixel and map copies of all polygons never
        coexist. The collected pieces are released as they are consumed (call once).
        """
        regions: list[Region] = []
        for label in sorted(set(self._final) | set(self._border)):
            items: list[tuple[tuple, shapely.Polygon, float, int]] = []
            final = self._final.pop(label, [])
            for start in range(0, len(final), _CHUNK):
                chunk = final[start:start + _CHUNK]
                geoms = np.array([p.geometry for p in chunk], dtype=object)
                items.extend(_finalise(geoms, [p.prob_sum for p in chunk], [p.pixels for p in chunk], transform))
            del final
            # Merged clusters are finalised a chunk at a time, not one call per cluster.
            geoms_buf: list[shapely.Polygon] = []
            sums_buf: list[float] = []
            pixels_buf: list[int] = []
            for geoms, sums, pixels in _merged(self._border.pop(label, [])):
                geoms_buf.extend(geoms)
                sums_buf.extend(sums)
                pixels_buf.extend(pixels)
                if len(geoms_buf) >= _CHUNK:
                    items.extend(_finalise(_objects(geoms_buf), sums_buf, pixels_buf, transform))
                    geoms_buf, sums_buf, pixels_buf = [], [], []
            if geoms_buf:
                items.extend(_finalise(_objects(geoms_buf), sums_buf, pixels_buf, transform))
            regions.extend(_sorted_regions(label, items))
        return regions


_CHUNK = 256  # pieces turned into shapely polygons at a time in finish()


def _objects(geoms: list[shapely.Geometry]) -> np.ndarray:
    """A list of geometries as a 1-D object array."""
    out = np.empty(len(geoms), dtype=object)
    out[:] = geoms
    return out


def _finalise(geoms: np.ndarray, sums: list[float], pixels: list[int], transform: Affine | None) -> list[tuple]:
    """Canonical polygons -> ``(sort key, geometry, score, pixels)``; pixel coordinates in, map out."""
    geoms = canonical(geoms)
    # make_valid (rarely needed) may split a polygon: one region per part; in pixel
    # coordinates a part's area is its pixel count.
    parts, owner = shapely.get_parts(geoms, return_index=True)
    split = np.bincount(owner, minlength=len(geoms)) > 1
    bounds = shapely.bounds(parts)  # (n, 4) minx, miny, maxx, maxy in pixels
    out = parts if transform is None else to_map(parts, transform)
    items = []
    for k, part in enumerate(parts):
        if not isinstance(part, shapely.Polygon) or part.is_empty:
            continue
        i = owner[k]
        n = round(part.area) if split[i] else int(pixels[i])
        key = (bounds[k, 1], bounds[k, 0], bounds[k, 3], bounds[k, 2], n, sums[i])
        items.append((key, out[k], sums[i] / pixels[i], n))
    return items


def _sorted_regions(label: str, items: list[tuple]) -> list[Region]:
    """Order-free result: sort by position (ties, which need identical bounds, pixel count and
    sum, are broken by the geometry's bytes)."""
    counts: dict[tuple, int] = defaultdict(int)
    for key, *_ in items:
        counts[key] += 1
    items.sort(key=lambda it: (it[0], shapely.to_wkb(it[1]) if counts[it[0]] > 1 else b""))
    return [Region(label, geom, score, n) for _, geom, score, n in items]


def _merged(pieces: list[Piece]) -> Iterator[tuple[np.ndarray, list[float], list[int]]]:
    """Union pieces of one label that share an edge; yields ``(polygons, prob sums, pixel counts)``.

    Pieces are grouped into clusters whose bounding boxes touch (a spatial index over
    boxes plus union-find), so each union is small, pieces touching nothing skip the
    overlay, and only one cluster's polygons exist at a time.
    """
    if not pieces:
        return
    boxes = shapely.box(*np.array([p.bounds for p in pieces], dtype=np.float64).T)
    left, right = shapely.STRtree(boxes).query(boxes, predicate="intersects")
    del boxes
    parent = list(range(len(pieces)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(left.tolist(), right.tolist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    clusters: dict[int, list[int]] = defaultdict(list)
    for i in range(len(pieces)):
        clusters[root(i)].append(i)
    singles = [m[0] for m in clusters.values() if len(m) == 1]
    for start in range(0, len(singles), _CHUNK):
        chunk = [pieces[i] for i in singles[start:start + _CHUNK]]
        yield np.array([p.geometry for p in chunk], dtype=object), [p.prob_sum for p in chunk], [p.pixels for p in chunk]
    for members in (m for m in clusters.values() if len(m) > 1):
        geoms = np.array([pieces[i].geometry for i in members], dtype=object)
        # exact: integer coordinates
        parts = shapely.get_parts(shapely.union_all(geoms))
        if len(parts) == 1:
            yield parts, [sum(pieces[i].prob_sum for i in members)], [sum(pieces[i].pixels for i in members)]
            continue
        # Parts touching only at corners (or apart): each piece lies inside exactly one part.
        inside = shapely.point_on_surface(geoms)
        piece_idx, part_idx = shapely.STRtree(parts).query(inside, predicate="intersects")
        owner = np.empty(len(members), dtype=np.int64)
        owner[piece_idx] = part_idx
        sums = [sum(pieces[members[j]].prob_sum for j in np.flatnonzero(owner == k)) for k in range(len(parts))]
        pixels = [sum(pieces[members[j]].pixels for j in np.flatnonzero(owner == k)) for k in range(len(parts))]
        yield parts, sums, pixels
