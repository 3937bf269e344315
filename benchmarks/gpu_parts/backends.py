"""The three backends at their real sizes: the batch-size sweep, batch 1, re-prompting and the profiles.

Per backend (random weights, the suite's device and dtype, the image cache off unless re-prompting):

* **sweep** – chips/s at each batch size of ``Settings.sweep`` until out-of-memory (:func:`~.timing.sweep`): the
  best batch, ms/chip at batch 1, peak GPU memory;
* **re-prompt** – a segmenter with the image cache on: the same chips by a first prompt, then by a second
  (the second reuses each chip's image state); the figure is second / first;
* **profile** – one call under ``torch.profiler`` at batch 1 and at the best batch: the top ops and how busy the
  GPU was (the "why" when a target is missed).

SegEarth-R2 also: each forced answer length (``Settings.answer_lengths``; EOS ignored, the last id ``[SEG]``, so
random weights decode and decode masks like a real answer), its stage timers (``stage_times``) at batch 1 and the
best batch, and the naive official-style loop (batch 1, ``generate(output_hidden_states=True)``, mask branch per
chip: ``benchmarks/model_inference.py``'s). SAM3 also: 1 and 4 concepts per prompt; its score threshold is set
from one chip so that random weights keep ``Settings.instances_per_concept`` instances per concept (the real
model's typical count; with random weights nearly every score is alike, and the post-processing cost grows with
the instances kept).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_parts.models import r1_segmenter, r2_segmenter, sam3_segmenter, with_cache
from gpu_parts.record import Recorder
from gpu_parts.settings import Settings
from gpu_parts.timing import peak_mib, reset_peak, sweep, timed, top_ops

R2_PROMPTS = ("Find all buildings with a red roof next to the river.", "where could a helicopter land?")
R1_PROMPTS = ("the white storage tank on the left of the large building", "the largest building")
SAM3_CONCEPTS = ("buildings", "swimming pools", "roads", "trees")


def describe_model(segmenter) -> dict[str, Any]:
    return {"class": type(segmenter).__name__, "parameters": sum(p.numel() for p in segmenter.model.parameters()),
            "chip_size": segmenter.chip_size, "device": segmenter.device_description}


def chip_pool(segmenter, settings: Settings, seed: int = 1) -> list[np.ndarray]:
    from segearth_geo.model.testing import random_chips

    return random_chips(segmenter.chip_size, max(settings.sweep), seed)


def reprompt(segmenter, settings: Settings, prompts: tuple[str, str], batch: int, stages: bool = False) -> dict:
    """Second prompt / first prompt on the same chips, image cache on (see the module docstring).

    A warm-up pair (other chips, both prompts) runs first on a throw-away cache, so both paths are warm. Then
    ``Settings.reprompt_repeats`` pairs, each on new chips and a fresh cache; the fastest first and second count.
    ``stages``: SegEarth-R2's stage timers on each timed call (what the second prompt still pays for).
    """
    from segearth_geo.model.testing import random_chips

    count = settings.reprompt_chips
    batch = max(1, min(batch, count))
    pairs, cache, split = [], {}, {}
    for repeat in range(settings.reprompt_repeats + 1):  # the first pair warms up
        twin = with_cache(segmenter)
        twin.batch_size = batch
        chips = random_chips(segmenter.chip_size, count if repeat else batch, seed=11 + repeat)
        reset_peak(segmenter.device)
        seconds = [_timed_prompt(twin, chips, prompt, split if repeat and stages else None, which)
                   for prompt, which in zip(prompts, ("first", "second"))]
        if repeat:
            pairs.append([round(s, 4) for s in seconds])
            cache = twin.cache.stats().to_dict()
        twin.cache.clear()
    first, second = min(p[0] for p in pairs), min(p[1] for p in pairs)
    out = {"chips": count, "batch": batch, "prompts": list(prompts), "pairs_s": pairs, "first_s": first,
           "second_s": second, "ratio": round(second / first, 4), "cache": cache,
           "peak_mib": peak_mib(segmenter.device)}
    if split:
        out["stages_ms_per_chip"] = split
    return out


def _timed_prompt(segmenter, chips, prompt: str, split: dict | None, which: str) -> float:
    """Seconds of one ``segment`` call; with ``split``, SegEarth-R2's stages of it (ms/chip) under ``which``."""
    from segearth_geo.model.segearth_r2.segmenter import StageTimes

    if split is not None:
        segmenter.stage_times = StageTimes()
    seconds, _ = timed(segmenter.device, lambda: segmenter.segment(chips, prompt))
    if split is not None:
        split[which] = {k: round(v / len(chips) * 1000, 2) for k, v in segmenter.stage_times.seconds.items()}
        segmenter.stage_times = None
    return seconds


def profiles(rec: Recorder, settings: Settings, segmenter, chips, prompt: str, best: dict | None) -> None:
    """Top ops at the best batch, and at batch 1 (``Settings.profile_batch1``)."""
    found = {}
    if settings.profile_batch1 or not best or best["batch"] == 1:
        found["batch1"] = top_ops(segmenter, chips, prompt, 1)
    if best and best["batch"] != 1:
        found["best"] = top_ops(segmenter, chips, prompt, best["batch"])
    rec.put("profile", found)


def _best_batch(rec: Recorder, key: str, default: int = 1) -> int:
    best = (rec.data.get(key) or {}).get("best")
    return best["batch"] if best else default


# ------------------------------------------------------------------------------------------------- SegEarth-R2
def r2_stage_split(segmenter, chips, prompt: str, batch: int) -> dict[str, Any]:
    """One call of ``batch`` chips with the stage timers on: ms/chip per stage and the rest."""
    from segearth_geo.model.segearth_r2.segmenter import StageTimes

    segmenter.batch_size = batch
    segmenter.stage_times = StageTimes()
    try:
        wall, _ = timed(segmenter.device, lambda: segmenter.segment([chips[k % len(chips)] for k in range(batch)],
                                                                     prompt))
        stages = {k: round(1000 * v / batch, 3) for k, v in segmenter.stage_times.seconds.items()}
    finally:
        segmenter.stage_times = None
    return {"batch": batch, "ms_per_chip": round(1000 * wall / batch, 3), "stages_ms_per_chip": stages,
            "other_ms_per_chip": round(1000 * wall / batch - sum(stages.values()), 3)}


def r2_naive(segmenter, chips, settings: Settings, length: int) -> dict[str, Any]:
    """``benchmarks/model_inference.py``'s naive official-style loop over ``Settings.naive_chips`` chips."""
    from model_inference import naive_official_loop

    row = naive_official_loop(segmenter.model, segmenter.tokenizer, chips[: settings.naive_chips], segmenter.device,
                              segmenter.dtype, length)
    return {"chips": row["chips"], "ms_per_chip": round(1000 * row["s_per_chip"], 3),
            "chips_per_s": round(row["chips_per_s"], 3), "peak_mib": round(row["peak_mib"], 1)}


def _build(rec: Recorder, make, preset: str, settings: Settings):
    """The part's segmenter (``make(preset, device, dtype)``), recorded; ``None`` when building it failed (the
    step records the error)."""
    segmenter = None
    with rec.step("build"):
        segmenter = make(preset, settings.device, settings.dtype)
        rec.put("model", {"preset": preset, **describe_model(segmenter)})
    return segmenter


def r2_part(settings: Settings, inputs: dict, rec: Recorder) -> None:
    segmenter = _build(rec, r2_segmenter, settings.r2_preset, settings)
    if segmenter is None:
        return
    chips = chip_pool(segmenter, settings)
    prompt = R2_PROMPTS[0]
    for length in settings.answer_lengths:
        segmenter.forced_answer_length = length
        with rec.step(f"sweep k{length}"):
            rec.put(f"k{length}", sweep(segmenter, chips, prompt, settings.sweep, settings.box, settings.max_call_s,
                                        lambda text, k=length: rec.say(f"answer {k} ids, {text}")))
        with rec.step(f"stages k{length}"):
            best = _best_batch(rec, f"k{length}")
            split = {"batch1": r2_stage_split(segmenter, chips, prompt, 1)}
            if best != 1:
                split["best"] = r2_stage_split(segmenter, chips, prompt, best)
            rec.put(f"stages_k{length}", split)
        with rec.step(f"naive k{length}"):
            rec.put(f"naive_k{length}", r2_naive(segmenter, chips, settings, length))
            rec.say(f"naive official loop, answer {length} ids: {rec.data[f'naive_k{length}']['ms_per_chip']:.1f} "
                    "ms/chip")
    first = settings.answer_lengths[0]
    segmenter.forced_answer_length = first
    with rec.step("profile"):
        profiles(rec, settings, segmenter, chips, prompt, (rec.data.get(f"k{first}") or {}).get("best"))
    with rec.step("re-prompt"):
        rec.put("reprompt", reprompt(segmenter, settings, R2_PROMPTS, _best_batch(rec, f"k{first}"), stages=True))
        rec.say(f"re-prompt (answer {first} ids): second / first = {rec.data['reprompt']['ratio']:.3f}")


# ------------------------------------------------------------------------------------------------- SegEarth-R1
def r1_part(settings: Settings, inputs: dict, rec: Recorder) -> None:
    segmenter = _build(rec, r1_segmenter, settings.r1_preset, settings)
    if segmenter is None:
        return
    chips = chip_pool(segmenter, settings)
    with rec.step("sweep"):
        rec.put("c1", sweep(segmenter, chips, R1_PROMPTS[0], settings.sweep, settings.box, settings.max_call_s,
                            rec.say))
    with rec.step("profile"):
        profiles(rec, settings, segmenter, chips, R1_PROMPTS[0], (rec.data.get("c1") or {}).get("best"))
    with rec.step("re-prompt"):
        rec.put("reprompt", reprompt(segmenter, settings, R1_PROMPTS, _best_batch(rec, "c1")))
        rec.say(f"re-prompt: second / first = {rec.data['reprompt']['ratio']:.3f}")


# ------------------------------------------------------------------------------------------------- SAM3
def calibrate_score_threshold(segmenter, chip: np.ndarray, concept: str, keep: int) -> dict[str, Any]:
    """The score threshold that keeps about ``keep`` instances of ``concept`` on ``chip`` (set on the segmenter)."""
    segmenter.score_threshold = 0.0
    scores = sorted((t.score for t in segmenter.segment([chip], concept)[0].targets), reverse=True)
    if len(scores) > keep:
        threshold = (scores[keep - 1] + scores[keep]) / 2
    else:
        threshold = 0.0
    threshold = float(min(max(threshold, 0.0), 0.999999))
    segmenter.score_threshold = threshold
    kept = sum(s > threshold for s in scores)
    spread = [round(float(scores[0]), 6), round(float(scores[-1]), 6)] if scores else []
    return {"score_threshold": threshold, "instances_kept": kept, "queries": len(scores), "score_range": spread}


def sam3_part(settings: Settings, inputs: dict, rec: Recorder) -> None:
    segmenter = _build(rec, sam3_segmenter, settings.sam3_preset, settings)
    if segmenter is None:
        return
    chips = chip_pool(segmenter, settings)
    with rec.step("calibrate"):
        rec.put("calibration", calibrate_score_threshold(segmenter, chips[0], SAM3_CONCEPTS[0],
                                                         settings.instances_per_concept))
        rec.say(f"score threshold {segmenter.score_threshold:.6f} keeps "
                f"{rec.data['calibration']['instances_kept']} instances per concept")
    for count in settings.concepts:
        with rec.step(f"sweep c{count}"):
            prompt = ", ".join(SAM3_CONCEPTS[:count])
            rec.put(f"c{count}", sweep(segmenter, chips, prompt, settings.sweep, settings.box, settings.max_call_s,
                                       lambda text, c=count: rec.say(f"{c} concept(s), {text}")))
    with rec.step("profile"):
        profiles(rec, settings, segmenter, chips, SAM3_CONCEPTS[0], (rec.data.get("c1") or {}).get("best"))
    with rec.step("re-prompt"):
        rec.put("reprompt", reprompt(segmenter, settings, SAM3_CONCEPTS[:2], _best_batch(rec, "c1")))
        rec.say(f"re-prompt: second / first = {rec.data['reprompt']['ratio']:.3f}")
