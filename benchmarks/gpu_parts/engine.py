"""The engine end to end: ``segment_raster`` with SAM3 on a generated scene, and whether its CPU side keeps up.

Four measurements on the scene of :mod:`.scene` (``Settings.scene_side``², one prompt, SAM3's best batch):

1. **run** – ``segment_raster`` with the real SAM3 segmenter (random weights, warmed up, score threshold set on
   a scene chip as in :mod:`.backends`), wrapped so that each ``segment`` call's start and end are kept: the
   model's time (inside the calls), the **GPU waiting** time (between consecutive calls: the chip loop waiting
   for the reader thread, or blocked by busy vectorisers) and its share of the chip loop;
2. **CPU ceiling, model masks** – the same run with a segmenter that replays run 1's predictions at no cost, so
   the run is only reading, stitching and vectorising: the chips/s the CPU side sustains;
3. **CPU ceiling, object masks** – the same with each chip's buildings as the mask (what a trained model
   returns; random weights give masks of no realistic shape, whose polygons may be many more or fewer);
4. **one thread** – reading a chip and vectorising one chip (:meth:`Stitcher.add`), ms each, on the first chips.

The CPU side is not the bottleneck when the GPU waits ≤ 10 % of the chip loop and both ceilings exceed the
model's own chips/s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gpu_parts.backends import calibrate_score_threshold
from gpu_parts.models import sam3_segmenter
from gpu_parts.record import Recorder
from gpu_parts.scene import Buildings, object_targets, write_scene
from gpu_parts.settings import Settings
from gpu_parts.timing import peak_mib, reset_peak

PROMPT = "buildings"
KEPT_CHIPS = 32  # predictions of the first chips kept for the replays (cycled over the scene)
KEPT_BYTES = 2 * 2**30
WAIT_LIMIT = 0.10  # the GPU may wait at most this share of the chip loop


class TimedSegmenter:
    """A segmenter that keeps each ``segment`` call's start/end and the first chips' predictions."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.chip_size = inner.chip_size
        self.capabilities = getattr(inner, "capabilities", frozenset())
        self.device_description = getattr(inner, "device_description", None)
        self.calls: list[tuple[float, float, int]] = []  # (start, end, chips)
        self.kept: list[list] = []
        self.kept_bytes = 0
        self.targets = 0

    def segment(self, chips, prompt):
        began = time.perf_counter()
        predictions = self.inner.segment(chips, prompt)
        self.calls.append((began, time.perf_counter(), len(chips)))
        for prediction in predictions:
            self.targets += len(prediction.targets)
            size = sum(t.probability.nbytes for t in prediction.targets)
            if len(self.kept) < KEPT_CHIPS and self.kept_bytes + size <= KEPT_BYTES:
                self.kept.append(prediction.targets)
                self.kept_bytes += size
        return predictions

    def cache_stats(self) -> dict:
        return self.inner.cache_stats()


class ReplaySegmenter:
    """Returns recorded targets (cycled, fitted to each chip's shape) at no model cost."""

    def __init__(self, chip_size: int, samples: list[list]) -> None:
        self.chip_size, self.samples, self.served = chip_size, samples or [[]], 0
        self.seconds = 0.0

    def segment(self, chips, prompt):
        from segearth_geo.prediction import ChipPrediction, Target

        began = time.perf_counter()
        out = []
        for chip in chips:
            targets = self.samples[self.served % len(self.samples)]
            self.served += 1
            out.append(ChipPrediction(answer="replay", targets=[
                Target(t.label, _fit(t.probability, chip.shape[:2]), t.score) for t in targets]))
        self.seconds += time.perf_counter() - began
        return out


def _fit(probability: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if probability.shape == shape:
        return probability
    out = np.zeros(shape, dtype=np.float32)
    h, w = min(shape[0], probability.shape[0]), min(shape[1], probability.shape[1])
    out[:h, :w] = probability[:h, :w]
    return out


def loop_figures(calls: list[tuple[float, float, int]], began: float, ended: float) -> dict[str, Any]:
    """Model time, GPU waiting (gaps between calls) and its share of the chip loop, head and tail."""
    chips = sum(c for _, _, c in calls)
    model = sum(end - start for start, end, _ in calls)
    gaps = [calls[k + 1][0] - calls[k][1] for k in range(len(calls) - 1)]
    loop = calls[-1][1] - calls[0][0]
    return {"calls": len(calls), "chips": chips, "wall_s": round(ended - began, 3),
            "chips_per_s": round(chips / (ended - began), 3), "model_s": round(model, 3),
            "model_chips_per_s": round(chips / model, 3), "gpu_wait_s": round(sum(gaps), 3),
            "gpu_wait_share": round(sum(gaps) / loop, 4) if loop > 0 else 0.0,
            "longest_wait_ms": round(1000 * max(gaps, default=0.0), 2),
            "head_s": round(calls[0][0] - began, 3), "tail_s": round(ended - calls[-1][1], 3)}


def timed_run(source: Path, segmenter, batch: int) -> tuple[float, float, Any]:
    from segearth_geo.engine import segment_raster

    began = time.perf_counter()
    segments = segment_raster(source, PROMPT, segmenter=segmenter, batch_size=batch)
    return began, time.perf_counter(), segments


def ceiling(source: Path, chip_size: int, samples: list[list], batch: int) -> dict[str, Any]:
    """chips/s of the engine with a zero-cost segmenter replaying ``samples``."""
    replay = ReplaySegmenter(chip_size, samples)
    began, ended, segments = timed_run(source, replay, batch)
    chips = replay.served
    return {"chips": chips, "wall_s": round(ended - began, 3), "chips_per_s": round(chips / (ended - began), 3),
            "replay_s": round(replay.seconds, 3), "polygons": len(segments),
            "targets_per_chip": round(sum(len(s) for s in samples) / max(len(samples), 1), 2)}


def one_thread(source: Path, chip_size: int, buildings: Buildings, samples: list[list], count: int) -> dict:
    """ms to read one chip and to vectorise one chip (model masks, object masks), on the first ``count`` chips."""
    from segearth_geo.chips import chip_grid, default_overlap
    from segearth_geo.raster import open_scene
    from segearth_geo.stitch import Stitcher

    read = vector_model = vector_objects = 0.0
    with open_scene(source) as reader:
        scene = reader.scene
        chips = chip_grid(scene.width, scene.height, chip_size, default_overlap(chip_size))[:count]
        by_model, by_objects = (Stitcher(scene.width, scene.height, 0.5, default_label=PROMPT) for _ in range(2))
        for k, chip in enumerate(chips):
            began = time.perf_counter()
            rgb, valid = reader.read(chip.window)
            read += time.perf_counter() - began
            targets = [type(t)(t.label, _fit(t.probability, rgb.shape[:2]), t.score)
                       for t in samples[k % len(samples)]] if samples else []
            began = time.perf_counter()
            by_model.add(chip, targets, valid)
            vector_model += time.perf_counter() - began
            objects = object_targets(buildings, chip.window)
            began = time.perf_counter()
            by_objects.add(chip, objects, valid)
            vector_objects += time.perf_counter() - began
    n = max(len(chips), 1)
    return {"chips": len(chips), "read_ms": round(1000 * read / n, 2), "vectorise_model_ms": round(1000 * vector_model / n, 2),
            "vectorise_objects_ms": round(1000 * vector_objects / n, 2)}


def object_samples(source: Path, chip_size: int, buildings: Buildings, count: int) -> list[list]:
    from segearth_geo.chips import chip_grid, default_overlap
    from segearth_geo.raster import open_scene

    with open_scene(source) as reader:
        scene = reader.scene
        chips = chip_grid(scene.width, scene.height, chip_size, default_overlap(chip_size))[:count]
    return [object_targets(buildings, chip.window) for chip in chips]


def first_chips(source: Path, chip_size: int, count: int) -> list[np.ndarray]:
    from segearth_geo.chips import chip_grid, default_overlap
    from segearth_geo.raster import open_scene

    with open_scene(source) as reader:
        scene = reader.scene
        chips = chip_grid(scene.width, scene.height, chip_size, default_overlap(chip_size))
        return [reader.read(chip.window)[0] for chip in chips[:count]]


def engine_part(settings: Settings, inputs: dict, rec: Recorder) -> None:
    batch = int(inputs.get("batch") or (8 if settings.device.startswith("cuda") else 4))
    with tempfile.TemporaryDirectory(prefix="gpu-suite-scene-") as folder:
        source = Path(folder) / "scene.tif"
        buildings = segmenter = None
        with rec.step("write scene"):
            buildings = write_scene(source, settings.scene_side)
            size = source.stat().st_size
            rec.put("scene", {"side": settings.scene_side, "bytes": size, "buildings": len(buildings)})
            rec.say(f"scene {settings.scene_side}² written ({size / 2**20:.0f} MiB)")
        with rec.step("build"):
            segmenter = sam3_segmenter(settings.sam3_preset, settings.device, settings.dtype, batch_size=batch)
        if buildings is None or segmenter is None:
            return
        chip_size, samples = segmenter.chip_size, []
        with rec.step("warm-up"):
            chips = first_chips(source, chip_size, batch)
            rec.put("calibration", calibrate_score_threshold(segmenter, chips[0], PROMPT,
                                                             settings.instances_per_concept))
            segmenter.segment(chips, PROMPT)
        with rec.step("run"):
            timed = TimedSegmenter(segmenter)
            reset_peak(segmenter.device)
            began, ended, segments = timed_run(source, timed, batch)
            samples = timed.kept
            run = loop_figures(timed.calls, began, ended)
            run.update(batch=batch, polygons=len(segments), targets_per_chip=round(timed.targets / run["chips"], 2),
                       peak_mib=peak_mib(segmenter.device))
            rec.put("run", run)
            rec.say(f"segment_raster: {run['chips']} chips, {run['chips_per_s']:.2f} chips/s end to end, model "
                    f"{run['model_chips_per_s']:.2f} chips/s, GPU waiting {100 * run['gpu_wait_share']:.1f} %")
        with rec.step("ceiling model masks"):
            rec.put("ceiling_model", ceiling(source, chip_size, samples, batch))
            rec.say(f"CPU side alone, model masks: {rec.data['ceiling_model']['chips_per_s']:.2f} chips/s")
        with rec.step("ceiling object masks"):
            objects = object_samples(source, chip_size, buildings, KEPT_CHIPS)
            rec.put("ceiling_objects", ceiling(source, chip_size, objects, batch))
            rec.say(f"CPU side alone, object masks: {rec.data['ceiling_objects']['chips_per_s']:.2f} chips/s")
        with rec.step("one thread"):
            rec.put("one_thread", one_thread(source, chip_size, buildings, samples, min(16, KEPT_CHIPS)))
        rec.put("verdict", verdict(rec.data))


def verdict(data: dict) -> dict[str, Any]:
    """Whether the CPU side held the GPU back (see the module docstring)."""
    run = data.get("run")
    if not run:
        return {"cpu_bottleneck": None, "why": "the engine run did not finish"}
    ceilings = {k: data[k]["chips_per_s"] for k in ("ceiling_model", "ceiling_objects") if k in data}
    reasons = []
    if run["gpu_wait_share"] > WAIT_LIMIT:
        reasons.append(f"the GPU waited {100 * run['gpu_wait_share']:.1f} % of the chip loop")
    for name, value in ceilings.items():
        if value < run["model_chips_per_s"]:
            reasons.append(f"{name.replace('_', ' ')} {value:.1f} chips/s < model {run['model_chips_per_s']:.1f} chips/s")
    return {"cpu_bottleneck": bool(reasons), "why": "; ".join(reasons) or "the CPU side kept up",
            "ceilings": ceilings}
