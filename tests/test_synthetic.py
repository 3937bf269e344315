"""SynthEarth: determinism, masks against rendered pixels, questions, LaSeRS split files, scenes."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import rasterio
from rasterio import features
from shapely.geometry import box

from segearth_geo.data.rle import rle_decode, rle_encode
from segearth_geo.data.sample import DIMENSIONS
from segearth_geo.errors import OutputError, UsageError
from segearth_geo.synthetic import objects as ob
from segearth_geo.synthetic.dataset import SynthEarthSamples, generate_sample, split_sample, write_split
from segearth_geo.synthetic.geoscene import scene_origin, write_scene
from segearth_geo.synthetic.layout import Layout, compose_layout
from segearth_geo.synthetic.questions import LONG_WORDS
from segearth_geo.synthetic.scene import SceneRenderer

LABEL_RE = re.compile(r"<p>(.*?)</p> \[SEG\]")


def _layout_from(builder: ob.LayoutBuilder) -> Layout:
    """A layout from hand-placed objects (no shadows), shapes in paint order."""
    shapes = sorted(builder.shapes, key=lambda s: s.layer)
    ground = (ob.MATERIALS["grass"][0], ob.MATERIALS["grass"][1])
    return Layout(builder.width_m, builder.height_m, "city", ground, (1.0, 1.0, 1.0), shapes, [], builder.objects)


@pytest.fixture(scope="module")
def hand_scene():
    """A 100 m × 100 m scene with one object of several categories, rendered at 0.5 m."""
    b = ob.LayoutBuilder(100.0, 100.0, np.random.default_rng(5))
    objs = {
        "building": ob.add_building(b, 25, 20, 30, 14, 0.2),
        "pool": ob.add_pool(b, 70, 20, 12, 6, 0.0),
        "court": ob.add_tennis_court(b, 30, 60, 0.4),
        "plane": ob.add_airplane(b, 75, 70, 36, -0.7),
    }
    assert all(o is not None for o in objs.values())
    layout = _layout_from(b)
    rendered = SceneRenderer(layout, 0.5, seed=11).render(0, 0, 200, 200)
    return layout, objs, rendered


def test_masks_cover_their_footprints_and_look_different(hand_scene):
    layout, objs, rendered = hand_scene
    image = rendered.image.astype(float)
    background = rendered.object_map < 0
    for name, obj in objs.items():
        mask = rendered.instance_mask(obj.index)
        # visible pixels ≈ footprint area / (0.5 m)², nothing overlaps in this scene
        assert abs(mask.sum() - obj.footprint.area / 0.25) / (obj.footprint.area / 0.25) < 0.08, name
        burned = features.rasterize([(obj.footprint, 1)], out_shape=(200, 200),
                                    transform=rasterio.Affine(0.5, 0, 0, 0, 0.5, 0)).astype(bool)
        iou = (burned & mask).sum() / (burned | mask).sum()
        assert iou > 0.97, (name, iou)
        inside, outside = image[mask].mean(axis=0), image[background].mean(axis=0)
        assert np.abs(inside - outside).max() > 25, (name, inside, outside)
    pool = image[rendered.instance_mask(objs["pool"].index)].mean(axis=0)
    assert pool[2] > pool[0] + 80  # pools are bright cyan


def test_part_masks_lie_inside_their_instance(hand_scene):
    layout, objs, rendered = hand_scene
    for obj, parts in ((objs["court"], ["net"]), (objs["plane"], ["wing", "engine"])):
        instance = rendered.instance_mask(obj.index)
        for part in parts:
            pm = rendered.part_mask(obj.index, part)
            assert pm.sum() > 10, part
            assert not (pm & ~instance).any()
            assert pm.sum() < instance.sum()
    net = rendered.image[rendered.part_mask(objs["court"].index, "net")].astype(float).mean()
    assert net < 70  # the net is dark on a bright court


def test_window_renders_match_the_whole_scene():
    layout = compose_layout("city", 160.0, 160.0, np.random.default_rng(3))
    renderer = SceneRenderer(layout, 0.5, seed=2)
    whole = renderer.render(0, 0, 320, 320)
    for row0, col0 in ((0, 0), (0, 128), (128, 64), (200, 200)):
        part = renderer.render(row0, col0, 120, 120)
        ref = whole.image[row0 : row0 + 120, col0 : col0 + 120]
        assert (part.image == ref).all(axis=-1).mean() > 0.999
        assert (part.object_map == whole.object_map[row0 : row0 + 120, col0 : col0 + 120]).mean() > 0.999


def test_generate_sample_is_deterministic_and_seed_dependent():
    a, b, c = generate_sample(7, size=128), generate_sample(7, size=128), generate_sample(8, size=128)
    assert a.image.tobytes() == b.image.tobytes()
    assert (a.instruction, a.answer, a.dimensions) == (b.instruction, b.answer, b.dimensions)
    assert all((m1 == m2).all() for m1, m2 in zip(a.masks, b.masks))
    assert a.image.tobytes() != c.image.tobytes()
    assert a.image.shape == (128, 128, 3) and a.image.dtype == np.uint8
    # the generator argument is the only randomness used
    g1, g2 = np.random.default_rng(99), np.random.default_rng(99)
    assert generate_sample(g1, 96).image.tobytes() == generate_sample(g2, 96).image.tobytes()


def test_splits_use_separate_seed_streams():
    train = SynthEarthSamples("train", n=3, seed=0, size=96)
    assert len(train) == 3
    assert train[1].image.tobytes() == split_sample("train", 0, 1, 96).image.tobytes()
    test0 = split_sample("test", 0, 0, 96)
    assert test0.image.tobytes() != train[0].image.tobytes()
    assert test0.id == "test_000000"
    with pytest.raises(IndexError):
        train[3]
    with pytest.raises(UsageError):
        split_sample("dev", 0, 0)
    with pytest.raises(UsageError):
        generate_sample(0, size=10)


def test_rle_round_trip_and_known_encoding():
    mask = np.zeros((3, 4), dtype=bool)
    mask[1, 1] = mask[2, 1] = mask[0, 3] = True
    # column-major runs 4, 2, 3, 1, 2; from the 4th run on the difference to the run two
    # places earlier is stored: 1 - 2 = -1 and 2 - 3 = -1, each one 5-bit group 0x1F → chr(48 + 31) = 'O'
    rle = rle_encode(mask)
    assert rle["size"] == [3, 4]
    assert rle["counts"] == "423OO"
    assert (rle_decode(rle) == mask).all()
    for seed in range(4):
        sample = generate_sample(seed, size=96)
        for m in sample.masks:
            assert (rle_decode(rle_encode(m)) == m).all()


def test_written_split_follows_the_lasers_schema(tmp_path):
    summary = write_split(tmp_path, "test", n=40, seed=1, size=96)
    path = tmp_path / "test" / "annotations" / "test.json"
    assert summary.annotation_path == path and "test" in path.name
    records = json.loads(path.read_text())
    assert len(records) == 40
    seen: dict[str, set[str]] = {k: set() for k in DIMENSIONS}
    no_target = 0
    for rec in records:
        assert set(rec) == {"id", "image_name", "description", "answer", "mask", "dimensions"}
        assert (tmp_path / "test" / "images" / rec["image_name"]).is_file()
        n_seg = rec["answer"].count("[SEG]")
        assert len(rec["mask"]) == n_seg
        assert len(LABEL_RE.findall(rec["answer"])) == n_seg
        no_target += n_seg == 0
        for rle in rec["mask"]:
            m = rle_decode(rle)
            assert m.shape == (96, 96) and m.any()
        for key, value in rec["dimensions"].items():
            assert value in DIMENSIONS[key]
            seen[key].add(value)
        words = len(rec["description"].split())
        assert (rec["dimensions"]["length"] == "long") == (words >= LONG_WORDS)
        if n_seg:
            assert (rec["dimensions"]["count"] == "multiple") == (n_seg > 1)
    assert {k: sorted(v) for k, v in seen.items()} == {k: sorted(v) for k, v in DIMENSIONS.items()}
    assert summary.n_masks == sum(len(r["mask"]) for r in records)
    with pytest.raises(OutputError):
        write_split(tmp_path, "test", n=1, seed=1, size=96)


def test_scene_geotiff_and_truth(tmp_path):
    import geopandas as gpd
    from pyproj import Transformer

    s = write_scene(tmp_path, 640, 512, gsd=0.5, crs="EPSG:32650", seed=4, theme="harbour", block=256, compress="deflate")
    with rasterio.open(s.path) as ds:
        assert ds.crs.to_epsg() == 32650
        assert (ds.width, ds.height) == (640, 512)
        assert ds.transform.a == 0.5 and ds.transform.e == -0.5 and ds.transform.b == ds.transform.d == 0
        assert ds.block_shapes[0] == (256, 256) and ds.overviews(1) == [2, 4]  # down to >= 128 px
        image = ds.read().transpose(1, 2, 0).astype(float)
        left, bottom, right, top = ds.bounds
    lon, lat = Transformer.from_crs(32650, 4326, always_xy=True).transform((left + right) / 2, (bottom + top) / 2)
    assert 114 <= lon <= 120 and 0 <= lat <= 84  # inside UTM zone 50N
    assert (right - left, top - bottom) == (320.0, 256.0)
    objects = gpd.read_file(s.truth_path, layer="objects")
    parts = gpd.read_file(s.truth_path, layer="parts")
    assert objects.crs.to_epsg() == 32650 and len(objects) == s.n_objects > 10
    assert set(objects.label) <= set(ob.CATEGORIES) and {"water", "ship"} <= set(objects.label)
    assert objects.geometry.within(box(left, bottom, right, top).buffer(1e-6)).all()
    assert {"bow", "stern"} <= set(parts.part)
    transform = rasterio.Affine(0.5, 0, left, 0, -0.5, top)
    water = features.rasterize(objects[objects.label == "water"].geometry, out_shape=(512, 640), transform=transform).astype(bool)
    ships = features.rasterize(objects[objects.label == "ship"].geometry, out_shape=(512, 640), transform=transform).astype(bool)
    open_water = water & ~ships
    blue = image[open_water].mean(axis=0)
    assert blue[2] > blue[0] + 30 and image[~water].mean() > blue.mean() + 30
    assert np.abs(image[ships].mean(axis=0) - blue).max() > 30


def test_scene_is_deterministic_and_keeps_metric_sizes(tmp_path):
    a = write_scene(tmp_path / "a", 300, 260, seed=2, theme="airport", compress="deflate", block=256)
    b = write_scene(tmp_path / "b", 300, 260, seed=2, theme="airport", compress="deflate", block=512)
    with rasterio.open(a.path) as da, rasterio.open(b.path) as db:
        assert (da.read() == db.read()).all()  # block size does not change pixels
    c = write_scene(tmp_path / "c", 300, 260, gsd=1.0, seed=2, theme="airport", compress="deflate")
    assert math.isclose(c.bounds[2] - c.bounds[0], 300.0) and math.isclose(a.bounds[2] - a.bounds[0], 150.0)
    with pytest.raises(OutputError):
        write_scene(tmp_path / "a", 300, 260, seed=2, theme="airport")


@pytest.mark.parametrize(
    "kwargs",
    [{"crs": "EPSG:4326"}, {"width": 10}, {"theme": "moon"}, {"gsd": 0.0}, {"block": 300}, {"compress": "lzw"},
     {"crs": "nonsense"}],
)
def test_scene_rejects_bad_arguments(tmp_path, kwargs):
    args = {"width": 300, "height": 300} | kwargs
    with pytest.raises(UsageError):
        write_scene(tmp_path, **args)


def test_scene_origin_is_inside_the_crs_area():
    x, y = scene_origin("EPSG:32633", 1000, 1000)
    assert 166_000 < x < 834_000 and 0 < y < 9_400_000
