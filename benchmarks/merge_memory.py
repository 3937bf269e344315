"""Peak memory of a batch job's merge against the number of scenes (it streams scene by scene: flat).

Writes N per-scene result files of P polygons each (the layout of ``results/<scene>/<prompt>.gpkg``), then
merges them in a fresh process per size and format and prints the merge's peak RSS and seconds:

    python benchmarks/merge_memory.py --scenes 10 40 --polygons 5000

Read: the peak should not grow with the number of scenes (it is about one scene's polygons plus the
libraries); 0.1 read and concatenated every scene (~1.1-1.8 KB per polygon held at once).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from segearth_geo.batch.merge import merge_outputs
files, target = json.loads(sys.argv[1]), sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
result = merge_outputs(files, "demo", target, None)
print(json.dumps({"seconds": time.perf_counter() - started, "rows": result.rows,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "base_mb": base / 1024}))
"""


def write_scene(path: Path, polygons: int, seed: int) -> None:
    import geopandas as gpd
    import numpy as np
    import shapely

    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 10_000, polygons), rng.uniform(0, 10_000, polygons)
    geoms = shapely.box(x, y, x + rng.uniform(2, 20, polygons), y + rng.uniform(2, 20, polygons))
    frame = gpd.GeoDataFrame({"label": ["building"] * polygons, "score": rng.uniform(0.5, 1, polygons),
                              "area_m2": shapely.area(geoms), "pixels": np.rint(shapely.area(geoms) * 4).astype(int),
                              "prompt": ["all the buildings"] * polygons, "source": [str(path)] * polygons},
                             geometry=geoms, crs="EPSG:32633")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_file(path, layer="segments", engine="pyogrio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--polygons", type=int, default=5000, help="polygons per scene")
    parser.add_argument("--formats", nargs="+", default=[".gpkg", ".parquet", ".fgb"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segearth-merge-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        files = [folder / "results" / f"scene{i}" / "prompt.gpkg" for i in range(max(args.scenes))]
        for i, path in enumerate(files):
            write_scene(path, args.polygons, i)
        print(f"wrote {len(files)} scenes x {args.polygons} polygons in {time.perf_counter() - started:.1f} s")
        print("| scenes | polygons | format | merge s | peak RSS MiB | RSS before merge MiB |")
        print("|---:|---:|---|---:|---:|---:|")
        for count in args.scenes:
            for suffix in args.formats:
                target = folder / f"merged-{count}{suffix}"
                out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([str(f) for f in files[:count]]),
                                      str(target)], capture_output=True, text=True, check=True)
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {count} | {figures['rows']:,} | {suffix} | {figures['seconds']:.1f} | "
                      f"{figures['peak_mb']:.0f} | {figures['base_mb']:.0f} |")


if __name__ == "__main__":
    main()
