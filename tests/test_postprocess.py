"""Regularized buildings and smoothed natural outlines (segearth_geo.postprocess): geometry, not code paths.

Polygons are made the way the engine makes them: shapes burnt into a pixel mask and vectorised into pixel
staircases (:func:`segearth_geo.vectorize.mask_pieces`), so the tests see the real input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from shapely import affinity

from segearth_geo.postprocess import regularize_polygons, smooth_polygons
from segearth_geo.vectorize import canonical, mask_pieces


def pixel_polygons(shapes, size=(220, 220), labels=None) -> np.ndarray:
    """``shapes`` burnt into one label image (later shapes over earlier ones) and vectorised per label value."""
    values = list(range(1, len(shapes) + 1)) if labels is None else labels
    image = rasterio.features.rasterize(zip(shapes, values), out_shape=size, transform=Affine.identity(),
                                        dtype="int32")
    return label_polygons(image)


def label_polygons(image: np.ndarray) -> np.ndarray:
    out = []
    for value in np.unique(image):
        if value == 0:
            continue
        mask = image == value
        out += [piece.geometry for piece in mask_pieces(mask, mask.astype(np.float32), (0, 0))]
    return canonical(np.array(out, dtype=object))


def corner_angles(polygon: shapely.Polygon) -> np.ndarray:
    """Turning angle at each vertex of the exterior (degrees, 0 = straight on)."""
    c = np.asarray(polygon.exterior.coords)[:-1]
    v_in, v_out = c - np.roll(c, 1, axis=0), np.roll(c, -1, axis=0) - c
    cross = v_in[:, 0] * v_out[:, 1] - v_in[:, 1] * v_out[:, 0]
    return np.degrees(np.abs(np.arctan2(cross, (v_in * v_out).sum(axis=1))))


def iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


def interior_overlaps(polygons: np.ndarray) -> float:
    """Total area where two of ``polygons`` overlap."""
    left, right = shapely.STRtree(polygons).query(polygons, predicate="intersects")
    pairs = left < right
    return float(shapely.area(shapely.intersection(polygons[left[pairs]], polygons[right[pairs]])).sum())


def shared_length(a, b) -> float:
    return shapely.length(shapely.intersection(a.boundary, b.boundary))


# ------------------------------------------------------------------------------------------------ regularize
@pytest.mark.parametrize("degrees", [0, 10, 17, 30, 45, 62])
def test_rotated_rectangle_comes_back_with_right_angles(degrees):
    truth = affinity.rotate(shapely.box(60, 80, 150, 125), degrees)
    (staircase,) = pixel_polygons([truth])
    (square,), kept = regularize_polygons(np.array([staircase]))
    assert not kept[0]
    assert len(square.exterior.coords) == 5
    np.testing.assert_allclose(corner_angles(square), 90, atol=0.2)
    assert iou(square, truth) >= max(0.985, iou(staircase, truth)) - 1e-9  # closer to the building than the pixels


def test_45_degree_diagonal_is_kept_not_turned_into_stairs():
    truth = shapely.Polygon([(40, 40), (140, 40), (180, 80), (180, 180), (40, 180)])  # one corner cut at 45°
    (staircase,) = pixel_polygons([truth])
    (shape,), kept = regularize_polygons(np.array([staircase]))
    assert not kept[0] and len(shape.exterior.coords) == 6
    assert sorted(np.round(corner_angles(shape)).tolist()) == [45, 45, 90, 90, 90]
    assert iou(shape, truth) > 0.99


def test_row_houses_keep_their_party_walls():
    houses = [shapely.box(20, 20, 60, 70), shapely.box(60, 20, 95, 70), shapely.box(95, 26, 130, 70)]
    houses = [affinity.rotate(h, 20, origin=(75, 45)) for h in houses]
    staircases = pixel_polygons([affinity.translate(h, 40, 40) for h in houses])
    assert len(staircases) == 3 and shared_length(staircases[0], staircases[1]) > 30
    squared, kept = regularize_polygons(staircases)
    assert not kept.any()
    assert interior_overlaps(squared) < 1e-9  # no overlap opened...
    for a, b, wall in ((0, 1, 50), (1, 2, 44)):  # ...and no gap: each wall is one shared straight line again
        assert shared_length(squared[a], squared[b]) == pytest.approx(wall, abs=1.5)
        assert shared_length(staircases[a], staircases[b]) > wall * 1.2  # (the pixels' wall was a staircase)
    union = shapely.union_all(squared)
    assert union.geom_type == "Polygon" and len(union.interiors) == 0
    assert union.area == pytest.approx(sum(p.area for p in squared))
    for house in squared:  # right angles; a wall's ends are shared corners, solved for all the houses at once
        angles = corner_angles(house)
        assert np.all((np.abs(angles - 90) < 1.0) | (angles < 1.0))


def test_the_iou_guard_keeps_shapes_that_are_no_building():
    disc = shapely.Point(110, 110).buffer(60, quad_segs=32)
    (staircase,) = pixel_polygons([disc])
    (kept_shape,), kept = regularize_polygons(np.array([staircase]), min_iou=0.97)
    assert kept[0] and kept_shape.equals(staircase)
    (squared,), kept = regularize_polygons(np.array([staircase]), min_iou=0.5)
    assert not kept[0] and 0.5 <= iou(squared, staircase) < 0.97


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_label_images_stay_valid_without_new_overlaps(seed):
    rng = np.random.default_rng(seed)
    image = np.zeros((160, 160), np.int32)
    for _ in range(40):  # touching and overlapping blocks of five labels, with noise specks and pixel holes
        r, c = rng.integers(0, 150, 2)
        h, w = rng.integers(4, 50, 2)
        image[r:r + h, c:c + w] = rng.integers(1, 6)
    specks = rng.random(image.shape) < 0.01
    image[specks] = rng.integers(0, 6, int(specks.sum()))
    polygons = label_polygons(image)
    for change in (lambda p: regularize_polygons(p, min_iou=0.75), smooth_polygons):
        new, kept = change(polygons)
        assert shapely.is_valid(new).all() and (shapely.get_type_id(new) == 3).all()
        assert interior_overlaps(new) < 1e-6
        big = shapely.area(polygons) > 100
        assert (~kept[big]).mean() > 0.8  # the guard refuses few real shapes
        changed = ~kept
        ious = shapely.area(shapely.intersection(new[changed], polygons[changed])) / shapely.area(
            shapely.union(new[changed], polygons[changed]))
        assert ious.min() >= (0.75 if change is not smooth_polygons else 0.5) - 1e-9
        assert all(new[i].equals(polygons[i]) for i in np.flatnonzero(kept))


def test_chunks_give_the_same_result_as_one_pass(monkeypatch):
    import segearth_geo.postprocess as postprocess

    rng = np.random.default_rng(7)
    image = np.zeros((200, 200), np.int32)
    for _ in range(60):
        r, c = rng.integers(0, 190, 2)
        h, w = rng.integers(3, 25, 2)
        image[r:r + h, c:c + w] = rng.integers(1, 4)
    polygons = label_polygons(image)
    for change in (regularize_polygons, smooth_polygons):
        whole, kept_whole = change(polygons)
        monkeypatch.setattr(postprocess, "CHUNK", 40)  # clusters of nearby polygons stay whole
        chunked, kept_chunked = change(polygons)
        monkeypatch.undo()
        assert np.array_equal(kept_whole, kept_chunked)
        assert all(a.equals_exact(b, 1e-9) for a, b in zip(whole, chunked))


def test_same_result_whatever_the_order():
    shapes = [affinity.rotate(shapely.box(20 + 45 * i, 30, 60 + 45 * i, 90), 12, origin=(100, 60)) for i in range(4)]
    polygons = pixel_polygons(shapes + [shapely.Point(100, 160).buffer(30)])
    order = np.random.default_rng(0).permutation(len(polygons))
    for change in (regularize_polygons, smooth_polygons):
        first, _ = change(polygons)
        again, _ = change(polygons[order])
        assert all(first[order][i].equals_exact(again[i], 1e-9) for i in range(len(order)))


# ------------------------------------------------------------------------------------------------ smooth
def test_smoothing_two_labels_opens_no_gap_and_removes_the_stairs():
    # a lake and a forest meeting along a staircase (a diagonal boundary seen in pixels)
    rows, cols = np.mgrid[0:120, 0:120]
    image = np.where(rows > cols * 0.7 + 10, 1, 2).astype(np.int32)
    image[:5] = 0
    lake, forest = label_polygons(image)
    (new_lake, new_forest), kept = smooth_polygons(np.array([lake, forest]))
    assert not kept.any() and new_lake.is_valid and new_forest.is_valid
    assert new_lake.intersection(new_forest).area < 1e-9
    assert shapely.union(new_lake, new_forest).area == pytest.approx(new_lake.area + new_forest.area)
    wall = shapely.intersection(new_lake.boundary, new_forest.boundary)
    assert wall.length == pytest.approx(120 * math.sqrt(1 + 0.7**2), rel=0.03)  # the line, no longer a staircase
    assert shared_length(lake, forest) > 1.15 * wall.length
    inner = shapely.box(10, 20, 110, 110)
    line = shapely.LineString([(0, 10), (120, 94)])  # the true boundary row = 0.7 col + 10
    assert shapely.hausdorff_distance(wall.intersection(inner), line.intersection(inner)) < 0.6
    assert len(shapely.get_coordinates(wall)) < len(shapely.get_coordinates(lake.intersection(forest))) / 2
