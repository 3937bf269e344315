"""SegEarth-R1's per-chip image state (image tokens, mask features, LLM prefix key/values): results equal no cache."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from r1_fixtures import tiny_prompt_ids, tiny_r1_model, tiny_r1_tokenizer, write_official_checkpoint
from rasterio.transform import from_origin

from segearth_geo.model.segearth_r1.preprocess import letterbox_image
from segearth_geo.model.segearth_r1.segmenter import SegEarthR1Segmenter

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



def test_loader_and_engine_pass_the_bound_and_reuse_on_the_second_prompt(model, tmp_path):
    from segearth_geo import segment_raster
    from segearth_geo.model.loading import load_segmenter

    folder = write_official_checkpoint(model, tmp_path / "SegEarth-R1-RRSIS-D")
    assert SegEarthR1Segmenter.from_pretrained(folder, device="cpu", cache_mb=0).cache.max_bytes == 0
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
    cold = segment_raster(raster, "the road", segmenter=SegEarthR1Segmenter.from_pretrained(folder, device="cpu", cache_mb=0))
    road = both[both["prompt"] == "the road"]
    assert len(road) == len(cold) > 0
    assert sorted(road.geometry.area) == pytest.approx(sorted(cold.geometry.area))
