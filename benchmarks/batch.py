"""Batch-job benchmark: batch vs a shell loop of ``segment``, local vs Ray, resume overhead, CPU side.

Usage::

    python benchmarks/batch.py                       # 20 scenes of 512 px x 2 prompts, demo model on CPU
    python benchmarks/batch.py --size 256            # quicker (one chip per scene)
    python benchmarks/batch.py --skip-loop --skip-ray
    python benchmarks/batch.py --json figures.json   # also write the figures

Scenes are windows cut from the bundled ``sample_tiles`` (real SynthEarth content, so the
demo model finds buildings and roads). Every measurement is a fresh ``segearth-geo``
subprocess, timed from start to exit (model loads included), as a user would see it:

* ``loop``: ``segearth-geo segment SCENE PROMPT -o …`` once per scene and prompt (what users do
  today: the model is loaded for every call; ``--loop-scenes N`` times the first N and scales);
* ``batch``: one ``segearth-geo batch`` over all scenes and prompts (the model is loaded once);
* ``ray``: the same job with ``--executor ray --workers 2`` (a local Ray instance is started
  and two model actors share this machine's cores — honest even where it loses); local and
  Ray runs alternate for ``--repeat`` rounds and the best of each counts;
* ``estimate``: ``--dry-run``'s estimate against the job's measured time (end to end);
* ``resume``: (a) the finished job run again (plans, finds every unit done, rewrites nothing),
  (b) the job killed (SIGKILL) half-way and resumed: both runs together vs ``batch``;
* ``cpu``: the CPU side alone — a trivial segmenter (``benchmarks/batch.py:trivial``) over
  larger scenes; megapixels per second per core of reading, thresholding and vectorising.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ("all the buildings", "the roads")
TILES = ("synthearth_city.tif", "synthearth_airport.tif", "synthearth_harbour.tif")


class TrivialSegmenter:
    """One target ``"bright"``: probability = red / 255 where red > 128 (no model work at all)."""

    chip_size = 1024

    def segment(self, chips, prompt):
        from segearth_geo.prediction import ChipPrediction, Target

        return [ChipPrediction("[SEG]", [Target("bright", np.where(c[..., 0] > 128, c[..., 0] / 255.0, 0.0))])
                for c in chips]


def trivial() -> TrivialSegmenter:
    return TrivialSegmenter()


def cut_scenes(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` windows of ``size`` px cut from the sample tiles (row-major over each tile)."""
    import rasterio
    from rasterio.windows import Window

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    k = 0
    while len(paths) < count:
        for tile in TILES:
            with rasterio.open(REPO / "sample_tiles" / tile) as src:
                per_row = src.width // size
                spots = per_row * (src.height // size)
                i = k % spots
                window = Window((i % per_row) * size, (i // per_row) * size, size, size)
                profile = src.profile | {"width": size, "height": size, "transform": src.window_transform(window)}
                path = folder / f"scene_{len(paths):02d}.tif"
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(src.read(window=window))
                paths.append(path)
            if len(paths) >= count:
                break
        k += 1
    return paths


def make_cpu_scenes(folder: Path, count: int, size: int) -> list[Path]:
    """Random bright discs on a dark background (tiled, DEFLATE), ``size`` px square, UTM."""
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    rows, cols = np.mgrid[0:size, 0:size]
    for n in range(count):
        data = np.full((3, size, size), 30, np.uint8)
        for _ in range(size * size // 40000):
            r, c, rad = rng.integers(0, size), rng.integers(0, size), rng.integers(5, 40)
            data[0][(rows - r) ** 2 + (cols - c) ** 2 < rad * rad] = 220
        path = folder / f"cpu_{n}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                           crs="EPSG:32633", transform=from_origin(390000, 5820000, 0.5, 0.5), tiled=True,
                           compress="deflate") as dst:
            dst.write(data)
        paths.append(path)
    return paths


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "segearth_geo_cli.main", "-q", *args]


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return seconds


def batch_args(scenes: list[Path], out: Path, model: str, device: str, *extra: str) -> list[str]:
    args = ["batch", *map(str, scenes), "-o", str(out), "--model", model, "--device", device, *extra]
    for prompt in PROMPTS:
        args += ["-p", prompt]
    return cli(*args)


def done_units(folder: Path) -> tuple[int, int]:
    try:
        with sqlite3.connect(f"file:{folder / 'ledger.sqlite'}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COALESCE(SUM(status='done'), 0), COUNT(*) FROM units").fetchone()
    except sqlite3.OperationalError:
        return 0, 0


def killed_and_resumed(argv: list[str], out: Path, fraction: float = 0.5) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None:
        done, total = done_units(out)
        if total and done >= fraction * total:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    return time.perf_counter() - started + timed(argv)


def estimate(figures: dict, argv: list[str], finished: Path) -> None:
    """``--dry-run``'s estimate of the job against the measured run (``finished``: its job folder)."""
    dry = subprocess.run([*argv, "--dry-run", "--json-progress"], capture_output=True, text=True, check=True)
    report = json.loads(dry.stdout.strip().splitlines()[-1])
    with sqlite3.connect(finished / "ledger.sqlite") as db:
        unit_seconds = db.execute("SELECT SUM(seconds) FROM units").fetchone()[0]
    figures["estimate_s"], figures["units_s"] = report["estimate"]["seconds"], unit_seconds
    figures["estimate_over_run"] = figures["estimate_s"] / figures["batch_s"]
    print(f"--dry-run estimate: {figures['estimate_s']:.1f} s; the run took {figures['batch_s']:.1f} s end to end "
          f"(ratio {figures['estimate_over_run']:.2f}; its units alone {unit_seconds:.1f} s)", flush=True)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--size", type=int, default=512, help="scene side in pixels (demo chips are 256 px)")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chips-per-unit", type=int, default=4,
                        help="small units so that the Ray workers share the few chips of small scenes")
    parser.add_argument("--cpu-size", type=int, default=4096, help="side of the 2 scenes of the CPU-side measurement")
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--loop-scenes", type=int, default=None,
                        help="time the shell loop on the first N scenes only and scale it to all (saves time)")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--repeat", type=int, default=2, help="alternating local/Ray rounds (best of each counts)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="segearth-batch-bench-"))
    scenes = cut_scenes(work / "scenes", args.scenes, args.size)
    figures: dict[str, float | int | str] = {"scenes": args.scenes, "size": args.size, "prompts": len(PROMPTS),
                                             "model": args.model, "device": args.device, "cores": cores()}
    unit = ("--chips-per-unit", str(args.chips_per_unit))
    # Local and Ray runs alternate, --repeat rounds, best of each: on a shared machine one run mostly
    # measures the neighbours' load.
    local_runs, ray_runs = [], []
    for r in range(args.repeat):
        local_runs.append(timed(batch_args(scenes, work / f"batch{r}", args.model, args.device, *unit)))
        print(f"batch (local), round {r + 1}: {local_runs[-1]:.1f} s", flush=True)
        if not args.skip_ray:
            ray_runs.append(timed(batch_args(scenes, work / f"ray{r}", args.model, args.device, *unit,
                                             "--executor", "ray", "--workers", "2")))
            print(f"batch (Ray, 2 workers), round {r + 1}: {ray_runs[-1]:.1f} s", flush=True)
    figures["batch_s"] = min(local_runs)
    figures["batch_runs_s"] = local_runs
    estimate(figures, batch_args(scenes, work / "dry", args.model, args.device, *unit), work / "batch0")
    if ray_runs:
        figures["ray_s"], figures["ray_runs_s"] = min(ray_runs), ray_runs
        figures["local_over_ray"] = figures["batch_s"] / figures["ray_s"]
        print(f"Ray, 2 workers: best {figures['ray_s']:.1f} s vs local {figures['batch_s']:.1f} s -> Ray speed-up "
              f"{figures['local_over_ray']:.2f}x", flush=True)
    figures["resume_noop_s"] = timed(batch_args(scenes, work / "batch0", args.model, args.device, *unit))
    print(f"resume of the finished job: {figures['resume_noop_s']:.1f} s", flush=True)
    figures["killed_resumed_s"] = killed_and_resumed(
        batch_args(scenes, work / "killed", args.model, args.device, *unit), work / "killed")
    figures["resume_overhead"] = figures["killed_resumed_s"] / figures["batch_s"] - 1.0
    print(f"killed at 50 % + resumed: {figures['killed_resumed_s']:.1f} s "
          f"({100 * figures['resume_overhead']:+.0f} % vs the best uninterrupted run)", flush=True)
    if not args.skip_loop:
        looped = scenes[: args.loop_scenes or len(scenes)]
        (work / "loop").mkdir(exist_ok=True)
        started = time.perf_counter()
        for scene in looped:
            for k, prompt in enumerate(PROMPTS):
                timed(cli("segment", str(scene), prompt, "-o", str(work / "loop" / f"{scene.stem}_{k}.gpkg"),
                          "--model", args.model, "--device", args.device, "--overwrite"))
        figures["loop_measured_scenes"] = len(looped)
        figures["loop_s"] = (time.perf_counter() - started) * len(scenes) / len(looped)
        figures["loop_over_batch"] = figures["loop_s"] / figures["batch_s"]
        scaled = "" if len(looped) == len(scenes) else f" (measured on {len(looped)} scenes, scaled)"
        print(f"shell loop of segment: {figures['loop_s']:.1f} s{scaled} -> batch is {figures['loop_over_batch']:.2f}x "
              "faster", flush=True)
    import shutil

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    figures["load_average_at_end"] = load
    shutil.rmtree(work / "cpu-job", ignore_errors=True)
    cpu_scenes = make_cpu_scenes(work / "cpu", 2, args.cpu_size)
    cpu_args = cli("batch", *map(str, cpu_scenes), "-o", str(work / "cpu-job"), "-p", "bright",
                   "--model", f"{Path(__file__).resolve()}:trivial")
    total = timed(cpu_args)
    with sqlite3.connect(work / "cpu-job" / "ledger.sqlite") as db:
        seconds = db.execute("SELECT SUM(seconds) FROM units").fetchone()[0]  # unit time: no start-up, no writing
    megapixels = 2 * args.cpu_size ** 2 / 1e6
    figures["cpu_total_s"], figures["cpu_units_s"] = total, seconds
    figures["cpu_mp_per_s_per_core"] = megapixels / seconds / cores()
    print(f"CPU side (trivial segmenter, 2 x {args.cpu_size}² px): units {seconds:.1f} s ({total:.1f} s end to end), "
          f"{megapixels / seconds:.1f} MP/s = {figures['cpu_mp_per_s_per_core']:.1f} MP/s per core ({cores()} cores)",
          flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
