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

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from segearth_geo.batch.config import (
    DEFAULT_CHIPS_PER_UNIT,
    JOB_FILE,
    EngineParams,
    JobSpec,
    RunOptions,
    file_sha256,
    read_job,
    write_job,
)
from segearth_geo.batch.finish import RESULTS_DIR, write_scene
from segearth_geo.batch.inputs import expand_inputs, read_aoi, stac_sources
from segearth_geo.batch.ledger import LEDGER_FILE, JobLock, Ledger
from segearth_geo.batch.merge import check_merge, merge_outputs
from segearth_geo.batch.plan import ScenePlan, UnitSpec, plan_job
from segearth_geo.batch.report import BatchReport, Estimate, Failure, Progress, SceneReport
from segearth_geo.batch.unit import UnitResult, UnitRunner
from segearth_geo.chips import default_overlap
from segearth_geo.engine import check_request
from segearth_geo.errors import OutputError, SegEarthGeoError, UsageError
from segearth_geo.prediction import clean_prompt

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
ProgressCallback = Callable[[Progress], None]


def run_batch(
    inputs: Sequence[str | os.PathLike],
    prompts: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    model: str = "demo",
    segmenter: Any = None,
    executor: str = "local",
    stac: str | os.PathLike | None = None,
    asset: str | None = None,
    aoi: str | os.PathLike | None = None,
    merge: str | os.PathLike | None = None,
    merge_crs: str | None = None,
    ray_address: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    overlap: int | None = None,
    gsd: float | None = None,
    bands: Sequence[int] | str | None = None,
    threshold: float = 0.5,
    min_area: float | None = None,
    simplify: float | None = None,
    batch_size: int = 8,
    chips_per_unit: int = DEFAULT_CHIPS_PER_UNIT,
    dry_run: bool = False,
    retry_failed: bool = False,
    max_failures: int | None = None,
    restart: bool = False,
    allow_large: bool = False,
    progress: bool | ProgressCallback = False,
) -> BatchReport:
    """Segment every input by every prompt into ``out_dir``; resumable after any interruption.

    Args:
        inputs: paths, globs, ``@list.txt`` files, GDAL sources (``/vsicurl/…``).
        prompts: one or more prompts; each scene gets one result file per prompt.
        out_dir: the job folder (created; its parent must exist): ``job.json``, ``ledger.sqlite``,
            ``shards/`` and ``results/<scene>/<prompt>.gpkg``.
        model: ``"demo"``, a checkpoint folder, a repo id or ``file.py:factory`` (loaded once per worker).
        segmenter: an already loaded segmenter instead of ``model`` (pickled to Ray workers).
        executor: ``"local"`` or ``"ray"`` (``ray_address``, ``workers``: see :class:`RunOptions`).
        stac, asset: a STAC ItemCollection JSON and the asset to read from each item.
        aoi: polygon layer; only chips whose core intersects it are processed, polygons are clipped to it.
        merge, merge_crs: one merged file across scenes (see :mod:`segearth_geo.batch.merge`).
        overlap, gsd, bands, threshold, min_area, simplify, batch_size: as in
            :func:`~segearth_geo.segment_raster` (``overlap`` default: 1/8 of the chip size).
        chips_per_unit: chips per work unit (at most).
        dry_run: plan and calibrate on a few chips, write nothing.
        retry_failed: run only the units that failed in earlier runs.
        max_failures: stop scheduling after more than this many failed units in this run.
        restart: discard an existing job in ``out_dir``.
        allow_large: accept a scene of more than :data:`~segearth_geo.chips.MAX_CHIPS` chips or a job of
            more than :data:`~segearth_geo.batch.config.LARGE_JOB_CHIPS`.
        progress: ``True`` for a bar on stderr (plus a line per finished scene), or a callable
            receiving :class:`~segearth_geo.batch.report.Progress` events.

    Returns:
        :class:`~segearth_geo.batch.report.BatchReport` (``exit_code`` 1 when a unit failed).

    Raises:
        UsageError: bad arguments, a different job in ``out_dir``, a locked ``out_dir``, a too large job.
        ModelError: the model cannot be loaded.
    """
    started = time.perf_counter()
    prompts = _check_prompts(prompts, threshold=threshold, min_area=min_area, simplify=simplify, batch_size=batch_size,
                             overlap=overlap)
    if isinstance(chips_per_unit, bool) or not isinstance(chips_per_unit, int) or chips_per_unit < 1:
        raise UsageError(f"chips_per_unit must be a positive number, got {chips_per_unit!r}")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    sources = expand_inputs(inputs) if inputs else []
    if stac is not None:
        sources = list(dict.fromkeys(sources + stac_sources(stac, asset)))
    elif asset is not None:
        raise UsageError("--asset needs --stac ITEMS.json")
    if not sources:
        raise UsageError("no input: give raster paths, globs, @list.txt files or --stac ITEMS.json")
    run = RunOptions(executor=executor, ray_address=ray_address, workers=workers, device=device,
                     merge=None if merge is None else str(check_merge(merge, merge_crs)), merge_crs=merge_crs,
                     retry_failed=retry_failed, max_failures=max_failures, restart=restart,
                     allow_large=allow_large, dry_run=dry_run)
    aoi_frame = read_aoi(aoi) if aoi is not None else None
    aoi_path = None if aoi is None else os.path.abspath(os.path.expanduser(os.fspath(aoi)))
    model_name = _model_name(model, segmenter)
    if isinstance(bands, str):
        from segearth_geo.raster import parse_bands

        bands = parse_bands(bands)
    draft = JobSpec(
        sources=tuple(sources), prompts=prompts, model=model_name,
        engine=EngineParams(chip_size=0, overlap=-1 if overlap is None else int(overlap), gsd=gsd,
                            bands=None if bands is None else tuple(int(b) for b in bands), threshold=float(threshold),
                            min_area=min_area, simplify=simplify, batch_size=int(batch_size),
                            chips_per_unit=chips_per_unit),
        aoi=aoi_path, aoi_sha256=None if aoi_path is None else file_sha256(aoi_path))
    folder = Path(out_dir).expanduser().absolute()
    if dry_run:
        return _dry_run(folder, draft, run, segmenter, aoi_frame, started)
    if not folder.parent.is_dir():
        raise OutputError(f"the parent of the job folder {folder} does not exist; create it first")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file; give a folder for the batch job")
    folder.mkdir(exist_ok=True)
    with JobLock(folder):
        stored = read_job(folder)
        if stored is not None and not restart:
            _refuse_changed(folder, draft, stored, exact=False)
        if stored is None and run.merge and Path(run.merge).exists():
            raise OutputError(f"merged file {run.merge} exists; choose another name or remove it")
        pool = _executor(run, model, segmenter, batch_size)
        try:
            # Resuming the same job: its chip size is known, so the model is loaded only if work is left.
            known = (stored or {}).get("job", {}).get("engine", {}).get("chip_size") if not restart else None
            chip_size = int(known) if known else pool.start()
            spec = _resolve(draft, chip_size)
            if restart:
                _clear(folder)
                stored = None
            elif stored is not None:
                _refuse_changed(folder, spec, stored, exact=True)
            scenes = plan_job(spec, aoi=aoi_frame, allow_large=allow_large)
            write_job(folder, spec, run)
            return _execute(folder, spec, run, scenes, pool, progress, started)
        finally:
            pool.close()


def _check_prompts(prompts: Sequence[str], **numbers) -> tuple[str, ...]:
    if isinstance(prompts, str):
        prompts = [prompts]
    cleaned = []
    overlap = numbers.pop("overlap")
    for prompt in prompts:
        check_request(prompt, overlap=overlap, **numbers)
        cleaned.append(clean_prompt(prompt))
    if not cleaned:
        raise UsageError("no prompt: give at least one with -p PROMPT or --prompts-file")
    return tuple(dict.fromkeys(cleaned))


def _model_name(model: str, segmenter: Any) -> str:
    if segmenter is not None:
        return f"{type(segmenter).__module__}.{type(segmenter).__qualname__}" if model == "demo" else str(model)
    text = str(model)
    target, sep, attr = text.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{os.path.abspath(os.path.expanduser(target))}:{attr}"
    if text != "demo" and os.path.isdir(os.path.expanduser(text)):
        return os.path.abspath(os.path.expanduser(text))
    return text


def _resolve(draft: JobSpec, chip_size: int) -> JobSpec:
    from dataclasses import replace

    engine = draft.engine
    overlap = default_overlap(chip_size) if engine.overlap < 0 else engine.overlap
    if not 0 <= overlap < chip_size:
        raise UsageError(f"overlap must be between 0 and the model's chip size - 1 ({chip_size - 1}), got {overlap}")
    return replace(draft, engine=replace(engine, chip_size=int(chip_size), overlap=int(overlap)))


def _refuse_changed(folder: Path, spec: JobSpec, stored: dict, *, exact: bool) -> None:
    """Raise a one-line :class:`UsageError` when ``spec`` differs from the job stored in ``folder``.

    Before the model is loaded (``exact=False``) the chip size and a default overlap are not known yet
    and are not compared.
    """
    old = stored.get("job") or {}
    differences = spec.differences(old)
    if not exact:
        differences = [d for d in differences if d != "engine.chip_size" and not (d == "engine.overlap"
                                                                                   and spec.engine.overlap < 0)]
    if differences:
        raise UsageError(
            f"{folder} holds a different batch job (changed: {', '.join(differences)}); pass --restart to discard "
            "it and start over, or choose another output folder")


def _clear(folder: Path) -> None:
    """Remove what a job writes into ``folder`` (``restart``); nothing else is touched."""
    for name in (SHARDS_DIR, RESULTS_DIR):
        shutil.rmtree(folder / name, ignore_errors=True)
    for name in (JOB_FILE, LEDGER_FILE, f"{LEDGER_FILE}-wal", f"{LEDGER_FILE}-shm"):
        (folder / name).unlink(missing_ok=True)


def _executor(run: RunOptions, model: str, segmenter: Any, batch_size: int):
    if run.executor == "ray":
        from segearth_geo.batch.executor_ray import RayExecutor

        return RayExecutor(model, segmenter=segmenter, device=run.device, batch_size=batch_size,
                           address=run.ray_address, workers=run.workers)
    from segearth_geo.batch.executor_local import LocalExecutor

    return LocalExecutor(model, segmenter=segmenter, device=run.device, batch_size=batch_size)


class _Progress:
    """Counts and reports progress: a tqdm bar, a callable, or nothing."""

    def __init__(self, progress: bool | ProgressCallback, units_total: int, chips_total: int, units_done: int,
                 chips_done: int) -> None:
        self.callback = progress if callable(progress) else None
        self.units_total, self.chips_total = units_total, chips_total
        self.units_done, self.chips_done = units_done, chips_done
        self.bar = None
        if progress is True:
            from tqdm import tqdm

            self.bar = tqdm(total=chips_total, initial=chips_done, unit="chip", desc="batch", dynamic_ncols=True)
            self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"units {self.units_done}/{self.units_total}", refresh=False)

    def _emit(self, kind: str, message: str = "", source: str = "") -> None:
        if self.callback is not None:
            self.callback(Progress(kind, self.units_done, self.units_total, self.chips_done, self.chips_total,
                                   message, source))

    def chips(self, n: int) -> None:
        self.chips_done += n
        if self.bar is not None:
            self.bar.update(n)
        self._emit("chips")

    def unit(self, message: str, source: str, done: bool) -> None:
        self.units_done += int(done)
        self._postfix()
        self._emit("unit", message, source)

    def scene(self, message: str, source: str) -> None:
        if self.bar is not None:
            self.bar.write(message)
        self._emit("scene", message, source)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _execute(folder: Path, spec: JobSpec, run: RunOptions, scenes: list[ScenePlan], pool, progress,
             started: float) -> BatchReport:
    shard_dir = folder / SHARDS_DIR
    ledger = Ledger(folder / LEDGER_FILE)
    try:
        before = {u.id: u.status for u in ledger.units()}
        failed_scenes = {r["id"] for r in ledger.scenes() if r["status"] == "failed"}
        ledger.record_plan(scenes)
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
        bar = _Progress(progress, len(units), chips_total, resumed, chips_done)
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
                if chip_size != spec.engine.chip_size:
                    raise UsageError(f"the model's chip size is now {chip_size} px, the job in {folder} was planned "
                                     f"with {spec.engine.chip_size} px; pass --restart to start it over")
            if todo:
                pool.run(todo, spec.prompts, spec.engine, shard_dir, on_start=on_start, on_result=on_result,
                         on_chips=bar.chips, should_stop=should_stop)
        finally:
            bar.close()
        return _report(folder, spec, run, scenes, ledger, pool, ran[0], resumed, should_stop(), started)
    finally:
        ledger.close()


def _maybe_finish(folder: Path, ledger: Ledger, spec: JobSpec, scene: ScenePlan, shard_dir: Path, bar: _Progress) -> None:
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


def _report(folder: Path, spec: JobSpec, run: RunOptions, scenes: list[ScenePlan], ledger: Ledger, pool, ran: int,
            resumed: int, stopped: bool, started: float) -> BatchReport:
    import json

    rows = {r["id"]: r for r in ledger.scenes()}
    reports = []
    for s in scenes:
        r = rows[s.id]
        reports.append(SceneReport(s.source, s.name, r["status"], len(s.units), s.chips, r["error"],
                                   json.loads(r["outputs"]) if r["outputs"] else {}))
    failed_units = ledger.units(status="failed")
    source_of = {s.id: s.source for s in scenes}
    failures = [Failure(source_of.get(u.scene_id, "?"), u.id, u.error or "failed") for u in failed_units]
    failures += [Failure(s.source, s.id, s.error or "failed") for s in reports
                 if s.status == "failed" and s.units and not any(f.source == s.source for f in failures)]
    counts = ledger.counts()
    notes = []
    if stopped:
        notes.append(f"Stopped early: more than {run.max_failures} unit(s) failed (--max-failures).")
    merged = layers = None
    if run.merge:
        files = [p for s in reports if s.status == "done" for p in s.outputs.values()]
        result = merge_outputs(files, spec.model, run.merge, run.merge_crs)
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
        stopped_early=stopped, executor=run.executor, workers=pool.workers, device=pool.device_description)


def _dry_run(folder: Path, draft: JobSpec, run: RunOptions, segmenter: Any, aoi_frame, started: float) -> BatchReport:
    """Plan, calibrate on the first unit's first batch of chips (in a temporary folder) and report; write nothing."""
    from segearth_geo.batch.executor_local import LocalExecutor

    pool = LocalExecutor(draft.model, segmenter=segmenter, device=run.device, batch_size=draft.engine.batch_size)
    try:
        spec = _resolve(draft, pool.start())
        scenes = plan_job(spec, aoi=aoi_frame, allow_large=run.allow_large)
        units = [u for s in scenes for u in s.units]
        estimate = None
        workers = run.workers or 1
        if units:
            first = units[0]
            sample = UnitSpec(first.id, first.scene_id, first.source, 0, first.chips[:spec.engine.batch_size])
            with tempfile.TemporaryDirectory(prefix="segearth-calibration-") as tmp:
                runner = UnitRunner(pool.segmenter, spec.prompts, spec.engine, Path(tmp))
                runner.run(sample)  # warm-up (first call allocates)
                result = runner.run(sample)
                runner.close()
            per_chip = result.seconds / max(1, len(sample.chips))
            peak = _peak_mb()
            chips = sum(len(u.chips) for u in units)
            estimate = Estimate(per_chip, per_chip * chips / workers, peak, len(sample.chips), workers)
    finally:
        pool.close()
    reports = tuple(SceneReport(s.source, s.name, "failed" if s.error else "skipped" if s.skipped else "planned",
                                len(s.units), s.chips, s.error or s.skipped) for s in scenes)
    failures = tuple(Failure(s.source, s.id, s.error) for s in scenes if s.error)
    return BatchReport(
        out_dir=str(folder), scenes=reports, units_total=len(units), units_done=0, units_failed=len(failures),
        failures=failures,
        chips_total=sum(len(u.chips) for u in units), seconds=time.perf_counter() - started, dry_run=True,
        estimate=estimate, executor=run.executor, workers=workers, device=pool.device_description)


def _peak_mb() -> float:
    """Peak resident memory of this process in MiB (0 where the OS does not tell)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if os.uname().sysname == "Darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux
