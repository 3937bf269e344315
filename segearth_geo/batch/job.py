"""``run_batch()``: many scenes x prompts -> per-scene files (+ one merged file), crash-safe.

Flow (the driver; see docs/batch.md):

1. inputs are expanded (:mod:`~segearth_geo.batch.inputs`) and checked cheaply;
2. the folder is locked (:class:`~segearth_geo.batch.ledger.JobLock`) and an existing
   ``job.json`` is compared with this job (a different job is refused unless ``restart``);
3. the executor starts (the model is loaded once per worker) and gives the chip size;
4. every scene is planned into units (:mod:`~segearth_geo.batch.plan`); the ledger records
   them, keeping what earlier runs finished;
5. the executor runs the units still to do; each result is recorded; when a scene's last
   unit is done its files are written (:mod:`~segearth_geo.batch.finish`);
6. the merged file is written; a :class:`~segearth_geo.batch.report.BatchReport` is returned.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from segearth_geo.batch.config import JOB_FILE, JOB_FORMAT, BatchOptions, JobSpec, file_sha256, read_job, write_job
from segearth_geo.batch.finish import RESULTS_DIR, check_scene_rasters, raster_paths, write_scene
from segearth_geo.batch.inputs import expand_inputs, read_aoi, stac_sources
from segearth_geo.batch.ledger import LEDGER_FILE, JobLock, Ledger
from segearth_geo.batch.merge import check_merge, merge_outputs
from segearth_geo.batch.plan import ScenePlan, UnitSpec, plan_job
from segearth_geo.batch.report import BatchReport, Estimate, Failure, SceneReport
from segearth_geo.batch.unit import UnitResult, UnitRunner, raster_shard_path, shard_path
from segearth_geo.errors import OutputError, SegEarthGeoError, UsageError
from segearth_geo.output import remove_stale_temporaries
from segearth_geo.params import LoadOptions, SegmentParams, field_name
from segearth_geo.prediction import clean_prompts
from segearth_geo.progress import ProgressCallback, Reporter

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
CALIBRATION_S = 20.0  # a dry run times at most about this much of the first unit (after a warm-up batch)
MERGED_META = "merged"  # ledger meta: the merged file this job wrote (path, size, mtime), so only it is replaced


def run_batch(
    inputs: Sequence[str | os.PathLike],
    prompts: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    load: LoadOptions | None = None,
    params: SegmentParams | None = None,
    options: BatchOptions | None = None,
    segmenter: Any = None,
    progress: bool | ProgressCallback = False,
    style: str | None = None,
    **kwargs: Any,
) -> BatchReport:
    """Segment every input by every prompt into ``out_dir``; resumable after any interruption.

    Args:
        inputs: paths, globs, ``@list.txt`` files, GDAL sources (``/vsicurl/…``).
        prompts: one or more prompts; each scene gets one result file per prompt.
        out_dir: the job folder (created; its parent must exist): ``job.json``, ``ledger.sqlite``,
            ``shards/`` and ``results/<scene>/<prompt>.gpkg``.
        load: the model and how to load it (:class:`~segearth_geo.params.LoadOptions`; loaded once per worker).
        params: the run parameters (:class:`~segearth_geo.params.SegmentParams`; no bbox: use an AOI).
        options: inputs, AOI, merge target, executor and retry policy (:class:`~segearth_geo.batch.config.BatchOptions`).
        segmenter: an already loaded segmenter instead of loading ``load.model`` (pickled to Ray workers).
        progress: ``True`` for a bar on stderr (plus a line per finished scene), or a callable
            receiving :class:`~segearth_geo.progress.Progress` events.
        style: how fields are named in error messages (``python``, ``cli``, ``json``).
        kwargs: any field of the three option types by name (``model="demo"``, ``overlap=16``,
            ``merge="all.gpkg"``, ``executor="ray"``…), applied over ``load``/``params``/``options``.

    Returns:
        :class:`~segearth_geo.batch.report.BatchReport` (``exit_code`` 1 when a unit failed).

    Raises:
        UsageError: bad arguments, a different job in ``out_dir``, a locked ``out_dir``, a too large job.
        ModelError: the model cannot be loaded.
    """
    started = time.perf_counter()
    named = load is not None or "model" in kwargs  # else a segmenter object is recorded by its class
    load, params, options = _options(load, params, options, kwargs, style)
    if segmenter is None:
        from segearth_geo.model.loading import check_load_options

        check_load_options(load, style)
    folder = Path(out_dir).expanduser().absolute()
    merge = None if options.merge is None else str(_check_merge_target(options, folder, style))
    aoi_frame = read_aoi(options.aoi) if options.aoi is not None else None
    aoi_path = None if options.aoi is None else os.path.abspath(os.path.expanduser(options.aoi))
    job = _JobDraft(_sources(inputs, options, style), _prompts(prompts), _model_name(load.model, segmenter, not named),
                    params, options.chips_per_unit, aoi_path, None if aoi_path is None else file_sha256(aoi_path))
    if options.dry_run:
        return _dry_run(folder, job, load, options, segmenter, aoi_frame, started)
    _make_folder(folder, merge)
    with JobLock(folder):
        stored = None if options.restart else read_job(folder)
        if merge and os.path.lexists(merge) and not _merge_owned(folder, Path(merge)):
            raise OutputError(f"merged file {merge} exists and is not this job's merged file; choose another name "
                              "or remove it")
        pool = _executor(options, load, segmenter)
        try:
            # Resuming: the stored job's chip size is known, so the model is loaded only if work is left.
            known = _stored_chip_size(stored)
            spec = job.resolve(known if known else pool.start())
            if stored is not None:
                _refuse_changed(folder, spec, stored)
            if options.restart:
                _clear(folder)
            scenes = plan_job(spec, aoi=aoi_frame, allow_large=options.allow_large)
            _check_merge_crs(scenes, options)
            write_job(folder, spec, options.run_record(load.device))
            return _execute(folder, spec, options, merge, scenes, pool, progress, started)
        finally:
            pool.close()


def _sources(inputs: Sequence[str | os.PathLike], options: BatchOptions, style: str | None) -> tuple[str, ...]:
    """The job's GDAL sources: the inputs expanded (globs, lists), then the STAC items' assets."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    sources = expand_inputs(inputs) if inputs else []
    if options.stac is not None:
        sources = list(dict.fromkeys(sources + stac_sources(options.stac, options.asset)))
    elif options.asset is not None:
        raise UsageError(f"{field_name('asset', style)} needs {field_name('stac', style)}")
    if not sources:
        raise UsageError("no input: give raster paths, globs, @list.txt files or a STAC ItemCollection")
    return tuple(sources)


def _make_folder(folder: Path, merge: str | None) -> None:
    """Create the job folder (its parent must exist) and, inside it, the merged file's folder."""
    if not folder.parent.is_dir():
        raise OutputError(f"the parent of the job folder {folder} does not exist; create it first")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file; give a folder for the batch job")
    folder.mkdir(exist_ok=True)
    if merge is not None:
        Path(merge).parent.mkdir(parents=True, exist_ok=True)  # inside the job folder (else it exists)


def _check_merge_target(options: BatchOptions, folder: Path, style: str) -> Path:
    """The merged file's path, checked: a known format, a writable place, not one of the job's own files."""
    target = check_merge(options.merge, options.merge_crs, folder)
    own = [folder / RESULTS_DIR, folder / SHARDS_DIR]
    if any(target.is_relative_to(d) for d in own) or target in (folder / JOB_FILE, folder / LEDGER_FILE):
        raise UsageError(f"{field_name('merge', style)} {target} is inside the job's own files (results/, shards/, "
                         f"job.json, ledger); give a file next to them, e.g. {folder / 'merged.gpkg'}")
    return target


def _merge_owned(folder: Path, target: Path) -> bool:
    """Whether ``target`` is the merged file this job wrote (the ledger records its path, size and time)."""
    if not (folder / LEDGER_FILE).is_file():
        return False
    try:
        ledger = Ledger(folder / LEDGER_FILE, readonly=True)
    except SegEarthGeoError:
        return False
    try:
        record = ledger.meta(MERGED_META)
    except SegEarthGeoError:
        return False
    finally:
        ledger.close()
    if not isinstance(record, dict) or record.get("path") != str(target):
        return False
    return bool(record.get("pending")) or record == _file_identity(target)


def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _options(load: LoadOptions | None, params: SegmentParams | None, options: BatchOptions | None,
             kwargs: dict[str, Any], style: str) -> tuple[LoadOptions, SegmentParams, BatchOptions]:
    """The three option types with ``kwargs`` applied by field name, checked (``batch_size`` also bounds the
    model's forward pass unless ``load`` sets its own)."""
    groups: list[tuple[Any, dict[str, Any]]] = [(load or LoadOptions(), {}), (params or SegmentParams(), {}),
                                                (options or BatchOptions(), {})]
    for name, value in kwargs.items():
        for base, given in groups:
            if name in type(base).names() and not (name == "batch_size" and isinstance(base, LoadOptions)):
                given[name] = value
                break
        else:
            raise TypeError(f"run_batch() got an unexpected keyword argument {name!r}")
    (load, load_given), (params, params_given), (options, options_given) = groups
    params = replace(params, **params_given).check(style)
    for name in ("bbox", "bbox_crs"):
        if getattr(params, name) is not None:
            raise UsageError(f"a batch job takes no {field_name(name, style)}; give {field_name('aoi', style)} "
                             "(a polygon layer) to limit the area")
    check_scene_rasters(params, style)
    if "batch_size" in params_given and load.batch_size is None:
        load_given["batch_size"] = params.batch_size
    return (replace(load, **load_given).check(style), params,
            replace(options, **options_given).check(style))


def _prompts(prompts: Sequence[str]) -> tuple[str, ...]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not list(prompts):
        raise UsageError("no prompt: give at least one")
    return tuple(clean_prompts(list(prompts)))


@dataclass(frozen=True)
class _JobDraft:
    """A job before the model's chip size is known (:meth:`resolve` makes the :class:`JobSpec`)."""

    sources: tuple[str, ...]
    prompts: tuple[str, ...]
    model: str
    params: SegmentParams
    chips_per_unit: int
    aoi: str | None
    aoi_sha256: str | None

    def resolve(self, chip_size: int) -> JobSpec:
        return JobSpec(self.sources, self.prompts, self.model, self.params.resolve(chip_size), int(chip_size),
                       self.chips_per_unit, self.aoi, self.aoi_sha256)


def _stored_chip_size(stored: dict | None) -> int | None:
    engine = ((stored or {}).get("job") or {}).get("engine") or {}
    value = engine.get("chip_size") if isinstance(engine, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _model_name(model: str, segmenter: Any, unnamed: bool) -> str:
    """The model as a job records it: the spec (folders and ``file.py`` factories made absolute), or the
    segmenter's class when a segmenter object was given without naming a model."""
    if segmenter is not None and unnamed:
        return f"{type(segmenter).__module__}.{type(segmenter).__qualname__}"
    text = str(model)
    target, sep, attr = text.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{os.path.abspath(os.path.expanduser(target))}:{attr}"
    if text != "demo" and os.path.isdir(os.path.expanduser(text)):
        return os.path.abspath(os.path.expanduser(text))
    return text


def _refuse_changed(folder: Path, spec: JobSpec, stored: dict) -> None:
    """Raise a one-line :class:`UsageError` when ``spec`` differs from the job stored in ``folder``."""
    if stored.get("format") != JOB_FORMAT:
        raise UsageError(f"{folder} holds a batch job written by another version of segearth-geo (job format "
                         f"{stored.get('format')!r}, this version writes {JOB_FORMAT}); pass {field_name('restart')} to start it "
                         "over, or choose another output folder")
    differences = spec.differences(stored.get("job") or {})
    if differences:
        raise UsageError(
            f"{folder} holds a different batch job (changed: {', '.join(differences)}); pass {field_name('restart')} to discard "
            "it and start over, or choose another output folder")


def _clear(folder: Path) -> None:
    """Remove what a job writes into ``folder`` (``restart``); nothing else is touched."""
    for name in (SHARDS_DIR, RESULTS_DIR):
        shutil.rmtree(folder / name, ignore_errors=True)
    for name in (JOB_FILE, LEDGER_FILE, f"{LEDGER_FILE}-wal", f"{LEDGER_FILE}-shm"):
        (folder / name).unlink(missing_ok=True)


def _executor(options: BatchOptions, load: LoadOptions, segmenter: Any):
    if options.executor == "ray":
        from segearth_geo.batch.executor_ray import RayExecutor

        return RayExecutor(load, segmenter=segmenter, address=options.ray_address, workers=options.workers)
    from segearth_geo.batch.executor_local import LocalExecutor

    return LocalExecutor(load, segmenter=segmenter)


def _execute(folder: Path, spec: JobSpec, run: BatchOptions, merge: str | None, scenes: list[ScenePlan], pool,
             progress: bool | ProgressCallback, started: float) -> BatchReport:
    shard_dir = folder / SHARDS_DIR
    ledger = Ledger(folder / LEDGER_FILE)
    try:
        earlier = ledger.units()
        before = {u.id: u.status for u in earlier}
        # --retry-failed reruns the scenes that failed, whether a unit or the scene itself (a scene whose file was
        # replaced since gets new units, which replace its failed ones).
        failed_scenes = {r["id"] for r in ledger.scenes() if r["status"] == "failed"}
        failed_scenes |= {u.scene_id for u in earlier if u.status == "failed"}
        ledger.record_plan(scenes)
        _reconcile(ledger, scenes, shard_dir, folder, spec)
        ledger.set_meta("executor", {"executor": run.executor, "workers": pool.workers, "pid": os.getpid()})
        by_id = {s.id: s for s in scenes}
        units = [u for s in scenes for u in s.units]
        status = {u.id: u.status for u in ledger.units()}
        if run.retry_failed:
            todo = [u for u in units if status[u.id] != "done"
                    and (before.get(u.id) == "failed" or u.scene_id in failed_scenes)]
        else:
            todo = [u for u in units if status[u.id] == "pending"]
        resumed = sum(status[u.id] == "done" for u in units)
        chips_total = sum(len(u.chips) for u in units)
        chips_done = sum(len(u.chips) for u in units if status[u.id] == "done")
        bar = Reporter(progress, chips_total, units_total=len(units), chips_done=chips_done, units_done=resumed,
                       desc="batch")
        failures_this_run = [0]
        ran = [0]
        # Scenes finished by an earlier run except for their outputs (killed in between).
        for scene in scenes:
            _maybe_finish(folder, ledger, spec, scene, shard_dir, bar)

        def on_start(unit: UnitSpec, worker: str) -> None:
            ledger.mark_running(unit.id, worker)

        def on_result(unit: UnitSpec, result: UnitResult) -> None:
            ran[0] += 1
            scene = by_id[unit.scene_id]
            if result.error is None:
                ledger.mark_done(unit.id, result.chips, result.skipped, result.seconds, result.worker)
                bar.unit(f"unit {unit.id} done", scene.source, True)
                _maybe_finish(folder, ledger, spec, scene, shard_dir, bar)
            else:
                failures_this_run[0] += 1
                ledger.mark_failed(unit.id, result.error, result.seconds, result.worker)
                bar.unit(f"unit {unit.id} of {scene.source} failed: {result.error}", scene.source, False)

        def should_stop() -> bool:
            return run.max_failures is not None and failures_this_run[0] > run.max_failures

        try:
            if todo and not pool.started:
                chip_size = pool.start()
                if chip_size != spec.chip_size:
                    raise UsageError(f"the model's chip size is now {chip_size} px, the job in {folder} was planned "
                                     f"with {spec.chip_size} px; pass {field_name('restart')} to start it over")
            if todo:
                pool.run(todo, spec, shard_dir, on_start=on_start, on_result=on_result,
                         on_chips=bar.chips, should_stop=should_stop)
        finally:
            bar.close()
        return _report(folder, spec, run, merge, scenes, ledger, pool, ran[0], resumed, should_stop(), started)
    finally:
        ledger.close()


def _reconcile(ledger: Ledger, scenes: list[ScenePlan], shard_dir: Path, folder: Path, spec: JobSpec) -> None:
    """Make the ledger agree with the files: a done scene whose result files (rasters included) are gone is
    written again, a done unit whose shard (or raster shard) is gone and is still needed is run again. Temporary
    shard files of writers that no longer run are removed."""
    rows = {r["id"]: r for r in ledger.scenes()}
    rasters = spec.params.raster_out is not None or spec.params.labels_out is not None
    for scene in scenes:
        if not scene.units:
            continue
        remove_stale_temporaries(shard_dir / scene.id)
        row = rows.get(scene.id)
        outputs = json.loads(row["outputs"]) if row is not None and row["outputs"] else {}
        if row is not None and row["status"] == "done":
            files = [*outputs.values(), *raster_paths(folder, scene, spec.params).values()]
            if outputs and all(Path(p).is_file() for p in files):
                continue
            ledger.mark_scene_planned(scene.id)
        done = {u.id for u in ledger.units(status="done", scene_id=scene.id)}
        for unit in scene.units:
            if unit.id in done and not (shard_path(shard_dir, unit).is_file()
                                        and (not rasters or raster_shard_path(shard_dir, unit).is_file())):
                ledger.mark_pending(unit.id, "its shard file was missing; redone")


def _maybe_finish(folder: Path, ledger: Ledger, spec: JobSpec, scene: ScenePlan, shard_dir: Path, bar: Reporter) -> None:
    """Write the scene's outputs once all its units are done (and not yet written)."""
    if scene.error or scene.skipped or not scene.units or ledger.scene_units_left(scene.id):
        return
    if ledger.scene_status(scene.id) == "done":
        return
    try:
        outputs = write_scene(folder, scene, spec, shard_dir)
    except (SegEarthGeoError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        ledger.mark_scene_failed(scene.id, f"writing its results failed: {reason}")
        bar.scene(f"FAILED {scene.source}: writing its results failed: {reason}", scene.source)
        return
    ledger.mark_scene_done(scene.id, outputs)
    bar.scene(f"done {scene.source}: {len(outputs)} file(s) in {Path(next(iter(outputs.values()))).parent}",
              scene.source)


def _report(folder: Path, spec: JobSpec, run: BatchOptions, merge: str | None, scenes: list[ScenePlan], ledger: Ledger,
            pool, ran: int, resumed: int, stopped: bool, started: float) -> BatchReport:

    rows = {r["id"]: r for r in ledger.scenes()}
    reports = []
    for s in scenes:
        r = rows[s.id]
        reports.append(SceneReport(s.source, s.name, r["status"], len(s.units), s.chips, r["error"],
                                   json.loads(r["outputs"]) if r["outputs"] else {},
                                   raster_paths(folder, s, spec.params) if r["status"] == "done" else {}))
    failed_units = ledger.units(status="failed")
    source_of = {s.id: s.source for s in scenes}
    failures = [Failure(source_of.get(u.scene_id, "?"), u.id, u.error or "failed") for u in failed_units]
    failures += [Failure(s.source, plan.id, s.error or "failed") for s, plan in zip(reports, scenes)
                 if s.status == "failed" and s.units and not any(f.source == s.source for f in failures)]
    counts = ledger.counts()
    notes = []
    if stopped:
        notes.append(f"Stopped early: more than {run.max_failures} unit(s) failed ({field_name('max_failures')}).")
    merged = layers = None
    if merge:
        files = [p for s in reports if s.status == "done" for p in s.outputs.values()]
        ledger.set_meta(MERGED_META, {"path": merge, "pending": True})  # a kill while merging keeps it ours
        result = merge_outputs(files, spec.model, merge, run.merge_crs)
        ledger.set_meta(MERGED_META, _file_identity(Path(result.path)))
        merged, layers = result.path, result.layers
        if result.note:
            notes.append(f"Note: {result.note}.")
        if any(s.status not in ("done", "skipped") for s in reports):
            notes.append("Note: the merged file holds only the scenes that are done.")
    return BatchReport(
        out_dir=str(folder), scenes=tuple(reports),
        units_total=counts["pending"] + counts["running"] + counts["done"] + counts["failed"],
        units_done=counts["done"], units_failed=len(failures), units_run=ran, units_resumed=resumed,
        chips_total=counts["chips"], chips_done=counts["chips_done"], seconds=time.perf_counter() - started,
        failures=tuple(failures), merged=merged, merge_layers=tuple(layers or ()), notes=tuple(notes),
        stopped_early=stopped, executor=run.executor, workers=pool.workers, device=pool.device_description,
        notice=pool.notice)


def _dry_run(folder: Path, draft: _JobDraft, load: LoadOptions, run: BatchOptions, segmenter: Any, aoi_frame,
             started: float) -> BatchReport:
    """Plan, calibrate on the first unit's first batch of chips (in a temporary folder) and report; write nothing."""
    from segearth_geo.batch.executor_local import LocalExecutor

    pool = LocalExecutor(load, segmenter=segmenter)
    try:
        spec = draft.resolve(pool.start())
        scenes = plan_job(spec, aoi=aoi_frame, allow_large=run.allow_large)
        _check_merge_crs(scenes, run)
        units = [u for s in scenes for u in s.units]
        workers = run.workers or 1
        startup = time.perf_counter() - started  # loading the model and planning: a real run does them too
        estimate, failure = _calibrate(pool.segmenter, spec, units, workers, startup) if units else (None, None)
    finally:
        pool.close()
    reports = tuple(SceneReport(s.source, s.name, "failed" if s.error else "skipped" if s.skipped else "planned",
                                len(s.units), s.chips, s.error or s.skipped) for s in scenes)
    failures = tuple(Failure(s.source, s.id, s.error) for s in scenes if s.error) + ((failure,) if failure else ())
    return BatchReport(
        out_dir=str(folder), scenes=reports, units_total=len(units), units_done=0, units_failed=len(failures),
        failures=failures,
        chips_total=sum(len(u.chips) for u in units), seconds=time.perf_counter() - started, dry_run=True,
        estimate=estimate, executor=run.executor, workers=workers, device=pool.device_description,
        notice=pool.notice)


def _calibrate(segmenter: Any, spec: JobSpec, units: list[UnitSpec], workers: int,
               startup: float = 0.0) -> tuple[Estimate | None, Failure | None]:
    """Time the first unit as a real run would (its chips, all prompts, shard written), after a warm-up batch.

    A unit's own costs (opening the scene, threads, the shard) are then spread over its chips as in the job.
    Only as many of its chips are timed as fit :data:`CALIBRATION_S` by the warm-up's speed (a slow model on a
    CPU is not run for minutes). The estimate adds ``startup`` (loading the model and planning, as measured by
    the dry run). A segmenter that fails is reported as a failure of the calibration."""
    first = units[0]
    k = max(1, min(spec.params.batch_size, len(first.chips)))
    with tempfile.TemporaryDirectory(prefix="segearth-calibration-") as tmp:
        runner = UnitRunner(segmenter, spec, Path(tmp))
        try:
            runs = []
            warm = runner.run(UnitSpec(first.id, first.scene_id, first.source, 0, first.chips[:k]))
            per_chip = warm.seconds / max(1, warm.chips + warm.skipped)
            m = max(k, min(len(first.chips), int(CALIBRATION_S / max(per_chip, 1e-6))))
            for result in (warm, runner.run(UnitSpec(first.id, first.scene_id, first.source, 0, first.chips[:m]))):
                if result.error is not None:
                    return None, Failure(first.source, "calibration", f"the model failed on the first chips: "
                                                                      f"{result.error}")
                runs.append((max(1, result.chips + result.skipped), result.seconds))
        finally:
            runner.close()
    measured, seconds = runs[-1]
    per_chip = seconds / measured
    chips = sum(len(u.chips) for u in units)
    return Estimate(per_chip, startup + chips * per_chip / workers, _peak_mb(), measured, workers), None


def _check_merge_crs(scenes: list[ScenePlan], run: BatchOptions) -> None:
    """A merge that reprojects (GeoParquet, FlatGeobuf, or --merge-crs) needs every scene to have a CRS: say so
    before any work, not after."""
    if run.merge is None or (Path(run.merge).suffix.lower() == ".gpkg" and run.merge_crs is None):
        return
    lacking = [s.source for s in scenes if s.units and s.crs_wkt is None]
    if lacking:
        raise UsageError(f"{lacking[0]} has no CRS, so it cannot be reprojected into the merged file "
                         f"{Path(run.merge).name}; merge to .gpkg without {field_name('merge_crs')}, or leave that raster out")


def _peak_mb() -> float:
    """Peak resident memory of this process in MiB (0 where the OS does not tell)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if os.uname().sysname == "Darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux
