"""Rendering any pixel window of a SynthEarth :class:`~segearth_geo.synthetic.layout.Layout`.

Textures are value noise hashed from *global* pixel coordinates and a per-scene seed, so a
window renders the same pixels whether it is drawn alone or as one block of a large scene
(no seams between blocks). Paint order comes from the layout; one GDAL rasterisation of
all shapes that touch the window gives each pixel its topmost shape, from which the colour,
the object index and the part of every pixel follow. Shadows darken what lies under them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio import features
from shapely import STRtree
from shapely.geometry import box

from segearth_geo.synthetic.layout import Layout

SHADOW_FACTOR = np.array([0.52, 0.55, 0.62], dtype=np.float32)  # shadows are darker and slightly blue


@dataclass
class RenderedWindow:
    """The pixels of one window and what each pixel shows.

    Attributes:
        image: ``uint8 (h, w, 3)`` RGB.
        object_map: ``int32 (h, w)``: index of the visible object per pixel, ``-1`` where none.
        part_map: ``int16 (h, w)``: index into ``part_names`` of the visible part, ``-1`` where none.
        part_names: the part names used by ``part_map``.
    """

    image: np.ndarray
    object_map: np.ndarray
    part_map: np.ndarray
    part_names: tuple[str, ...]

    def instance_mask(self, index: int) -> np.ndarray:
        """``bool (h, w)``: visible pixels of object ``index`` (its parts included)."""
        return self.object_map == index

    def part_mask(self, index: int, part: str) -> np.ndarray:
        """``bool (h, w)``: visible pixels of part ``part`` of object ``index``."""
        if part not in self.part_names:
            return np.zeros(self.object_map.shape, dtype=bool)
        return (self.object_map == index) & (self.part_map == self.part_names.index(part))


class SceneRenderer:
    """Renders windows of one layout at one GSD; builds the spatial index once.

    Args:
        layout: the scene's objects and shapes.
        gsd: metres per pixel.
        seed: texture seed (any int); the same seed gives the same pixels.
    """

    def __init__(self, layout: Layout, gsd: float, seed: int) -> None:
        self.layout = layout
        self.gsd = float(gsd)
        self.seed = int(seed) & 0xFFFFFFFF
        self._tree = STRtree([s.geom for s in layout.shapes])
        self._shadow_tree = STRtree([g for g, _ in layout.shadows])
        self._rgb = np.array([s.rgb for s in layout.shapes] + [layout.ground[0]], dtype=np.float32)  # (S+1, 3); last = ground
        self._amps = np.array([s.amps for s in layout.shapes] + [layout.ground[1]], dtype=np.float32)
        self._obj = np.array([s.obj for s in layout.shapes] + [-1], dtype=np.int32)
        names = sorted({s.part for s in layout.shapes if s.part is not None})
        self.part_names = tuple(names)
        self._part = np.array([names.index(s.part) if s.part else -1 for s in layout.shapes] + [-1], dtype=np.int16)

    def render(self, row0: int, col0: int, height: int, width: int) -> RenderedWindow:
        """Render the window whose top-left pixel is ``(row0, col0)`` of size ``height × width``."""
        g = self.gsd
        transform = Affine(g, 0.0, col0 * g, 0.0, g, row0 * g)
        window_box = box(col0 * g, row0 * g, (col0 + width) * g, (row0 + height) * g)
        cand = np.sort(self._tree.query(window_box, predicate="intersects"))
        ground = len(self.layout.shapes)
        if cand.size:
            local = features.rasterize(
                ((self.layout.shapes[i].geom, k + 1) for k, i in enumerate(cand)),
                out_shape=(height, width), transform=transform, fill=0, dtype="int32",
            )
            owner = np.where(local > 0, cand[np.maximum(local - 1, 0)], ground)  # (h, w) global shape index
        else:
            owner = np.full((height, width), ground, dtype=np.int64)
        rgb = self._rgb[owner]  # (h, w, 3)
        amps = self._amps[owner]  # (h, w, 3)
        fine = value_noise(row0, col0, height, width, 1.6 / g, self.seed + 1)
        medium = value_noise(row0, col0, height, width, 6.0 / g, self.seed + 2)
        coarse = value_noise(row0, col0, height, width, 40.0 / g, self.seed + 3)
        shade = 1.0 + amps[..., 0] * fine + amps[..., 1] * medium + amps[..., 2] * coarse  # (h, w)
        image = rgb * shade[..., None]
        hue = value_noise(row0, col0, height, width, 25.0 / g, self.seed + 4)
        image[..., 0] *= 1.0 + 0.5 * amps[..., 2] * hue  # slow red/green drift on textured ground
        scand = self._shadow_tree.query(window_box, predicate="intersects")
        if scand.size:
            shadows = self.layout.shadows
            scand = np.sort(scand)  # shadows are sorted by z, so later ones have the larger z
            zmap = features.rasterize(
                ((shadows[i][0], shadows[i][1] + 1) for i in scand),
                out_shape=(height, width), transform=transform, fill=0, dtype="int32",
            )
            shadowed = zmap - 1 > np.where(owner == ground, -1, owner)  # shadow caster painted after the pixel's shape
            shadowed &= zmap > 0
            image[shadowed] *= SHADOW_FACTOR
        image *= np.asarray(self.layout.tint, dtype=np.float32)
        image += (pixel_noise(row0, col0, height, width, self.seed + 5) - 0.5) * 8.0
        return RenderedWindow(
            image=np.clip(image + 0.5, 0, 255).astype(np.uint8),
            object_map=self._obj[owner],
            part_map=self._part[owner],
            part_names=self.part_names,
        )


def _hash(iy: np.ndarray, ix: np.ndarray, seed: int) -> np.ndarray:
    """Uniform floats in ``[0, 1)`` hashed from integer lattice coordinates (broadcasting)."""
    h = iy.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    h = h ^ (ix.astype(np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))
    h = h ^ np.uint64((seed * 0x165667B1) & 0xFFFFFFFFFFFFFFFF)
    h = (h ^ (h >> np.uint64(33))) * np.uint64(0xFF51AFD7ED558CCD)
    h = (h ^ (h >> np.uint64(33))) * np.uint64(0xC4CEB9FE1A85EC53)
    h = h ^ (h >> np.uint64(33))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def value_noise(row0: int, col0: int, height: int, width: int, cell: float, seed: int) -> np.ndarray:
    """Smooth value noise in ``[-1, 1]``, ``float32 (height, width)``, lattice spacing ``cell`` pixels.

    A function of global pixel coordinates only: any window of a scene gets the same values.
    """
    ys = (row0 + np.arange(height) + 0.5) / cell
    xs = (col0 + np.arange(width) + 0.5) / cell
    iy, ix = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    fy, fx = ys - iy, xs - ix
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)  # smoothstep
    gy = np.arange(iy[0], iy[-1] + 2)
    gx = np.arange(ix[0], ix[-1] + 2)
    lattice = _hash(gy[:, None], gx[None, :], seed)  # (len(gy), len(gx))
    ry, rx = iy - gy[0], ix - gx[0]
    top = lattice[ry][:, rx] * (1 - fx) + lattice[ry][:, rx + 1] * fx
    bottom = lattice[ry + 1][:, rx] * (1 - fx) + lattice[ry + 1][:, rx + 1] * fx
    return ((top * (1 - fy[:, None]) + bottom * fy[:, None]) * 2 - 1).astype(np.float32)


def pixel_noise(row0: int, col0: int, height: int, width: int, seed: int) -> np.ndarray:
    """Per-pixel uniform noise in ``[0, 1)``, ``float32 (height, width, 3)``, from global coordinates."""
    rows = np.arange(row0, row0 + height)[:, None]
    cols = np.arange(col0, col0 + width)[None, :]
    return np.stack([_hash(rows, cols, seed + 7919 * c) for c in range(3)], axis=-1).astype(np.float32)
