"""SynthEarth samples in memory and dataset splits on disk (LaSeRS layout).

In memory::

    sample = generate_sample(seed, size=256)          # a segearth_geo.data.sample.Sample
    samples = SynthEarthSamples("train", n=1000, seed=0)   # indexable, deterministic per index

On disk (:func:`write_split`), the layout the LaSeRS reader expects::

    <root>/<split>/images/<split>_000000.png
    <root>/<split>/annotations/<split>.json    # records: id, image_name, description, answer,
                                               # mask (COCO RLE list), dimensions

Sample ``i`` of a split is drawn from ``SeedSequence(seed, spawn_key=(split code, i))``, so
train, val and test never share a scene, and any sample can be regenerated alone.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from segearth_geo.data.rle import rle_encode
from segearth_geo.data.sample import Sample
from segearth_geo.errors import OutputError, OutputNameError, UsageError
from segearth_geo.synthetic.layout import compose_layout
from segearth_geo.synthetic.questions import make_question
from segearth_geo.synthetic.scene import RenderedWindow, SceneRenderer

NOMINAL_GSD = 0.5  # metres per pixel of a SynthEarth sample (multi-scale samples: see MULTISCALE_GSDS)
SUPERSAMPLE = 2  # a coarser sample is rendered at most this many times finer, then averaged down
# The demo model's GSD augmentation (weights/demo/train_stage4.yaml): GSD -> share of the samples.
MULTISCALE_GSDS = {0.5: 0.4, 1.0: 0.15, 2.0: 0.45}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
SAMPLE_THEMES = {"city": 0.4, "airport": 0.2, "harbour": 0.2, "rural": 0.2}
SAMPLE_EXTENT_M = {"city": 200.0, "airport": 380.0, "harbour": 260.0, "rural": 220.0}
# how likely a window is centred on an object of each category (rare ones favoured)
PART_FOCUS = 0.3  # share of windows centred on an object with parts (nets, wings, bows…)
FOCUS_WEIGHT = {"car": 0.2, "tree": 0.2, "road": 0.5, "building": 1.0, "water": 0.8}


@dataclass
class SplitSummary:
    """What :func:`write_split` wrote."""

    root: Path
    split: str
    annotation_path: Path
    n_samples: int
    n_masks: int
    dimension_counts: dict[str, int] = field(default_factory=dict)


def _rng(seed: int | np.random.Generator | np.random.SeedSequence) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if seed < 0:
            raise UsageError(f"seed must be a non-negative integer, got {seed}")
        return np.random.default_rng(int(seed))
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    raise UsageError(f"seed must be an int or a numpy Generator, got {type(seed).__name__}")


def generate_sample(seed: int | np.random.Generator, size: int = 256, sample_id: str = "synthearth",
                    gsd: float = NOMINAL_GSD) -> Sample:
    """One SynthEarth sample: a ``size × size`` RGB image at ``gsd`` metres per pixel, one question, its masks.

    Args:
        seed: an int seed or a ``numpy.random.Generator`` (the only randomness used).
        size: image side in pixels (64–2048).
        sample_id: the ``id`` given to the returned sample.
        gsd: metres per pixel (default the nominal 0.5 m). Coarser images are rendered at up to
            :data:`SUPERSAMPLE` times the resolution and averaged down, as a resampled read of a 0.5 m scene
            averages (the zoom strategy's overview); object and part maps take the centre pixel.

    Returns:
        A :class:`~segearth_geo.data.sample.Sample` whose ``masks`` (bool ``(size, size)``)
        follow the order of the ``[SEG]`` tokens of ``answer`` and whose ``dimensions``
        hold the four LaSeRS tags.
    """
    _check_size(size)
    rng = _rng(seed)
    sup = max(1, min(SUPERSAMPLE, int(round(gsd / NOMINAL_GSD))))
    render_gsd = gsd / sup
    for _attempt in range(8):
        theme = str(rng.choice(list(SAMPLE_THEMES), p=list(SAMPLE_THEMES.values())))
        extent = max(SAMPLE_EXTENT_M[theme], size * gsd + 40)
        layout = compose_layout(theme, extent, extent, rng)
        extent_px = int(extent / render_gsd)
        row0, col0 = _window(layout, size * sup, extent_px, rng, render_gsd)
        rendered = SceneRenderer(layout, render_gsd, int(rng.integers(2**31))).render(row0, col0, size * sup,
                                                                                      size * sup)
        if sup > 1:
            rendered = _downsample(rendered, sup)
        question = make_question(rendered, [o.category for o in layout.objects], theme, rng)
        if question is not None:
            return Sample(sample_id, rendered.image, question.instruction, question.answer, question.masks,
                          question.dimensions, source="synthearth")
    raise UsageError("could not compose a SynthEarth sample; try another seed")  # pragma: no cover


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not 64 <= size <= 2048:
        raise UsageError(f"sample size must be an integer between 64 and 2048 pixels, got {size!r}")


def _downsample(rendered: RenderedWindow, factor: int) -> RenderedWindow:
    """``rendered`` ``factor`` times coarser: the image averaged over ``factor``² blocks, the maps' centre pixels."""
    h, w = rendered.image.shape[0] // factor, rendered.image.shape[1] // factor
    blocks = rendered.image[:h * factor, :w * factor].reshape(h, factor, w, factor, 3).astype(np.float32)
    image = (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)  # (h, w, 3)
    centre = factor // 2
    return RenderedWindow(image, rendered.object_map[centre::factor, centre::factor][:h, :w],
                          rendered.part_map[centre::factor, centre::factor][:h, :w], rendered.part_names)


def _window(layout, size: int, extent_px: int, rng: np.random.Generator,
            gsd: float = NOMINAL_GSD) -> tuple[int, int]:
    """Top-left pixel of a ``size`` window centred near a randomly chosen object."""
    limit = extent_px - size
    if not layout.objects:
        return int(rng.integers(0, limit + 1)), int(rng.integers(0, limit + 1))
    candidates = layout.objects
    with_parts = [o for o in candidates if o.parts]
    if with_parts and rng.random() < PART_FOCUS:
        candidates = with_parts
    weights = np.array([FOCUS_WEIGHT.get(o.category, 3.0) for o in candidates])
    obj = candidates[int(rng.choice(len(weights), p=weights / weights.sum()))]
    point = obj.footprint.representative_point()
    cx = point.x / gsd + rng.uniform(-size / 4, size / 4)
    cy = point.y / gsd + rng.uniform(-size / 4, size / 4)
    col0 = int(np.clip(round(cx - size / 2), 0, limit))
    row0 = int(np.clip(round(cy - size / 2), 0, limit))
    return row0, col0


def _check_split(split: str) -> int:
    if split not in SPLIT_CODES:
        raise UsageError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_CODES)}")
    return SPLIT_CODES[split]


def split_sample(split: str, seed: int, index: int, size: int = 256, gsd: float = NOMINAL_GSD) -> Sample:
    """Sample ``index`` of a split: deterministic, independent of every other index and split (at 0.5 m, the
    same sample whatever version of this function added other GSDs)."""
    code = _check_split(split)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    sequence = np.random.SeedSequence(int(seed), spawn_key=(code, int(index)))
    return generate_sample(np.random.default_rng(sequence), size, sample_id=f"{split}_{index:06d}", gsd=gsd)


class SynthEarthSamples(Sequence):
    """``n`` samples of one split, generated on access (nothing cached): ``samples[i]`` is a Sample.

    ``gsds``: ``{gsd: share}`` to draw each sample's GSD from (per index, deterministic); default: all at 0.5 m.
    """

    def __init__(self, split: str, n: int, seed: int = 0, size: int = 256,
                 gsds: dict[float, float] | None = None) -> None:
        _check_split(split)
        if n < 0:
            raise UsageError(f"n must be >= 0, got {n}")
        self.split, self.n, self.seed, self.size = split, int(n), int(seed), int(size)
        self.gsds = dict(gsds or {NOMINAL_GSD: 1.0})

    def gsd(self, index: int) -> float:
        """The GSD of sample ``index`` (drawn from its own seed, so it never shifts another sample)."""
        if len(self.gsds) == 1:
            return next(iter(self.gsds))
        sequence = np.random.SeedSequence(self.seed, spawn_key=(SPLIT_CODES[self.split], int(index), 1))
        values, shares = list(self.gsds), np.array(list(self.gsds.values()), dtype=np.float64)
        return float(values[int(np.random.default_rng(sequence).choice(len(values), p=shares / shares.sum()))])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.n))]
        if not -self.n <= index < self.n:
            raise IndexError(f"sample index {index} out of range for {self.n} samples")
        index = index % self.n
        return split_sample(self.split, self.seed, index, self.size, self.gsd(index))


def multiscale_samples(split: str, chip_size: int = 256, seed: int = 0, n: int = 100_000) -> SynthEarthSamples:
    """A training source (``dataset: segearth_geo.synthetic.dataset:multiscale_samples``): SynthEarth samples at
    the GSDs of :data:`MULTISCALE_GSDS`, so a model also answers on the zoom strategy's coarse overviews."""
    return SynthEarthSamples(split, n, seed=seed, size=chip_size, gsds=MULTISCALE_GSDS)


def write_split(
    root: str | os.PathLike,
    split: str,
    n: int,
    seed: int = 0,
    size: int = 256,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> SplitSummary:
    """Write ``n`` samples of ``split`` under ``root`` in the LaSeRS layout (see module doc).

    ``progress`` is called with 1 after each sample. Raises :class:`OutputError` if the
    annotation file exists and ``overwrite`` is false, or if ``root`` cannot be written.
    """
    _check_split(split)
    _check_size(size)
    if not isinstance(n, int) or n < 1:
        raise UsageError(f"--n must be a positive number of samples, got {n!r}")
    root = Path(root)
    images = root / split / "images"
    annotations = root / split / "annotations"
    annotation_path = annotations / f"{split}.json"
    if annotation_path.exists() and not overwrite:
        raise OutputNameError(f"{annotation_path} already exists; pass --overwrite to replace the split")
    try:
        images.mkdir(parents=True, exist_ok=True)
        annotations.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {images}: {exc}") from exc
    records = []
    counts: Counter[str] = Counter()
    n_masks = 0
    for index in range(n):
        sample = split_sample(split, seed, index, size)
        image_name = f"{sample.id}.png"
        Image.fromarray(sample.image).save(images / image_name, optimize=False, compress_level=6)
        records.append({
            "id": sample.id,
            "image_name": image_name,
            "description": sample.instruction,
            "answer": sample.answer,
            "mask": [rle_encode(m) for m in sample.masks],
            "dimensions": sample.dimensions,
        })
        n_masks += len(sample.masks)
        counts.update(f"{k}:{v}" for k, v in sample.dimensions.items())
        if progress is not None:
            progress(1)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=annotations)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(records, fh, ensure_ascii=False)
        os.replace(tmp, annotation_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return SplitSummary(root, split, annotation_path, n, n_masks, dict(sorted(counts.items())))
