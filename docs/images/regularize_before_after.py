"""Make ``docs/images/regularize_before_after.png``: the bundled demo model on the bundled city sample, the mask's
polygons (left) and the same polygons with ``regularize=True`` (right), over the scene.

    python docs/images/regularize_before_after.py      # about a minute on one CPU core
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw, ImageFont

from segearth_geo import load_segmenter
from segearth_geo.engine import segment_scene
from segearth_geo.params import SegmentParams

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "sample_tiles" / "synthearth_city.tif"
OUT = Path(__file__).resolve().parent / "regularize_before_after.png"
BBOX = (499610.0, 4649986.0, 499810.0, 4650136.0)  # 200 m x 150 m of houses (UTM 50N)
ZOOM = 2  # screen pixels per scene pixel


def panel(image: np.ndarray, transform, polygons, title: str) -> Image.Image:
    """The scene crop ``(h, w, 3)`` enlarged, the polygons' outlines on it, a title bar."""
    h, w = image.shape[:2]
    canvas = Image.fromarray(image).resize((w * ZOOM, h * ZOOM), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    inverse = ~transform
    for polygon in polygons:
        for ring in [polygon.exterior, *polygon.interiors]:
            xy = [tuple(v * ZOOM for v in inverse * p) for p in ring.coords]
            draw.line(xy, fill=(255, 230, 0), width=2)
            for x, y in xy[:-1]:
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(255, 60, 60))
    bar = Image.new("RGB", (canvas.width, 28), (20, 20, 20))
    ImageDraw.Draw(bar).text((8, 7), title, fill=(255, 255, 255), font=ImageFont.load_default())
    out = Image.new("RGB", (canvas.width, canvas.height + bar.height))
    out.paste(bar, (0, 0))
    out.paste(canvas, (0, bar.height))
    return out


def main() -> None:
    segmenter = load_segmenter("demo", device="cpu")
    runs = {}
    for name, params in (("mask", SegmentParams(bbox=BBOX)), ("regularized", SegmentParams(bbox=BBOX, regularize=True))):
        runs[name] = segment_scene(SCENE, "all the buildings", segmenter, params, model="demo").segments
    with rasterio.open(SCENE) as ds:
        window = rasterio.windows.from_bounds(*BBOX, transform=ds.transform).round_offsets().round_lengths()
        image = ds.read(window=window).transpose(1, 2, 0)
        transform = ds.window_transform(window)
    vertices = {k: int(sum(len(p.exterior.coords) - 1 for p in v.geometry)) for k, v in runs.items()}
    left = panel(image, transform, runs["mask"].geometry,
                 f"mask polygons: {len(runs['mask'])} buildings, {vertices['mask']} vertices")
    right = panel(image, transform, runs["regularized"].geometry,
                  f"--regularize: {vertices['regularized']} vertices, right angles, shared walls kept")
    both = Image.new("RGB", (left.width + right.width + 8, left.height), (255, 255, 255))
    both.paste(left, (0, 0))
    both.paste(right, (left.width + 8, 0))
    both.save(OUT, optimize=True)
    print(f"wrote {OUT} ({both.width}x{both.height})")


if __name__ == "__main__":
    main()
