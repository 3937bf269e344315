"""Rasters and segmenter factories for the batch-job tests (not pytest fixtures).

Factories load in the CLI and in Ray workers as ``--model /abs/path/tests/batch_fixtures.py:<name>``.

* :func:`write_scenes` — a few small real GeoTIFFs in different CRSs (UTM 33N, WGS84,
  Web Mercator) with red/blue objects that cross chip and unit borders, plus optionally
  a corrupt ``.tif``.
* :func:`slow_colour` — the colour segmenter with a pause per call (so a job can be killed mid-run).
* :func:`dies_once` — kills its own process on its first call when the marker file named by
  ``SEGEARTH_TEST_DIE_MARKER`` does not exist yet (creating it first): a worker dying mid-unit.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from segearth_geo.prediction import ChipPrediction

try:
    from tests.segmenters import ColourSegmenter
except ImportError:  # loaded by path (--model /abs/tests/batch_fixtures.py:factory) from another folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.segmenters import ColourSegmenter

RED, BLUE, DARK = (200, 0, 0), (0, 0, 220), (20, 20, 20)
DIE_MARKER_ENV = "SEGEARTH_TEST_DIE_MARKER"


def scene_pixels(height: int = 150, width: int = 230, shift: int = 0) -> np.ndarray:
    """uint8 (3, h, w): a large red ring with a hole (crosses many chips), a red bar spanning the
    whole width (crosses every unit border of a row-major block layout), blue squares, on dark."""
    data = np.empty((3, height, width), np.uint8)
    data[:] = np.array(DARK, np.uint8)[:, None, None]
    s = shift
    data[:, 30 + s:120, 40:200 - s] = np.array(RED, np.uint8)[:, None, None]
    data[:, 60:90, 80 + s:150] = np.array(DARK, np.uint8)[:, None, None]
    data[:, 5:140, 210:218] = np.array(RED, np.uint8)[:, None, None]  # tall bar: crosses every chip row
    data[:, 10:20, 10 + s:20 + s] = np.array(BLUE, np.uint8)[:, None, None]
    data[:, 125:135, 5:15] = np.array(RED, np.uint8)[:, None, None]
    data[:, 135:145, 15:25] = np.array(RED, np.uint8)[:, None, None]  # touches the one above at a corner
    data[:, 100:148, 120:124] = np.array(BLUE, np.uint8)[:, None, None]
    return data


def write_scenes(folder: Path, *, corrupt: bool = False, crs: Sequence[str] = ("utm", "wgs84", "mercator")) -> list[Path]:
    """Write one scene per entry of ``crs`` (and a corrupt ``broken.tif`` when asked); returns the paths."""
    from rasterio.transform import from_origin

    from tests.geo_fixtures import UTM, UTM_ORIGIN, WEB_MERCATOR, WEB_MERCATOR_ORIGIN, WGS84, WGS84_ORIGIN, write_raster

    folder.mkdir(parents=True, exist_ok=True)
    grids = {
        "utm": (UTM, from_origin(*UTM_ORIGIN, 0.5, 0.5)),
        "wgs84": (WGS84, from_origin(*WGS84_ORIGIN, 1e-5, 1e-5)),
        "mercator": (WEB_MERCATOR, from_origin(*WEB_MERCATOR_ORIGIN, 0.5, 0.5)),
    }
    paths = []
    for i, name in enumerate(crs):
        code, transform = grids[name]
        paths.append(write_raster(folder / f"{name}.tif", scene_pixels(shift=3 * i), crs=code, transform=transform))
    if corrupt:
        broken = folder / "broken.tif"
        broken.write_bytes(b"II*\x00" + b"not a tiff at all " * 64)
        paths.append(broken)
    return paths


class SlowColour(ColourSegmenter):
    """The colour segmenter, sleeping ``seconds`` in every call."""

    def __init__(self, chip_size: int = 64, seconds: float = 0.15) -> None:
        super().__init__(chip_size)
        self.seconds = seconds

    def segment(self, chips, prompt: str) -> list[ChipPrediction]:
        time.sleep(self.seconds)
        return super().segment(chips, prompt)


class DiesOnce(ColourSegmenter):
    """Kills its process (``os._exit``) on the first call of the whole test session (see the module docstring)."""

    def segment(self, chips, prompt: str) -> list[ChipPrediction]:
        marker = os.environ.get(DIE_MARKER_ENV)
        if marker and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os._exit(17)
        return super().segment(chips, prompt)


def colour() -> ColourSegmenter:
    """Colour segmenter with 64-px chips."""
    return ColourSegmenter(chip_size=64)


def slow_colour() -> SlowColour:
    """Colour segmenter with 64-px chips and a 0.15 s pause per call."""
    return SlowColour(chip_size=64)


def dies_once() -> DiesOnce:
    """Colour segmenter with 64-px chips whose first call kills its worker."""
    return DiesOnce(chip_size=64)


LOAD_LOG_ENV = "SEGEARTH_TEST_LOAD_LOG"


def counted() -> ColourSegmenter:
    """Colour segmenter with 64-px chips; appends a line to the file named by ``SEGEARTH_TEST_LOAD_LOG`` per load."""
    log = os.environ.get(LOAD_LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()}\n")
    return ColourSegmenter(chip_size=64)
