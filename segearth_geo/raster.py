"""Open any GDAL source as a *scene* and read RGB chips from its processing grid.

The processing grid is the raster after the bbox crop and the optional GSD resampling;
:class:`Scene` describes it (CRS, exact affine ``transform``, size) and
:meth:`SceneReader.read` turns a window of it into ``uint8`` RGB plus a validity mask.
Reads are always windowed (GDAL resamples inside the read), so memory does not grow
with the scene size. This module never imports torch.

Conventions:

* Bands are 1-based. ``Scene.bands`` is always three source bands mapped to R, G, B:
  one band is grey ``(b, b, b)``; two bands are ``(b1, b2, b1)`` (a false-colour
  composite) when asked for explicitly, while a raster with only two non-alpha bands
  defaults to the first band as grey (the second is most often a mask or a second
  polarisation that would tint the image).
* Non-``uint8`` data is mapped to ``uint8`` with one scene-level 2–98 % percentile
  stretch per band, computed once from a decimated read of the whole raster (GDAL uses
  overviews when present), never per chip. ``uint8`` data is passed through.
* A pixel is valid when GDAL's mask says so for any chosen band (nodata values, alpha
  band, internal or sidecar mask; GDAL's own "any band valid" rule for nodata) and, for
  floating-point data, every chosen band is finite. Invalid pixels read as 0 in RGB.
* GSD is ground metres per pixel, measured geodesically on WGS84 at the centre of the
  processed area, separately along x and y: geographic CRSs and distorting projections
  (Web Mercator away from the equator) get true ground distances. Projected CRSs whose
  scale error there is below 1 % (UTM, national grids) use their linear unit as is, so a
  0.5 m UTM raster is exactly 0.5 m.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import rasterio
import rasterio.windows
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from segearth_geo import georef
from segearth_geo.errors import RasterError, UsageError
from segearth_geo.params import field_name

logger = logging.getLogger(__name__)

STRETCH_PERCENTILES = (2.0, 98.0)
STRETCH_SAMPLE_SIDE = 1024  # longest side of the decimated read used for the scene stretch
_WARNED_NO_CRS: set[str] = set()


@dataclass(frozen=True)
class Scene:
    """What the engine sees: the processing grid of one raster.

    Attributes:
        source: the source as given (path or GDAL source string).
        crs: CRS of the processing grid (= the raster's); ``None`` when the raster has no
            georeferencing, in which case coordinates are the raster's own (pixels, y down,
            for a plain PNG/JPEG).
        transform: processing-grid pixel -> map coordinates, exact after bbox crop and
            GSD resampling.
        width, height: processing-grid size in pixels.
        bands: three 1-based source bands mapped to R, G, B.
        gsd: ground metres per processing pixel (geometric mean of ``gsd_xy``), ``None``
            without a CRS.
        dtype: the source data type (e.g. ``"uint16"``).
        stretch: per entry of ``bands``, the ``(lo, hi)`` source values mapped to 0 and 255;
            ``None`` for ``uint8`` data (passed through).
        gsd_xy: metres per processing pixel along x and y, ``None`` without a CRS.
        source_window: the part of the raster covered by the grid, in source pixels
            (may be fractional after GSD resampling).
        source_size: ``(width, height)`` of the whole raster in pixels.
        band_count: number of bands in the raster.
        nodata: the raster's nodata value, if any.
        mask: how validity is known: ``"none"``, ``"nodata"``, ``"alpha"`` or ``"mask"``.
        warped: the raster is rotated/skewed or GCP-georeferenced and is read through a
            north-up warp; ``source_size`` and ``source_window`` then refer to that warp.
    """

    source: str
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    bands: tuple[int, ...]
    gsd: float | None
    dtype: str
    stretch: tuple[tuple[float, float], ...] | None
    gsd_xy: tuple[float, float] | None = None
    source_window: Window = field(default_factory=lambda: Window(0, 0, 0, 0))
    source_size: tuple[int, int] = (0, 0)
    band_count: int = 0
    nodata: float | None = None
    mask: str = "none"
    warped: bool = False

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` of the processing grid in ``crs`` units."""
        return georef.bounds(self.transform, self.width, self.height)

    def window_transform(self, window: Window) -> Affine:
        """Pixel -> map transform of a processing-grid ``window`` (e.g. a chip)."""
        return rasterio.windows.transform(window, self.transform)


class SceneReader:
    """Reads windows of a scene's processing grid. Use one thread at a time.

    Created by :func:`open_scene`; the underlying dataset closes when that context exits.
    """

    def __init__(self, dataset: rasterio.io.DatasetReader, scene: Scene) -> None:
        self._dataset = dataset
        self.scene = scene
        self._indexes = sorted(set(scene.bands))
        self._pos = [self._indexes.index(b) for b in scene.bands]  # R,G,B -> row of the read array
        src = scene.source_window
        self._col0, self._row0 = src.col_off, src.row_off
        self._sx = src.width / scene.width  # source pixels per processing pixel
        self._sy = src.height / scene.height
        self._resampled = not (self._sx == 1 and self._sy == 1)
        coarser = self._sx >= 1 and self._sy >= 1
        self._resampling = Resampling.average if coarser else Resampling.bilinear
        # uint8 shown as is with three distinct bands: GDAL reads straight into the (h, w, 3) layout.
        self._direct = list(scene.bands) if scene.stretch is None and len(set(scene.bands)) == 3 else None
        self._lut: np.ndarray | None = None  # (3, 2**bits) uint8 stretch table for 8/16-bit integers
        if scene.stretch is not None:
            lo = np.array([s[0] for s in scene.stretch], dtype=np.float64)
            hi = np.array([s[1] for s in scene.stretch], dtype=np.float64)
            self._lo, self._scale = lo[:, None, None], (255.0 / (hi - lo))[:, None, None]
            dtype = np.dtype(scene.dtype)
            if dtype.kind in "iu" and dtype.itemsize <= 2:
                values = np.arange(np.iinfo(dtype).min, np.iinfo(dtype).max + 1, dtype=np.float64)
                self._lut = self._stretch(np.broadcast_to(values, (3, 1, values.size)))[:, 0, :]
                self._lut_offset = -int(np.iinfo(dtype).min)

    def regrid(self, scene: Scene) -> SceneReader:
        """A reader of another processing grid over the same dataset (``scene``: this one's, with another size and
        transform, e.g. a coarser level of the zoom strategy): same bands, stretch and validity rules. The dataset
        is shared: use the readers one at a time."""
        return SceneReader(self._dataset, scene)

    def _stretch(self, data: np.ndarray) -> np.ndarray:
        """Source values ``(3, h, w)`` -> uint8 with the scene stretch."""
        scaled = (data.astype(np.float64) - self._lo) * self._scale + 0.5
        return np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)

    def source_window(self, window: Window) -> Window:
        """The (possibly fractional) source-pixel window read for a processing-grid ``window``."""
        return Window(
            self._col0 + window.col_off * self._sx,
            self._row0 + window.row_off * self._sy,
            window.width * self._sx,
            window.height * self._sy,
        )

    def _read_valid(self, kwargs: dict) -> np.ndarray:
        """Validity ``(h, w)`` of one read from GDAL's masks (0 invalid, 255 valid per source pixel).

        Resampled reads are conservative: a processing pixel is valid only when every source pixel
        that contributes to it is valid, i.e. its mask, resampled like the data (average or bilinear),
        is still 255. Nearest-neighbour resampling of the mask would mark pixels valid whose data
        averages in nodata or alpha-masked pixels along an edge.
        """
        if not self._resampled:
            masks = self._dataset.read_masks(self._indexes, **kwargs)  # (n, h, w)
            return (masks > 0).any(axis=0)
        masks = self._dataset.read_masks(self._indexes, resampling=self._resampling, **kwargs)
        return (masks == 255).any(axis=0)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a processing-grid window.

        Returns ``(rgb, valid)``: ``rgb`` uint8 ``(h, w, 3)`` (0 where invalid) and
        ``valid`` bool ``(h, w)``, with ``h, w`` the window's height and width;
        ``valid`` is a read-only array when the scene has no mask (every pixel valid).
        Raises :class:`UsageError` for a window outside the grid and :class:`RasterError`
        when the data cannot be read (corrupt file, lost connection).
        """
        col, row, w, h = (int(v) for v in (window.col_off, window.row_off, window.width, window.height))
        if (col, row, w, h) != (window.col_off, window.row_off, window.width, window.height) or (
            w < 1 or h < 1 or col < 0 or row < 0 or col + w > self.scene.width or row + h > self.scene.height
        ):
            raise UsageError(
                f"window {window} is not an integer window inside the {self.scene.width}x{self.scene.height} grid"
            )
        src = self.source_window(window)
        kwargs: dict = {"window": src}
        if self._resampled:
            kwargs["out_shape"] = (len(self._indexes), h, w)
        try:
            if self._direct is not None:
                rgb = np.empty((h, w, 3), dtype=np.uint8)
                self._dataset.read(self._direct, out=rgb.transpose(2, 0, 1), window=src, resampling=self._resampling)
                data = None
            else:
                data = self._dataset.read(self._indexes, resampling=self._resampling, **kwargs)  # (n, h, w)
            if self.scene.mask == "none":  # read-only view, no memory: chips in flight cost only their RGB
                valid = np.broadcast_to(np.True_, (h, w))
            else:
                valid = self._read_valid(kwargs)
        except RasterioError as exc:
            raise RasterError(f"cannot read {window} of {self.scene.source}: {error_text(exc)}") from exc
        all_valid = self.scene.mask == "none"
        if data is not None:
            if np.issubdtype(data.dtype, np.floating):
                finite = np.isfinite(data).all(axis=0)
                all_valid = all_valid and bool(finite.all())
                valid = valid & finite
            data = data[self._pos]  # (3, h, w) in R, G, B order
            if self.scene.stretch is None:
                rgb = data.astype(np.uint8, copy=False)
            elif self._lut is not None:  # same values as _stretch, by table lookup
                index = data if self._lut_offset == 0 else data.astype(np.int32) + self._lut_offset
                rgb = np.stack([np.take(self._lut[i], index[i]) for i in range(3)])
            else:
                rgb = self._stretch(data)
            rgb = np.ascontiguousarray(rgb.transpose(1, 2, 0))  # (h, w, 3)
        if not all_valid:
            rgb[~valid] = 0
        return rgb, valid


@contextmanager
def open_scene(
    source: str | os.PathLike,
    *,
    bands: Sequence[int] | str | None = None,
    gsd: float | None = None,
    bbox: Sequence[float] | None = None,
    bbox_crs: CRS | str | int | None = None,
) -> Iterator[SceneReader]:
    """Open ``source`` and yield a :class:`SceneReader` over its processing grid.

    Args:
        source: a path or any GDAL source (``/vsicurl/…``, ``https://…``, VRT XML file…).
        bands: 1–3 source bands (1-based) or text such as ``"4,3,2"``; default from the
            colour interpretation, else the first three non-alpha bands.
        gsd: metres per pixel to resample to (``None``: the raster's own grid).
        bbox: ``(minx, miny, maxx, maxy)`` limiting the grid, in ``bbox_crs``.
        bbox_crs: CRS of ``bbox``; default the raster's CRS.

    Raises:
        RasterError: missing, unreadable or corrupt raster.
        UsageError: bad bands, gsd or bbox (including a bbox outside the raster).
    """
    with ExitStack() as stack:
        dataset = stack.enter_context(_open_dataset(source))
        view = _north_up(dataset, str(source))
        if view is not dataset:
            stack.enter_context(view)
        scene = _build_scene(
            view, str(source), bands=bands, gsd=gsd, bbox=bbox, bbox_crs=bbox_crs, band_count=dataset.count
        )
        yield SceneReader(view, scene)


def probe_scene(
    source: str | os.PathLike,
    *,
    bands: Sequence[int] | str | None = None,
    gsd: float | None = None,
    bbox: Sequence[float] | None = None,
    bbox_crs: CRS | str | int | None = None,
) -> Scene:
    """Open ``source`` as :func:`open_scene` does and really read one small window of it.

    Opening a raster reads only its header: a truncated GeoTIFF or a VRT whose source file is
    missing fails only at the first pixel read. Callers run this before slow work (loading a
    model) so such a raster fails at once, with GDAL's own reason and the culprit file named.
    Raises :class:`RasterError` or :class:`UsageError` as :func:`open_scene` does.
    """
    with open_scene(source, bands=bands, gsd=gsd, bbox=bbox, bbox_crs=bbox_crs) as reader:
        scene = reader.scene
        side = min(64, scene.width), min(64, scene.height)
        reader.read(Window(scene.width - side[0], scene.height - side[1], *side))  # the last blocks: truncation shows there
        return scene


def error_text(exc: BaseException) -> str:
    """GDAL's own reason for a rasterio error, not "See previous exception": the first line of the
    innermost chained error (rasterio chains the CPLE error that names the culprit file)."""
    reasons = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = _first_line(current)
        if text and "previous exception" not in text.lower():
            reasons.append(text)
        current = current.__cause__ or current.__context__
    return reasons[-1] if reasons else _first_line(exc)


def _north_up(ds: rasterio.io.DatasetReader, source: str) -> rasterio.io.DatasetReaderBase:
    """``ds`` itself, or for a rotated/skewed or GCP-georeferenced raster a north-up GDAL warped view of it.

    The warp keeps the CRS and about the same resolution (GDAL's suggested output). Pixels
    outside the rotated footprint are invalid: through the raster's nodata value or alpha
    band when it has one, else through an alpha band added to the view (the source's own
    mask is honoured by the warper).
    """
    rotated = ds.transform.b != 0 or ds.transform.d != 0
    gcps, gcps_crs = ds.gcps
    if not rotated and not (ds.crs is None and gcps):
        return ds
    add_alpha = ds.nodata is None and ColorInterp.alpha not in ds.colorinterp
    kwargs = {"src_crs": gcps_crs} if not rotated and gcps_crs is not None else {}
    try:
        view = WarpedVRT(ds, resampling=Resampling.bilinear, add_alpha=add_alpha, **kwargs)
    except (RasterioError, CRSError, ValueError) as exc:
        kind = "rotated or skewed geotransform" if rotated else "georeferencing by ground control points"
        raise RasterError(
            f"{source} has a {kind} that cannot be warped on the fly ({_first_line(exc)}); warp it to a north-up "
            f"grid first, e.g. `gdalwarp -r bilinear {source} north_up.tif`"
        ) from exc
    logger.info("%s is not north-up: reading it through a north-up warp (%d x %d px)", source, view.width, view.height)
    return view


def _open_dataset(source: str | os.PathLike) -> rasterio.io.DatasetReader:
    text = os.fspath(source)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "backslashreplace").decode("utf-8")
        raise RasterError(f"the raster name {shown} is not valid UTF-8, which GDAL cannot open; rename the file") from None
    is_local = "://" not in text and not text.startswith("/vsi")
    if is_local and not os.path.exists(text):
        raise RasterError(f"raster not found: {text}")
    if is_local and os.path.isdir(text):
        raise RasterError(f"{text} is a folder; give a raster file (GeoTIFF, VRT, JPEG2000, PNG, JPEG…)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(text)
    except (RasterioError, OSError) as exc:
        raise RasterError(
            f"cannot open {text} as a raster ({_first_line(exc)}); give a GDAL-readable image such as GeoTIFF, VRT, "
            "JPEG2000, PNG or JPEG"
        ) from exc
    if dataset.count == 0:
        subdatasets = list(dataset.subdatasets)
        dataset.close()
        hint = f"; open one of its subdatasets, e.g. {subdatasets[0]}" if subdatasets else ""
        raise RasterError(f"{text} holds no raster bands{hint}")
    return dataset


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _build_scene(
    ds: rasterio.io.DatasetReader,
    source: str,
    *,
    bands: Sequence[int] | str | None,
    gsd: float | None,
    bbox: Sequence[float] | None,
    bbox_crs: CRS | str | int | None,
    band_count: int,
) -> Scene:
    transform = ds.transform
    crs = ds.crs
    if crs is None:
        where = "pixel coordinates (y down)" if transform == Affine.identity() else "its world-file coordinates"
        if source not in _WARNED_NO_CRS:  # once per source and process: a job opens its scene several times
            _WARNED_NO_CRS.add(source)
            logger.warning("%s has no coordinate reference system: results will be in %s without a CRS", source, where)

    chosen = choose_bands(ds, bands, band_count)
    src_window = georef.bbox_window(ds, source, bbox, bbox_crs)
    gsd_xy_native = None if crs is None else georef.native_gsd(crs, ds.transform, src_window)

    if gsd is None:
        width, height = int(src_window.width), int(src_window.height)
    else:
        try:
            gsd = float(gsd)
        except (TypeError, ValueError):
            gsd = math.nan
        if not (gsd > 0 and math.isfinite(gsd)):
            raise UsageError(f"gsd must be a positive number of metres per pixel, got {gsd!r}")
        if gsd_xy_native is None:
            raise UsageError(f"{source} has no CRS, so a ground distance (gsd) cannot be applied; omit gsd")
        # Grid size nearest to the asked GSD; the source step is then fitted exactly to the
        # extent so the processing transform maps the grid onto exactly the bbox window.
        width = max(1, round(src_window.width * gsd_xy_native[0] / gsd))
        height = max(1, round(src_window.height * gsd_xy_native[1] / gsd))
    sx, sy = src_window.width / width, src_window.height / height
    grid_transform = ds.transform @ Affine.translation(src_window.col_off, src_window.row_off) @ Affine.scale(sx, sy)
    gsd_xy = None if gsd_xy_native is None else (gsd_xy_native[0] * sx, gsd_xy_native[1] * sy)

    return Scene(
        source=source,
        crs=crs,
        transform=grid_transform,
        width=width,
        height=height,
        bands=chosen,
        gsd=None if gsd_xy is None else math.sqrt(gsd_xy[0] * gsd_xy[1]),
        dtype=ds.dtypes[0],
        stretch=scene_stretch(ds, chosen),
        gsd_xy=gsd_xy,
        source_window=src_window,
        source_size=(ds.width, ds.height),
        band_count=band_count,
        warped=isinstance(ds, WarpedVRT),
        nodata=ds.nodata,
        mask=_mask_kind(ds, chosen),
    )


def parse_bands(bands: Sequence[int] | str) -> tuple[int, ...]:
    """``"4,3,2"`` or ``[4, 3, 2]`` -> ``(4, 3, 2)``; raises :class:`UsageError` on bad text."""
    if isinstance(bands, str):
        try:
            return tuple(int(part) for part in bands.split(","))
        except ValueError:
            raise UsageError(f"bands must be comma-separated band numbers such as 4,3,2, got {bands!r}") from None
    try:
        return tuple(int(b) for b in bands)
    except (TypeError, ValueError):
        raise UsageError(f"bands must be a sequence of band numbers, got {bands!r}") from None


def choose_bands(
    ds: rasterio.io.DatasetReaderBase, bands: Sequence[int] | str | None, count: int | None = None
) -> tuple[int, int, int]:
    """The three 1-based source bands shown as R, G, B (see the module docstring).

    ``count`` is the number of bands the user may choose from (default ``ds.count``; less
    when ``ds`` is a warped view with an added alpha band).
    """
    count = ds.count if count is None else count
    if bands is not None:
        picked = parse_bands(bands)
        if not 1 <= len(picked) <= 3:
            raise UsageError(f"give 1 band (grey), 2 or 3 bands (R,G,B), got {len(picked)}: {picked}")
        bad = [b for b in picked if not 1 <= b <= count]
        if bad:
            raise UsageError(
                f"band {bad[0]} does not exist: {ds.name} has {count} band{'s' if count > 1 else ''} "
                f"(1..{count}); choose bands with e.g. {field_name('bands')} "
                f"{','.join(str(b) for b in range(1, min(count, 3) + 1))}"
            )
        return _to_rgb(picked)
    interp = list(ds.colorinterp)
    if all(c in interp for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return tuple(interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue))
    non_alpha = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha] or [1]
    if len(non_alpha) >= 3:
        return tuple(non_alpha[:3])
    if len(non_alpha) == 2:
        logger.info("%s has two bands: showing band %d as grey; pass bands=(1, 2) for a false-colour composite",
                    ds.name, non_alpha[0])
    return _to_rgb(non_alpha[:1])


def _to_rgb(picked: tuple[int, ...]) -> tuple[int, int, int]:
    if len(picked) == 1:
        return (picked[0],) * 3
    if len(picked) == 2:
        return (picked[0], picked[1], picked[0])
    return tuple(picked)


def _mask_kind(ds: rasterio.io.DatasetReader, chosen: tuple[int, ...]) -> str:
    flags = [ds.mask_flag_enums[b - 1] for b in sorted(set(chosen))]
    if any(MaskFlags.alpha in f for f in flags):
        return "alpha"
    if any(MaskFlags.nodata in f for f in flags):
        return "nodata"
    if all(list(f) == [MaskFlags.all_valid] for f in flags):
        return "none"
    return "mask"  # internal or sidecar mask band (per dataset or per band)


def scene_stretch(ds: rasterio.io.DatasetReader, chosen: tuple[int, ...]) -> tuple[tuple[float, float], ...] | None:
    """Per chosen band, the 2–98 % percentiles of valid pixels over the whole raster.

    Computed once from a decimated read (longest side ``STRETCH_SAMPLE_SIDE``; GDAL takes
    overviews when the file has them). ``None`` for ``uint8`` rasters. A band without
    valid pixels or with a constant value gets ``(lo, lo + 1)``.
    """
    if ds.dtypes[0] == "uint8":
        return None
    indexes = sorted(set(chosen))
    factor = max(1.0, max(ds.width, ds.height) / STRETCH_SAMPLE_SIDE)
    shape = (len(indexes), max(1, round(ds.height / factor)), max(1, round(ds.width / factor)))
    try:
        data = ds.read(indexes, out_shape=shape, resampling=Resampling.nearest).astype(np.float64)
        masks = ds.read_masks(indexes, out_shape=shape, resampling=Resampling.nearest)
    except RasterioError as exc:
        raise RasterError(f"cannot read {ds.name} to compute its radiometric stretch: {exc}") from exc
    valid = (masks > 0).any(axis=0) & np.isfinite(data).all(axis=0)  # (h, w)
    per_band = {}
    for row, index in enumerate(indexes):
        values = data[row][valid]
        if values.size == 0:
            lo = hi = 0.0
        else:
            lo, hi = (float(v) for v in np.percentile(values, STRETCH_PERCENTILES))
        per_band[index] = (lo, hi if hi > lo else lo + 1.0)
    return tuple(per_band[b] for b in chosen)
