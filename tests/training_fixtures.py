"""Tiny training data for the training tests: a handful of chips with bright shapes.

``shapes(split, chip_size, seed)`` is a training-data factory in the form the trainer accepts
(``dataset: "tests/training_fixtures.py:shapes"``). Samples are deterministic: a dark textured
background with one red square and one blue bar at seeded places; questions ask for one, the
other, or both (one ``[SEG]`` per target), and one sample in four has no target at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segearth_geo.data.sample import Sample

SPEC = f"{Path(__file__).resolve()}:shapes"
NUM_SAMPLES = 6


def _sample(index: int, chip_size: int, seed: int) -> Sample:
    rng = np.random.default_rng(seed * 7919 + index)
    side = chip_size
    image = rng.integers(20, 60, size=(side, side, 3), dtype=np.uint8)
    red = np.zeros((side, side), bool)
    blue = np.zeros((side, side), bool)
    a = side // 4
    y, x = rng.integers(0, side - a, size=2)
    red[y:y + a, x:x + a] = True
    by = int(rng.integers(0, side - side // 8))
    blue[by:by + side // 8, :] = True
    blue &= ~red
    image[red] = (220, 40, 40)
    image[blue] = (40, 60, 220)
    kind = index % 4
    if kind == 0:
        return Sample(str(index), image, "segment the red square", "The red square is [SEG].", [red])
    if kind == 1:
        return Sample(str(index), image, "where is the blue bar?", "The blue bar is [SEG].", [blue])
    if kind == 2:
        return Sample(str(index), image, "segment the red square and the blue bar",
                      "The red square is [SEG] and the blue bar is [SEG].", [red, blue])
    return Sample(str(index), image, "find the green circle", "There is no green circle.", [])


def shapes(split: str = "train", chip_size: int = 128, seed: int = 0, n: int = NUM_SAMPLES) -> list[Sample]:
    offset = {"train": 0, "val": 1000, "test": 2000}.get(split, 3000)
    return [_sample(offset + i, chip_size, seed) for i in range(n)]


SYNTH_SPEC = f"{Path(__file__).resolve()}:synth_handful"


def synth_handful(split: str = "train", chip_size: int = 128, seed: int = 0, n: int = 4) -> list[Sample]:
    """A handful of SynthEarth samples, generated once (a list, so reading them again is free)."""
    from segearth_geo.synthetic.dataset import SynthEarthSamples

    return list(SynthEarthSamples(split, n=n, seed=seed, size=chip_size))
