"""Benchmark evaluation loop: a segmenter over samples → gIoU / cIoU (spec §12).

Two modes:

* ``"generate"`` – the model writes its own answer; its k-th ``[SEG]`` mask is paired with
  the k-th reference mask (see :mod:`segearth_geo.evaluation.metrics`).
* ``"teacher-forced"`` – the reference answer is fed to the model and its ``[SEG]``s
  produce the masks (the official ``eval_seg`` path, spec §11). Needs a segmenter with
  ``predict(images, prompts, answers)`` (:class:`~segearth_geo.model.segearth_r2.segmenter.SegEarthR2Segmenter`).

Segmenters that declare the ``"predict"`` capability (``predict(images, prompts, answers=None)``, see
:func:`~segearth_geo.prediction.describe_segmenter`) are called on batches of
``batch_size`` samples; any other :class:`~segearth_geo.prediction.Segmenter` is called
per sample as ``segment([image], instruction)``. Images are passed whole, at their own
resolution, unless a side exceeds the segmenter's ``chip_size`` (the most the
:class:`~segearth_geo.prediction.Segmenter` contract allows): then the image is resized
(bilinear) so that its long side equals ``chip_size`` and the predicted probabilities are
resized back. For SegEarth-R2 this is the resize its own preprocessing does (spec §3.1),
so only the SigLIP input and the final upsampling differ slightly. Probabilities are
thresholded at 0.5 (= logit 0) at the image's original resolution, where the ground
truth lives.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segearth_geo.data.sample import Sample
from segearth_geo.errors import DatasetError, ModelError, OutputError, UsageError
from segearth_geo.evaluation.metrics import IoUSummary, TargetScore, pair_targets, summarize, summarize_per_dimension
from segearth_geo.prediction import ChipPrediction, Segmenter, Target, describe_segmenter

MODES = ("generate", "teacher-forced")
THRESHOLD = 0.5


@dataclass
class SampleResult:
    """One sample's outcome: the model's answer and one score per reference target."""

    id: str
    answer: str
    scores: list[TargetScore]
    n_predicted: int
    dimensions: dict[str, str] = field(default_factory=dict)

    @property
    def ious(self) -> list[float]:
        return [s.iou for s in self.scores]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "answer": self.answer,
            "ious": self.ious,
            "intersections": [s.intersection for s in self.scores],
            "unions": [s.union for s in self.scores],
            "n_predicted": self.n_predicted,
            "dimensions": dict(self.dimensions),
        }


@dataclass
class EvalResult:
    """Overall and per-dimension gIoU / cIoU (fractions in [0, 1]) and the per-sample results.

    ``n`` counts targets (the unit gIoU averages over); ``skipped`` is the reader's
    ``{reason: count}`` of samples that could not be used.
    """

    giou: float
    ciou: float
    n: int
    per_dimension: dict[str, IoUSummary]
    samples: list[SampleResult]
    mode: str = "generate"
    skipped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "giou": self.giou,
            "ciou": self.ciou,
            "n": self.n,
            "n_samples": len(self.samples),
            "mode": self.mode,
            "per_dimension": {key: summary.to_dict() for key, summary in self.per_dimension.items()},
            "skipped": dict(self.skipped),
            "samples": [s.to_dict() for s in self.samples],
        }

    def to_markdown(self) -> str:
        """A table with one row for all targets and one per dimension value (IoUs in %)."""
        rows = [("overall", IoUSummary(self.giou, self.ciou, self.n))] + list(self.per_dimension.items())
        lines = ["| subset | gIoU (%) | cIoU (%) | targets |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {100 * s.giou:.2f} | {100 * s.ciou:.2f} | {s.n} |" for name, s in rows]
        return "\n".join(lines)

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON atomically (temporary file in the same folder, then rename)."""
        path = Path(path).expanduser()
        if not path.parent.is_dir():
            raise OutputError(f"cannot write {path}: folder {path.parent} does not exist")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.to_dict(), handle, indent=1)
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc}") from exc
        return path


def _batches(samples: Iterable[Sample], size: int) -> Iterator[list[Sample]]:
    iterator = iter(samples)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def fit_to_chip(image: np.ndarray, chip_size: int) -> np.ndarray:
    """``image`` (H, W, 3) unchanged if both sides are ≤ ``chip_size``, else resized (bilinear)
    so that its long side equals ``chip_size`` (short side rounded, at least 1)."""
    height, width = image.shape[:2]
    if max(height, width) <= chip_size:
        return image
    scale = chip_size / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # PIL order (w, h)
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def _restore(prediction: ChipPrediction, fed_shape: tuple[int, int], shape: tuple[int, int], sample_id: str) -> ChipPrediction:
    """Check the targets have the fed image's size and bring them back to the original ``shape``."""
    targets = []
    for target in prediction.targets:
        if target.probability.shape != fed_shape:
            raise ModelError(
                f"sample {sample_id}: the segmenter returned a {target.probability.shape} mask for a {fed_shape} image"
            )
        probability = target.probability
        if fed_shape != shape:
            resized = Image.fromarray(probability.astype(np.float32)).resize(shape[::-1], Image.BILINEAR)
            probability = np.asarray(resized, dtype=np.float32)
        targets.append(Target(target.label, probability))
    return ChipPrediction(prediction.answer, targets)


def _predict(segmenter: Segmenter, batch: Sequence[Sample], mode: str) -> list[ChipPrediction]:
    info = describe_segmenter(segmenter)
    images = [fit_to_chip(s.image, info.chip_size) for s in batch]
    if info.has("predict"):
        answers = [s.answer for s in batch] if mode == "teacher-forced" else None
        predictions = list(segmenter.predict(images, [s.instruction for s in batch], answers=answers))
    else:
        predictions = [segmenter.segment([image], s.instruction)[0] for image, s in zip(images, batch)]
    if len(predictions) != len(batch):
        raise ModelError(f"the segmenter returned {len(predictions)} predictions for {len(batch)} images")
    return [
        _restore(p, image.shape[:2], s.image.shape[:2], s.id) for p, image, s in zip(predictions, images, batch)
    ]


def _score(sample: Sample, prediction: ChipPrediction) -> SampleResult:
    shape = sample.image.shape[:2]
    masks = [target.probability > THRESHOLD for target in prediction.targets]  # sizes checked by _restore
    return SampleResult(
        id=sample.id,
        answer=prediction.answer,
        scores=pair_targets(masks, sample.masks, shape),
        n_predicted=len(masks),
        dimensions=dict(sample.dimensions),
    )


def evaluate(
    segmenter: Segmenter,
    samples: Iterable[Sample],
    *,
    batch_size: int = 8,
    progress: bool = False,
    mode: str = "generate",
    limit: int | None = None,
) -> EvalResult:
    """Run ``segmenter`` over ``samples`` and score it (see the module docstring).

    Args:
        segmenter: a :class:`~segearth_geo.prediction.Segmenter`, optionally with
            ``predict(images, prompts, answers=None)`` (then called in batches).
        samples: :class:`Sample` objects, e.g. a reader from :func:`segearth_geo.data.open_dataset`
            (its ``skipped`` counts are copied into the result).
        batch_size: samples per ``predict`` call.
        progress: show a tqdm progress bar on stderr.
        mode: ``"generate"`` or ``"teacher-forced"``.
        limit: evaluate only the first ``limit`` usable samples.

    Raises:
        UsageError: unknown mode, batch size < 1, or teacher-forced mode without ``predict``.
        ModelError: the segmenter returned the wrong number of predictions or mask sizes.
        DatasetError: no sample could be loaded.
    """
    if mode not in MODES:
        raise UsageError(f"unknown evaluation mode {mode!r}; choose one of {', '.join(MODES)}")
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be at least 1, got {limit}")
    if mode == "teacher-forced" and not describe_segmenter(segmenter).has("predict"):
        raise UsageError(
            "teacher-forced evaluation needs a segmenter with predict(images, prompts, answers) "
            f"(e.g. a SegEarth-R2 checkpoint); {type(segmenter).__name__} only has segment(); use --mode generate"
        )
    total = len(samples) if isinstance(samples, Sequence) else None
    if limit is not None:
        total = limit if total is None else min(total, limit)
        samples_iter: Iterable[Sample] = itertools.islice(samples, limit)
    else:
        samples_iter = samples
    from tqdm.auto import tqdm

    results: list[SampleResult] = []
    iou_sum, n_targets = 0.0, 0
    with tqdm(total=total, disable=not progress, unit="sample", desc=f"eval ({mode})") as bar:
        for batch in _batches(samples_iter, batch_size):
            for sample, prediction in zip(batch, _predict(segmenter, batch, mode)):
                results.append(_score(sample, prediction))
                iou_sum += sum(results[-1].ious)
                n_targets += len(results[-1].scores)
            bar.update(len(batch))
            bar.set_postfix(gIoU=f"{iou_sum / max(n_targets, 1):.3f}", refresh=False)
    if not results:
        skipped = getattr(samples, "skipped", {})
        raise DatasetError(f"no sample could be evaluated (skipped: {skipped or 'none'}); check the dataset files")
    overall = summarize(score for r in results for score in r.scores)
    return EvalResult(
        giou=overall.giou,
        ciou=overall.ciou,
        n=overall.n,
        per_dimension=summarize_per_dimension((r.dimensions, r.scores) for r in results),
        samples=results,
        mode=mode,
        skipped=dict(getattr(samples, "skipped", {})),
    )


def evaluate_benchmark(
    model: str,
    dataset: str,
    data_root: str | os.PathLike,
    split: str = "test",
    *,
    mode: str = "generate",
    batch_size: int = 8,
    device: str = "auto",
    limit: int | None = None,
    progress: bool = False,
    json_path: str | os.PathLike | None = None,
) -> EvalResult:
    """Open a benchmark split, load a model and evaluate it (what ``segearth-geo eval`` runs).

    Args:
        model: anything :func:`segearth_geo.model.loading.load_segmenter` accepts
            (``"demo"``, a checkpoint folder, a hub id, ``"file.py:factory"``).
        dataset, data_root, split: passed to :func:`segearth_geo.data.open_dataset`.
        json_path: also write :meth:`EvalResult.to_dict` there.
        Others: see :func:`evaluate`; ``device`` goes to ``load_segmenter``.
    """
    from segearth_geo.data.registry import open_dataset
    from segearth_geo.model.loading import load_segmenter

    if mode not in MODES:  # fail before loading a model
        raise UsageError(f"unknown evaluation mode {mode!r}; choose one of {', '.join(MODES)}")
    reader = open_dataset(dataset, data_root, split)
    segmenter = load_segmenter(model, device=device, batch_size=batch_size)
    result = evaluate(segmenter, reader, batch_size=batch_size, progress=progress, mode=mode, limit=limit)
    if json_path is not None:
        result.write_json(json_path)
    return result
