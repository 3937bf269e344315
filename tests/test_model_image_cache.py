"""The per-chip image-state cache: bounded LRU by tier, content keys, and results equal to no cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import random_chip, tiny_model_and_tokenizer

from segearth_geo.model.image_cache import ImageCache, chip_key, nbytes
from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter

torch.set_num_threads(1)

PROMPTS = ["find the roofs", "segment the cars parked next to the trucks, the trees and the water", "where?",
           "the river", "houses"]


@pytest.fixture(scope="module")
def steered():
    return tiny_model_and_tokenizer(seed=0, steer=True)


@pytest.fixture(scope="module")
def chips():
    return [random_chip(128, 128, 0), random_chip(96, 128, 1), random_chip(128, 70, 2), random_chip(128, 128, 3),
            random_chip(40, 50, 4)]


def _segmenter(steered, **kwargs) -> SegEarthR2Segmenter:
    model, tokenizer = steered
    return SegEarthR2Segmenter(model, tokenizer, **({"device": "cpu", "max_new_tokens": 12} | kwargs))


def _same(a, b, atol=1e-5):
    assert a.answer == b.answer
    assert [t.label for t in a.targets] == [t.label for t in b.targets]
    for x, y in zip(a.targets, b.targets):
        np.testing.assert_allclose(x.probability, y.probability, atol=atol)


# --- the cache itself ----------------------------------------------------------------------------------


def test_lru_within_the_bound_and_largest_tier_evicted_first():
    cache = ImageCache(max_bytes=1000, tier_order=("vision", "mask", "prefix"))
    assert cache.put("a", "vision", np.zeros(100, np.uint8)) and cache.put("b", "vision", np.zeros(100, np.uint8))
    assert cache.put("a", "prefix", np.zeros(600, np.uint8))
    assert cache.bytes == 800
    cache.get("a", "vision")  # "a" is now more recent than "b"
    assert cache.put("c", "vision", np.zeros(300, np.uint8))  # needs room: the prefix tier goes first
    assert cache.get("a", "prefix") is None and cache.get("a", "vision") is not None
    assert cache.put("d", "vision", np.zeros(600, np.uint8))  # then the least recently used vision item: "b"
    assert cache.get("b", "vision") is None and cache.get("c", "vision") is not None
    assert cache.bytes <= 1000
    assert not cache.put("huge", "vision", np.zeros(1001, np.uint8))  # larger than the bound: not stored
    stats = cache.stats()
    assert stats.evictions == 2 and stats.items == 3 and stats.bytes == cache.bytes
    assert stats.hits["vision"] == 3 and stats.misses["prefix"] == 1
    assert not ImageCache(0).put("x", "vision", np.zeros(1, np.uint8))  # disabled


def test_keys_follow_the_pixels_not_where_they_came_from():
    scene = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    a, b = scene[:, :48], np.ascontiguousarray(scene[:, 48:])
    assert chip_key(a) == chip_key(a.copy()) and chip_key(a) != chip_key(b)
    shifted = scene[:, 1:49]
    assert chip_key(shifted) != chip_key(a)
    changed = a.copy()
    changed[10, 10, 1] ^= 1  # one bit of one pixel
    assert chip_key(changed) != chip_key(a)
    assert chip_key(a.reshape(48, 64, 3)) != chip_key(a)  # same bytes, other shape
    assert chip_key(a, "model-1") != chip_key(a, "model-2")
    assert nbytes({"k": [torch.zeros(4, dtype=torch.float32), (np.zeros(3, np.uint8),)]}) == 19


# --- the segmenter with and without it -------------------------------------------------------------------





def test_teacher_forced_answers_reuse_image_state(steered, chips):
    cached = _segmenter(steered, cache_mb=64)
    plain = _segmenter(steered, cache_mb=0)
    answers = ["The roofs [SEG] and the <p>trees</p> [SEG].", "There is no target.", "[SEG]"]
    first = cached.predict(chips[:3], PROMPTS[:3], answers=answers)
    again = cached.predict(chips[:3], PROMPTS[2:5], answers=answers)
    for a, b in zip(first, plain.predict(chips[:3], PROMPTS[:3], answers=answers)):
        _same(a, b)
    for a, b in zip(again, plain.predict(chips[:3], PROMPTS[2:5], answers=answers)):
        _same(a, b)
    assert cached.cache_stats()["hits"]["vision"] >= 3


def test_second_prompt_on_a_scene_reuses_every_chip_and_matches_a_cold_run():
    """Through the engine with the bundled demo model: the dock's second prompt on the same extent."""
    from pathlib import Path

    import shapely

    from segearth_geo.engine import segment_raster
    from segearth_geo.model.loading import load_segmenter

    city = Path(__file__).resolve().parent.parent / "sample_tiles" / "synthearth_city.tif"
    bbox = (499800.0, 4649600.0, 500000.0, 4649800.0)  # 400 x 400 px: 4 chips of 256
    warm = load_segmenter("demo", device="cpu", batch_size=4)
    first = segment_raster(city, "all the buildings", segmenter=warm, bbox=bbox)
    second = segment_raster(city, "all the roads", segmenter=warm, bbox=bbox)
    cold = segment_raster(city, "all the roads", segmenter=load_segmenter("demo", device="cpu", batch_size=4),
                          bbox=bbox)
    chips = second.attrs["segearth"]["chips_processed"]
    assert first.attrs["segearth"]["cache"]["misses"]["prefix"] == chips
    assert second.attrs["segearth"]["cache"]["hits"]["prefix"] == chips  # every chip's image work reused
    assert "prefix" not in second.attrs["segearth"]["cache"]["misses"]
    assert second.attrs["segearth"]["answers"] == cold.attrs["segearth"]["answers"]
    assert len(second) == len(cold) > 0
    assert shapely.equals(shapely.union_all(second.geometry.values), shapely.union_all(cold.geometry.values))
