"""`segearth-geo eval` through a real subprocess, with test segmenters loaded as file.py:factory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from data_fixtures import write_eval_lasers

FIXTURES = Path(__file__).with_name("data_fixtures.py")


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segearth_geo_cli.main", "eval", *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_eval_lasers(tmp_path_factory.mktemp("cli_eval") / "synth")


def test_eval_writes_json_and_table(data_root, tmp_path):
    out = tmp_path / "result.json"
    proc = run_eval("--model", f"{FIXTURES}:red_segmenter", "--dataset", "synthearth", "--data-root", str(data_root),
                    "--split", "test", "--json", str(out), "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    # hand-computed in data_fixtures.py: IoUs 1/2, 1, 0, 0; ΣI/ΣU = 32/60
    assert data["giou"] == pytest.approx(0.375) and data["ciou"] == pytest.approx(32 / 60)
    assert data["per_dimension"]["multiple"] == pytest.approx({"giou": 0.5, "ciou": 16 / 24, "n": 2})
    assert data["per_dimension"]["short"]["n"] == 2
    assert [s["id"] for s in data["samples"]] == ["s1", "s2", "s3"]
    assert data["samples"][1]["ious"] == [1.0, 0.0]
    assert "| overall | 37.50 | 53.33 | 4 |" in proc.stdout
    assert "| implicit | 50.00 | 66.67 | 2 |" in proc.stdout


def test_eval_teacher_forced_and_limit(data_root, tmp_path):
    out = tmp_path / "forced.json"
    proc = run_eval("--model", f"{FIXTURES}:colour_predictor", "--dataset", "lasers", "--data-root", str(data_root),
                    "--mode", "teacher-forced", "--json", str(out), "--limit", "2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    # s1 IoU 1/2, s2 both targets exact (the reference answer's 2nd [SEG] uses the green channel)
    assert data["giou"] == pytest.approx((0.5 + 1 + 1) / 3) and data["mode"] == "teacher-forced"
    assert data["ciou"] == pytest.approx((16 + 16 + 8) / (32 + 16 + 8))


def test_eval_errors_are_one_line(data_root, tmp_path):
    proc = run_eval("--model", f"{FIXTURES}:red_segmenter", "--dataset", "synthearth", "--data-root", str(data_root),
                    "--mode", "teacher-forced")
    assert proc.returncode == 2 and "teacher-forced" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_eval("--model", f"{FIXTURES}:red_segmenter", "--dataset", "earthreason", "--data-root", str(tmp_path))
    assert proc.returncode == 1 and proc.stderr.strip().startswith("Error:") and "Traceback" not in proc.stderr
