"""SegEarth-R2 inference on a tiny model: batching, [SEG] states, masks, preprocessing and crop-back."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from model_fixtures import random_chip, tiny_model_and_tokenizer

from segearth_geo.errors import UsageError
from segearth_geo.model.image_cache import chip_key
from segearth_geo.model.parts.crop_back import crop_back
from segearth_geo.model.segearth_r2.preprocess import prepare_images, resized_size
from segearth_geo.model.segearth_r2.prompt import encode_prompt_parts
from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter
from segearth_geo.prediction import Segmenter

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


def _segmenter(steered, **kwargs):
    model, tokenizer = steered
    kwargs = {"device": "cpu", "max_new_tokens": 12} | kwargs
    return SegEarthR2Segmenter(model, tokenizer, **kwargs)


def _same(a, b, atol=1e-5):
    assert a.answer == b.answer
    assert [t.label for t in a.targets] == [t.label for t in b.targets]
    for x, y in zip(a.targets, b.targets):
        assert x.probability.shape == y.probability.shape
        np.testing.assert_allclose(x.probability, y.probability, atol=atol)


def test_the_full_seg_pass_does_not_depend_on_batch_composition_or_order(steered, chips):
    """The default ``seg_pass="cache"`` is checked by tests/test_backend_contract.py; here the full re-run."""
    seg_pass = "full"
    batched = _segmenter(steered, batch_size=5, seg_pass=seg_pass).predict(chips, PROMPTS)
    counts = [len(p.targets) for p in batched]
    assert any(counts) and not all(counts), "fixture must give chips with and without [SEG]"
    for k, chip in enumerate(chips):
        alone = _segmenter(steered, batch_size=1).predict([chip], [PROMPTS[k]])[0]
        _same(batched[k], alone)
    order = [3, 0, 4, 2, 1]
    permuted = _segmenter(steered, batch_size=3).predict([chips[k] for k in order], [PROMPTS[k] for k in order])
    for position, k in enumerate(order):
        _same(permuted[position], batched[k])
    # deterministic (greedy)
    again = _segmenter(steered, batch_size=5, seg_pass=seg_pass).predict(chips, PROMPTS)
    for a, b in zip(again, batched):
        _same(a, b, atol=0)


def test_outputs_follow_the_segmenter_protocol(steered, chips):
    segmenter = _segmenter(steered)
    assert isinstance(segmenter, Segmenter) and segmenter.chip_size == steered[0].config.mask.image_size
    results = segmenter.segment(chips, "find the roofs")
    assert len(results) == len(chips)
    for chip, result in zip(chips, results):
        assert result.answer.count("[SEG]") == len(result.targets)
        for target in result.targets:
            assert target.probability.shape == chip.shape[:2] and target.probability.dtype == np.float32
            assert 0.0 <= target.probability.min() <= target.probability.max() <= 1.0


class _Recording(SegEarthR2Segmenter):
    """Keeps the last-layer states the KV-cached generation computed for each fed token."""

    def _llm(self, inputs_embeds, attention_mask, position_ids, cache=None):
        hidden, cache_out = super()._llm(inputs_embeds, attention_mask, position_ids, cache)
        if cache is not None:
            self.record.append(hidden)
        return hidden, cache_out


def test_seg_states_from_one_forward_equal_the_cached_generation_states(steered, chips):
    model, tokenizer = steered
    segmenter = _Recording(model, tokenizer, device="cpu", max_new_tokens=12)
    segmenter.record = []
    cfg = model.config
    prepared = [prepare_images(c, cfg) for c in chips]
    with torch.no_grad():
        embeds = model.encode_images(torch.stack([p.siglip for p in prepared]))
        parts = [encode_prompt_parts(tokenizer, p) for p in PROMPTS]
        prompts = [ids for ids, _ in parts]
        keys = [chip_key(c, segmenter._cache_salt) for c in chips]
        generation = segmenter._generate(prompts, [start for _, start in parts], keys, prepared)
        generated = generation.ids
        states, owner, with_seg = segmenter._seg_states([p + g for p, g in zip(prompts, generated)],
                                                        [len(p) for p in prompts], embeds)
        cached, cached_owner, cached_with_seg = segmenter._seg_states_cached(generation)
    # the pass on top of the prompt's KV cache is the same teacher-forced pass
    assert cached_with_seg == with_seg and torch.equal(cached_owner, owner)
    torch.testing.assert_close(cached, states, atol=1e-5, rtol=1e-5)
    assert with_seg and states.shape == (sum(g.count(cfg.seg_token_id) for g in generated), cfg.text.hidden_size)
    n = 0
    for k, b in enumerate(with_seg):
        for j, token in enumerate(generated[b]):
            if token != cfg.seg_token_id:
                continue
            assert int(owner[n]) == k
            # generated token j is fed at decode step j (record[0] is the shared prefix, record[1] the
            # instructions on top of it)
            torch.testing.assert_close(states[n], segmenter.record[j + 2][b, 0], atol=1e-5, rtol=1e-5)
            n += 1
    assert n == states.shape[0]


def test_a_trailing_seg_still_gets_a_mask(steered, chips):
    model, tokenizer = steered
    segmenter = _segmenter(steered, batch_size=1)
    full = segmenter.predict(chips, PROMPTS)
    k = next(i for i, r in enumerate(full) if r.targets)
    with torch.no_grad():
        prompt, start = encode_prompt_parts(tokenizer, PROMPTS[k])
        prepared = [prepare_images(chips[k], model.config)]
        generated = segmenter._generate([prompt], [start], [chip_key(chips[k], "t")], prepared).ids[0]
    cut = generated.index(model.config.seg_token_id) + 1
    short = _segmenter(steered, batch_size=1, max_new_tokens=cut).predict([chips[k]], [PROMPTS[k]])[0]
    assert short.answer.endswith("[SEG]") and len(short.targets) == 1
    np.testing.assert_allclose(short.targets[0].probability, full[k].targets[0].probability, atol=1e-5)


def test_teacher_forced_answers(steered, chips):
    segmenter = _segmenter(steered)
    answers = ["The roofs [SEG] and the <p>trees</p> [SEG].", "There is no target.", "[SEG]"]
    results = segmenter.predict(chips[:3], PROMPTS[:3], answers=answers)
    assert [len(r.targets) for r in results] == [2, 0, 1]
    assert [r.answer for r in results] == answers
    assert [t.label for t in results[0].targets] == ["roofs", "trees"]
    assert results[2].targets[0].label == PROMPTS[2].rstrip("?")
    assert results[1].targets == []
    alone = segmenter.predict(chips[2:3], PROMPTS[2:3], answers=answers[2:3])[0]
    _same(alone, results[2])


def test_cuda_out_of_memory_halves_the_batch(steered, chips):
    class _Tight(SegEarthR2Segmenter):
        def _predict_batch(self, images, prompts, answers):
            if len(images) > 2:
                raise torch.cuda.OutOfMemoryError("simulated")
            return super()._predict_batch(images, prompts, answers)

    model, tokenizer = steered
    tight = _Tight(model, tokenizer, device="cpu", batch_size=5, max_new_tokens=12)
    results = tight.predict(chips, PROMPTS)
    assert tight.batch_size == 2
    reference = _segmenter(steered, batch_size=5).predict(chips, PROMPTS)
    for a, b in zip(results, reference):
        _same(a, b)


def test_load_segmenter_from_a_checkpoint_directory(tmp_path, steered, chips, caplog):
    from segearth_geo import load_segmenter
    from segearth_geo.model.segearth_r2.checkpoint import save_pretrained

    model, tokenizer = steered
    save_pretrained(model, tokenizer, tmp_path)
    with caplog.at_level(logging.INFO, logger="segearth_geo"):
        segmenter = load_segmenter(tmp_path, device="auto", batch_size=3)
    assert segmenter.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert any("runs on" in r.getMessage() for r in caplog.records)
    if segmenter.device.type == "cpu":
        segmenter.max_new_tokens = 12
        reference = _segmenter(steered).predict(chips[:2], PROMPTS[:2])
        for a, b in zip(segmenter.predict(chips[:2], PROMPTS[:2]), reference):
            _same(a, b)


# ---------------------------------------------------------------------------------------------- preprocessing
def test_resized_size_follows_the_long_edge_rule():
    assert resized_size(1000, 500, 1024) == (1024, 512)
    assert resized_size(300, 400, 1024) == (768, 1024)
    assert resized_size(1024, 1024, 1024) == (1024, 1024)
    assert resized_size(60, 120, 128) == (64, 128)


def test_prepare_images_pads_bottom_right_and_normalises(steered):
    cfg = steered[0].config
    rgb = np.full((60, 120, 3), 200, np.uint8)
    prepared = prepare_images(rgb, cfg)
    S, s = cfg.mask.image_size, cfg.vision.image_size
    assert prepared.mask_image.shape == (3, S, S) and prepared.siglip.shape == (3, s, s)
    assert prepared.resized_hw == (64, 128) and prepared.original_hw == (60, 120)
    mean, std = np.array(cfg.mask.pixel_mean), np.array(cfg.mask.pixel_std)
    np.testing.assert_allclose(prepared.mask_image[:, 0, 0].numpy(), (200 - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(prepared.mask_image[:, 100, 5].numpy(), (128 - mean) / std, rtol=1e-5)  # padding
    np.testing.assert_allclose(prepared.siglip.numpy(), (200 / 255 - 0.5) / 0.5, rtol=1e-5)
    with pytest.raises(UsageError):
        prepare_images(rgb.astype(np.float32), cfg)


def test_crop_back_keeps_an_object_where_it_was_on_a_non_square_chip():
    canvas, height, width = 128, 60, 120  # resized (64, 128): the bottom half of the canvas is padding
    truth = np.zeros((height, width), bool)
    truth[15:30, 60:90] = True
    big = torch.full((1, 1, canvas, canvas), -10.0)
    big[0, 0, 16:32, 64:96] = 10.0  # the same object on the canvas (×64/60 vertically, ×128/120 horizontally)
    logits = torch.nn.functional.avg_pool2d(big, 4)  # [1,1,32,32] at S/4, like the decoder output
    out = crop_back(logits, (64, 128), (height, width), canvas)
    assert out.shape == (1, height, width)
    predicted = out[0].numpy() > 0
    iou = (predicted & truth).sum() / (predicted | truth).sum()
    assert iou > 0.85
