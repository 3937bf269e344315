"""``benchmarks/gpu_suite.py``: its dry run takes every figure (CPU, tiny presets), and the pieces that decide its
figures (the sweep's out-of-memory stop, GPU waiting, the CPU-side verdict, the generated scene) are right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

from gpu_parts.engine import WAIT_LIMIT, loop_figures, verdict  # noqa: E402
from gpu_parts.scene import ROOFS, object_targets, write_scene  # noqa: E402
from gpu_parts.serving import missing_serve  # noqa: E402
from gpu_parts.settings import TimeBox  # noqa: E402
from gpu_parts.timing import sweep  # noqa: E402

from segearth_geo.prediction import ChipPrediction  # noqa: E402

PARTS = ("segearth-r2", "sam3", "segearth-r1", "engine", "serve")
QUICK = TimeBox(min_calls=1, min_s=0.0, max_s=0.01)


class _OutOfMemoryAbove:
    """A segmenter whose batches of ``limit`` chips or more raise CUDA out-of-memory (a CPU cannot run out)."""

    def __init__(self, limit: int, halve: bool = False) -> None:
        self.limit, self.halve = limit, halve
        self.device, self.batch_size, self.chip_size = torch.device("cpu"), 1, 8

    def segment(self, chips, prompt):
        if len(chips) >= self.limit:
            if not self.halve:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            self.batch_size = max(1, self.batch_size // 2)  # what SegmenterBase.in_batches does instead of raising
        return [ChipPrediction(answer="", targets=[]) for _ in chips]


@pytest.mark.parametrize("halve", [False, True], ids=["raises", "halves the batch"])
def test_the_sweep_stops_at_the_first_out_of_memory(halve):
    chips = [np.zeros((8, 8, 3), np.uint8)] * 4
    said: list[str] = []
    result = sweep(_OutOfMemoryAbove(16, halve), chips, "roofs", (1, 4, 16, 32), QUICK, 60.0, said.append)
    assert [row["batch"] for row in result["rows"]] == [1, 4, 16]
    assert [row["oom"] for row in result["rows"]] == [False, False, True]
    assert result["best"]["batch"] in (1, 4) and result["batch1"]["batch"] == 1
    assert result["best"]["chips_per_s"] > 0 and said[-1] == "batch 16: out of memory; the sweep stops"


def test_gpu_waiting_is_the_time_between_segment_calls():
    calls = [(1.0, 2.0, 4), (2.5, 3.5, 4), (3.5, 4.5, 4)]  # (start, end, chips)
    figures = loop_figures(calls, began=0.0, ended=5.0)
    assert figures["chips"] == 12 and figures["model_s"] == 3.0 and figures["model_chips_per_s"] == 4.0
    assert figures["gpu_wait_s"] == 0.5 and figures["gpu_wait_share"] == round(0.5 / 3.5, 4)
    assert figures["longest_wait_ms"] == 500.0 and figures["head_s"] == 1.0 and figures["tail_s"] == 0.5
    assert figures["chips_per_s"] == 12 / 5


@pytest.mark.parametrize("share, ceiling, bottleneck", [(0.02, 50.0, False), (WAIT_LIMIT + 0.05, 50.0, True),
                                                        (0.02, 5.0, True)])
def test_the_cpu_side_is_the_bottleneck_when_the_gpu_waits_or_cannot_be_fed(share, ceiling, bottleneck):
    data = {"run": {"gpu_wait_share": share, "model_chips_per_s": 10.0},
            "ceiling_model": {"chips_per_s": 40.0}, "ceiling_objects": {"chips_per_s": ceiling}}
    assert verdict(data)["cpu_bottleneck"] is bottleneck
    assert verdict({})["cpu_bottleneck"] is None


def test_the_generated_scene_has_its_buildings_where_the_object_masks_say(tmp_path):
    path = tmp_path / "scene.tif"
    buildings = write_scene(path, 1024)
    with rasterio.open(path) as src:
        assert (src.width, src.height, src.count) == (1024, 1024, 3) and src.crs.to_epsg() == 32633
        assert src.block_shapes == [(512, 512)] * 3 and src.compression.name.lower() == "deflate"
        window = Window(200, 300, 400, 350)
        rgb = src.read(window=window).transpose(1, 2, 0)  # (h, w, 3)
    (target,) = object_targets(buildings, window)
    inside = target.probability > 0.5
    roof = (rgb[:, :, None, :] == ROOFS[None, None]).all(axis=-1).any(axis=-1)  # (h, w): a roof colour
    assert inside.any() and (~inside).any()
    assert np.array_equal(inside, roof)  # the fields and roads never take a roof colour


@pytest.mark.slow
def test_the_dry_run_takes_every_figure_and_writes_the_json_and_markdown(tmp_path):
    out = tmp_path / "gpu"
    run = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_suite.py"), "--dry-run", "--out", str(out)],
                         capture_output=True, text=True, cwd=str(REPO), timeout=850)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((out / "gpu_suite.json").read_text(encoding="utf-8"))
    assert summary["dry_run"] is True and summary["machine"]["torch"] and summary["machine"]["cpu_count"]
    parts = summary["parts"]
    assert list(parts) == list(PARTS)
    expected = {name: "ok" for name in PARTS}
    if missing_serve():  # no segearth_geo.serve or no uvicorn/starlette here: the part says so and is skipped
        expected["serve"] = "skipped"
    assert {name: part["status"] for name, part in parts.items()} == expected
    r2, r1, sam3 = parts["segearth-r2"]["data"], parts["segearth-r1"]["data"], parts["sam3"]["data"]
    for k in summary["settings"]["answer_lengths"]:
        assert r2[f"k{k}"]["best"]["chips_per_s"] > 0 and r2[f"k{k}"]["batch1"]["ms_per_chip"] > 0
        assert r2[f"naive_k{k}"]["ms_per_chip"] > 0 and "decode" in r2[f"stages_k{k}"]["batch1"]["stages_ms_per_chip"]
    for data in (r2, r1, sam3):
        assert data["reprompt"]["ratio"] > 0 and data["reprompt"]["cache"]["hits"]
        assert data["profile"] and all(p["ops"] for p in data["profile"].values())
    assert [row["batch"] for row in r1["c1"]["rows"]] == summary["settings"]["sweep"]
    assert sam3["c1"]["best"] and sam3["c4"]["best"] and sam3["calibration"]["instances_kept"] >= 1
    engine = parts["engine"]["data"]
    assert engine["run"]["chips"] > 0 and engine["run"]["polygons"] > 0
    assert engine["ceiling_model"]["chips_per_s"] > 0 and engine["ceiling_objects"]["polygons"] > 0
    assert engine["one_thread"]["read_ms"] > 0 and engine["verdict"]["cpu_bottleneck"] in (True, False)
    serve = parts["serve"]["data"]
    if expected["serve"] == "ok":
        assert serve["in_process"]["chips"] == serve["served"]["chips"] and serve["ratio"] > 0
    else:
        assert serve["skipped"] == missing_serve() and "Skipped: " in (out / "gpu_suite.md").read_text()
    assert len(summary["targets"]) == 2 * len(summary["settings"]["answer_lengths"]) + 4
    assert all(t["passed"] in (True, False) for t in summary["targets"])
    markdown = (out / "gpu_suite.md").read_text(encoding="utf-8")
    for heading in ("## Throughput", "## Re-prompt", "## Engine end to end", "## Serving", "## Targets",
                    "## Where the time went"):
        assert heading in markdown
    for row in ("| SegEarth-R2 (tiny) | answer 8 ids |", "naive official loop", "| SegEarth-R1 (tiny) |",
                "| SAM3 (tiny) | 4 concepts", *(f"| {name} | {status} |" for name, status in expected.items())):
        assert row in markdown
    verdicts = [line for line in run.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(verdicts) == len(summary["targets"])
