"""PNG preview: result polygons drawn over a decimated read of the scene.

The scene is read once at a reduced ground distance (so that its longest side is at
most ``max_side`` pixels; GDAL averages or uses overviews), polygons are moved into that
image's pixel grid and drawn per label in a fixed colour, translucent fill plus outline,
holes kept. The PNG is written to a temporary name and renamed, like every output.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rasterio.windows import Window

from segearth_geo.errors import OutputError, OutputNameError, UsageError
from segearth_geo.output import temporary_path
from segearth_geo.raster import open_scene

# Conventional colours for the labels remote-sensing users meet most (water blue, vegetation green, ...), chosen to
# be told apart; any other label gets a colour from a hash of its text (its hue and one of three shades).
CONVENTIONAL = {
    "building": (230, 25, 75), "roof": (230, 25, 75), "house": (230, 25, 75),
    "road": (255, 225, 25), "street": (255, 225, 25),
    "water": (0, 130, 200), "river": (0, 130, 200), "lake": (0, 130, 200), "sea": (0, 130, 200),
    "tree": (60, 180, 75), "forest": (60, 180, 75), "vegetation": (60, 180, 75),
    "field": (210, 245, 60), "farmland": (210, 245, 60), "grass": (210, 245, 60),
    "car": (245, 130, 48), "vehicle": (245, 130, 48),
    "ship": (70, 240, 240), "boat": (70, 240, 240),
    "airplane": (240, 50, 230), "plane": (240, 50, 230), "aircraft": (240, 50, 230),
    "runway": (128, 128, 128), "parking lot": (170, 110, 40), "bare soil": (170, 110, 40),
    "swimming pool": (0, 210, 255), "pool": (0, 210, 255), "tennis court": (145, 30, 180),
    "storage tank": (250, 190, 212), "solar panel": (0, 0, 128), "bridge": (128, 0, 0),
}
# (saturation, value) of the three shades a hashed label's hue comes in.
SHADES = ((0.85, 0.95), (0.5, 1.0), (0.95, 0.7))


def label_colour(label: str) -> tuple[int, int, int]:
    """The colour of a label: the same in every run, whatever other labels appear. Common labels
    (a singular or plural of a :data:`CONVENTIONAL` key) get their conventional colour; any other, a hash of
    its lower-cased text gives the hue and one of three shades (:data:`SHADES`: bright, pale, deep; all
    legible over imagery). The QGIS plugin uses the same
    rule (``qgis_plugin/segearth_qgis/core/label_colours.py``)."""
    import colorsys
    import hashlib

    text = " ".join(str(label).lower().split())
    for key in (text, text[:-1] if text.endswith("s") else None, text[:-2] if text.endswith("es") else None):
        if key in CONVENTIONAL:
            return CONVENTIONAL[key]
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=3).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    saturation, value = SHADES[digest[2] % len(SHADES)]
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, saturation, value))


MAX_UNGEOREFERENCED_SIDE = 8192  # rasters without a CRS cannot be resampled by GSD: read whole up to this


def render_preview(
    source: str | os.PathLike,
    gdf: Any,
    png_path: str | os.PathLike,
    *,
    max_side: int = 1024,
    bands: Sequence[int] | str | None = None,
    bbox: Sequence[float] | None = None,
    bbox_crs: Any = None,
    overwrite: bool = True,
) -> Path:
    """Draw ``gdf``'s polygons (column ``label`` optional) over ``source`` into ``png_path``.

    ``bands``, ``bbox`` and ``bbox_crs`` select the same area and bands as the segmentation.
    Raises :class:`OutputError` if the PNG cannot be written (or exists without ``overwrite``).
    """
    from PIL import Image, ImageDraw

    target = check_preview(source, png_path, max_side=max_side, bands=bands, bbox=bbox, bbox_crs=bbox_crs,
                           overwrite=overwrite)
    rgb, transform, crs = _decimated_read(source, max_side, bands, bbox, bbox_crs)
    if gdf.crs is not None and crs is not None and gdf.crs != crs:
        gdf = gdf.to_crs(crs)
    inverse = ~transform
    a, b, c, d, e, f = inverse.a, inverse.b, inverse.c, inverse.d, inverse.e, inverse.f

    def to_pixels(xy: np.ndarray) -> np.ndarray:  # (n, 2) map -> (n, 2) preview pixels
        return np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f])

    base = Image.fromarray(rgb, "RGB").convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    labels = list(gdf["label"]) if "label" in gdf.columns else ["object"] * len(gdf)
    prompts = list(gdf["prompt"]) if "prompt" in gdf.columns else [""] * len(gdf)
    colours = {label: label_colour(label) for label in sorted(set(labels))}
    entries = sorted(set(zip(prompts, labels)))  # legend: "prompt: label", in the label's colour
    geoms = shapely.transform(np.asarray(gdf.geometry.values, dtype=object), to_pixels)
    order = np.argsort(-shapely.area(geoms)) if len(geoms) else []
    for i in order:  # large first, so islands inside holes are drawn after the hole is cleared
        colour = colours[labels[i]]
        for polygon in shapely.get_parts(geoms[i]):
            if not isinstance(polygon, shapely.Polygon) or polygon.is_empty:
                continue
            draw.polygon(list(polygon.exterior.coords), fill=(*colour, 90), outline=(*colour, 255))
            for ring in polygon.interiors:
                draw.polygon(list(ring.coords), fill=(0, 0, 0, 0), outline=(*colour, 255))
    for row, (prompt, label) in enumerate(entries):  # legend, top-left
        colour = colours[label]
        text = f"{prompt}: {label}" if prompt and prompt.strip().lower() != str(label).strip().lower() else str(label)
        draw.rectangle((4, 4 + 14 * row, 14, 14 + 14 * row), fill=(*colour, 255))
        draw.text((19, 3 + 14 * row), text, fill=(0, 0, 0, 255))  # a dark shadow keeps it legible on light imagery
        draw.text((18, 2 + 14 * row), text, fill=(255, 255, 255, 255))
    image = Image.alpha_composite(base, overlay).convert("RGB")
    tmp = temporary_path(target)
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"cannot write preview {target}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def check_preview(
    source: str | os.PathLike,
    png_path: str | os.PathLike,
    *,
    max_side: int = 1024,
    bands: Sequence[int] | str | None = None,
    bbox: Sequence[float] | None = None,
    bbox_crs: Any = None,
    overwrite: bool = True,
) -> Path:
    """Check, without reading pixels, that :func:`render_preview` can draw ``source`` into ``png_path``.

    Run it before the segmentation so that a preview that cannot be made fails before any work
    (and before the main output is written). Raises :class:`OutputError` for the PNG path and
    :class:`UsageError` for a raster that cannot be previewed.
    """
    from segearth_geo.output import check_folder, remove_stale_temporaries

    target = Path(png_path).expanduser()
    if target.suffix.lower() != ".png":
        raise OutputNameError(f"the preview must be a .png file, got {target}")
    if os.path.lexists(target) and not overwrite:
        raise OutputNameError(f"preview {target} exists; choose another name or allow overwriting")
    if max_side < 16:
        raise UsageError(f"max_side must be at least 16 pixels, got {max_side}")
    with open_scene(source, bands=bands, bbox=bbox, bbox_crs=bbox_crs) as reader:
        scene = reader.scene
    if scene.gsd is None and max(scene.width, scene.height) > MAX_UNGEOREFERENCED_SIDE:
        raise UsageError(f"{source} is too large for a preview without a CRS "
                         f"({scene.width}x{scene.height} px, at most {MAX_UNGEOREFERENCED_SIDE}); omit the preview "
                         "or give a bbox")
    check_folder(target)
    remove_stale_temporaries(target.parent)
    return target


def _decimated_read(source, max_side, bands, bbox, bbox_crs) -> tuple[np.ndarray, Any, Any]:
    """``(rgb (h, w, 3) uint8, pixel -> map transform, crs)`` with ``max(h, w) <= max_side``."""
    with open_scene(source, bands=bands, bbox=bbox, bbox_crs=bbox_crs) as reader:
        scene = reader.scene
        factor = max(scene.width, scene.height) / max_side
        if factor <= 1 or scene.gsd is None:
            if max(scene.width, scene.height) > MAX_UNGEOREFERENCED_SIDE:
                raise UsageError(f"{source} is too large for a preview without a CRS "
                                 f"({scene.width}x{scene.height} px, at most {MAX_UNGEOREFERENCED_SIDE})")
            rgb, _ = reader.read(Window(0, 0, scene.width, scene.height))
            if factor > 1:
                rgb = rgb[:: int(np.ceil(factor)), :: int(np.ceil(factor))]
                from affine import Affine

                return np.ascontiguousarray(rgb), scene.transform @ Affine.scale(int(np.ceil(factor))), scene.crs
            return rgb, scene.transform, scene.crs
        coarse_gsd = scene.gsd * factor * 1.001  # a hair coarser so rounding never exceeds max_side
    with open_scene(source, bands=bands, bbox=bbox, bbox_crs=bbox_crs, gsd=coarse_gsd) as reader:
        scene = reader.scene
        rgb, _ = reader.read(Window(0, 0, scene.width, scene.height))
        return rgb, scene.transform, scene.crs
