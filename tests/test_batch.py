"""Batch jobs in-process: exactness against segment_raster, resume, refusal, failures, inputs, AOI, merge."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely

import segearth_geo as sg
from segearth_geo.batch import run_batch
from segearth_geo.batch.config import JobSpec
from segearth_geo.batch.ledger import JobLock
from segearth_geo.batch.plan import chips_at, plan_job
from segearth_geo.batch.status import job_status
from segearth_geo.chips import chip_grid
from segearth_geo.errors import UsageError
from segearth_geo.params import SegmentParams
from tests.batch_fixtures import LOAD_LOG_ENV, write_scenes
from tests.segmenters import ColourSegmenter, RecordingSegmenter

PROMPTS = ["red things", "red and blue"]


def _frames(report, prompt):
    return [gpd.read_file(s.outputs[prompt], layer="segments", engine="pyogrio") for s in report.scenes
            if s.status == "done"]


def assert_same_polygons(got: gpd.GeoDataFrame, want: gpd.GeoDataFrame) -> None:
    assert len(got) == len(want)
    assert list(got["label"]) == list(want["label"])
    for a, b in zip(got.geometry, want.geometry):
        assert shapely.equals_exact(a, b, tolerance=0), (a.wkt, b.wkt)
    np.testing.assert_array_equal(got["pixels"], want["pixels"])
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-12)
    np.testing.assert_allclose(got["area_m2"], want["area_m2"], rtol=1e-9)


def test_chips_at_equals_chip_grid():
    grid = chip_grid(230, 150, 64, 8)
    picked = [0, 3, 5, 11]
    assert chips_at(230, 150, 64, 8, picked) == [grid[i] for i in picked]


@pytest.mark.parametrize("chips_per_unit", [1, 2, 5])
def test_scene_as_many_units_equals_segment_raster(tmp_path, chips_per_unit):
    paths = write_scenes(tmp_path / "in", crs=("utm", "wgs84"))
    seg = ColourSegmenter(64)
    report = run_batch(paths, PROMPTS, tmp_path / "job", segmenter=seg, chips_per_unit=chips_per_unit,
                       min_area=1.0 if chips_per_unit == 5 else None)
    assert report.ok and report.units_done == report.units_total == 2 * -(-12 // chips_per_unit)
    for prompt in PROMPTS:
        for path, got in zip(paths, _frames(report, prompt)):
            want = sg.segment_raster(path, prompt, segmenter=seg, overlap=8,
                                     min_area=1.0 if chips_per_unit == 5 else None)
            assert got.crs == want.crs
            assert list(got.columns) == ["label", "score", "area_m2", "pixels", "prompt", "source", "model", "id",
                                         "geometry"]
            assert set(got["source"]) == {str(path)} and set(got["prompt"]) == {prompt}
            assert_same_polygons(got, want)
    # the ring and the bar cross unit borders and still come out whole
    red = _frames(report, "red things")[0]
    assert (red["pixels"] == 90 * 160 - 30 * 70 - 20 * 4).sum() == 1 and (red["pixels"] == 135 * 8).sum() == 1


def test_chips_layer_and_prompts_back_to_back(tmp_path):
    (path,) = write_scenes(tmp_path / "in", crs=("utm",))
    seg = RecordingSegmenter(64)
    report = run_batch([path], PROMPTS, tmp_path / "job", segmenter=seg, chips_per_unit=4, batch_size=4)
    chips = gpd.read_file(report.scenes[0].outputs[PROMPTS[1]], layer="chips", engine="pyogrio")
    want = gpd.read_file(_segment_out(tmp_path, path, PROMPTS[1]), layer="chips", engine="pyogrio")
    assert list(chips["chip"]) == list(want["chip"]) == list(range(12))
    assert list(chips["answer"]) == list(want["answer"]) and list(chips["labels"]) == list(want["labels"])
    assert all(a.equals(b) for a, b in zip(chips.geometry, want.geometry))
    # every chip batch was segmented once per prompt, the prompts back to back on the same chips
    assert len(seg.calls) == 2 * 3
    sums = seg.chip_sums[: 2 * 4 * 3]
    assert sums[0:4] == sums[4:8]


def _segment_out(tmp_path, path, prompt):
    out = tmp_path / "segment.gpkg"
    if not out.exists():
        sg.segment_raster(path, prompt, segmenter=ColourSegmenter(64), overlap=8, out=out)
    return out


def test_unit_ids_are_deterministic_and_follow_the_job(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    params = SegmentParams(overlap=8)
    spec = JobSpec(sources=(str(paths[0]),), prompts=("red",), model="m", params=params, chip_size=64, chips_per_unit=4)
    ids = [u.id for u in plan_job(spec)[0].units]
    assert ids == [u.id for u in plan_job(spec)[0].units] and len(set(ids)) == 3
    other = JobSpec(sources=spec.sources, prompts=("blue",), model="m", params=params, chip_size=64, chips_per_unit=4)
    assert not set(ids) & {u.id for u in plan_job(other)[0].units}


def test_resume_does_not_redo_finished_units(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    first = run_batch(paths, PROMPTS, tmp_path / "job", segmenter=RecordingSegmenter(64), chips_per_unit=2)
    seg = RecordingSegmenter(64)
    again = run_batch(paths, PROMPTS, tmp_path / "job", segmenter=seg, chips_per_unit=2)
    assert again.units_run == 0 and again.units_resumed == first.units_total and seg.calls == []
    # a unit left 'running' by a killed run is redone, alone
    with sqlite3.connect(tmp_path / "job" / "ledger.sqlite") as db:
        unit = db.execute("SELECT id FROM units ORDER BY block LIMIT 1").fetchone()[0]
        db.execute("UPDATE units SET status='running' WHERE id=?", (unit,))
        db.execute("UPDATE scenes SET status='planned'")
    third = run_batch(paths, PROMPTS, tmp_path / "job", segmenter=seg, chips_per_unit=2)
    assert third.units_run == 1 and len(seg.calls) == 2  # one batch x two prompts
    for prompt in PROMPTS:
        assert_same_polygons(_frames(third, prompt)[0], _frames(first, prompt)[0])


def test_finished_job_run_again_does_not_load_the_model(tmp_path, monkeypatch):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    log = tmp_path / "loads.txt"
    monkeypatch.setenv(LOAD_LOG_ENV, str(log))
    model = f"{Path(__file__).with_name('batch_fixtures.py')}:counted"
    first = run_batch(paths, ["red"], tmp_path / "job", model=model)
    again = run_batch(paths, ["red"], tmp_path / "job", model=model)
    assert first.ok and again.ok and again.units_run == 0 and again.units_done == first.units_done
    assert len(log.read_text().splitlines()) == 1


def test_changed_job_is_refused_unless_restart(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    run_batch(paths, ["red"], tmp_path / "job", segmenter=ColourSegmenter(64))
    with pytest.raises(UsageError, match=r"different batch job \(changed: prompts\).*pass restart to discard"):
        run_batch(paths, ["blue"], tmp_path / "job", segmenter=ColourSegmenter(64))
    with pytest.raises(UsageError, match=r"changed: threshold"):
        run_batch(paths, ["red"], tmp_path / "job", segmenter=ColourSegmenter(64), threshold=0.9)
    report = run_batch(paths, ["blue"], tmp_path / "job", segmenter=ColourSegmenter(64), restart=True)
    assert report.ok and list(report.scenes[0].outputs) == ["blue"]
    assert json.loads((tmp_path / "job" / "job.json").read_text())["job"]["prompts"] == ["blue"]
    assert len(list((tmp_path / "job" / "results" / "utm").iterdir())) == 1  # the 'red' results are gone


def test_second_job_on_the_same_folder_is_refused(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    (tmp_path / "job").mkdir()
    with JobLock(tmp_path / "job"):
        with pytest.raises(UsageError, match="another batch job .* is running"):
            run_batch(paths, ["red"], tmp_path / "job", segmenter=ColourSegmenter(64))
    assert run_batch(paths, ["red"], tmp_path / "job", segmenter=ColourSegmenter(64)).ok


def test_bad_scene_is_isolated_and_retried(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm", "wgs84"), corrupt=True)
    report = run_batch(paths, ["red"], tmp_path / "job", segmenter=RecordingSegmenter(64))
    assert report.exit_code == 1 and [s.status for s in report.scenes] == ["done", "done", "failed"]
    (failure,) = report.failures
    assert failure.source == str(paths[2]) and "cannot open" in failure.error and "\n" not in failure.error
    assert "Failed (1; rerun with retry_failed)" in report.to_text()
    status = job_status(tmp_path / "job")
    assert status.units["failed"] == 1 and status.scenes == {"done": 2, "failed": 1}
    # fix the file: --retry-failed runs only its units
    write_scenes(tmp_path / "fixed", crs=("mercator",))[0].replace(paths[2])
    seg = RecordingSegmenter(64)
    again = run_batch(paths, ["red"], tmp_path / "job", segmenter=seg, retry_failed=True)
    assert again.ok and again.units_run == 1 and [s.status for s in again.scenes] == ["done"] * 3


def test_max_failures_stops_early(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    report = run_batch(paths, ["red"], tmp_path / "job", model=f"{__file__.rsplit('/', 1)[0]}/segmenters.py:failing",
                       chips_per_unit=2, max_failures=1)
    assert report.stopped_early and report.units_failed == 2 and report.units_run == 2
    assert "simulated model crash" in report.failures[0].error
    assert job_status(tmp_path / "job").units == {"pending": 4, "running": 0, "done": 0, "failed": 2}


def test_inputs_globs_lists_and_stac(tmp_path):
    pystac = pytest.importorskip("pystac")  # the [ray] / [stac] extra

    paths = write_scenes(tmp_path / "in", crs=("utm", "wgs84"))
    (tmp_path / "list.txt").write_text("# scenes\nin/utm.tif\n\nin/wgs84.tif\n")
    from segearth_geo.batch.inputs import expand_inputs

    assert expand_inputs([str(tmp_path / "in" / "*.tif")]) == [str(p) for p in sorted(paths)]
    assert expand_inputs([f"@{tmp_path / 'list.txt'}", str(paths[0])]) == [str(p) for p in paths]
    with pytest.raises(UsageError, match="matches no file"):
        expand_inputs([str(tmp_path / "nothing*.tif")])
    items = []
    for path in paths:
        item = pystac.Item(id=path.stem, geometry=None, bbox=None, datetime=datetime(2024, 1, 1, tzinfo=timezone.utc),
                           properties={})
        item.add_asset("visual", pystac.Asset(href=f"in/{path.name}", media_type=pystac.MediaType.COG, roles=["data"]))
        item.add_asset("thumb", pystac.Asset(href="thumb.png", media_type=pystac.MediaType.PNG, roles=["thumbnail"]))
        items.append(item)
    collection = tmp_path / "items.json"
    collection.write_text(json.dumps(pystac.ItemCollection(items).to_dict(transform_hrefs=False)))
    report = run_batch([], ["red"], tmp_path / "job", segmenter=ColourSegmenter(64), stac=collection)
    assert [s.source for s in report.scenes] == [str(p) for p in paths] and report.ok
    assert run_batch([], ["red"], tmp_path / "job", segmenter=ColourSegmenter(64), stac=collection,
                     asset="visual").units_run == 0
    with pytest.raises(UsageError, match="no asset 'nir'"):
        run_batch([], ["red"], tmp_path / "job2", segmenter=ColourSegmenter(64), stac=collection, asset="nir")


def test_aoi_limits_chips_and_clips_polygons(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm", "wgs84"))
    x0, y0 = 390000.0, 5820000.0
    area = shapely.Polygon([(x0 + 30, y0 - 10), (x0 + 70, y0 - 25), (x0 + 60, y0 - 50), (x0 + 25, y0 - 45)])
    aoi = gpd.GeoDataFrame({"name": ["a"]}, geometry=[area], crs="EPSG:32633").to_crs(4326)
    aoi.to_file(tmp_path / "aoi.gpkg", engine="pyogrio")
    seg = RecordingSegmenter(64)
    report = run_batch(paths, ["red"], tmp_path / "job", segmenter=seg, aoi=tmp_path / "aoi.gpkg")
    assert [s.status for s in report.scenes] == ["done", "skipped"]
    assert report.scenes[1].error == "outside the AOI" and report.ok
    assert 0 < report.scenes[0].chips < 12 and len(seg.chip_sums) == report.scenes[0].chips
    got = _frames(report, "red")[0]
    whole = sg.segment_raster(paths[0], "red", segmenter=ColourSegmenter(64), overlap=8)
    aoi_utm = shapely.make_valid(aoi.to_crs(32633).geometry.iloc[0])
    clipped = shapely.get_parts(shapely.intersection(whole.geometry.values, aoi_utm))
    clipped = [g for g in clipped if isinstance(g, shapely.Polygon) and g.area > 0]
    assert len(got) == len(clipped) > 0
    assert shapely.equals(shapely.union_all(got.geometry.values), shapely.union_all(clipped))
    assert got.geometry.within(aoi_utm.buffer(1e-6)).all()
    np.testing.assert_allclose(got["area_m2"].sum(), sum(g.area for g in clipped), rtol=1e-9)


def test_merge_formats(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm", "wgs84"))
    seg = ColourSegmenter(64)
    report = run_batch(paths, PROMPTS, tmp_path / "job", segmenter=seg, merge=tmp_path / "all.gpkg")
    per_scene = {(s.source, p): gpd.read_file(f, layer="segments", engine="pyogrio")
                 for s in report.scenes for p, f in s.outputs.items()}
    total = sum(len(f) for f in per_scene.values())
    layers = sorted(pyogrio.list_layers(tmp_path / "all.gpkg")[:, 0])
    assert layers == ["segments_32633", "segments_4326"] and set(report.merge_layers) == set(layers)
    utm = gpd.read_file(tmp_path / "all.gpkg", layer="segments_32633", engine="pyogrio")
    assert utm.crs.to_epsg() == 32633 and set(utm["source"]) == {str(paths[0])}
    assert set(utm["model"]) == {"tests.segmenters.ColourSegmenter"} and set(utm["prompt"]) == set(PROMPTS)
    assert len(utm) + len(gpd.read_file(tmp_path / "all.gpkg", layer="segments_4326", engine="pyogrio")) == total
    for suffix, crs, reader in ((".parquet", None, gpd.read_parquet), (".fgb", "EPSG:3035", gpd.read_file)):
        again = run_batch(paths, PROMPTS, tmp_path / "job", segmenter=seg, merge=tmp_path / f"all{suffix}",
                          merge_crs=crs)
        merged = reader(tmp_path / f"all{suffix}")
        assert merged.crs.to_epsg() == (4326 if crs is None else 3035) and len(merged) == total
        assert (crs is None) == any("reprojected to EPSG:4326" in n for n in again.notes)
        part = merged[(merged["source"] == str(paths[0])) & (merged["prompt"] == PROMPTS[0])]
        want = per_scene[(str(paths[0]), PROMPTS[0])].to_crs(merged.crs)
        assert all(a.equals_exact(b, 1e-6) for a, b in zip(part.geometry, want.geometry))
    run_batch(paths, PROMPTS, tmp_path / "job", segmenter=seg, merge=tmp_path / "one.gpkg", merge_crs="EPSG:4326")
    assert list(pyogrio.list_layers(tmp_path / "one.gpkg")[:, 0]) == ["segments"]
    with pytest.raises(UsageError, match=r"^merge must end in \.gpkg, \.parquet or \.fgb"):
        run_batch(paths, PROMPTS, tmp_path / "job", segmenter=seg, merge=tmp_path / "all.shp")


def test_dry_run_plans_and_writes_nothing(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm", "wgs84"), corrupt=True)
    report = run_batch(paths, PROMPTS, tmp_path / "job", segmenter=ColourSegmenter(64), dry_run=True, chips_per_unit=5)
    assert not (tmp_path / "job").exists()
    assert report.dry_run and report.units_total == 6 and report.chips_total == 24
    assert report.estimate is not None and report.estimate.seconds_per_chip > 0 and report.estimate.peak_mb > 50
    text = report.to_text()
    assert "nothing written" in text and "failed" in text and "Estimate:" in text


def test_absurd_chip_count_needs_confirmation(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    with pytest.raises(UsageError, match=r"utm.tif would be cut into [\d,]+ chips of 64 px .* confirm with allow_large"):
        run_batch(paths, ["red"], tmp_path / "job", segmenter=ColourSegmenter(64), gsd=0.005, dry_run=True)


def test_bad_arguments_are_one_line_usage_errors(tmp_path):
    paths = write_scenes(tmp_path / "in", crs=("utm",))
    seg = ColourSegmenter(64)
    for kwargs, message in (
        ({"prompts": ["  "]}, "prompt is empty"),
        ({"prompts": ["red"], "threshold": 2}, "threshold"),
        ({"prompts": ["red"], "chips_per_unit": 0}, "chips_per_unit"),
        ({"prompts": ["red"], "executor": "spark"}, "executor must be one of local, ray"),
        ({"prompts": ["red"], "asset": "x"}, "asset needs stac"),
    ):
        with pytest.raises(UsageError, match=message):
            run_batch(paths, out_dir=tmp_path / "job", segmenter=seg, **kwargs)
    with pytest.raises(UsageError, match="no input"):
        run_batch([], ["red"], tmp_path / "job", segmenter=seg)
