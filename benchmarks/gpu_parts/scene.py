"""A generated georeferenced scene for the engine part: cheap to write at 16,384² and realistic to read.

Fields (a smooth colour field plus ±6 noise, so the file compresses about as aerial imagery does), a road grid
every 1,024 px and about three buildings (16–64 px rectangles, three roof colours) per 256×256 cell. Written in
512-row strips as a tiled (512²), DEFLATE-compressed GeoTIFF (UTM 33N, 0.5 m) with GDAL's compression threads, so
no scene-sized array is ever held. :func:`object_targets` gives a chip's buildings as one mask: what a trained
model would return for "buildings" (the engine part vectorises these to size the CPU side with realistic masks).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STRIP = 512
THREADS = 4  # strips generated at a time
CELL = 256
ROAD_EVERY, ROAD_WIDTH = 1024, 20
ROOFS = np.array([[170, 60, 50], [205, 205, 200], [90, 95, 115]], dtype=np.uint8)
ROAD = np.array([125, 125, 120], dtype=np.uint8)


@dataclass(frozen=True)
class Buildings:
    """Rectangles ``[x0, x1) × [y0, y1)`` in scene pixels (one row per building)."""

    x0: np.ndarray
    x1: np.ndarray
    y0: np.ndarray
    y1: np.ndarray
    roof: np.ndarray  # index into ROOFS

    def __len__(self) -> int:
        return len(self.x0)

    def overlapping(self, col: int, row: int, width: int, height: int) -> np.ndarray:
        """Indices of the buildings that overlap the window."""
        return np.flatnonzero((self.x0 < col + width) & (self.x1 > col) & (self.y0 < row + height) & (self.y1 > row))


def place_buildings(side: int, seed: int = 0) -> Buildings:
    rng = np.random.default_rng(seed)
    cells = np.arange(0, side, CELL)
    cx, cy = [a.ravel() for a in np.meshgrid(cells, cells)]
    cx, cy = np.repeat(cx, 3), np.repeat(cy, 3)
    x0 = cx + rng.integers(0, CELL - 64, cx.size)
    y0 = cy + rng.integers(0, CELL - 64, cy.size)
    x1 = np.minimum(x0 + rng.integers(16, 65, cx.size), side)
    y1 = np.minimum(y0 + rng.integers(16, 65, cy.size), side)
    return Buildings(x0, x1, y0, y1, rng.integers(0, len(ROOFS), cx.size))


def _strip(side: int, row: int, height: int, buildings: Buildings, seed: int) -> np.ndarray:
    """Pixels ``(3, height, side)`` uint8 of rows ``row .. row + height``."""
    rng = np.random.default_rng([seed, row])
    x = np.arange(side, dtype=np.float32)
    y = np.arange(row, row + height, dtype=np.float32)[:, None]
    field = np.sin(x / 611.0) * np.cos(y / 977.0) + 0.5 * np.sin((x + 2 * y) / 1453.0)  # (h, side) in [-1.5, 1.5]
    noise = rng.integers(-6, 7, (height, side), dtype=np.int16)
    out = np.empty((3, height, side), dtype=np.uint8)
    for channel, (base, swing) in enumerate(((95.0, 25.0), (115.0, 30.0), (70.0, 20.0))):
        value = (base + swing * field).astype(np.int16)
        value += noise
        out[channel] = np.clip(value, 0, 255, out=value)
    for start in range(0, side, ROAD_EVERY):  # vertical roads, then the horizontal ones crossing the strip
        out[:, :, start:start + ROAD_WIDTH] = ROAD[:, None, None]
    for start in range(0, side, ROAD_EVERY):
        top, bottom = max(start, row), min(start + ROAD_WIDTH, row + height)
        if top < bottom:
            out[:, top - row:bottom - row, :] = ROAD[:, None, None]
    for k in buildings.overlapping(0, row, side, height):
        top, bottom = max(buildings.y0[k], row) - row, min(buildings.y1[k], row + height) - row
        out[:, top:bottom, buildings.x0[k]:buildings.x1[k]] = ROOFS[buildings.roof[k]][:, None, None]
    return out


def write_scene(path: Path, side: int, seed: int = 0) -> Buildings:
    """Write the ``side``² scene to ``path`` (see the module docstring); returns its buildings."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    buildings = place_buildings(side, seed)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": from_origin(500_000.0, 5_000_000.0, 0.5, 0.5),
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "zlevel": 1,
               "predictor": 2, "interleave": "pixel", "num_threads": "all_cpus", "bigtiff": "if_safer"}
    rows = list(range(0, side, STRIP))
    with rasterio.open(path, "w", **profile) as dst, ThreadPoolExecutor(THREADS) as pool:
        for first in range(0, len(rows), THREADS):  # THREADS strips at a time (numpy releases the GIL)
            chunk = rows[first:first + THREADS]
            heights = [min(STRIP, side - row) for row in chunk]
            strips = pool.map(lambda rh: _strip(side, rh[0], rh[1], buildings, seed), zip(chunk, heights))
            for row, height, pixels in zip(chunk, heights, strips):
                dst.write(pixels, window=Window(0, row, side, height))
    return buildings


def object_targets(buildings: Buildings, window) -> list:
    """The chip's buildings as one ``"buildings"`` target (probability 0.9 inside, 0 outside), or none."""
    from segearth_geo.prediction import Target

    col, row, width, height = (int(v) for v in (window.col_off, window.row_off, window.width, window.height))
    found = buildings.overlapping(col, row, width, height)
    if not found.size:
        return []
    mask = np.zeros((height, width), dtype=np.float32)
    for k in found:
        mask[max(buildings.y0[k] - row, 0):buildings.y1[k] - row, max(buildings.x0[k] - col, 0):buildings.x1[k] - col] = 0.9
    return [Target(label="buildings", probability=mask, score=0.9)]
