"""Scene sources: rotated/GCP rasters, PNG with/without world file, VRT, /vsizip/, URLs, other drivers, bad files."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.transform import from_origin
from rasterio.windows import Window

from segearth_geo.chips import chip_grid
from segearth_geo.errors import RasterError, UsageError
from segearth_geo.raster import open_scene
from tests.geo_fixtures import UTM, UTM_ORIGIN, pattern, write_png, write_raster, write_utm
from tests.test_raster import read_all


@pytest.mark.parametrize("gsd", [None, 1.0])
def test_rotated_transform_is_read_through_a_north_up_warp(tmp_path, gsd) -> None:
    data = pattern(3, 48, 64)
    data[:, 20:28, 30:38] = 255  # a bright 8 x 8 block centred on source pixel corner (34, 24)
    source_transform = from_origin(*UTM_ORIGIN, 0.5, 0.5) @ Affine.rotation(30)
    path = write_raster(tmp_path / "rot.tif", data, crs=UTM, transform=source_transform)
    with open_scene(path, gsd=gsd) as reader:
        s = reader.scene
        rgb, valid = read_all(reader)
    assert s.warped and s.transform.b == 0 and s.transform.d == 0 and s.crs.to_epsg() == 32633
    step = 0.5 if gsd is None else gsd
    assert s.gsd == pytest.approx(step, rel=0.05)
    # the bright block lands where the rotated source transform puts it
    rows, cols = np.nonzero((rgb == 255).all(axis=2) & valid)
    x, y = s.transform @ (cols.mean() + 0.5, rows.mean() + 0.5)
    x_true, y_true = source_transform @ (34, 24)
    assert math.hypot(x - x_true, y - y_true) < step
    # the rotated footprint is valid, the corners of the north-up grid are not
    footprint_m2 = 64 * 48 * 0.25
    valid_m2 = valid.sum() * (s.transform.a * -s.transform.e)
    if gsd is None:
        assert valid_m2 == pytest.approx(footprint_m2, rel=0.05)
    else:  # resampled validity is conservative: at most one processing pixel lost along the footprint's edge
        perimeter_m = 2 * (64 + 48) * 0.5
        assert footprint_m2 - perimeter_m * step * 1.05 <= valid_m2 <= footprint_m2 * 1.01
    assert not valid[0, 0] and not valid[-1, -1] and (rgb[~valid] == 0).all()


def test_rotated_raster_keeps_its_nodata(tmp_path) -> None:
    data = pattern(3, 40, 40)
    data[data == 0] = 1
    data[:, :, :20] = 0  # left half nodata
    transform = from_origin(*UTM_ORIGIN, 0.5, 0.5) @ Affine.rotation(-20)
    path = write_raster(tmp_path / "rotnd.tif", data, crs=UTM, transform=transform, nodata=0)
    with open_scene(path) as reader:
        _, valid = read_all(reader)
        s = reader.scene
    assert s.mask == "nodata" and s.band_count == 3
    assert valid.sum() * 0.25 == pytest.approx(20 * 40 * 0.25, rel=0.06)


# --- sources without georeferencing, other GDAL sources ------------------------------------


def test_png_without_world_file_runs_in_pixels_with_warning(tmp_path, caplog) -> None:
    path = write_png(tmp_path / "plain.png", 90, 70)
    with caplog.at_level(logging.WARNING, logger="segearth_geo.raster"):
        with open_scene(path) as reader:
            s = reader.scene
            rgb, valid = read_all(reader)
    assert s.crs is None and s.gsd is None
    assert tuple(s.transform)[:6] == (1, 0, 0, 0, 1, 0)  # pixel coordinates, y down
    assert "no coordinate reference system" in caplog.text
    np.testing.assert_array_equal(rgb, pattern(3, 70, 90).transpose(1, 2, 0))
    with pytest.raises(UsageError, match="no CRS"):
        with open_scene(path, gsd=1.0):
            pass


def test_png_with_world_file(tmp_path) -> None:
    transform = from_origin(*UTM_ORIGIN, 0.5, 0.5)
    with open_scene(write_png(tmp_path / "w.png", world_file=transform)) as reader:
        assert reader.scene.transform == transform and reader.scene.crs is None
    with open_scene(write_png(tmp_path / "wc.png", world_file=transform, crs=UTM)) as reader:
        assert reader.scene.transform == transform and reader.scene.crs.to_epsg() == 32633


def test_vrt_and_vsizip_sources(tmp_path) -> None:
    tif = write_utm(tmp_path / "u.tif", 60, 40)
    vrt = tmp_path / "u.vrt"
    with rasterio.open(tif) as ds:
        rasterio.shutil.copy(ds, vrt, driver="VRT")
    with zipfile.ZipFile(tmp_path / "u.zip", "w") as archive:
        archive.write(tif, "inner/u.tif")
    expected = pattern(3, 40, 60).transpose(1, 2, 0)
    for source in (vrt, f"/vsizip/{tmp_path / 'u.zip'}/inner/u.tif"):
        with open_scene(source) as reader:
            rgb, _ = read_all(reader)
            assert reader.scene.crs.to_epsg() == 32633
        np.testing.assert_array_equal(rgb, expected)


def test_memory_does_not_grow_with_scene_size(tmp_path) -> None:
    # 20000 x 20000 uint8 (1.2 GB if ever read whole), stored sparse so the file is tiny
    path = tmp_path / "big.tif"
    profile = dict(driver="GTiff", width=20000, height=20000, count=3, dtype="uint8", crs=UTM,
                   transform=from_origin(*UTM_ORIGIN, 0.5, 0.5), tiled=True, compress="deflate", sparse_ok=True)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.full((3, 256, 256), 7, dtype=np.uint8), window=Window(10240, 10240, 256, 256))
    tracemalloc.start()
    with open_scene(path) as reader:
        chips = chip_grid(reader.scene.width, reader.scene.height, 1024, 128)
        chip = next(c for c in chips if c.window.col_off <= 10240 < c.window.col_off + 1024
                    and c.window.row_off <= 10240 < c.window.row_off + 1024)
        rgb, _ = reader.read(chip.window)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(chips) == 23 * 23
    assert rgb[10240 - chip.window.row_off, 10240 - chip.window.col_off, 0] == 7
    assert peak < 40e6


# --- bad input -----------------------------------------------------------------------------


def test_missing_corrupt_and_folder_sources(tmp_path) -> None:
    with pytest.raises(RasterError, match="not found"):
        with open_scene(tmp_path / "missing.tif"):
            pass
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\x17" * 200)
    with pytest.raises(RasterError, match="cannot open") as info:
        with open_scene(corrupt):
            pass
    assert info.value.__cause__ is not None
    with pytest.raises(RasterError, match="folder"):
        with open_scene(tmp_path):
            pass


def test_truncated_file_fails_on_read_with_raster_error(tmp_path) -> None:
    path = write_utm(tmp_path / "t.tif", 512, 512, tiled=True, blockxsize=256, blockysize=256)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(RasterError):
        with open_scene(path) as reader:
            reader.read(Window(256, 256, 256, 256))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_gcp_georeferenced_raster_is_warped(tmp_path) -> None:
    from rasterio.control import GroundControlPoint

    path = tmp_path / "gcps.tif"
    x0, y0 = UTM_ORIGIN
    gcps = [  # an exact 0.5 m north-up grid, described by GCPs only
        GroundControlPoint(row=r, col=c, x=x0 + 0.5 * c, y=y0 - 0.5 * r)
        for r, c in ((0, 0), (0, 60), (40, 0), (40, 60))
    ]
    with rasterio.open(path, "w", driver="GTiff", width=60, height=40, count=3, dtype="uint8") as ds:
        ds.write(pattern(3, 40, 60))
        ds.gcps = (gcps, rasterio.crs.CRS.from_string(UTM))
    with open_scene(path) as reader:
        s = reader.scene
        _, valid = read_all(reader)
    assert s.warped and s.crs.to_epsg() == 32633
    assert s.transform @ (0, 0) == pytest.approx((x0, y0), abs=0.5)
    assert s.gsd == pytest.approx(0.5, rel=0.02)
    assert valid.mean() > 0.9


@pytest.mark.parametrize(
    ("driver", "suffix", "lossless"),
    [("JP2OpenJPEG", ".jp2", {"QUALITY": "100", "REVERSIBLE": "YES"}), ("JPEG", ".jpg", None), ("COG", ".cog.tif", {})],
)
def test_other_drivers(tmp_path, driver, suffix, lossless) -> None:
    with rasterio.Env() as env:
        if driver not in env.drivers():
            pytest.skip(f"GDAL has no {driver} driver here")
    source = write_utm(tmp_path / "source.tif", 64, 48)
    path = tmp_path / f"u{suffix}"
    with rasterio.open(source) as ds:
        rasterio.shutil.copy(ds, path, driver=driver, **(lossless or {}))
    with open_scene(path) as reader:
        rgb, _ = read_all(reader)
        s = reader.scene
    assert s.crs.to_epsg() == 32633 and s.transform == from_origin(*UTM_ORIGIN, 0.5, 0.5)
    expected = pattern(3, 48, 64).transpose(1, 2, 0).astype(int)
    error = np.abs(rgb.astype(int) - expected)
    assert error.max() == 0 if lossless is not None else error.mean() < 8


def test_rotated_world_file_without_crs_is_warped_in_its_own_coordinates(tmp_path) -> None:
    world = from_origin(*UTM_ORIGIN, 0.5, 0.5) @ Affine.rotation(20)
    with open_scene(write_png(tmp_path / "rot.png", 90, 70, world_file=world)) as reader:
        s = reader.scene
        _, valid = read_all(reader)
    assert s.warped and s.crs is None and s.transform.b == 0 == s.transform.d
    assert valid.sum() * 0.25 == pytest.approx(90 * 70 * 0.25, rel=0.05)


# A static file server with HTTP range requests (as GDAL's /vsicurl/ needs), run in its own
# process: GDAL holds the GIL while it opens a URL, so an in-process server thread would deadlock.
RANGE_SERVER = """
import functools, http.server, io, os, sys

class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send_head(self):
        header = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not header or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        first, _, last = header.removeprefix("bytes=").partition("-")
        start, stop = int(first), min(int(last) if last else size - 1, size - 1)
        with open(path, "rb") as handle:
            handle.seek(start)
            body = handle.read(stop - start + 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{stop}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=sys.argv[1]))
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def test_url_sources_are_read_through_gdal(tmp_path) -> None:
    write_utm(tmp_path / "remote.tif", 64, 48, tiled=True, blockxsize=16, blockysize=16)
    server = subprocess.Popen([sys.executable, "-c", RANGE_SERVER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/remote.tif"
        for source in (url, f"/vsicurl/{url}"):
            with open_scene(source) as reader:
                rgb, _ = reader.read(Window(16, 16, 32, 16))
                assert reader.scene.crs.to_epsg() == 32633
            np.testing.assert_array_equal(rgb, pattern(3, 48, 64).transpose(1, 2, 0)[16:32, 16:48])
        with pytest.raises(RasterError, match="cannot open"):
            with open_scene(url.replace("remote", "missing")):
                pass
    finally:
        server.kill()
        server.wait()
