"""GPU figures in one prepared run: every backend, the engine end to end, re-prompting and serving.

One command takes every figure on one GPU (random weights at the real sizes, bf16) within 8 minutes on an H100
(the default budget, model construction included; about 5 minutes expected), and writes ``gpu_suite.json`` and
``gpu_suite.md`` into ``--out``::

    python benchmarks/gpu_suite.py --out gpu_results/

``--dry-run`` runs the same parts on the CPU with tiny presets (under a minute on 2 cores), so the suite cannot rot
between GPU lendings (CI runs it)::

    python benchmarks/gpu_suite.py --dry-run --out /tmp/gpu_dry

Parts (``benchmarks/gpu_parts/``), in this order, each in its own process (a forkserver) with a time cap, so one
part's failure, crash, hang or out-of-memory costs only that part (its figures so far are kept):

* ``segearth-r2`` – SegEarth-R2 3B, forced answers of 8 and 32 ids: batch sweep (1, 4, 16, 32; stops at
  out-of-memory), ms/chip at batch 1, peak memory, stage timers, the naive official-style loop, re-prompt, profile;
* ``sam3`` – SAM3 with 1 and 4 concepts: sweep, re-prompt, profile;
* ``segearth-r1`` – SegEarth-R1: sweep, re-prompt, profile;
* ``engine`` – ``segment_raster`` with SAM3 on a generated 16,384² scene: chips/s, GPU waiting, CPU-side ceilings;
* ``serve`` – SAM3 in-process vs through ``segearth-geo serve`` (skipped with a note where the server is absent).

``--parts`` takes a subset; ``--add`` keeps the other parts already in ``--out/gpu_suite.json`` (a run split over
two calls of a GPU lending, or one part taken again), e.g. ``--parts engine,serve --add``.

The figures are read against the targets of issue 20 (``gpu_parts/report.py``); pass/fail is printed per target
and, where one is missed, the profile that says why is in the Markdown. Exit code: 0 when every part ran
without an error (missed targets included), 1 when a part failed, 2 when the command cannot run here.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from gpu_parts import report
from gpu_parts.record import write_atomic
from gpu_parts.runner import run_part
from gpu_parts.settings import DRY, REAL, Settings

PARTS = ("segearth-r2", "sam3", "segearth-r1", "engine", "serve")  # in this order
MIN_PART_S = 30.0  # a part is not started with less of the budget left


def machine_info(settings: Settings, folder: Path) -> dict:
    """GPU (``nvidia-smi`` and torch, from a child), driver, CUDA, versions, CPU."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu": platform.processor()
            or platform.machine(), "cpu_count": os.cpu_count()}
    for package in ("torch", "transformers", "numpy", "rasterio", "segearth-geo"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    try:
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30)
        name, driver, memory = [v.strip() for v in query.stdout.splitlines()[0].split(",")]
        info["gpu"] = {"name": name, "driver": driver, "memory_gib": round(float(memory) / 1024, 1)}
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        info["gpu"] = {}
    probe = run_part("probe", settings, {}, 120, folder)
    device = probe["data"].get("device") or {}
    info["torch_device"] = device
    info["cuda"] = device.get("torch_cuda")
    if device.get("name"):
        info["gpu"] = {"name": device["name"], "memory_gib": device["memory_gib"], **info["gpu"]}
    return info


def inputs_for(name: str, parts: dict) -> dict:
    """What a part takes from earlier ones: the engine and the server use SAM3's best batch (1 concept)."""
    if name in ("engine", "serve"):
        best = ((parts.get("sam3") or {}).get("data", {}).get("c1") or {}).get("best")
        return {"batch": best["batch"]} if best else {}
    return {}


def write_outputs(out: Path, summary: dict) -> str:
    summary["parts"] = {name: summary["parts"][name] for name in PARTS if name in summary["parts"]}
    summary["targets"] = report.targets(summary["parts"], tuple(summary["settings"]["answer_lengths"]))
    text = report.markdown(summary)
    write_atomic(out / "gpu_suite.json", json.dumps(summary, indent=1, default=str))
    write_atomic(out / "gpu_suite.md", text)
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_results", help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny presets: check that every part runs")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--add", action="store_true", help="keep the other parts of the gpu_suite.json already in "
                        "--out (a run split over two calls, or one part taken again)")
    parser.add_argument("--budget-s", type=float, default=None, help="the whole suite's time (default: 480 on the "
                        "GPU, 600 in the dry run); a part is not started with less than 30 s of it left")
    parser.add_argument("--device", default=None, help="default: cuda (cpu in the dry run)")
    return parser.parse_args(argv)


def new_summary(settings: Settings, args: argparse.Namespace, argv: list[str] | None) -> dict:
    """The summary this run fills; with ``--add``, the earlier run's other parts (same mode) are kept."""
    command = shlex.join(["python", "benchmarks/gpu_suite.py", *(sys.argv[1:] if argv is None else argv)])
    summary = {"suite": "benchmarks/gpu_suite.py", "dry_run": settings.dry_run,
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "command": command, "settings": settings.to_dict(), "parts": {}, "seconds": 0.0, "earlier_s": 0.0}
    path = Path(args.out) / "gpu_suite.json"
    if args.add and path.is_file():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        if earlier.get("dry_run") != settings.dry_run:
            raise SystemExit(f"Error: {path} is from a {'dry' if earlier.get('dry_run') else 'GPU'} run; --add keeps "
                             "parts of the same kind of run only")
        names = set(args.parts.split(","))
        summary["parts"] = {n: p for n, p in earlier["parts"].items() if n not in names}
        summary["command"] = f"{earlier['command']} ; {command}"
        summary["earlier_s"] = earlier["seconds"]
    return summary


def run_parts(settings: Settings, names: list[str], summary: dict, out: Path, folder: Path) -> None:
    """Each part in order, within the budget; the outputs are rewritten after each part."""
    began = time.perf_counter()
    deadline = began + settings.budget_s
    for name in [n for n in PARTS if n in names]:
        left = deadline - time.perf_counter()
        if left < MIN_PART_S:
            part = {"status": f"skipped: {left:.0f} s of the budget left", "seconds": 0.0, "data": {}, "steps": {},
                    "errors": {}, "notes": []}
        else:
            cap = min(settings.caps_s[name], left)
            print(f"== {name} (at most {cap:.0f} s)", flush=True)
            part = run_part(name, settings, inputs_for(name, summary["parts"]), cap, folder)
        summary["parts"][name] = part
        steps = " · ".join(f"{k} {v:.1f}" for k, v in part.get("steps", {}).items())
        print(f"== {name}: {part['status']} in {part['seconds']:.1f} s ({steps or 'no steps'})", flush=True)
        summary["seconds"] = round(summary["earlier_s"] + time.perf_counter() - began, 1)
        write_outputs(out, summary)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = DRY if args.dry_run else REAL
    if settings.dry_run:  # one CPU thread per part: a shared 2-core CI machine, and its figures are not the point
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = dataclasses.replace(settings, device=args.device or settings.device,
                                   budget_s=args.budget_s or settings.budget_s)
    names = [n.strip() for n in args.parts.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        print(f"Error: unknown part(s) {', '.join(unknown)}; the parts are {', '.join(PARTS)}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    out = Path(args.out)
    summary = new_summary(settings, args, argv)
    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as folder:
        summary["machine"] = machine_info(settings, Path(folder))
        if settings.device.startswith("cuda") and not summary["machine"]["torch_device"].get("cuda_available"):
            print("Error: torch sees no CUDA device here; run the CPU check with --dry-run", file=sys.stderr)
            return 2
        print(report.machine_line(summary), flush=True)
        run_parts(settings, names, summary, out, Path(folder))
    summary["seconds"] = round(summary["earlier_s"] + time.perf_counter() - began, 1)
    text = write_outputs(out, summary)
    print()
    print(text)
    for target in summary["targets"]:
        result = {True: "PASS", False: "FAIL", None: "NO FIGURE"}[target["passed"]]
        print(f"{result:9} {target['target']}: {report.number(target['value'], 2)} ({target['limit']})")
    print(f"wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'} in {time.perf_counter() - began:.0f} s")
    failed = [n for n, p in summary["parts"].items() if not p["status"].startswith(("ok", "skipped"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
