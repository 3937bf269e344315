"""Batch jobs under hostile use: AOIs that cut polygons, world AOIs, merge targets, replaced scenes, damaged state
files, a full disk, bad text, resuming from another entry point. Each test failed on 0.1's code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from segearth_geo.batch import run_batch
from segearth_geo.errors import OutputError, UsageError
from segearth_geo.output import TEMP_PREFIX, temporary_path
from tests.batch_fixtures import write_scenes
from tests.segmenters import ColourSegmenter

FIXTURES = Path(__file__).with_name("batch_fixtures.py")
X0, Y0 = 390000.0, 5820000.0  # upper-left corner of the UTM test scene (0.5 m pixels, 230 x 150 px)


def _cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segearth_geo_cli.main", *args], capture_output=True, text=True,
                          timeout=300, **kwargs)


def _one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    return lines[0]


def _segments(path) -> gpd.GeoDataFrame:
    return gpd.read_file(path, layer="segments", engine="pyogrio")


def _aoi(tmp_path, geometry, crs="EPSG:32633", name="aoi.gpkg") -> Path:
    path = tmp_path / name
    gpd.GeoDataFrame({"n": list(range(len(geometry)))}, geometry=geometry, crs=crs).to_file(path, engine="pyogrio")
    return path


# -- AOIs --------------------------------------------------------------------------------------------------------
def test_an_aoi_that_cuts_a_polygon_into_parts_keeps_every_part(tmp_path):
    """The red ring (x 20..100 m, y -15..-60 m) cut by a two-part AOI: parts, each measured, none lost."""
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    parts = [shapely.box(X0 + 30, Y0 - 70, X0 + 50, Y0 - 5), shapely.box(X0 + 70, Y0 - 70, X0 + 90, Y0 - 5)]
    aoi = _aoi(tmp_path, parts)
    report = run_batch(paths, ["red"], tmp_path / "job", segmenter=ColourSegmenter(64), aoi=aoi)
    assert report.ok and report.scenes[0].status == "done", report.to_text()
    got = _segments(report.scenes[0].outputs["red"])
    whole = run_batch(paths, ["red"], tmp_path / "whole", segmenter=ColourSegmenter(64)).scenes[0].outputs["red"]
    want = shapely.intersection(shapely.union_all(_segments(whole).geometry.values), shapely.union_all(parts))
    assert shapely.equals(shapely.union_all(got.geometry.values), want)
    assert len(got) == 2 and len(_segments(whole)) < len(got) + 3  # one ring, cut into a U in each box
    np.testing.assert_allclose(got["area_m2"], shapely.area(got.geometry.values), rtol=1e-9)
    np.testing.assert_array_equal(got["pixels"], np.rint(shapely.area(got.geometry.values) / 0.25))


@pytest.mark.parametrize("bounds", [(-180, -90, 180, 90), (-170, -80, 170, 80)])
def test_a_world_sized_aoi_in_degrees_covers_a_utm_scene(tmp_path, bounds):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    aoi = _aoi(tmp_path, [shapely.box(*bounds)], crs="EPSG:4326")
    report = run_batch(paths, ["red"], tmp_path / "job", segmenter=ColourSegmenter(64), aoi=aoi)
    whole = run_batch(paths, ["red"], tmp_path / "whole", segmenter=ColourSegmenter(64))
    assert report.scenes[0].status == "done" and report.scenes[0].chips == whole.scenes[0].chips
    got, want = _segments(report.scenes[0].outputs["red"]), _segments(whole.scenes[0].outputs["red"])
    assert shapely.equals(shapely.union_all(got.geometry.values), shapely.union_all(want.geometry.values))


def test_a_scene_whose_results_cannot_be_written_is_one_failure_in_the_summary(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm", "wgs84"))
    job = tmp_path / "job"
    (job / "results").mkdir(parents=True)
    (job / "results" / "utm").write_text("a file where the scene's results folder goes")
    result = _cli("-q", "batch", *map(str, paths), "-p", "red", "-o", str(job), "--model", f"{FIXTURES}:colour")
    assert result.returncode == 1 and "Traceback" not in result.stderr and "AttributeError" not in result.stderr
    assert "writing its results failed" in result.stderr and "1 unit(s) failed" in result.stderr
    assert (job / "results" / "wgs84").is_dir()  # the other scene is done


# -- merge targets ----------------------------------------------------------------------------------------------
def test_merge_never_replaces_a_file_that_is_not_the_jobs_own(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    seg = ColourSegmenter(64)
    job, merged = tmp_path / "job", tmp_path / "job" / "all.gpkg"  # inside the fresh job folder: created
    report = run_batch(paths, ["red"], job, segmenter=seg, merge=merged)
    assert report.merged == str(merged) and len(_segments(merged)) > 0
    assert run_batch(paths, ["red"], job, segmenter=seg, merge=merged).units_run == 0  # its own: rewritten
    unrelated = tmp_path / "mine.gpkg"
    unrelated.write_bytes(b"precious")
    for extra in ({}, {"restart": True}):
        with pytest.raises(OutputError, match="is not this job's merged file"):
            run_batch(paths, ["red"], job, segmenter=seg, merge=unrelated, **extra)
    assert unrelated.read_bytes() == b"precious"
    scene_file = report.scenes[0].outputs["red"]
    with pytest.raises(UsageError, match="inside the job's own files"):
        run_batch(paths, ["red"], job, segmenter=seg, merge=scene_file)


def test_merge_of_a_scene_without_crs_to_parquet_is_refused_before_any_work(tmp_path):
    from tests.geo_fixtures import write_raster

    scene = write_raster(tmp_path / "nocrs.tif", np.full((3, 40, 50), 200, np.uint8), crs=None, transform=None)
    result = _cli("batch", str(scene), "-p", "red", "-o", str(tmp_path / "job"), "--model", f"{FIXTURES}:counted",
                  "--merge", str(tmp_path / "job" / "all.parquet"), env={**os.environ, "SEGEARTH_TEST_LOAD_LOG":
                                                                          str(tmp_path / "calls.log")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "has no CRS, so it cannot be reprojected" in result.stderr.strip().splitlines()[-1]
    assert not list((tmp_path / "job").glob("shards/*/*.parquet"))


# -- plans that change, state files that break ------------------------------------------------------------------
def test_a_failed_scene_replaced_by_a_file_of_another_size_completes(tmp_path):
    """A scene that opens but fails to read (truncated) fails its units; the same name fixed with a file of another
    size plans other units: the old failed ones must leave the job, or it never completes."""
    from rasterio.transform import from_origin

    from tests.geo_fixtures import UTM, write_raster

    paths = write_scenes(tmp_path / "in", crs=("utm", "wgs84"))
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:len(data) // 3])  # the header is there, most pixels are not
    first = run_batch(paths, ["red"], tmp_path / "job", segmenter=ColourSegmenter(64))
    assert not first.ok and first.scenes[1].status != "done" and first.units_failed > 0, first.to_text()
    paths[1].unlink()
    write_raster(paths[1], np.full((3, 70, 90), 200, np.uint8), crs=UTM, transform=from_origin(X0, Y0, 0.5, 0.5))
    again = run_batch(paths, ["red"], tmp_path / "job", segmenter=ColourSegmenter(64), retry_failed=True)
    assert again.ok and [s.status for s in again.scenes] == ["done", "done"], again.to_text()
    assert again.units_failed == 0 and again.units_done == again.units_total
    assert run_batch(paths, ["red"], tmp_path / "job", segmenter=ColourSegmenter(64)).ok


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign", "job-shape", "job-json"])
def test_damaged_state_files_give_one_line_and_restart_recovers(tmp_path, damage):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    job = tmp_path / "job"
    args = [*map(str, paths), "-p", "red", "-o", str(job), "--model", f"{FIXTURES}:colour"]
    assert _cli("-q", "batch", *args).returncode == 0
    ledger = job / "ledger.sqlite"
    for extra in ("-wal", "-shm"):
        Path(f"{ledger}{extra}").unlink(missing_ok=True)
    if damage == "garbage":
        ledger.write_bytes(b"SQLite format 3\x00" + os.urandom(3000))
    elif damage == "truncated":
        ledger.write_bytes(ledger.read_bytes()[:1500])
    elif damage == "foreign":
        ledger.unlink()
        with sqlite3.connect(ledger) as db:
            db.execute("CREATE TABLE units (id TEXT, owner TEXT)")
    elif damage == "job-shape":
        (job / "job.json").write_text(json.dumps({"job": 5, "format": 2}))
    else:
        (job / "job.json").write_text("{not json")
    for command in (("batch", *args), ("batch-status", str(job))):
        result = _cli(*command)
        assert result.returncode in (1, 2) and "--restart" in _one_line(result), (command, result.stderr)
    assert _cli("-q", "batch", *args, "--restart").returncode == 0
    assert _cli("batch-status", str(job)).returncode == 0


def test_deleted_results_are_written_again(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm", "wgs84"))
    job = tmp_path / "job"
    run_batch(paths, ["red"], job, segmenter=ColourSegmenter(64), merge=job / "all.gpkg")
    rows = len(gpd.read_file(job / "all.gpkg", layer="segments_32633", engine="pyogrio"))
    shutil.rmtree(job / "results")
    again = run_batch(paths, ["red"], job, segmenter=ColourSegmenter(64), merge=job / "all.gpkg")
    assert again.ok and again.units_run == 0 and all(Path(p).is_file() for s in again.scenes
                                                     for p in s.outputs.values())
    assert len(gpd.read_file(job / "all.gpkg", layer="segments_32633", engine="pyogrio")) == rows > 0
    shutil.rmtree(job / "results")
    shutil.rmtree(job / "shards")  # shards gone too: the units run again
    seg = ColourSegmenter(64)
    third = run_batch(paths, ["red"], job, segmenter=seg)
    assert third.ok and third.units_run == third.units_total and all(Path(p).is_file() for s in third.scenes
                                                                      for p in s.outputs.values())


def _limit_file_size(limit: int):
    def apply():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_is_one_line_and_the_job_resumes(tmp_path):
    """RLIMIT_FSIZE makes every write past 96 KiB fail as on a full disk (EFBIG)."""
    paths = write_scenes(tmp_path / "in", crs=("utm", "wgs84", "mercator"))
    job = tmp_path / "job"
    args = [*map(str, paths), "-p", "red", "-o", str(job), "--model", f"{FIXTURES}:colour", "--merge",
            str(job / "all.gpkg"), "--chips-per-unit", "1"]
    full = subprocess.run([sys.executable, "-m", "segearth_geo_cli.main", "-q", "batch", *args], capture_output=True,
                          text=True, timeout=300, preexec_fn=_limit_file_size(96 * 1024))
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    assert "cannot write" in full.stderr or "failed" in full.stderr
    assert not [p for p in job.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    resumed = _cli("-q", "batch", *args)
    assert resumed.returncode == 0, resumed.stderr
    layers = gpd.list_layers(job / "all.gpkg")["name"]
    assert sum(len(gpd.read_file(job / "all.gpkg", layer=name)) for name in layers) > 0


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    job = tmp_path / "job"
    report = run_batch(paths, ["red"], job, segmenter=ColourSegmenter(64), merge=job / "all.gpkg")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    shard_dir = next((job / "shards").iterdir())
    stale = [temporary_path(shard_dir / "x.parquet", ".parquet"), temporary_path(job / "all.gpkg")]
    stale = [p.with_name(p.name.replace(f"-{os.getpid()}-", f"-{dead}-")) for p in stale]
    for path in stale:
        path.write_bytes(b"left by a killed writer")
    (job / "results" / next(iter(report.scenes)).name / "red-unused.gpkg").unlink(missing_ok=True)
    shutil.rmtree(job / "results")  # so the scene is finished (and its shards read) again
    assert run_batch(paths, ["red"], job, segmenter=ColourSegmenter(64), merge=job / "all.gpkg").ok
    assert not any(p.exists() for p in stale)


# -- text, names, resume from other entry points ------------------------------------------------------------------
def test_prompt_and_list_files_in_other_encodings(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    latin = tmp_path / "prompts.txt"
    latin.write_bytes("bâtiments rouges\n".encode("latin-1"))
    result = _cli("batch", str(paths[0]), "--prompts-file", str(latin), "-o", str(tmp_path / "job"))
    assert result.returncode == 2 and "not UTF-8" in _one_line(result)
    listing = tmp_path / "list.txt"
    listing.write_bytes(f"{paths[0]}\n".encode("utf-16"))
    result = _cli("batch", f"@{listing}", "-p", "red", "-o", str(tmp_path / "job"))
    assert result.returncode == 2 and "not UTF-8" in _one_line(result)
    listing.write_bytes(b"\xef\xbb\xbf" + f"{paths[0]}\n".encode())  # a byte-order mark
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfred\n")
    result = _cli("-q", "batch", f"@{listing}", "--prompts-file", str(bom), "-o", str(tmp_path / "job"), "--model",
                  f"{FIXTURES}:colour")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "job" / "results" / "utm").iterdir()][0].startswith("red-")
    bad = subprocess.run([sys.executable, "-m", "segearth_geo_cli.main", "batch", str(paths[0]), "-p", b"red \xff",
                          "-o", str(tmp_path / "job2")], capture_output=True, timeout=120)
    assert bad.returncode == 2 and b"not valid UTF-8" in bad.stderr and not (tmp_path / "job2").exists()


def test_a_symlink_to_a_scene_is_the_same_scene(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    link = tmp_path / "link.tif"
    link.symlink_to(paths[0])
    report = run_batch([paths[0], link], ["red"], tmp_path / "job", segmenter=ColourSegmenter(64))
    assert len(report.scenes) == 1


def test_batch_size_may_change_on_resume_and_the_cli_job_resumes_in_the_worker(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    job = tmp_path / "job"
    model = f"{FIXTURES}:colour"
    assert _cli("-q", "batch", str(paths[0]), "-p", "red", "-o", str(job), "--model", model, "--batch-size",
                "4").returncode == 0
    again = _cli("batch", str(paths[0]), "-p", "red", "-o", str(job), "--model", model, "--batch-size", "1")
    assert again.returncode == 0 and "0 this run" in again.stderr, again.stderr
    requests = [{"id": "b", "type": "batch", "inputs": [str(paths[0])], "prompts": ["red"], "output_dir": str(job)}]
    run = subprocess.run([sys.executable, "-m", "segearth_geo_cli.main", "worker", "--model", model],
                         input="".join(json.dumps(r) + "\n" for r in requests), capture_output=True, text=True,
                         timeout=300)
    result = [json.loads(line) for line in run.stdout.splitlines() if '"b"' in line][-1]
    assert result["type"] == "result" and result["units_run"] == 0 and result["ok"], result


def test_messages_say_what_is_wrong(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    (tmp_path / "areas").mkdir()
    result = _cli("batch", str(paths[0]), "-p", "red", "-o", str(tmp_path / "job"), "--aoi", str(tmp_path / "areas"))
    assert result.returncode == 2 and "is a folder" in _one_line(result)
    result = _cli("batch-status", str(paths[0]))
    assert result.returncode == 2 and "it is a file" in _one_line(result)
    dry = _cli("batch", str(paths[0]), "-p", "red", "-o", str(tmp_path / "job"), "--dry-run", "--model",
               f"{Path(__file__).with_name('segmenters.py')}:failing")
    assert dry.returncode == 1 and "Estimate:" not in dry.stderr and "--retry-failed" not in dry.stderr
    assert "the model failed on the first chips" in dry.stderr
    reply = subprocess.run(
        [sys.executable, "-m", "segearth_geo_cli.main", "worker", "--model", f"{FIXTURES}:colour"],
        input=json.dumps({"id": "b", "type": "batch", "inputs": [str(paths[0])], "prompts": ["red"],
                          "output_dir": str(tmp_path / "j"), "asset": "x"}) + "\n",
        capture_output=True, text=True, timeout=120)
    error = [json.loads(line) for line in reply.stdout.splitlines() if '"b"' in line][-1]
    assert error["type"] == "error" and error["message"] == '"asset" needs "stac"'


def test_a_merge_target_inside_a_new_job_folder_is_valid_in_a_dry_run_and_on_the_cli(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    job = tmp_path / "job"
    dry = run_batch(paths, ["red"], job, segmenter=ColourSegmenter(64), merge=job / "all.gpkg", dry_run=True)
    assert dry.dry_run and not job.exists()
    result = _cli("-q", "batch", str(paths[0]), "-p", "red", "-o", str(job), "--merge", str(job / "all.gpkg"),
                  "--model", f"{FIXTURES}:colour")
    assert result.returncode == 0, result.stderr
    assert len(_segments(job / "all.gpkg")) > 0
