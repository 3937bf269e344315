"""One contract for every backend of the model family, run over SegEarth-R2, SegEarth-R1 and SAM3.

Each backend's tiny random checkpoint is written in its real layout (:mod:`segearth_geo.model.testing`) and loaded
through :func:`~segearth_geo.load_segmenter`, so the registry picks the backend from ``config.json`` and the load
options go the way users' do. Every backend must:

* declare its capabilities and say what it runs on (read through :func:`describe_segmenter`);
* give the same answers, labels, scores and masks (within 1e-5) with its per-chip image cache as without, in any
  order of chips and prompts, reusing the chips' image state for a second prompt, within a bound that evicts;
* give results that do not depend on batch composition or order;
* honour the load options it takes (``cache_mb``, ``batch_size``, ``template`` / ``score_threshold``) and refuse
  the one it does not take in one line; refuse a device this machine lacks in one line;
* refuse a chip that is not RGB within its chip size with one :class:`UsageError` message.

What is specific to one backend (R2's teacher forcing and seg passes, R1's two-step LLM and template prefixes,
SAM3's vision-encoder skipping and text-feature reuse) stays in its own test files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import torch
from model_fixtures import random_chip, tiny_model_and_tokenizer

from segearth_geo import load_segmenter
from segearth_geo.errors import UsageError
from segearth_geo.model import testing
from segearth_geo.prediction import ChipPrediction, Segmenter, describe_segmenter

torch.set_num_threads(1)


def _r2_chips() -> list[np.ndarray]:
    return [random_chip(128, 128, 0), random_chip(96, 128, 1), random_chip(128, 70, 2), random_chip(128, 128, 3),
            random_chip(40, 50, 4)]


def _random_chips(shapes) -> Callable[[], list[np.ndarray]]:
    def chips() -> list[np.ndarray]:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in shapes]

    return chips


def _write_r2(folder):
    model, tokenizer = tiny_model_and_tokenizer(seed=0, steer=True)  # steered: some chips answer with [SEG]
    return testing.write_random_r2(folder, model=model, tokenizer=tokenizer)


S3 = testing.SAM3_TINY_IMAGE_SIZE


@dataclass(frozen=True)
class Case:
    """One backend's tiny checkpoint and what the contract expects of it.

    Attributes:
        write: writes the checkpoint into a folder, returns the folder.
        chips: the test chips (all within ``chip_size``, several sizes).
        prompts: prompts for which the random weights give targets on some chips.
        chip_size, capabilities, cpu_batch_size: what the segmenter must report.
        reused_tier: the cache tier every chip asks for on every prompt (its hits show image state reuse).
        options: load options every load gets (SAM3: threshold 0, so random weights give instances).
        chip_prompts: one prompt per chip, for backends that declare ``"predict"``.
        takes: a backend option it takes and the attribute that must show it.
        refuses: a backend option it does not take.
        tune: what a test adjusts after loading (R2: a short generation limit).
        batch_mask_atol: how far masks may move with the batch (SAM3's detector sums over the batch in
            another order: 1e-4; scores stay within 1e-5).
    """

    write: Callable
    chips: Callable[[], list[np.ndarray]]
    prompts: tuple[str, ...]
    chip_size: int
    capabilities: frozenset[str]
    cpu_batch_size: int
    reused_tier: str
    takes: tuple[str, object, str]
    refuses: tuple[str, object]
    options: dict = field(default_factory=dict)
    chip_prompts: tuple[str, ...] = ()
    tune: Callable = lambda segmenter: None
    batch_mask_atol: float = 1e-5


CASES = {
    "segearth-r2": Case(
        write=_write_r2, chips=_r2_chips,
        prompts=("find the roofs", "segment the cars parked next to the trucks, the trees and the water", "houses"),
        chip_size=128, capabilities=frozenset({"image_cache", "predict"}), cpu_batch_size=2, reused_tier="prefix",
        takes=("template", "llama2", "template"), refuses=("score_threshold", 0.3),
        chip_prompts=("find the roofs", "segment the cars parked next to the trucks, the trees and the water",
                      "where?", "the river", "houses"),
        tune=lambda segmenter: setattr(segmenter, "max_new_tokens", 12)),
    "segearth-r1": Case(
        write=lambda folder: testing.write_random_r1(folder, seed=5),
        chips=_random_chips([(256, 256), (100, 60), (37, 250), (256, 180), (1, 1)]),
        prompts=("water", "the white storage tank on the left of the large building", "cars"),
        chip_size=256, capabilities=frozenset({"image_cache", "predict"}), cpu_batch_size=1, reused_tier="prefix",
        takes=("template", "reasoning", "template"), refuses=("score_threshold", 0.3),
        chip_prompts=("water", "the white storage tank on the left of the large building", "cars", "trees",
                      "a road")),
    "sam3": Case(
        write=lambda folder: testing.write_random_sam3(folder, layout="hub"),
        chips=_random_chips([(S3, S3), (70, 50), (S3, 90), (1, 1), (40, S3)]),
        prompts=("roofs, trees", "cars", "ships, piers, docks"),
        chip_size=S3, capabilities=frozenset({"image_cache", "scores"}), cpu_batch_size=1, reused_tier="vision",
        takes=("score_threshold", 0.25, "score_threshold"), refuses=("template", "referring"),
        options={"score_threshold": 0.0}, batch_mask_atol=1e-4),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def backend(request, tmp_path_factory):
    """``(case, folder, load)``: ``load(**options)`` is ``load_segmenter(folder, device="cpu", ...)``."""
    case = CASES[request.param]
    folder = case.write(tmp_path_factory.mktemp(request.param) / "checkpoint")

    def load(**options):
        segmenter = load_segmenter(folder, device="cpu", **{**case.options, **options})
        case.tune(segmenter)
        return segmenter

    return case, folder, load


@pytest.fixture(scope="module")
def chips(backend):
    return backend[0].chips()


def _same(a: ChipPrediction, b: ChipPrediction, atol: float = 1e-5, mask_atol: float | None = None) -> None:
    assert a.answer == b.answer
    assert [t.label for t in a.targets] == [t.label for t in b.targets]
    assert [t.score is None for t in a.targets] == [t.score is None for t in b.targets]
    np.testing.assert_allclose([t.score or 0.0 for t in a.targets], [t.score or 0.0 for t in b.targets], atol=atol)
    for x, y in zip(a.targets, b.targets):
        assert x.probability.shape == y.probability.shape
        np.testing.assert_allclose(x.probability, y.probability, atol=mask_atol or atol)


# ---------------------------------------------------------------------------------------------- what it declares
def test_it_declares_capabilities_chip_size_and_device(backend):
    case, folder, load = backend
    segmenter = load()
    info = describe_segmenter(segmenter)
    assert isinstance(segmenter, Segmenter)
    assert info.capabilities == case.capabilities == segmenter.capabilities
    assert info.chip_size == segmenter.chip_size == case.chip_size
    assert info.device == segmenter.device_description == "cpu (CPU, float32)"
    assert segmenter.batch_size == case.cpu_batch_size  # the backend's CPU default
    assert set(segmenter.cache_stats()) >= {"hits", "misses", "bytes", "items", "max_bytes"}
    assert load(dtype="bfloat16").device_description == "cpu (CPU, bfloat16)"


# ---------------------------------------------------------------------------------------------- the image cache
def test_cached_results_equal_uncached_in_any_order_of_prompts_and_chips(backend, chips):
    case, _, load = backend
    plain, cached = load(batch_size=3, cache_mb=0), load(batch_size=3, cache_mb=64)
    assert plain.cache.max_bytes == 0 and cached.cache.max_bytes == 64 * 2**20
    rng = np.random.default_rng(1)
    found = False
    for round_ in range(3):  # the same chips come back with other prompts, in other orders
        order = rng.permutation(len(chips))
        images = [chips[k] for k in order]
        prompt = case.prompts[round_ % len(case.prompts)]
        for got, want in zip(cached.segment(images, prompt), plain.segment(images, prompt)):
            _same(got, want)
            found = found or bool(got.targets)
    assert found, "the fixture must give targets on some chips"
    stats = cached.cache_stats()
    tier = case.reused_tier
    assert stats["misses"][tier] == len(chips) and stats["hits"][tier] == 2 * len(chips)  # prompts 2, 3 reuse
    assert 0 < stats["bytes"] <= stats["max_bytes"]
    assert plain.cache_stats()["items"] == 0


def test_a_batch_mixing_hits_and_misses(backend, chips):
    case, _, load = backend
    plain, cached = load(batch_size=5, cache_mb=0), load(batch_size=5, cache_mb=64)
    cached.segment([chips[1], chips[2]], case.prompts[0])  # warm two chips
    mixed = cached.segment(chips, case.prompts[1])  # 2 hits and 3 misses in one batch
    for got, want in zip(mixed, plain.segment(chips, case.prompts[1])):
        _same(got, want)
    stats = cached.cache_stats()
    assert stats["hits"][case.reused_tier] == 2 and stats["misses"][case.reused_tier] == 5


def test_a_small_bound_evicts_mid_run_and_holds(backend, chips):
    case, _, load = backend
    probe = load(batch_size=1, cache_mb=64)
    probe.segment(chips[:1], case.prompts[0])
    bound_mb = 2.5 * probe.cache.bytes / 2**20  # room for two chips and a half
    cached, plain = load(batch_size=2, cache_mb=bound_mb), load(batch_size=2, cache_mb=0)
    for prompt in (case.prompts[0], case.prompts[1], case.prompts[0]):
        got = cached.segment(chips, prompt)
        assert cached.cache.bytes <= cached.cache.max_bytes
        for a, b in zip(got, plain.segment(chips, prompt)):
            _same(a, b)
    stats = cached.cache_stats()
    assert stats["evictions"] > 0 and stats["bytes"] <= stats["max_bytes"]


# ---------------------------------------------------------------------------------------------- batching
def test_results_do_not_depend_on_batch_composition_or_order(backend, chips):
    case, _, load = backend
    prompt = case.prompts[0]
    together = load(batch_size=len(chips), cache_mb=0).segment(chips, prompt)
    single = load(batch_size=1, cache_mb=0)
    alone = [single.segment([chip], prompt)[0] for chip in chips]
    order = [3, 0, 4, 2, 1]
    shuffled = load(batch_size=3, cache_mb=0).segment([chips[k] for k in order], prompt)
    for k in range(len(chips)):
        _same(alone[k], together[k], mask_atol=case.batch_mask_atol)
    for position, k in enumerate(order):
        _same(shuffled[position], together[k], mask_atol=case.batch_mask_atol)
    assert any(p.targets for p in together), "the fixture must give targets on some chips"


def test_predict_with_a_prompt_per_chip_does_not_depend_on_batch_composition_or_order(backend, chips):
    """Backends that declare ``predict``: prompts of different lengths in one batch (padding) change nothing."""
    case, _, load = backend
    if not describe_segmenter(load()).has("predict"):
        pytest.skip("the backend does not declare predict")
    prompts = list(case.chip_prompts)
    together = load(batch_size=5, cache_mb=0).predict(chips, prompts)
    counts = [len(p.targets) for p in together]
    assert any(counts)
    single = load(batch_size=1, cache_mb=0)
    for k, chip in enumerate(chips):
        _same(single.predict([chip], [prompts[k]])[0], together[k])
    order = [3, 0, 4, 2, 1]
    permuted = load(batch_size=3, cache_mb=0).predict([chips[k] for k in order], [prompts[k] for k in order])
    for position, k in enumerate(order):
        _same(permuted[position], together[k])
    again = load(batch_size=5, cache_mb=0).predict(chips, prompts)
    for a, b in zip(again, together):
        _same(a, b, atol=0)  # deterministic


# ---------------------------------------------------------------------------------------------- options
def test_options_it_takes_are_honoured(backend):
    case, folder, load = backend
    name, value, attribute = case.takes
    assert getattr(load(**{name: value}), attribute) == value
    assert load(batch_size=3).batch_size == 3
    assert load().cache.max_bytes > 0  # the default bound fits the device
    assert type(load()).from_pretrained(folder, device="cpu", cache_mb=2, **case.options).cache.max_bytes == 2 * 2**20


def test_an_option_it_does_not_take_is_refused_in_one_line(backend):
    case, folder, load = backend
    name, value = case.refuses
    with pytest.raises(UsageError, match=f"does not take {name}") as info:
        load_segmenter(folder, device="cpu", **{name: value})
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="cache_mb"):
        load(cache_mb=-1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_device_this_machine_lacks_is_refused_in_one_line(backend):
    _, folder, _ = backend
    with pytest.raises(UsageError, match="'cuda' was requested but CUDA is not available") as info:
        load_segmenter(folder, device="cuda")
    assert "\n" not in str(info.value)


def test_chips_that_are_not_rgb_within_the_chip_size_are_one_usage_error(backend):
    case, _, load = backend
    segmenter = load()
    size = case.chip_size
    for shape in ((size + 1, 10, 3), (10, 10), (10, 10, 4)):
        with pytest.raises(UsageError, match=r"chip of shape .* is not an RGB array \(h, w, 3\)"):
            segmenter.segment([np.zeros(shape, dtype=np.uint8)], case.prompts[0])
