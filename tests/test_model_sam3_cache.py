"""SAM3's per-chip vision features: a second prompt on a chip skips the vision encoder; results equal no cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segearth_geo.errors import UsageError
from segearth_geo.model.sam3 import Sam3Segmenter, load_sam3_segmenter
from tests.sam3_fixtures import TINY_IMAGE_SIZE, write_tiny_sam3

torch.set_num_threads(1)

S = TINY_IMAGE_SIZE
PROMPTS = ["roofs, trees", "cars", "ships, piers, docks", "water"]


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3") / "hub", layout="hub")


@pytest.fixture(scope="module")
def base(hub_folder):
    return load_sam3_segmenter(hub_folder, device="cpu", score_threshold=0.0, cache_mb=0)


@pytest.fixture(scope="module")
def chips():
    rng = np.random.default_rng(0)
    shapes = [(S, S), (70, 50), (S, 90), (1, 1), (40, S)]
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in shapes]


def _segmenter(base, **kwargs) -> Sam3Segmenter:
    return Sam3Segmenter(base.model, base.tokenizer, base.preprocessing,
                         **({"device": "cpu", "score_threshold": 0.0} | kwargs))


def _same(a, b, atol=1e-5):
    assert a.answer == b.answer
    assert [t.label for t in a.targets] == [t.label for t in b.targets]
    np.testing.assert_allclose([t.score for t in a.targets], [t.score for t in b.targets], atol=atol)
    for x, y in zip(a.targets, b.targets):
        np.testing.assert_allclose(x.probability, y.probability, atol=atol)


class _CountVision:
    """Chips seen by the vision encoder (a forward hook on the real module)."""

    def __init__(self, segmenter: Sam3Segmenter) -> None:
        self.chips = 0
        self.handle = segmenter.model.vision_encoder.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self.chips += int(args[0].shape[0])


def test_second_prompt_skips_the_vision_encoder(base, chips):
    cached = _segmenter(base, batch_size=2, cache_mb=64)
    counter = _CountVision(cached)
    try:
        first = cached.segment(chips, PROMPTS[0])
        assert counter.chips == len(chips)
        assert cached.cache_stats()["misses"] == {"vision": len(chips)} and cached.cache_stats()["hits"] == {}
        second = cached.segment(chips, PROMPTS[1])
        assert counter.chips == len(chips)  # no chip went through the vision encoder again
    finally:
        counter.handle.remove()
    stats = cached.cache_stats()
    assert stats["hits"] == {"vision": len(chips)} and stats["items"] == len(chips)
    assert 0 < stats["bytes"] <= stats["max_bytes"]
    plain = _segmenter(base, batch_size=2, cache_mb=0)
    for got, want in zip(first + second, plain.segment(chips, PROMPTS[0]) + plain.segment(chips, PROMPTS[1])):
        _same(got, want)
        assert got.targets  # threshold 0: every query is an instance
    assert plain.cache_stats()["items"] == 0


def test_cached_results_equal_uncached_in_any_order_of_prompts_and_chips(base, chips):
    plain = _segmenter(base, batch_size=3, cache_mb=0)
    cached = _segmenter(base, batch_size=3, cache_mb=64)
    rng = np.random.default_rng(1)
    for round_ in range(4):  # the same chips come back with other prompts, in other orders
        order = rng.permutation(len(chips))
        images = [chips[k] for k in order]
        prompt = PROMPTS[(2 * round_ + 1) % len(PROMPTS)]
        for got, want in zip(cached.segment(images, prompt), plain.segment(images, prompt)):
            _same(got, want)
    stats = cached.cache_stats()
    assert stats["misses"]["vision"] == len(chips) and stats["hits"]["vision"] == 3 * len(chips)


def test_a_batch_mixing_hits_and_misses(base, chips):
    plain = _segmenter(base, batch_size=5, cache_mb=0)
    cached = _segmenter(base, batch_size=5, cache_mb=64)
    cached.segment([chips[4], chips[1]], "cars")  # warm two chips
    mixed = cached.segment(chips, "roofs, trees")  # 2 hits and 3 misses in one batch
    for got, want in zip(mixed, plain.segment(chips, "roofs, trees")):
        _same(got, want)
    stats = cached.cache_stats()
    assert stats["hits"]["vision"] == 2 and stats["misses"]["vision"] == 5


def test_a_small_bound_evicts_mid_run_and_holds(base, chips):
    probe = _segmenter(base, batch_size=1, cache_mb=64)
    probe.segment(chips[:1], "cars")
    bound_mb = 2.5 * probe.cache.bytes / 2**20  # room for two chips and a half
    cached = _segmenter(base, batch_size=2, cache_mb=bound_mb)
    plain = _segmenter(base, batch_size=2, cache_mb=0)
    for prompt in ("cars", "water", "cars"):
        got = cached.segment(chips, prompt)
        assert cached.cache.bytes <= cached.cache.max_bytes
        for a, b in zip(got, plain.segment(chips, prompt)):
            _same(a, b)
    stats = cached.cache_stats()
    assert stats["evictions"] > 0 and stats["items"] == 2 and stats["bytes"] <= stats["max_bytes"]


def test_keys_follow_the_pixels(base, chips):
    cached = _segmenter(base, cache_mb=64)
    cached.segment(chips[:1], "cars")
    changed = chips[0].copy()
    changed[5, 5, 0] ^= 1  # one bit of one pixel: another chip
    got = cached.segment([changed], "cars")[0]
    _same(got, _segmenter(base, cache_mb=0).segment([changed], "cars")[0])
    assert cached.cache_stats()["misses"]["vision"] == 2 and "vision" not in cached.cache_stats()["hits"]


def test_loader_and_registry_pass_the_bound(hub_folder, base):
    from segearth_geo.model.loading import load_segmenter

    assert load_sam3_segmenter(hub_folder, device="cpu", cache_mb=3).cache.max_bytes == 3 * 2**20
    assert load_segmenter(str(hub_folder), device="cpu", cache_mb=0).cache.max_bytes == 0
    assert load_sam3_segmenter(hub_folder, device="cpu").cache.max_bytes > 0  # the default fits the device
    with pytest.raises(UsageError, match="cache_mb"):
        _segmenter(base, cache_mb=-0.5)


def test_prompts_back_to_back_keep_their_text_features(base, chips):
    """The engine alternates prompts per chip batch: each prompt's concepts are encoded once, not once per batch."""
    cached = _segmenter(base, cache_mb=64)
    cached.segment(chips[:1], "cars")
    cars = cached._text_cache
    cached.segment(chips[:1], "roofs, trees")
    assert cached._text_cache is not cars
    cached.segment(chips[1:2], "cars")
    assert cached._text_cache is cars
