"""Running one work unit: windowed reads -> segmenter (every prompt) -> pieces -> shard.

:class:`UnitRunner` is what a worker holds for the whole job: the segmenter (loaded
once) and the scene it read last (kept open, so consecutive units of one scene do not
reopen it or recompute its stretch). Per unit it runs the same three-stage pipeline as
:func:`~segearth_geo.engine.segment_raster` — a reader thread reading chips ahead, this
thread calling the segmenter, a pool of vectoriser threads sized from the cores given to the
runner (:func:`~segearth_geo.pipeline.vectoriser_count`).

Each prompt's pieces are collected by a :class:`~segearth_geo.stitch.Stitcher` through the
shared pipeline (:func:`~segearth_geo.pipeline.run_chips`); its pieces are read out
(:meth:`~segearth_geo.stitch.Stitcher.pieces`) instead of finished and written as the unit's shard.
A unit's failure is returned as a one-line reason in :class:`UnitResult`, never raised, so one bad
scene does not stop a job.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import rasterio

from segearth_geo.batch.config import JobSpec
from segearth_geo.batch.plan import UnitSpec, chips_at
from segearth_geo.batch.shard import PromptPieces, write_shard
from segearth_geo.errors import Cancelled, SegEarthGeoError
from segearth_geo.output import temporary_path
from segearth_geo.pipeline import gdal_options, run_chips, vectoriser_count
from segearth_geo.raster import SceneReader, open_scene
from segearth_geo.raster_output import CoreWriter
from segearth_geo.stitch import Stitcher


@dataclass(frozen=True)
class UnitResult:
    """What a worker reports for one unit.

    Attributes:
        id: the unit's id.
        chips: chips processed (sent to the segmenter); ``skipped``: fully invalid chips.
        seconds: wall time of the unit.
        error: one-line reason when the unit failed, else ``None`` (then ``shard`` exists).
        worker: the runner that ran it (``host:pid``, see :func:`runner_id`).
    """

    id: str
    chips: int = 0
    skipped: int = 0
    seconds: float = 0.0
    error: str | None = None
    shard: str | None = None
    worker: str = ""


def shard_path(shard_dir: Path, unit: UnitSpec) -> Path:
    return Path(shard_dir) / unit.scene_id / f"{unit.id}.parquet"


def raster_shard_path(shard_dir: Path, unit: UnitSpec) -> Path:
    """The unit's raster shard (jobs with ``raster_out``/``labels_out``): its chip cores' probabilities or
    validity over the scene's grid (a sparse :class:`~segearth_geo.raster_output.CoreWriter` file)."""
    return shard_path(shard_dir, unit).with_suffix(".tif")


class UnitRunner:
    """Runs units with one segmenter (see the module docstring).

    Args:
        segmenter: the loaded segmenter (``chip_size``, ``segment(chips, prompt)``).
        spec: the job (prompts, run parameters, chip size).
        shard_dir: folder of the shards (``OUT_DIR/shards``, shared by every worker).
        gdal: GDAL configuration options (and credentials) for the reads.
        cores: cores for the vectoriser pool (default: all available).
    """

    def __init__(self, segmenter: Any, spec: JobSpec, shard_dir: Path, gdal: dict[str, str] | None = None,
                 cores: int | None = None) -> None:
        self.segmenter, self.spec, self.params = segmenter, spec, spec.params
        self.prompts = tuple(spec.prompts)
        self.shard_dir = Path(shard_dir)
        self.gdal_options = gdal_options(gdal)
        self.vectorisers = vectoriser_count(cores)
        self.worker = runner_id()
        self._open: tuple[str, SceneReader, ExitStack] | None = None

    def close(self) -> None:
        """Close the scene kept open."""
        if self._open is not None:
            self._open[2].close()
            self._open = None

    def _reader(self, source: str) -> SceneReader:
        if self._open is not None and self._open[0] == source:
            return self._open[1]
        self.close()
        stack = ExitStack()
        try:
            stack.enter_context(rasterio.Env(**self.gdal_options))
            reader = stack.enter_context(open_scene(source, bands=self.params.bands, gsd=self.params.gsd))
        except BaseException:
            stack.close()
            raise
        self._open = (source, reader, stack)
        return reader

    def run(self, unit: UnitSpec, progress: Callable[[int], None] | None = None) -> UnitResult:
        """Process ``unit`` and write its shard; failures come back as ``UnitResult.error``."""
        started = time.perf_counter()
        try:
            reader = self._reader(unit.source)
            scene = reader.scene
            chips = chips_at(scene.width, scene.height, self.spec.chip_size, self.params.overlap, unit.chips)
            stitchers = [Stitcher(scene.width, scene.height, self.params.threshold, default_label=p)
                         for p in self.prompts]
            with _RasterShard(raster_shard_path(self.shard_dir, unit), scene, self.prompts, self.params) as raster:
                records, zoomed = self._look(reader, unit, chips, raster.taps(stitchers), progress)
            results = []
            for stitcher, recs in zip(stitchers, records):
                final, border = stitcher.pieces()
                results.append(PromptPieces(final, border, recs))
            if zoomed is not None:  # before the shard: a shard on disk means the unit's files are all there
                from segearth_geo.zoom.batch import sidecar_path, write_sidecar

                shard_path(self.shard_dir, unit).parent.mkdir(parents=True, exist_ok=True)
                write_sidecar(sidecar_path(shard_path(self.shard_dir, unit)), zoomed)
            path = write_shard(shard_path(self.shard_dir, unit), results)
        except Cancelled:  # the caller stopped the job: not the unit's failure; it is redone on resume
            raise
        except Exception as exc:  # noqa: BLE001 - a unit's failure is data for the ledger
            self.close()  # a broken dataset must not be reused
            return UnitResult(unit.id, seconds=time.perf_counter() - started, error=_reason(exc), worker=self.worker)
        processed = len(records[0]) if records else 0
        skipped = len(chips) - processed if zoomed is None else zoomed["skipped"]  # zoom: nodata chips it met
        return UnitResult(unit.id, chips=processed, skipped=skipped,
                          seconds=time.perf_counter() - started, shard=str(path), worker=self.worker)

    def _look(self, reader: SceneReader, unit: UnitSpec, chips: list, sinks: list,
              progress: Callable[[int], None] | None) -> tuple[list[list[tuple[int, str, str]]], dict | None]:
        """Read, segment (every prompt, back to back) and vectorise the unit's chips into ``sinks``; per prompt
        ``(chip, answer, labels)``, and with strategy zoom/auto the sidecar's content (else ``None``)."""
        progress = progress or (lambda n: None)
        zoomed = None
        if self.params.strategy != "grid":  # issue 22: the unit is a whole scene, run through the zoom runner
            from segearth_geo.zoom.batch import run_unit

            records, zoomed = run_unit(reader, self.segmenter, list(self.prompts), self.params, sinks, unit.chips,
                                       progress)
        else:
            records = run_chips(reader, chips, self.segmenter, list(self.prompts), self.params.batch_size, sinks,
                                progress, vectorisers=self.vectorisers)
        return [[(c.index, answer, ", ".join(labels)) for c, answer, labels in recs] for recs in records], zoomed


class _RasterShard:
    """The unit's raster shard while the unit runs: ``taps`` gives the stitchers seen through a
    :class:`~segearth_geo.raster_output.CoreWriter` writing a temporary file, renamed onto ``path`` when the
    ``with`` block ends without error (removed otherwise). Without raster outputs it is the stitchers as they are."""

    def __init__(self, path: Path, scene: Any, prompts: tuple[str, ...], params: Any) -> None:
        self.path, self.scene, self.prompts = path, scene, list(prompts)
        self.probability = params.raster_out is not None
        self.wanted = self.probability or params.labels_out is not None
        self.writer: CoreWriter | None = None
        self.tmp: Path | None = None

    def __enter__(self) -> _RasterShard:
        if self.wanted:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = temporary_path(self.path, ".tif")
            self.writer = CoreWriter(self.tmp, self.scene, self.prompts, self.probability)
        return self

    def taps(self, stitchers: list[Stitcher]) -> list:
        return stitchers if self.writer is None else self.writer.taps(stitchers)

    def __exit__(self, kind, value, traceback) -> None:
        if self.writer is None:
            return
        self.writer.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def runner_id() -> str:
    """Who runs units in this process, for the ledger: ``host:pid``."""
    return f"{os.uname().nodename if hasattr(os, 'uname') else 'host'}:{os.getpid()}"


def _reason(exc: BaseException) -> str:
    """One line for the ledger: the library's own message, else the exception type and first line."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(exc, SegEarthGeoError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
