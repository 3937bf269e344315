"""`segearth-geo segment` against hostile input: each test drives the real CLI subprocess.

Every case here was a defect found by hostile testing (issue 10): a traceback, a lost or
half-written output, a wrong exit code, or warning spam. Exit codes: 0 success, 1 failure,
2 usage error, 143 SIGTERM (README "Exit codes").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from tests.geo_fixtures import UTM, UTM_ORIGIN, write_raster
from tests.test_engine import _scene

SEGMENTERS = Path(__file__).resolve().parent / "segmenters.py"
BROKEN = Path(__file__).resolve().parent / "broken_module.py"


def _cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "segearth_geo_cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def _segment(raster: Path | str, prompt: str, out: Path | str, *extra: str, model: str = "colour_small",
             verbosity: tuple[str, ...] = (), timeout: float = 120) -> subprocess.CompletedProcess:
    return _cli(*verbosity, "segment", str(raster), prompt, "-o", str(out), "--model", f"{SEGMENTERS}:{model}", *extra,
                timeout=timeout)


def _error_line(result: subprocess.CompletedProcess, *, warnings: int = 0) -> str:
    """The one ``Error: ...`` line; no traceback, nothing else on stderr but ``warnings`` of our own."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("WARNING segearth_geo")]
    assert len(own) == warnings, result.stderr
    lines = [line for line in lines if line not in own]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def raster(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    return write_raster(folder / "scene.tif", _scene(), crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))


# --- a quiet terminal ----------------------------------------------------------------------------


def test_library_warnings_stay_off_the_terminal_unless_verbose(raster, tmp_path):
    result = _segment(raster, "red", tmp_path / "a.gpkg", "--overlap", "16", model="noisy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("Wrote 3 polygons")  # the summary only
    # stderr holds the progress bar and nothing else
    assert "Warning" not in result.stderr and "chatty" not in result.stderr and "deprecated" not in result.stderr
    assert set(result.stderr.replace("\r", "\n").splitlines()) <= {""} | {
        line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("chips:")}

    quiet = _segment(raster, "red", tmp_path / "b.gpkg", "--overlap", "16", model="noisy", verbosity=("-q",))
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""

    verbose = _segment(raster, "red", tmp_path / "c.gpkg", "--overlap", "16", model="noisy", verbosity=("-v",))
    assert verbose.returncode == 0
    assert "FutureWarning" in verbose.stderr and "chatty library warning" in verbose.stderr


# --- absurd grids ----------------------------------------------------------------------------------


def test_absurd_gsd_is_refused_with_numbers_before_any_work(tmp_path):
    landsat_like = write_raster(tmp_path / "l30.tif", np.full((3, 400, 400), 90, np.uint8), crs=UTM,
                                transform=from_origin(*UTM_ORIGIN, 30.0, 30.0))
    out = tmp_path / "out.gpkg"
    started = time.perf_counter()
    result = _segment(landsat_like, "red", out, "--gsd", "0.0001", timeout=60)
    assert time.perf_counter() - started < 30  # refused at once, not after building billions of chips
    assert result.returncode == 2
    line = _error_line(result)
    assert "chips" in line and "GiB" in line and "--max-chips" in line
    assert not out.exists()
    # an overlap that leaves a 1-px stride is the same class of mistake
    big = write_raster(tmp_path / "big.tif", np.full((3, 2000, 2000), 90, np.uint8), crs=UTM,
                       transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))
    result = _segment(big, "red", out, "--overlap", "63")
    assert result.returncode == 2 and "chips" in _error_line(result)
    # the limit is the user's to raise
    allowed = _segment(big, "red", out, "--overlap", "48", "--max-chips", "0", "--batch-size", "64")
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize("bbox", ["-inf,-inf,inf,inf", "nan,0,1,1"])
def test_non_finite_bbox_is_a_usage_error(raster, tmp_path, bbox):
    result = _segment(raster, "red", tmp_path / "out.gpkg", f"--bbox={bbox}")
    assert result.returncode == 2
    assert "finite" in result.stderr and "Traceback" not in result.stderr


def test_huge_finite_bbox_covers_the_whole_raster(raster, tmp_path):
    out = tmp_path / "out.gpkg"
    result = _segment(raster, "red", out, "--bbox=-1e308,-1e308,1e308,1e308", "--overlap", "16")
    assert result.returncode == 0, result.stderr
    whole = _segment(raster, "red", tmp_path / "whole.gpkg", "--overlap", "16")
    a, b = gpd.read_file(out, layer="segments"), gpd.read_file(tmp_path / "whole.gpkg", layer="segments")
    assert len(a) == len(b) == 3
    assert shapely.equals(shapely.union_all(a.geometry.values), shapely.union_all(b.geometry.values)), whole.stderr
    # in another CRS the transform maths must not overflow either
    result = _segment(raster, "red", tmp_path / "wgs.gpkg", "--bbox=-1e308,-1e308,1e308,1e308", "--bbox-crs",
                      "EPSG:4326")
    assert result.returncode == 2 and "bbox" in _error_line(result)


# --- model factories ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model, reason", [
    (f"{SEGMENTERS}:factory_raises", "simulated factory failure"),
    (f"{BROKEN}:make", "simulated import-time failure"),
    (f"{SEGMENTERS}:COLOURS", "not callable"),
])
def test_failing_factory_is_one_line(raster, tmp_path, model, reason):
    result = _cli("segment", str(raster), "red", "-o", str(tmp_path / "o.gpkg"), "--model", model)
    assert result.returncode == 1
    assert reason in _error_line(result)


# --- output names, temporaries, signals ----------------------------------------------------------


@pytest.mark.parametrize("length", [233, 239, 255])
def test_long_output_names_that_fit_are_written(raster, tmp_path, length):
    name = "n" * (length - len(".gpkg")) + ".gpkg"
    result = _segment(raster, "red", tmp_path / name, "--overlap", "16")
    assert result.returncode == 0, result.stderr
    assert len(gpd.read_file(tmp_path / name, layer="segments")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left


def test_output_name_too_long_is_refused_before_work(raster, tmp_path):
    name = "n" * 260 + ".gpkg"
    result = _segment(raster, "red", tmp_path / name, model="failing")  # the model would fail if it ran
    assert result.returncode == 2 and "bytes" in _error_line(result)


def test_stale_temporaries_of_dead_processes_are_removed(raster, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from segearth_geo.output import _HOST

    stale = [tmp_path / f".segearth-tmp-{_HOST}-{dead.pid}-0123abcd.gpkg",
             tmp_path / f".segearth-tmp-{_HOST}-{dead.pid}-0123abcd.gpkg-journal"]
    live = tmp_path / f".segearth-tmp-{_HOST}-{os.getpid()}-89abcdef.gpkg"  # this test process still runs
    other_host = tmp_path / f".segearth-tmp-{'0' * 6 if _HOST != '0' * 6 else '1' * 6}-{dead.pid}-0123abcd.gpkg"
    for path in (*stale, live, other_host):
        path.write_bytes(b"left by a killed writer")
    result = _segment(raster, "red", tmp_path / "out.gpkg", "--overlap", "16")
    assert result.returncode == 0, result.stderr
    # another machine's temporaries (a shared file system) are never judged by this machine's process ids
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other_host.name, "out.gpkg"])


@pytest.mark.parametrize("overwrite", [False, True])
def test_sigterm_ends_like_ctrl_c_and_keeps_the_old_output(tmp_path, overwrite):
    scene = write_raster(tmp_path / "s.tif", np.tile(_scene(), (1, 2, 2)), crs=UTM,
                         transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))
    out = tmp_path / "out.gpkg"
    if overwrite:
        out.write_bytes(b"the user's previous result")
    cmd = [sys.executable, "-m", "segearth_geo_cli.main", "segment", str(scene), "red", "-o", str(out),
           "--model", f"{SEGMENTERS}:slow", "--batch-size", "1", *(["--overwrite"] if overwrite else [])]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6.0)  # imports (~3 s) and a few of the slow segmenter's 0.5-s chips: mid-run
    assert process.poll() is None, "the run ended before SIGTERM could interrupt it"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "Terminated." in stderr and "Traceback" not in stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == (["out.gpkg", "s.tif"] if overwrite else ["s.tif"])
    if overwrite:
        assert out.read_bytes() == b"the user's previous result"


# --- exit codes ----------------------------------------------------------------------------------------


def test_exit_codes_of_output_mistakes(raster, tmp_path):
    existing = tmp_path / "exists.gpkg"
    existing.write_bytes(b"old")
    assert _segment(raster, "red", existing).returncode == 2 and existing.read_bytes() == b"old"
    unknown = _segment(raster, "red", tmp_path / "out.kml")  # (.shp is a format since issue 21)
    assert unknown.returncode == 2 and "unknown output format" in _error_line(unknown)
    missing = _segment(raster, "red", tmp_path / "no" / "such" / "out.gpkg")
    assert missing.returncode == 1 and "does not exist" in _error_line(missing)


def test_output_with_trailing_slash_is_a_folder_name(raster, tmp_path):
    (tmp_path / "out").mkdir()
    result = _segment(raster, "red", f"{tmp_path / 'out'}/new/")
    assert result.returncode == 2 and "folder" in _error_line(result)
    assert list((tmp_path / "out").iterdir()) == []


def test_dangling_symlink_is_not_replaced_without_overwrite(raster, tmp_path):
    link = tmp_path / "link.gpkg"
    link.symlink_to(tmp_path / "nowhere.gpkg")
    result = _segment(raster, "red", link)
    assert result.returncode == 2 and "exists" in _error_line(result)
    assert link.is_symlink() and os.readlink(link) == str(tmp_path / "nowhere.gpkg")


# --- prompts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["\u200b", " \u3000 \t", "\ufeff\u200d", "\u202e"])
def test_invisible_prompts_are_empty(raster, tmp_path, prompt):
    result = _segment(raster, prompt, tmp_path / "out.gpkg")
    assert result.returncode == 2 and "prompt is empty" in _error_line(result)
    assert not (tmp_path / "out.gpkg").exists()


def test_prompt_is_cleaned_before_it_reaches_the_segmenter(raster, tmp_path):
    out = tmp_path / "out.gpkg"
    result = _segment(raster, "re\u200bd  \u00a0things", out, "--overlap", "16")
    assert result.returncode == 0, result.stderr
    frame = gpd.read_file(out, layer="segments")
    assert set(frame["prompt"]) == {"red things"}  # zero-width space dropped, spaces collapsed
    assert (frame["label"] == "red object").sum() == 3


# --- rasters that fail late ------------------------------------------------------------------------------


def test_corrupt_raster_fails_before_the_model_loads_and_names_the_file(raster, tmp_path):
    truncated = tmp_path / "truncated.tif"
    data = np.random.default_rng(0).integers(0, 255, (3, 600, 600), dtype=np.uint8)
    write_raster(truncated, data, crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    result = _segment(truncated, "red", tmp_path / "out.gpkg", model="factory_raises")
    assert result.returncode == 1
    line = _error_line(result)
    assert "truncated.tif" in line and "previous exception" not in line and "factory" not in line


def test_vrt_with_missing_source_names_the_missing_file(raster, tmp_path):
    with rasterio.open(raster) as src:
        width, height = src.width, src.height
    moved = tmp_path / "moved.tif"
    moved.write_bytes(Path(raster).read_bytes())
    vrt = tmp_path / "mosaic.vrt"
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="1">moved.tif'
        f'</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>' for b in (1, 2, 3))
    vrt.write_text(f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{UTM}</SRS>'
                   f'<GeoTransform>{UTM_ORIGIN[0]}, 0.5, 0, {UTM_ORIGIN[1]}, 0, -0.5</GeoTransform>{bands}</VRTDataset>')
    moved.unlink()
    result = _segment(vrt, "red", tmp_path / "out.gpkg", model="factory_raises")
    assert result.returncode == 1
    line = _error_line(result)
    assert "moved.tif" in line and "previous exception" not in line


def test_preview_that_cannot_be_made_fails_before_the_output_is_written(tmp_path):
    no_crs = write_raster(tmp_path / "wide.tif", np.full((3, 8, 8300), 40, np.uint8))  # no CRS, no transform
    out = tmp_path / "out.gpkg"
    result = _segment(no_crs, "red", out, "--preview", str(tmp_path / "p.png"))
    assert result.returncode == 2 and "preview" in _error_line(result, warnings=1)  # "no CRS", said once
    assert not out.exists()


def test_gsd_resampling_never_covers_alpha_masked_pixels(tmp_path):
    width, height = 97, 83
    data = np.full((4, height, width), 200, np.uint8)
    alpha = np.zeros((height, width), np.uint8)
    alpha[10:70, 13:90] = 255  # valid block, the rest is transparent
    data[3] = alpha
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    path = write_raster(tmp_path / "alpha.tif", data, crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5),
                        colorinterp=interp)
    valid_area = shapely.box(UTM_ORIGIN[0] + 13 * 0.5, UTM_ORIGIN[1] - 70 * 0.5,
                             UTM_ORIGIN[0] + 90 * 0.5, UTM_ORIGIN[1] - 10 * 0.5)
    everything = tmp_path / "everything.py"
    everything.write_text(f"import sys\nsys.path.insert(0, {str(SEGMENTERS.parent.parent)!r})\n"
                          "from tests.segmenters import EverythingSegmenter\n"
                          "def make():\n    return EverythingSegmenter(chip_size=32)\n")
    for gsd in ("0.7", "1.3", "0.35"):
        out = tmp_path / f"g{gsd}.gpkg"
        result = _cli("segment", str(path), "area", "-o", str(out), "--model", f"{everything}:make", "--gsd", gsd)
        assert result.returncode == 0, result.stderr
        covered = shapely.union_all(gpd.read_file(out, layer="segments").geometry.values)
        assert covered.area > 0.8 * valid_area.area
        assert covered.difference(valid_area).area < 1e-6, gsd  # nothing on transparent pixels


@pytest.mark.parametrize("kind", ["long-name", "long-path", "demo-weights", "sam3-weights"])
def test_unusable_model_specs_are_one_line(raster, tmp_path, kind):
    """A model name longer than a file name, and a checkpoint whose weights file is cut short (a partial
    download), each give one line and exit 1, never a traceback."""
    import shutil

    from segearth_geo.model.registry import DEMO_MODEL_DIR
    from tests.sam3_fixtures import write_tiny_sam3

    if kind == "long-name":
        model = "a" * 300
    elif kind == "long-path":
        model = str(tmp_path / ("a" * 300) / "b")
    elif kind == "demo-weights":
        model = str(tmp_path / "demo")
        shutil.copytree(DEMO_MODEL_DIR, model)
    else:
        model = str(write_tiny_sam3(tmp_path / "sam3", layout="hub"))
    if kind.endswith("weights"):
        weights = Path(model) / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:4096])
    result = _cli("segment", str(raster), "roofs", "-o", str(tmp_path / "out.gpkg"), "--model", model,
                  "--device", "cpu")
    line = _error_line(result)
    assert result.returncode == 1 and ("not a folder, alias or repo id" in line or "damaged" in line), line
    assert not (tmp_path / "out.gpkg").exists()
