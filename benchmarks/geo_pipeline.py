"""Geo-pipeline benchmark: throughput and peak memory of the engine vs a naive whole-array job.

Usage::

    python benchmarks/geo_pipeline.py                # 4k² and 16k² scenes, prints a table
    python benchmarks/geo_pipeline.py --sizes 2048   # quicker
    python benchmarks/geo_pipeline.py --workdir /tmp/geo-bench   # keep the generated scenes
    python benchmarks/geo_pipeline.py --repeat 5     # more runs of the small scenes

Scenes are generated once (tiled, DEFLATE-compressed RGB GeoTIFFs in UTM with bright discs
and rectangles on a dark textured background, objects crossing chip borders). Each
measurement runs in a **fresh subprocess** so that ``ru_maxrss`` (peak resident memory)
belongs to that job alone:

* ``engine``: :func:`segearth_geo.segment_raster` with a trivial segmenter (probability =
  red channel thresholded at 128), 1024-pixel chips, overlap 128, batch 8;
* ``naive``: the whole raster read into memory, the same segmenter on it as one chip, the
  same threshold (0.5), and one ``rasterio.features.shapes`` call over the mask.

Both produce the polygons of the same mask (counts are printed as a check). Methods
alternate, and scenes up to ``SMALL`` pixels a side are run ``--repeat`` times (the best
time and the largest peak RSS of each method count): on a shared machine one run of a
sub-second job mostly measures the neighbours. The summary prints the issue's targets:
engine throughput / naive throughput (>= 1) per scene and the engine's peak RSS of the
largest scene / the smallest (<= 1.3).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GSD = 0.5
ORIGIN = (390000.0, 5820000.0)
CRS = "EPSG:32633"
CELL = 320  # one object per CELL x CELL pixels
SMALL = 4096  # scenes up to this side are measured --repeat times


class ThresholdSegmenter:
    """Trivial segmenter: one target ``"bright"``, probability 1 where red > 128, else 0."""

    chip_size = 1024

    def segment(self, chips, prompt):
        from segearth_geo.prediction import ChipPrediction, Target

        return [ChipPrediction("[SEG]", [Target("bright", (c[..., 0] > 128).astype(np.float32))]) for c in chips]


def scene_rows(row0: int, rows: int, width: int) -> np.ndarray:
    """uint8 ``(3, rows, width)`` of the synthetic scene starting at ``row0``; deterministic."""
    r, c = np.mgrid[row0:row0 + rows, 0:width]
    cell_r, cell_c = r // CELL, c // CELL
    local_r, local_c = r % CELL - CELL // 2, c % CELL - CELL // 2
    radius = 60 + (cell_r * 7 + cell_c * 13) % 90  # 60..149 px: many objects cross chip borders
    disc = local_r**2 + local_c**2 < radius**2
    hole = local_r**2 + local_c**2 < (radius // 3) ** 2
    rect = (np.abs(local_r - 100) < 40) & (np.abs(local_c + 40) < 150) & ((cell_r + cell_c) % 3 == 0)
    bright = (disc & ~hole) | rect
    texture = ((r * 31 + c * 17) % 50).astype(np.uint8)
    red = np.where(bright, 200 + texture // 2, 40 + texture)
    data = np.stack([red, 60 + texture, 80 + texture // 2]).astype(np.uint8)
    return data


def generate(path: Path, size: int) -> Path:
    """Write a ``size`` x ``size`` tiled, compressed RGB GeoTIFF strip by strip (low memory)."""
    import rasterio
    from rasterio.transform import from_origin

    if path.exists():
        return path
    tmp = path.with_suffix(".part.tif")
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": CRS,
               "transform": from_origin(*ORIGIN, GSD, GSD), "tiled": True, "blockxsize": 512, "blockysize": 512,
               "compress": "deflate", "zlevel": 1, "photometric": "RGB", "interleave": "pixel"}
    with rasterio.open(tmp, "w", **profile) as ds:
        for row0 in range(0, size, 512):
            rows = min(512, size - row0)
            ds.write(scene_rows(row0, rows, size), window=((row0, row0 + rows), (0, size)))
    os.replace(tmp, path)
    return path


def run_engine(scene: Path) -> dict:
    from segearth_geo.engine import segment_raster  # imports (geopandas…) outside the timing, as for naive

    start = time.perf_counter()
    gdf = segment_raster(scene, "bright things", segmenter=ThresholdSegmenter(), overlap=128, batch_size=8)
    return {"seconds": time.perf_counter() - start, "polygons": len(gdf)}


def run_naive(scene: Path) -> dict:
    import rasterio
    import rasterio.features
    import shapely.geometry

    start = time.perf_counter()
    with rasterio.open(scene) as ds:
        data = ds.read()  # (3, H, W): the whole scene in memory
        transform = ds.transform
    # The same segmenter and threshold as the engine, on the whole scene as one chip (a (H, W, 3) view).
    (prediction,) = ThresholdSegmenter().segment([data.transpose(1, 2, 0)], "bright things")
    mask = prediction.targets[0].probability >= 0.5
    polygons = [shapely.geometry.shape(g) for g, _ in
                rasterio.features.shapes(mask.view(np.uint8), mask=mask, connectivity=4, transform=transform)]
    return {"seconds": time.perf_counter() - start, "polygons": len(polygons)}


def child(method: str, scene: Path) -> None:
    result = (run_engine if method == "engine" else run_naive)(scene)
    import rasterio

    with rasterio.open(scene) as ds:
        pixels = ds.width * ds.height
    result["mpx_s"] = pixels / 1e6 / result["seconds"]
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps(result))


def measure(method: str, scene: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--child", method, str(scene)], capture_output=True, text=True,
                         env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{method} on {scene} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384], help="scene sides in pixels")
    parser.add_argument("--workdir", type=Path, default=None, help="where scenes are generated (default: temp)")
    parser.add_argument("--repeat", type=int, default=3, help=f"runs per method for scenes up to {SMALL} px")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "SCENE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory(prefix="geo-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = []
        for size in args.sizes:
            start = time.perf_counter()
            scene = generate(workdir / f"scene_{size}.tif", size)
            print(f"scene {size}x{size}: {scene.stat().st_size / 2**20:.0f} MiB on disk "
                  f"(ready in {time.perf_counter() - start:.0f} s)", file=sys.stderr)
            runs: dict[str, list[dict]] = {"engine": [], "naive": []}
            for _ in range(max(1, args.repeat) if size <= SMALL else 1):
                for method in ("engine", "naive"):
                    result = measure(method, scene)
                    runs[method].append(result)
                    print(f"  {method}: {result}", file=sys.stderr)
            for method, results in runs.items():
                best = min(results, key=lambda r: r["seconds"])
                rows.append((size, method, dict(best, peak_rss_mb=max(r["peak_rss_mb"] for r in results),
                                                runs=len(results))))
    print(f"{'scene':>12} {'method':>7} {'runs':>5} {'seconds':>8} {'Mpx/s':>7} {'peak RSS MiB':>13} {'polygons':>9}")
    for size, method, r in rows:
        print(f"{size:>5}x{size:<6} {method:>7} {r['runs']:5d} {r['seconds']:8.2f} {r['mpx_s']:7.1f} "
              f"{r['peak_rss_mb']:13.0f} {r['polygons']:9d}")
    by = {(s, m): r for s, m, r in rows}
    print()
    for size in args.sizes:
        e, n = by[(size, "engine")], by[(size, "naive")]
        ratio = e["mpx_s"] / n["mpx_s"]
        same = "same polygon count" if e["polygons"] == n["polygons"] else "POLYGON COUNTS DIFFER"
        print(f"{size}x{size}: throughput engine/naive = {ratio:.2f}x (target >= 1: {'met' if ratio >= 1 else 'NOT met'}); "
              f"peak RSS engine/naive = {e['peak_rss_mb'] / n['peak_rss_mb']:.2f}x; {same}")
    if len(args.sizes) > 1:
        small, large = min(args.sizes), max(args.sizes)
        for method in ("engine", "naive"):
            ratio = by[(large, method)]["peak_rss_mb"] / by[(small, method)]["peak_rss_mb"]
            target = f" (target <= 1.3: {'met' if ratio <= 1.3 else 'NOT met'})" if method == "engine" else ""
            print(f"{method}: peak RSS {large}² / {small}² = {ratio:.2f}x{target}")


if __name__ == "__main__":
    main()
