"""Boolean mask -> polygons of its 4-connected regions, without holding the GIL.

``rasterio.features.shapes`` holds the GIL for the whole GDAL polygonize run, so no other
thread can work beside it. :func:`polygonize` calls ``GDALPolygonize`` directly through
``ctypes`` on the libgdal that rasterio already loaded (``ctypes`` releases the GIL during
foreign calls), which lets the engine vectorise chips while it reads and segments others.
The result is identical to ``rasterio.features.shapes`` (same polygons, vertices and order;
tested) and it falls back to rasterio wherever the direct call is unavailable or fails.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading

import numpy as np
import rasterio.features
import shapely
import shapely.geometry

logger = logging.getLogger(__name__)


def polygonize(mask: np.ndarray) -> np.ndarray:
    """Polygons ``(k,)`` of the 4-connected regions of a boolean ``mask`` ``(h, w)``, pixel corners.

    GDAL's polygonizer, in GDAL's scan order. ``rasterio.features.shapes`` holds the GIL
    for the whole run, so where the libgdal that rasterio loaded can be called directly
    (:class:`_GdalPolygonizer`, Linux) it is called through ``ctypes``, which releases the
    GIL: vectorising then overlaps reading and the segmenter. Both give identical polygons
    (tested); the direct call falls back to rasterio on any failure.
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    polygons = _GDAL.polygonize(mask.view(np.uint8))
    if polygons is None:
        polygons = [shapely.geometry.shape(g) for g, _ in
                    rasterio.features.shapes(mask.view(np.uint8), mask=mask, connectivity=4)]
    return np.asarray(polygons, dtype=object).reshape(-1)


class _GdalPolygonizer:
    """``GDALPolygonize`` called through ``ctypes`` on the libgdal that rasterio loaded.

    ``ctypes`` releases the GIL during foreign calls. The mask is wrapped without a copy in
    an in-memory raster (band = its own mask band, so only the 1-pixels are polygonised,
    4-connected) and the polygons come back as WKB from an in-memory layer. Set up once, on
    first use; :meth:`polygonize` returns ``None`` when the library cannot be found (not
    Linux, GDAL not loaded as a shared library) or a call fails, and the caller then uses
    rasterio. Thread-safe: every call uses its own GDAL datasets.
    """

    def __init__(self) -> None:
        self._lib: ctypes.CDLL | None = None
        self._vector_driver = b"Memory"
        self._ready = False
        self._lock = threading.Lock()

    def _load(self) -> ctypes.CDLL | None:
        if not sys.platform.startswith("linux"):
            return None
        import rasterio._base  # noqa: F401 - makes sure rasterio's libgdal is mapped

        path = None
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                name = line.rsplit(maxsplit=1)[-1]
                if "/libgdal" in name and ".so" in name:
                    path = name
                    break
        if path is None:
            return None
        lib = ctypes.CDLL(path)
        p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        strings = ctypes.POINTER(ctypes.c_char_p)
        for name, restype, argtypes in (
            ("GDALAllRegister", None, []),
            ("GDALGetDriverByName", p, [s]),
            ("GDALCreate", p, [p, s, i, i, i, i, strings]),
            ("GDALAddBand", i, [p, i, strings]),
            ("GDALGetRasterBand", p, [p, i]),
            ("GDALClose", i, [p]),
            ("GDALDatasetCreateLayer", p, [p, s, p, i, strings]),
            ("OGR_Fld_Create", p, [s, i]),
            ("OGR_Fld_Destroy", None, [p]),
            ("OGR_L_CreateField", i, [p, p, i]),
            ("GDALPolygonize", i, [p, p, p, i, strings, p, p]),
            ("OGR_L_ResetReading", None, [p]),
            ("OGR_L_GetNextFeature", p, [p]),
            ("OGR_F_GetGeometryRef", p, [p]),
            ("OGR_F_Destroy", None, [p]),
            ("OGR_G_WkbSize", i, [p]),
            ("OGR_G_ExportToWkb", i, [p, i, ctypes.c_char_p]),
            ("GDALVersionInfo", s, [s]),
        ):
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
        lib.GDALAllRegister()
        # GDAL 3.11 merged the "Memory" vector driver into "MEM" and deprecates the old name (it prints a
        # warning on every use); older GDALs need "Memory" for vectors.
        version = int(lib.GDALVersionInfo(b"VERSION_NUM") or 0)
        self._vector_driver = b"MEM" if version >= 3110000 else b"Memory"
        if not lib.GDALGetDriverByName(b"MEM") or not lib.GDALGetDriverByName(self._vector_driver):
            return None
        return lib

    def _library(self) -> ctypes.CDLL | None:
        with self._lock:
            if not self._ready:
                try:
                    self._lib = self._load()
                except (OSError, AttributeError, ValueError) as exc:
                    logger.debug("direct GDAL polygonize unavailable, using rasterio: %s", exc)
                    self._lib = None
                self._ready = True
            return self._lib

    def polygonize(self, mask: np.ndarray) -> list[shapely.Polygon] | None:
        """Polygons of the 1-pixels of a C-contiguous uint8 ``mask`` ``(h, w)`` of 0/1, or ``None``."""
        lib = self._library()
        if lib is None:
            return None
        height, width = mask.shape
        options = (ctypes.c_char_p * 4)(
            f"DATAPOINTER={mask.ctypes.data}".encode(), b"PIXELOFFSET=1", f"LINEOFFSET={width}".encode(), None
        )
        raster = lib.GDALCreate(lib.GDALGetDriverByName(b"MEM"), b"", width, height, 0, 1, None)  # 1: GDT_Byte
        vector = lib.GDALCreate(lib.GDALGetDriverByName(self._vector_driver), b"", 0, 0, 0, 0, None)
        try:
            if not raster or not vector or lib.GDALAddBand(raster, 1, options) != 0:
                return None
            band = lib.GDALGetRasterBand(raster, 1)
            layer = lib.GDALDatasetCreateLayer(vector, b"polygons", None, 3, None)  # 3: wkbPolygon
            field = lib.OGR_Fld_Create(b"value", 0)  # 0: OFTInteger
            created = lib.OGR_L_CreateField(layer, field, 1)
            lib.OGR_Fld_Destroy(field)
            if not band or not layer or created != 0 or lib.GDALPolygonize(band, band, layer, 0, None, None, None) != 0:
                return None
            wkbs = []
            lib.OGR_L_ResetReading(layer)
            while feature := lib.OGR_L_GetNextFeature(layer):
                geometry = lib.OGR_F_GetGeometryRef(feature)
                buffer = ctypes.create_string_buffer(lib.OGR_G_WkbSize(geometry))
                lib.OGR_G_ExportToWkb(geometry, 1, buffer)  # 1: little-endian
                wkbs.append(buffer.raw)
                lib.OGR_F_Destroy(feature)
            return list(shapely.from_wkb(wkbs)) if wkbs else []
        finally:
            if vector:
                lib.GDALClose(vector)
            if raster:
                lib.GDALClose(raster)


_GDAL = _GdalPolygonizer()
