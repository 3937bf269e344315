"""SegEarth-R1's per-chip image state (image tokens, mask features, LLM prefix key/values): results equal no cache."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from r1_fixtures import tiny_prompt_ids, tiny_r1_model, tiny_r1_tokenizer, write_official_checkpoint
from rasterio.transform import from_origin

from segearth_geo.errors import UsageError
from segearth_geo.model.segearth_r1.image_processing import letterbox_image
from segearth_geo.model.segearth_r1.segmenter import SegEarthR1Segmenter, load_r1_segmenter

torch.set_num_threads(1)

PROMPTS = ["water", "the white storage tank on the left of the large building", "cars", "trees", "a road"]


@pytest.fixture(scope="module")
def model():
    return tiny_r1_model(seed=5)


@pytest.fixture(scope="module")
def chips():
    rng = np.random.default_rng(0)
    shapes = [(256, 256), (100, 60), (37, 250), (256, 180), (1, 1)]
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in shapes]


def _segmenter(model, **kwargs) -> SegEarthR1Segmenter:
    return SegEarthR1Segmenter(model, tiny_r1_tokenizer(), **({"device": "cpu"} | kwargs))


def _same(a, b, atol=1e-5):
    assert a.answer == b.answer
    assert [t.label for t in a.targets] == [t.label for t in b.targets]
    for x, y in zip(a.targets, b.targets):
        np.testing.assert_allclose(x.probability, y.probability, atol=atol)


def test_the_two_step_llm_equals_the_one_pass_forward(model, chips):
    """Prefix at 0..L_p-1, then the left-padded refer block on top == the model's right-padded one-pass forward."""
    segmenter = _segmenter(model, batch_size=5, cache_mb=0)
    logits, _ = segmenter.mask_logits(chips, PROMPTS)
    cfg = model.config
    canvas = torch.stack([letterbox_image(c, segmenter.chip_size, cfg.mask.pixel_mean, cfg.mask.pixel_std,
                                          torch.device("cpu"))[0] for c in chips])
    input_ids, refer_ids = tiny_prompt_ids(segmenter.tokenizer, cfg, PROMPTS)
    assert len({len(r) for r in refer_ids}) > 1  # the refer block really is padded
    with torch.inference_mode():
        reference = model(canvas, input_ids, refer_ids).pred_masks
    np.testing.assert_allclose(logits.numpy(), reference.numpy(), atol=1e-5)


def test_cached_results_equal_uncached_in_any_order_of_prompts_and_chips(model, chips):
    plain = _segmenter(model, batch_size=3, cache_mb=0)
    cached = _segmenter(model, batch_size=3, cache_mb=64)
    rng = np.random.default_rng(1)
    for round_ in range(3):  # the same chips come back with other prompts, in other orders
        order = rng.permutation(len(chips))
        images = [chips[k] for k in order]
        prompts = [PROMPTS[(k + round_) % len(PROMPTS)] for k in order]
        for got, want in zip(cached.predict(images, prompts), plain.predict(images, prompts)):
            _same(got, want)
        stats = cached.cache_stats()
        if round_ == 0:  # the first prompt computes everything, the second reuses it
            assert stats["misses"] == {"prefix": 5, "mask": 5, "vision": 5} and stats["hits"] == {}
    stats = cached.cache_stats()
    assert stats["hits"]["prefix"] == stats["hits"]["mask"] == 2 * len(chips)
    assert stats["misses"]["prefix"] == stats["misses"]["mask"] == len(chips)
    assert "vision" not in stats["hits"]  # with the prefix held, the image tokens are not even asked for
    assert stats["items"] == 3 * len(chips) and 0 < stats["bytes"] <= stats["max_bytes"]
    assert plain.cache_stats()["items"] == 0


def test_a_batch_mixing_hits_and_misses(model, chips):
    plain = _segmenter(model, batch_size=5, cache_mb=0)
    cached = _segmenter(model, batch_size=5, cache_mb=64)
    cached.predict(chips[1:3], PROMPTS[:2])  # warm two chips
    mixed = cached.predict(chips, ["houses"] * 5)  # 2 hits and 3 misses in one batch
    for got, want in zip(mixed, plain.predict(chips, ["houses"] * 5)):
        _same(got, want)
    stats = cached.cache_stats()
    assert stats["hits"]["prefix"] == stats["hits"]["mask"] == 2
    assert stats["misses"]["prefix"] == stats["misses"]["mask"] == 5


def test_a_small_bound_evicts_mid_run_and_holds(model, chips):
    probe = _segmenter(model, batch_size=1, cache_mb=64)
    probe.predict(chips[:1], PROMPTS[:1])
    one_chip = probe.cache.bytes  # all tiers of one chip
    bound_mb = 2.5 * one_chip / 2**20  # room for two chips and a half
    cached = _segmenter(model, batch_size=2, cache_mb=bound_mb)
    plain = _segmenter(model, batch_size=2, cache_mb=0)
    for prompt in ("houses", "the river", "houses"):
        got = cached.predict(chips, [prompt] * len(chips))
        assert cached.cache.bytes <= cached.cache.max_bytes
        for a, b in zip(got, plain.predict(chips, [prompt] * len(chips))):
            _same(a, b)
    stats = cached.cache_stats()
    assert stats["evictions"] > 0 and stats["bytes"] <= stats["max_bytes"]
    assert stats["hits"]  # the cheap tiers survived the prefixes evicted first


def test_the_prefix_follows_the_template(model, chips):
    """Another template is another prefix: the mask features are reused, the prefix is not."""
    cached = _segmenter(model, batch_size=5, cache_mb=64)
    cached.predict(chips, PROMPTS)
    cached.template = "reasoning"
    got = cached.predict(chips, PROMPTS)
    want = _segmenter(model, batch_size=5, cache_mb=0, template="reasoning").predict(chips, PROMPTS)
    for a, b in zip(got, want):
        _same(a, b)
    stats = cached.cache_stats()
    assert stats["misses"]["prefix"] == 2 * len(chips) and stats["hits"]["mask"] == len(chips)
    assert stats["hits"]["vision"] == len(chips)  # the new prefix reads the held image tokens


def test_bad_bound_is_a_usage_error(model):
    with pytest.raises(UsageError, match="cache_mb"):
        _segmenter(model, cache_mb=-1)


def test_loader_and_engine_pass_the_bound_and_reuse_on_the_second_prompt(model, tmp_path):
    from segearth_geo import segment_raster
    from segearth_geo.model.loading import load_segmenter

    folder = write_official_checkpoint(model, tmp_path / "SegEarth-R1-RRSIS-D")
    assert load_r1_segmenter(folder, device="cpu", cache_mb=0).cache.max_bytes == 0
    segmenter = load_segmenter(str(folder), device="cpu", batch_size=2, cache_mb=8)
    assert segmenter.cache.max_bytes == 8 * 2**20
    data = np.random.default_rng(3).integers(0, 256, size=(3, 300, 400), dtype=np.uint8)
    raster = tmp_path / "scene.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=400, height=300, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500_000, 4_600_000, 2.0, 2.0)) as dst:
        dst.write(data)
    both = segment_raster(raster, ["the buildings", "the road"], segmenter=segmenter)
    stats = both.attrs["segearth"]
    chips = stats["chips_processed"]
    assert stats["cache"]["misses"]["prefix"] == chips and stats["cache"]["hits"]["prefix"] == chips
    cold = segment_raster(raster, "the road", segmenter=load_r1_segmenter(folder, device="cpu", cache_mb=0))
    road = both[both["prompt"] == "the road"]
    assert len(road) == len(cold) > 0
    assert sorted(road.geometry.area) == pytest.approx(sorted(cold.geometry.area))
