"""The synthetic test scene shared by the worker tests (engine Python) and the QGIS tests.

A UTM zone 33N raster with 1 m pixels: grey-green noise, one saturated red square
("red roof" for the colour test model) and one saturated blue rectangle ("pool").
numpy only, so both interpreters can import it; each side writes it with its own library.
"""

from __future__ import annotations

import numpy as np

CRS = "EPSG:32633"
ORIGIN = (390000.0, 5820000.0)  # upper-left corner (x, y)
PIXEL = 1.0
RED_SQUARE = (100, 180, 60, 140)  # rows r0:r1, cols c0:c1 -> "red roof"
BLUE_SQUARE = (300, 380, 320, 420)  # -> "pool"


def scene_array(size: int = 512) -> np.ndarray:
    """``(3, size, size)`` uint8 RGB."""
    rng = np.random.default_rng(0)
    data = np.empty((3, size, size), np.uint8)
    for band, base in enumerate((90, 110, 95)):
        data[band] = base + rng.integers(0, 20, (size, size))
    for (r0, r1, c0, c1), colour in ((RED_SQUARE, (220, 30, 30)), (BLUE_SQUARE, (20, 40, 230))):
        data[:, r0:r1, c0:c1] = np.array(colour, np.uint8)[:, None, None]
    return data


def pixel_box(rows_cols: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    """Map bounds ``(minx, miny, maxx, maxy)`` of a ``(r0, r1, c0, c1)`` block."""
    r0, r1, c0, c1 = rows_cols
    return (ORIGIN[0] + c0 * PIXEL, ORIGIN[1] - r1 * PIXEL, ORIGIN[0] + c1 * PIXEL, ORIGIN[1] - r0 * PIXEL)


def geotransform() -> tuple[float, float, float, float, float, float]:
    """GDAL geotransform of the scene."""
    return (ORIGIN[0], PIXEL, 0.0, ORIGIN[1], 0.0, -PIXEL)


def write_geotiff(path, size: int = 512, crs: str = CRS, origin: tuple[float, float] = ORIGIN,
                  pixel: float = PIXEL):
    """Write the scene with GDAL (the QGIS Python's bindings); returns ``path``. ``crs``, ``origin`` (upper-left
    corner) and ``pixel`` (size in CRS units) place it elsewhere, e.g. in degrees or at another GSD."""
    from osgeo import gdal, osr

    data = scene_array(size)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), size, size, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((origin[0], pixel, 0.0, origin[1], 0.0, -pixel))
    srs = osr.SpatialReference()
    srs.SetFromUserInput(crs)
    ds.SetProjection(srs.ExportToWkt())
    for band in range(3):
        ds.GetRasterBand(band + 1).WriteArray(data[band])
    ds.FlushCache()
    ds = None
    return path
