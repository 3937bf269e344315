"""``segearth-geo info`` through the installed console script (subprocess)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.geo_fixtures import UTM_ORIGIN, write_png, write_uint16_bgrn, write_utm


def run_info(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["segearth-geo", "info", *args], capture_output=True, text=True, timeout=60)


def test_info_text_report(tmp_path) -> None:
    path = write_uint16_bgrn(tmp_path / "bgrn.tif", 1000, 550)
    result = run_info(str(path), "--chip-size", "512")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "CRS:        EPSG:32633" in out
    assert "R,G,B = 3,2,1" in out
    assert "uint16, scene stretch 2-98 %" in out
    assert "1000 x 550 px at 0.5 x 0.5 m per pixel" in out
    assert "validity:   none (all pixels valid)" in out
    # default overlap = 1/8 of the chip size; 3 columns x 2 rows
    assert "chips:      6 of up to 512 px, overlap 64 px" in out


def test_info_json_with_options(tmp_path) -> None:
    path = write_utm(tmp_path / "utm.tif", 300, 200)
    x0, y0 = UTM_ORIGIN
    bbox = f"{x0 + 10},{y0 - 90},{x0 + 130},{y0 - 10}"
    result = run_info(str(path), "--json", "--gsd", "1", "--bbox", bbox, "--bands", "3",
                      "--chip-size", "64", "--overlap", "16")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["crs"] == "EPSG:32633"
    assert (info["width"], info["height"]) == (120, 80)
    assert info["bands"] == [3, 3, 3]
    assert info["gsd"] == pytest.approx(1.0)
    assert info["bounds"] == pytest.approx([x0 + 10, y0 - 90, x0 + 130, y0 - 10])
    assert info["chip_count"] == 3 * 2  # 120 px: chips at 0, 48, 56; 80 px: at 0, 16
    assert info["stretch"] is None and info["mask"] == "none"


def test_info_png_without_georeferencing_warns(tmp_path) -> None:
    result = run_info(str(write_png(tmp_path / "plain.png", 90, 70)))
    assert result.returncode == 0, result.stderr
    assert "CRS:        none (pixel coordinates)" in result.stdout
    assert "no coordinate reference system" in result.stderr


@pytest.mark.parametrize(
    ("make", "args", "code", "message"),
    [
        (None, ["missing.tif"], 1, "raster not found"),
        ("corrupt", [], 1, "cannot open"),
        ("utm", ["--bands", "7"], 2, "band 7 does not exist"),
        ("utm", ["--bands", "x"], 2, "comma-separated"),
        ("utm", ["--bbox", "0,0,1,1"], 2, "does not overlap"),
        ("utm", ["--bbox", "1,2,3"], 2, "four numbers"),
        ("utm", ["--bbox-crs", "EPSG:99999999", "--bbox", "0,0,1,1"], 2, "unknown CRS"),
        ("utm", ["--overlap", "64", "--chip-size", "64"], 2, "overlap"),
    ],
)
def test_info_bad_input_is_one_line(tmp_path, make, args, code, message) -> None:
    if make == "utm":
        target = str(write_utm(tmp_path / "utm.tif", 30, 20))
    elif make == "corrupt":
        target = tmp_path / "corrupt.tif"
        target.write_bytes(b"II*\x00" + b"\x17" * 100)
        target = str(target)
    else:
        target = str(tmp_path / args.pop(0))
    result = run_info(target, *args)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "rror" in line]
    assert len(errors) == 1 and errors[0].startswith("Error: ")  # click usage errors also print a usage hint
    assert result.stdout == ""
