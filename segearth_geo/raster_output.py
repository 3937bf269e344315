"""Raster outputs of a run: the stitched probability per prompt (``raster_out``) and polygon ids (``labels_out``).

Both are Cloud-Optimized GeoTIFFs in the processing grid (the scene's, or the ``gsd`` grid; the bbox crop
included), one band per prompt (band descriptions: the prompts), DEFLATE-compressed with overviews:

* ``raster_out``: ``float32``, each pixel's probability from the chip that **owns** it (its core: the same
  rule as the stitcher, so no seams), the maximum over the prompt's targets; nodata ``-1`` where the scene is
  invalid or was never segmented (fully invalid chips). Thresholded at ``threshold`` (``>=``, in float32, as
  the stitcher does) it is exactly the union of the prompt's masks before vectorising. Overviews: average.
* ``labels_out``: ``int32``, the ``id`` (vector output column) of the polygon covering each pixel centre, 0
  where there is none, nodata ``-1`` where the scene is invalid; where two polygons of one prompt overlap (two
  labels on one pixel) the larger id wins. It is the final polygons rasterized (after ``simplify``,
  ``regularize`` or ``smooth``), so rasterizing the vector output gives it back pixel for pixel.
  Overviews: nearest.

Memory stays flat in the scene size, like the vector path: the vectoriser threads write each chip core's
probabilities into a temporary tiled GeoTIFF beside the target as the chips are segmented (:meth:`tap`), the
labels are rasterized window by window (:data:`WINDOW`² pixels at a time) from the final polygons, and GDAL's
COG driver copies each temporary file to its COG block by block. The temporary work file is uncompressed
(4 bytes per pixel and prompt; sparse where nothing was written). Outputs are renamed onto their targets
only when every file of the run is complete (:meth:`RasterOutputs.commit`); on failure nothing is left.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.features
import rasterio.shutil
import shapely
from rasterio.windows import Window

from segearth_geo.errors import OutputError, OutputNameError
from segearth_geo.output import NAME_MAX, check_folder, remove_stale_temporaries, temporary_path
from segearth_geo.params import field_name

logger = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff")
PROBABILITY_NODATA = -1.0
LABELS_NODATA = -1
WINDOW = 2048  # px: side of the windows the labels raster is rasterized in
BLOCK = 256  # px: tiles of the temporary work files
# DEFLATE at level 1 (with the floating-point/horizontal predictor): as small as level 6 on probability maps,
# twice as fast; every GDAL reads it (QGIS 3.22 included).
COG_OPTIONS = {"COMPRESS": "DEFLATE", "LEVEL": "1", "PREDICTOR": "YES", "BLOCKSIZE": "256", "OVERVIEWS": "AUTO",
               "BIGTIFF": "IF_SAFER", "NUM_THREADS": "ALL_CPUS"}


def check_raster_output(path: str | os.PathLike, overwrite: bool, name: str, others: Iterable[Any] = ()) -> Path:
    """Check before any work that the raster output ``path`` (option ``name``) can be written: a ``.tif``
    name, not a folder, not an existing file without ``overwrite``, not another output of the run, in a
    writable folder."""
    text = os.fspath(path)
    target = Path(text).expanduser()
    if target.suffix.lower() not in RASTER_SUFFIXES or text.endswith(("/", os.sep)):
        raise OutputNameError(f"{field_name(name)} must name a GeoTIFF file ending in .tif, got {text!r}")
    if len(os.fsencode(target.name)) > NAME_MAX:
        raise OutputNameError(f"{field_name(name)} file name is longer than {NAME_MAX} bytes; choose a shorter one")
    if target.is_dir():
        raise OutputNameError(f"{field_name(name)} {target} is a folder; give a file name such as "
                              f"{target / 'probability.tif'}")
    for other in others:
        if other is not None and Path(os.fspath(other)).expanduser().absolute() == target.absolute():
            raise OutputNameError(f"{field_name(name)} {target} is also another output of this run; give each "
                                  "output its own file")
    if os.path.lexists(target) and not overwrite:
        raise OutputNameError(f"{field_name(name)} {target} exists; choose another name or pass "
                              f"{field_name('overwrite')}")
    check_folder(target)
    remove_stale_temporaries(target.parent)
    return target


class RasterOutputs:
    """The raster outputs of one run over one scene (see the module docstring).

    Use: ``outputs = RasterOutputs(scene, prompts, params)``; hand :meth:`tap` of each prompt's stitcher to the
    pipeline instead of the stitcher; :meth:`finish` with the final polygons; :meth:`commit` once the vector
    output is in place; :meth:`discard` (always safe) removes whatever is not committed.

    Args:
        scene: the run's :class:`~segearth_geo.raster.Scene` (grid, CRS, transform).
        prompts: the run's prompts, one band each, in order.
        probability, labels: target paths (checked by :func:`check_raster_output`), either may be ``None``.
        tags: GDAL metadata written into both files (the run's description).
    """

    def __init__(self, scene: Any, prompts: list[str], probability: str | os.PathLike | None,
                 labels: str | os.PathLike | None, tags: dict[str, str] | None = None) -> None:
        self.scene, self.prompts = scene, list(prompts)
        self.targets = {kind: Path(os.fspath(p)).expanduser() for kind, p in
                        (("probability", probability), ("labels", labels)) if p is not None}
        self.tags = dict(tags or {})
        self._temporaries: list[Path] = []
        self._ready: dict[str, Path] = {}
        # a run that fails (or is cancelled) before commit() leaves nothing: the temporaries go with this object
        self._finalizer = weakref.finalize(self, _remove, self._temporaries)
        first = next(iter(self.targets.values()))
        self._work_path = self._temporary(first, ".work.tif")
        # The work file: the probabilities per prompt (float32, -1 = not segmented/invalid), or with labels only,
        # the validity (uint8, 0 = invalid): what finish() needs.
        try:
            self._work = CoreWriter(self._work_path, scene, self.prompts, "probability" in self.targets)
        except OutputError:
            _remove(self._temporaries)
            raise

    def _temporary(self, target: Path, suffix: str) -> Path:
        path = temporary_path(target, suffix)
        self._temporaries.append(path)
        return path

    # ------------------------------------------------------------------------------------------ during the run
    def tap(self, index: int, stitcher: Any) -> _Tap:
        """What the pipeline feeds instead of prompt ``index``'s stitcher: it adds each chip to the stitcher and
        writes the chip core's probabilities (or validity) to the work file."""
        return _Tap(self._work, index, stitcher)

    def taps(self, stitchers: list[Any]) -> list[_Tap]:
        return [self.tap(k, s) for k, s in enumerate(stitchers)]

    def paste(self, shard: str | os.PathLike, region: Window | None = None) -> None:
        """Copy what a batch unit wrote (its :class:`CoreWriter` file over the same grid, within ``region``) into
        the work file: only the pixels the unit owned (elsewhere its file holds nodata), block by block."""
        self._work.paste(shard, region)

    # ------------------------------------------------------------------------------------------ after the run
    def finish(self, segments: Any) -> None:
        """Write the COGs (to temporary names) from the work file and the final polygons ``segments`` (a frame
        with ``prompt``, ``id`` and geometry in the scene's CRS)."""
        from segearth_geo.pipeline import gdal_options

        try:
            self._work.close()
            with rasterio.Env(**gdal_options()):  # a bounded block cache: memory flat in the scene size
                self._finish(segments)
        except Exception as exc:
            self.discard()
            names = " and ".join(str(t) for t in self.targets.values())
            raise OutputError(f"cannot write {names}: {exc}") from exc

    def _finish(self, segments: Any) -> None:
        if "labels" in self.targets:
            self._ready["labels"] = self._write_labels(segments)
        if "probability" in self.targets:
            self._ready["probability"] = self._cog(self._work_path, self.targets["probability"], "AVERAGE")
        self._work_path.unlink(missing_ok=True)

    def _write_labels(self, segments: Any) -> Path:
        """The labels raster (temporary COG): the polygons rasterized window by window into a work file."""
        scene = self.scene
        work = self._temporary(self.targets["labels"], ".labels.tif")
        geoms = np.asarray(segments.geometry.values, dtype=object) if len(segments) else np.zeros(0, dtype=object)
        ids = segments["id"].to_numpy(np.int64) if len(segments) else np.zeros(0, np.int64)
        band_of = {p: k for k, p in enumerate(self.prompts)}
        bands = np.array([band_of.get(p, -1) for p in segments["prompt"]], dtype=np.int64) if len(segments) else ids
        tree = shapely.STRtree(geoms)
        profile = dict(driver="GTiff", width=scene.width, height=scene.height, count=len(self.prompts),
                       dtype="int32", crs=scene.crs, transform=scene.transform, tiled=True, blockxsize=BLOCK,
                       blockysize=BLOCK, nodata=LABELS_NODATA, BIGTIFF="IF_SAFER")
        with rasterio.open(self._work_path) as validity, rasterio.open(work, "w", **profile) as out:
            for row in range(0, scene.height, WINDOW):
                for col in range(0, scene.width, WINDOW):
                    window = Window(col, row, min(WINDOW, scene.width - col), min(WINDOW, scene.height - row))
                    out.write(self._labels_window(window, validity, tree, geoms, ids, bands), window=window)
            for k, prompt in enumerate(self.prompts):
                out.set_band_description(k + 1, prompt)
        return self._cog(work, self.targets["labels"], "NEAREST")

    def _labels_window(self, window: Window, validity: Any, tree: shapely.STRtree, geoms: np.ndarray,
                       ids: np.ndarray, bands: np.ndarray) -> np.ndarray:
        """``(P, h, w)`` int32 ids of one window: each prompt's polygons burnt in id order (the larger id wins
        where they overlap), nodata where the work file says the scene is invalid."""
        h, w = int(window.height), int(window.width)
        transform = rasterio.windows.transform(window, self.scene.transform)
        hits = np.sort(tree.query(shapely.box(*rasterio.windows.bounds(window, self.scene.transform))))
        out = np.zeros((len(self.prompts), h, w), dtype=np.int32)
        for k in range(len(self.prompts)):
            mine = hits[bands[hits] == k]
            mine = mine[np.argsort(ids[mine], kind="stable")]
            if len(mine):
                rasterio.features.rasterize(zip(geoms[mine], ids[mine].tolist()), out_shape=(h, w),
                                            transform=transform, out=out[k], dtype="int32")
        invalid = validity.read(1, window=window) == validity.nodata  # (h, w): never segmented or invalid
        out[:, invalid] = LABELS_NODATA
        return out

    def _cog(self, source: Path, target: Path, resampling: str) -> Path:
        """``source`` copied to a temporary COG beside ``target`` (tags and band descriptions kept)."""
        if source == self._work_path:
            with rasterio.open(source, "r+") as work:
                for k, prompt in enumerate(self.prompts):
                    work.set_band_description(k + 1, prompt)
                work.update_tags(**self.tags)
        else:
            with rasterio.open(source, "r+") as work:
                work.update_tags(**self.tags)
        cog = self._temporary(target, ".tif")
        rasterio.shutil.copy(source, cog, driver="COG", OVERVIEW_RESAMPLING=resampling, **COG_OPTIONS)
        if source != self._work_path:
            source.unlink(missing_ok=True)
        return cog

    def commit(self, overwrite: bool = False) -> list[Path]:
        """Rename the finished COGs onto their targets; returns the targets."""
        done = []
        for kind, tmp in self._ready.items():
            target = self.targets[kind]
            if os.path.lexists(target) and not overwrite:
                self.discard()
                raise OutputNameError(f"{target} appeared while writing; choose another name or pass "
                                      f"{field_name('overwrite')}")
            os.replace(tmp, target)
            done.append(target)
        self._ready.clear()
        self.discard()
        return done

    def discard(self) -> None:
        """Remove every temporary file of these outputs (safe to call more than once)."""
        if not self._work.closed:
            self._work.close()
        _remove(self._temporaries)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        for name in (path, Path(f"{path}.aux.xml"), Path(f"{path}.ovr")):
            name.unlink(missing_ok=True)


class CoreWriter:
    """The values of each segmented chip's core written into a tiled GeoTIFF over the whole processing grid: per
    prompt the probability (float32, the maximum over the prompt's targets, -1 where invalid or never segmented),
    or with ``probability`` false the validity (uint8: 1 valid, 0 nodata). Only the core, the part a chip
    owns, is written (the stitcher's rule), so there are no seams. Sparse: untouched blocks take no space. The
    work file of :class:`RasterOutputs`, and a batch unit's raster shard (then renamed into place by the unit).

    Args:
        path: the file; ``scene``: the grid (``width``, ``height``, ``crs``, ``transform``); ``prompts``: one band
            each (probability) or one band in all (validity).
    """

    def __init__(self, path: str | os.PathLike, scene: Any, prompts: list[str], probability: bool) -> None:
        self.path, self.probability = Path(path), probability
        self.bands = len(prompts) if probability else 1
        dtype = "float32" if probability else "uint8"
        self.nodata = PROBABILITY_NODATA if probability else 0
        self._lock = threading.Lock()
        try:
            self._file = rasterio.open(
                self.path, "w+", driver="GTiff", width=scene.width, height=scene.height, count=self.bands,
                dtype=dtype, crs=scene.crs, transform=scene.transform, tiled=True, blockxsize=BLOCK,
                blockysize=BLOCK, nodata=self.nodata, SPARSE_OK=True, BIGTIFF="IF_SAFER")
        except rasterio.errors.RasterioError as exc:
            raise OutputError(f"cannot write the raster file {self.path}: {exc}") from exc

    @property
    def closed(self) -> bool:
        return self._file.closed

    def taps(self, stitchers: list[Any]) -> list[_Tap]:
        return [_Tap(self, k, s) for k, s in enumerate(stitchers)]

    def write_core(self, index: int, chip: Any, targets: list[Any], valid: np.ndarray) -> None:
        core = chip.core_in_chip
        rows = slice(int(core.row_off), int(core.row_off + core.height))
        cols = slice(int(core.col_off), int(core.col_off + core.width))
        valid_core = valid[rows, cols]
        if self.probability:
            prob = np.zeros((int(core.height), int(core.width)), dtype=np.float32)  # (core_h, core_w)
            for target in targets:
                np.maximum(prob, np.asarray(target.probability[rows, cols], dtype=np.float32), out=prob)
            prob[~valid_core] = PROBABILITY_NODATA
            band, data = index + 1, prob
        elif index == 0:
            band, data = 1, valid_core.astype(np.uint8)
        else:
            return
        with self._lock:
            self._file.write(data, band, window=chip.core)

    def paste(self, shard: str | os.PathLike, region: Window | None = None) -> None:
        """Merge another writer's file of the same grid into this one: its pixels that are not nodata win. Only
        ``region`` is read (default: the whole grid)."""
        with rasterio.open(shard) as source:
            if (source.width, source.height, source.count) != (self._file.width, self._file.height, self.bands):
                raise OutputError(f"{shard} does not match the scene's raster grid")
            region = region or Window(0, 0, source.width, source.height)
            col0, row0 = int(region.col_off), int(region.row_off)
            col1, row1 = col0 + int(region.width), row0 + int(region.height)
            for row in range(row0, row1, WINDOW):
                for col in range(col0, col1, WINDOW):
                    window = Window(col, row, min(WINDOW, col1 - col), min(WINDOW, row1 - row))
                    theirs = source.read(window=window)  # (bands, h, w)
                    written = theirs != self.nodata
                    if written.any():
                        with self._lock:
                            mine = self._file.read(window=window)
                            self._file.write(np.where(written, theirs, mine), window=window)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class _Tap:
    """A stitcher seen through a :class:`CoreWriter`: the pipeline calls :meth:`add` and reads ``threshold``."""

    def __init__(self, writer: CoreWriter, index: int, stitcher: Any) -> None:
        self.writer, self.index, self.stitcher = writer, index, stitcher

    @property
    def threshold(self) -> float:
        return self.stitcher.threshold

    def __getattr__(self, name: str) -> Any:  # the rest of the stitcher (pieces() for the zoom strategy)
        return getattr(self.stitcher, name)

    def add(self, chip: Any, targets: Iterable[Any], valid: np.ndarray) -> list[str]:
        targets = list(targets)
        labels = self.stitcher.add(chip, targets, valid)
        self.writer.write_core(self.index, chip, targets, valid)
        return labels


def check_raster_outputs(params: Any, out: str | os.PathLike | None, overwrite: bool) -> None:
    """:func:`check_raster_output` for ``params.raster_out`` and ``params.labels_out`` (the vector ``out`` and
    each other must differ)."""
    if params.raster_out is not None:
        check_raster_output(params.raster_out, overwrite, "raster_out", (out, params.labels_out))
    if params.labels_out is not None:
        check_raster_output(params.labels_out, overwrite, "labels_out", (out,))


class NoRasters:
    """What :func:`raster_outputs` gives when no raster is asked for: the stitchers as they are, nothing to write."""

    def taps(self, stitchers: list[Any]) -> list[Any]:
        return stitchers

    def finish(self, segments: Any) -> None:
        return None

    def commit(self, overwrite: bool = False) -> list[Path]:
        return []


def raster_outputs(scene: Any, prompts: list[str], params: Any,
                   run: dict[str, Any] | None = None) -> RasterOutputs | NoRasters:
    """The run's :class:`RasterOutputs` (``run``: :func:`~segearth_geo.output.run_description`, written as GDAL
    metadata), or :class:`NoRasters` when ``params`` asks for none."""
    if params.raster_out is None and params.labels_out is None:
        return NoRasters()
    tags = {"SEGEARTH_" + k.upper().removeprefix("SEGEARTH_GEO_"): v if isinstance(v, str) else json.dumps(v)
            for k, v in (run or {}).items()}
    return RasterOutputs(scene, prompts, params.raster_out, params.labels_out, tags)


__all__ = ["LABELS_NODATA", "PROBABILITY_NODATA", "CoreWriter", "NoRasters", "RasterOutputs", "check_raster_output",
           "check_raster_outputs", "raster_outputs"]
