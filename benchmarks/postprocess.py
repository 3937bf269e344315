"""Post-processing benchmark: regularize/smooth many building polygons, and the raster outputs of a large scene.

Usage::

    python benchmarks/postprocess.py                       # 10k and 100k polygons; 4k² and 16k² scenes
    python benchmarks/postprocess.py --polygons 10000 --sizes 2048 4096   # quicker
    python benchmarks/postprocess.py --skip-rasters        # only the polygons
    python benchmarks/postprocess.py --workdir /tmp/pp     # keep the generated scenes

Every measurement runs in a **fresh subprocess**, so ``ru_maxrss`` (peak resident memory) is that job's alone.

1. **Polygons**: building footprints of SynthEarth city layouts (:func:`segearth_geo.synthetic.layout.compose_layout`,
   1280 m × 1280 m tiles, each a different seed), burnt at 0.5 m into one id image per tile and vectorised by
   GDAL (4-connected pixel staircases, as the engine makes them; buildings that touch stay separate polygons,
   so groups with shared walls are exercised). Tiles are laid side by side until the count is reached
   (``--unique-tiles`` distinct layouts, repeated). Printed: seconds per 10k polygons for
   :func:`~segearth_geo.postprocess.regularize_polygons` and :func:`~segearth_geo.postprocess.smooth_polygons`,
   peak RSS and its growth over the loaded polygons, how many the guard kept.
2. **Raster outputs**: the geo-pipeline benchmark's synthetic scene (``benchmarks/geo_pipeline.py``: bright discs
   and bars, 1024-px chips, a threshold segmenter, so the model costs nothing and the geo work is all there is),
   run as ``segment_raster`` without and with ``raster_out`` + ``labels_out``: seconds, peak RSS, and the peak
   RSS of the largest scene over the smallest (flat memory: about 1).
3. **Ratio**: post-processing throughput (polygons/s) over the CPU-side engine's (the vector run's polygons/s
   on the same machine), i.e. how much of a run's CPU time regularizing would add when a GPU does the model.
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

HERE = Path(__file__).resolve().parent
TILE_M = 1280.0  # metres per layout tile
GSD = 0.5


def tile_polygons(seed: int) -> np.ndarray:
    """Building footprints of one SynthEarth city tile as pixel-staircase polygons (pixel coordinates)."""
    import rasterio.features
    import shapely
    from affine import Affine

    from segearth_geo.synthetic.layout import compose_layout

    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    layout = compose_layout("city", TILE_M, TILE_M, rng, angle=float(rng.uniform(-0.3, 0.3)))
    side = int(TILE_M / GSD)
    buildings = [o.footprint for o in layout.objects if o.category == "building" and not o.footprint.is_empty]
    ids = rasterio.features.rasterize(zip(buildings, range(1, len(buildings) + 1)), out_shape=(side, side),
                                      transform=Affine.scale(GSD), dtype="int32")
    shapes = [shapely.geometry.shape(g) for g, v in rasterio.features.shapes(ids, mask=ids > 0, connectivity=4)]
    return np.array(shapes, dtype=object)


def city_tiles(workdir: Path, unique: int) -> Path:
    """The ``unique`` tiles' polygons, made once and kept in ``workdir`` (WKB) for the measuring subprocesses."""
    import shapely

    path = workdir / f"city_tiles_{unique}.npz"
    if not path.exists():
        tiles = [shapely.to_wkb(tile_polygons(seed)) for seed in range(unique)]
        np.savez(path, *tiles)
    return path


def city_polygons(count: int, tiles_file: Path) -> np.ndarray:
    import shapely

    with np.load(tiles_file, allow_pickle=True) as data:
        tiles = [shapely.from_wkb(data[name]) for name in data.files]
    unique = len(tiles)
    out, k = [], 0
    while sum(len(t) for t in out) < count:
        tile = tiles[k % unique]
        dx, dy = (k % 64) * (TILE_M / GSD + 20), (k // 64) * (TILE_M / GSD + 20)
        out.append(shapely.transform(tile, lambda xy, d=(dx, dy): xy + d))
        k += 1
    return np.concatenate(out)[:count]


def child_polygons(operation: str, count: int, tiles_file: Path) -> dict:
    from segearth_geo.postprocess import regularize_polygons, smooth_polygons

    polygons = city_polygons(count, tiles_file)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    _, kept = (regularize_polygons if operation == "regularize" else smooth_polygons)(polygons)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"operation": operation, "polygons": len(polygons), "seconds": seconds,
            "s_per_10k": seconds / len(polygons) * 1e4, "kept": int(kept.sum()), "loaded_rss_mb": loaded,
            "peak_rss_mb": peak}


def child_raster(scene: Path, rasters: bool) -> dict:
    sys.path.insert(0, str(HERE))
    from geo_pipeline import ThresholdSegmenter

    from segearth_geo.engine import segment_raster

    out = Path(tempfile.mkdtemp(prefix="pp-out-", dir=scene.parent))
    extra = {"raster_out": str(out / "p.tif"), "labels_out": str(out / "l.tif")} if rasters else {}
    start = time.perf_counter()
    gdf = segment_raster(scene, "bright things", segmenter=ThresholdSegmenter(), overlap=128, batch_size=8, **extra)
    seconds = time.perf_counter() - start
    sizes = {name: (out / name).stat().st_size / 2**20 for name in ("p.tif", "l.tif") if (out / name).exists()}
    for name in ("p.tif", "l.tif"):
        (out / name).unlink(missing_ok=True)
    out.rmdir()
    return {"rasters": rasters, "seconds": seconds, "polygons": len(gdf), "files_mb": sizes,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(*args: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env,
                         check=False)
    if out.returncode != 0:
        raise SystemExit(f"{args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polygons", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--unique-tiles", type=int, default=27, help="distinct SynthEarth layouts (381 buildings each)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384], help="raster scene sides (px)")
    parser.add_argument("--skip-rasters", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind = args.child[0]
        result = (child_polygons(args.child[1], int(args.child[2]), Path(args.child[3])) if kind == "polygons"
                  else child_raster(Path(args.child[1]), args.child[2] == "1"))
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="pp-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        run_all(args, workdir)


def run_all(args: argparse.Namespace, workdir: Path) -> None:
    started = time.perf_counter()
    tiles_file = city_tiles(workdir, args.unique_tiles)
    import shapely

    with np.load(tiles_file, allow_pickle=True) as data:
        per_tile = [len(data[name]) for name in data.files]
    density = np.mean(per_tile) / ((TILE_M / GSD) ** 2 / 1e6)  # building polygons per megapixel
    print(f"{args.unique_tiles} SynthEarth city tiles of {TILE_M:.0f} m: {np.mean(per_tile):.0f} buildings each "
          f"({density:.0f} per Mpx at {GSD} m; made in {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    del shapely
    rows = []
    for count in args.polygons:
        for operation in ("regularize", "smooth"):
            r = measure("polygons", operation, str(count), str(tiles_file))
            rows.append(r)
            print(f"  {r}", file=sys.stderr)
    print(f"{'operation':>10} {'polygons':>9} {'seconds':>8} {'s/10k':>6} {'kept':>6} {'RSS loaded':>11} {'peak RSS':>9}")
    for r in rows:
        print(f"{r['operation']:>10} {r['polygons']:9d} {r['seconds']:8.2f} {r['s_per_10k']:6.2f} {r['kept']:6d} "
              f"{r['loaded_rss_mb']:9.0f}MB {r['peak_rss_mb']:7.0f}MB")
    if args.skip_rasters:
        return
    sys.path.insert(0, str(HERE))
    from geo_pipeline import generate

    raster_rows = []
    for size in args.sizes:
        scene = generate(workdir / f"scene_{size}.tif", size)
        for rasters in (False, True):
            r = measure("raster", str(scene), "1" if rasters else "0")
            raster_rows.append((size, r))
            print(f"  {size}: {r}", file=sys.stderr)
    print()
    print(f"{'scene':>12} {'outputs':>16} {'seconds':>8} {'peak RSS':>9} {'polygons':>9}  files")
    for size, r in raster_rows:
        what = "vector+rasters" if r["rasters"] else "vector"
        files = ", ".join(f"{k} {v:.0f} MB" for k, v in r["files_mb"].items())
        print(f"{size:>5}x{size:<6} {what:>16} {r['seconds']:8.1f} {r['peak_rss_mb']:7.0f}MB {r['polygons']:9d}  {files}")
    by = {(s, r["rasters"]): r for s, r in raster_rows}
    for size in args.sizes:
        print(f"{size}²: seconds with rasters / vector only = {by[(size, True)]['seconds'] / by[(size, False)]['seconds']:.2f}x")
    if len(args.sizes) > 1:
        small, large = min(args.sizes), max(args.sizes)
        for rasters in (False, True):
            ratio = by[(large, rasters)]["peak_rss_mb"] / by[(small, rasters)]["peak_rss_mb"]
            print(f"{'vector+rasters' if rasters else 'vector'}: peak RSS {large}² / {small}² = {ratio:.2f}x")
    # The CPU-side engine (read, vectorise, stitch; the model costs nothing here) on the largest scene, in
    # building polygons per second at SynthEarth's city density: what a GPU run could at most feed.
    engine = max(args.sizes)
    mpx_s = engine * engine / 1e6 / by[(engine, False)]["seconds"]
    per_s = mpx_s * density
    print(f"CPU-side engine: {mpx_s:.1f} Mpx/s = {per_s:,.0f} building polygons/s at {density:.0f} per Mpx")
    for r in rows:
        rate = r["polygons"] / r["seconds"]
        print(f"{r['operation']} {r['polygons']}: {rate:,.0f} polygons/s = {rate / per_s:.1f}x that")


if __name__ == "__main__":
    main()
