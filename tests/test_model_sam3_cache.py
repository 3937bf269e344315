"""SAM3's per-chip vision features: a second prompt on a chip skips the vision encoder; results equal no cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segearth_geo.model.sam3 import Sam3Segmenter
from tests.sam3_fixtures import TINY_IMAGE_SIZE, write_tiny_sam3

torch.set_num_threads(1)

S = TINY_IMAGE_SIZE
PROMPTS = ["roofs, trees", "cars", "ships, piers, docks", "water"]


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3") / "hub", layout="hub")


@pytest.fixture(scope="module")
def base(hub_folder):
    return Sam3Segmenter.from_pretrained(hub_folder, device="cpu", score_threshold=0.0, cache_mb=0)


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





def test_keys_follow_the_pixels(base, chips):
    cached = _segmenter(base, cache_mb=64)
    cached.segment(chips[:1], "cars")
    changed = chips[0].copy()
    changed[5, 5, 0] ^= 1  # one bit of one pixel: another chip
    got = cached.segment([changed], "cars")[0]
    _same(got, _segmenter(base, cache_mb=0).segment([changed], "cars")[0])
    assert cached.cache_stats()["misses"]["vision"] == 2 and "vision" not in cached.cache_stats()["hits"]



def test_prompts_back_to_back_keep_their_text_features(base, chips):
    """The engine alternates prompts per chip batch: each prompt's concepts are encoded once, not once per batch."""
    cached = _segmenter(base, cache_mb=64)
    cached.segment(chips[:1], "cars")
    cars = cached._text_cache
    cached.segment(chips[:1], "roofs, trees")
    assert cached._text_cache is not cars
    cached.segment(chips[1:2], "cars")
    assert cached._text_cache is cars
