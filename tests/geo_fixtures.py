"""Small real rasters written with rasterio, for the geo engine tests.

Import the functions (they are not pytest fixtures) and pass a ``tmp_path`` file name.
Every writer returns the path it wrote. Pixel values are deterministic.

    from tests.geo_fixtures import write_utm, write_raster, pattern
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

UTM = "EPSG:32633"  # WGS 84 / UTM zone 33N (Berlin area)
UTM_ORIGIN = (390000.0, 5820000.0)  # upper-left corner used by the UTM writers
WGS84 = "EPSG:4326"
WGS84_ORIGIN = (13.40, 52.52)  # lon, lat of the upper-left corner
WEB_MERCATOR = "EPSG:3857"
WEB_MERCATOR_ORIGIN = (1491000.0, 6894000.0)  # ~ Berlin


def pattern(count: int, height: int, width: int, dtype: str = "uint8", seed: int = 0) -> np.ndarray:
    """Deterministic ``(count, height, width)`` data: per-band gradients plus noise, spanning the dtype.

    Each band differs (band ``b`` is offset by ``b``), so band selection is visible in the pixels.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    base = (rows / max(height - 1, 1) + cols / max(width - 1, 1)) / 2.0  # (h, w) in [0, 1]
    bands = [(base + 0.1 * b + 0.05 * rng.random((height, width))) % 1.0 for b in range(count)]
    data = np.stack(bands)  # (count, h, w) in [0, 1)
    if np.issubdtype(np.dtype(dtype), np.integer):
        top = {"uint8": 250, "uint16": 12000, "int16": 8000}.get(dtype, 250)
        return (5 + data * top).astype(dtype)
    return data.astype(dtype)


def write_raster(
    path: str | Path,
    array: np.ndarray,
    *,
    crs: str | None = None,
    transform: Affine | None = None,
    nodata: float | None = None,
    colorinterp: Sequence[ColorInterp] | None = None,
    mask: np.ndarray | None = None,
    driver: str = "GTiff",
    **profile,
) -> Path:
    """Write ``array`` (``(h, w)`` or ``(count, h, w)``) as a raster and return its path.

    ``mask`` (bool ``(h, w)``, True = valid) is written as an internal per-dataset mask
    band. Extra ``profile`` keys (``tiled``, ``blockxsize``, ``compress``…) go to rasterio.
    """
    path = Path(path)
    data = array[None] if array.ndim == 2 else array
    count, height, width = data.shape
    kwargs = dict(driver=driver, width=width, height=height, count=count, dtype=str(data.dtype))
    if crs is not None:
        kwargs["crs"] = crs
    if transform is not None:
        kwargs["transform"] = transform
    if nodata is not None:
        kwargs["nodata"] = nodata
    kwargs.update(profile)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **kwargs) as ds:
            ds.write(data)
            if colorinterp is not None:
                ds.colorinterp = list(colorinterp)
            if mask is not None:
                ds.write_mask(np.where(mask, 255, 0).astype("uint8"))
    return path


def write_utm(path: str | Path, width: int = 300, height: int = 200, *, count: int = 3, dtype: str = "uint8",
              gsd: float = 0.5, **kwargs) -> Path:
    """A north-up UTM 33N raster with ``gsd`` metre pixels (upper-left at ``UTM_ORIGIN``)."""
    transform = from_origin(*UTM_ORIGIN, gsd, gsd)
    return write_raster(path, pattern(count, height, width, dtype), crs=UTM, transform=transform, **kwargs)


def write_geographic(path: str | Path, width: int = 300, height: int = 200, *, count: int = 3,
                     deg: float = 1e-5, **kwargs) -> Path:
    """An EPSG:4326 raster with square ``deg``-degree pixels (upper-left at ``WGS84_ORIGIN``)."""
    transform = from_origin(*WGS84_ORIGIN, deg, deg)
    return write_raster(path, pattern(count, height, width), crs=WGS84, transform=transform, **kwargs)


def write_web_mercator(path: str | Path, width: int = 300, height: int = 200, *, count: int = 3,
                       step: float = 0.5, **kwargs) -> Path:
    """An EPSG:3857 raster with ``step``-metre (projected) pixels near Berlin."""
    transform = from_origin(*WEB_MERCATOR_ORIGIN, step, step)
    return write_raster(path, pattern(count, height, width), crs=WEB_MERCATOR, transform=transform, **kwargs)


def write_uint16_bgrn(path: str | Path, width: int = 257, height: int = 131) -> Path:
    """uint16 4-band UTM raster in band order blue, green, red, near-infrared (colour interpretation set)."""
    interp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    return write_utm(path, width, height, count=4, dtype="uint16", colorinterp=interp)


def write_nodata_collar(path: str | Path, width: int = 120, height: int = 90, *, collar: int = 10,
                        nodata: float = 0, dtype: str = "uint8") -> Path:
    """UTM raster whose outer ``collar`` pixels are ``nodata`` in every band (interior never equals nodata)."""
    data = pattern(3, height, width, dtype)
    data[data == nodata] = nodata + 1
    data[:, :collar] = nodata
    data[:, -collar:] = nodata
    data[:, :, :collar] = nodata
    data[:, :, -collar:] = nodata
    transform = from_origin(*UTM_ORIGIN, 0.5, 0.5)
    return write_raster(path, data, crs=UTM, transform=transform, nodata=nodata)


def write_alpha(path: str | Path, width: int = 120, height: int = 90, *, collar: int = 10) -> Path:
    """RGBA UTM raster (band 4 is alpha) transparent in an outer ``collar`` of pixels."""
    data = pattern(4, height, width)
    data[3] = 0
    data[3, collar:-collar, collar:-collar] = 255
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return write_raster(path, data, crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5), colorinterp=interp)


def write_internal_mask(path: str | Path, width: int = 120, height: int = 90) -> tuple[Path, np.ndarray]:
    """UTM RGB raster with an internal mask band (left half invalid); returns the path and the mask."""
    valid = np.ones((height, width), dtype=bool)
    valid[:, : width // 2] = False
    path = write_raster(path, pattern(3, height, width), crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5),
                        mask=valid)
    return path, valid


def write_rotated(path: str | Path, width: int = 64, height: int = 48, *, degrees: float = 15.0) -> Path:
    """UTM raster with a rotated geotransform."""
    transform = from_origin(*UTM_ORIGIN, 0.5, 0.5) @ Affine.rotation(degrees)
    return write_raster(path, pattern(3, height, width), crs=UTM, transform=transform)


def write_png(path: str | Path, width: int = 90, height: int = 70, *, world_file: Affine | None = None,
              crs: str | None = None) -> Path:
    """Plain RGB PNG; with ``world_file`` also a ``.pgw`` sidecar holding that transform.

    With ``crs`` (and ``world_file``) GDAL's ``.aux.xml`` sidecar keeps the CRS too, as QGIS
    and GDAL write it; without ``crs`` no ``.aux.xml`` is left, so the PNG has no CRS.
    """
    path = Path(path)
    write_raster(path, pattern(3, height, width), driver="PNG", crs=crs, transform=world_file if crs else None)
    if crs is None:
        for extra in path.parent.glob(path.name + ".aux.xml"):
            extra.unlink()
    if world_file is not None:
        # World file: pixel size x, rotation y, rotation x, pixel size y, x and y of the CENTRE of the top-left pixel.
        centre = world_file @ (0.5, 0.5)
        values = (world_file.a, world_file.d, world_file.b, world_file.e, centre[0], centre[1])
        path.with_suffix(".pgw").write_text("\n".join(repr(float(v)) for v in values) + "\n")
    return path
