"""What a batch job returns (:class:`BatchReport`); its progress events are :class:`segearth_geo.progress.Progress`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segearth_geo.params import field_name


@dataclass(frozen=True)
class SceneReport:
    """One scene of the job.

    Attributes:
        source: the GDAL source; ``name``: its results folder name.
        status: ``done`` (outputs written), ``planned`` (units left), ``failed`` or ``skipped``.
        units, chips: planned units and chips; ``error``: one-line reason (failed/skipped).
        outputs: ``{prompt: result file}`` once done.
        rasters: ``{"raster_out": file, "labels_out": file}`` once done, those the job asks for.
    """

    source: str
    name: str
    status: str
    units: int = 0
    chips: int = 0
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    rasters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """A failed unit: its scene's source, the unit id and the one-line reason."""

    source: str
    unit: str
    error: str


@dataclass(frozen=True)
class Estimate:
    """Dry-run figures from a short calibration on the first unit's chips.

    Attributes:
        seconds_per_chip: wall seconds per chip for all prompts (one worker).
        seconds: estimated wall time of the whole job with ``workers`` workers.
        peak_mb: peak resident memory of one worker during calibration (model included), MiB.
        calibration_chips: chips measured.
    """

    seconds_per_chip: float
    seconds: float
    peak_mb: float
    calibration_chips: int
    workers: int


@dataclass(frozen=True)
class BatchReport:
    """The result of :func:`~segearth_geo.run_batch`.

    Attributes:
        out_dir: the job folder.
        scenes: one :class:`SceneReport` per input, in job order.
        units_total, units_done, units_failed: over the whole job (all runs).
        units_run: units processed by this run; ``units_resumed``: done before this run.
        chips_total, chips_done: chips over the job.
        seconds: wall time of this run.
        failures: the failed units with their reasons.
        merged: the merged file, if any; ``merge_layers`` its GeoPackage layers; ``notes``
            remarks for the summary (reprojection, early stop).
        stopped_early: ``max_failures`` was exceeded and scheduling stopped.
        dry_run: nothing was written; ``estimate`` holds the calibration.
        executor, workers, device: how it ran; ``notice``: what the model says wherever it runs (the demo:
            "synthetic demo — not for real imagery"), empty when no model was loaded.
    """

    out_dir: str
    scenes: tuple[SceneReport, ...]
    units_total: int
    units_done: int
    units_failed: int
    units_run: int = 0
    units_resumed: int = 0
    chips_total: int = 0
    chips_done: int = 0
    seconds: float = 0.0
    failures: tuple[Failure, ...] = ()
    merged: str | None = None
    merge_layers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    stopped_early: bool = False
    dry_run: bool = False
    estimate: Estimate | None = None
    executor: str = "local"
    workers: int = 1
    device: str = ""
    notice: str = ""

    @property
    def ok(self) -> bool:
        """No unit failed."""
        return not self.failures and self.units_failed == 0

    @property
    def exit_code(self) -> int:
        """0 when every unit succeeded, else 1 (the CLI's exit code)."""
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"], data["exit_code"] = self.ok, self.exit_code
        return data

    def _model_notice(self) -> str:
        return f"; {self.notice}" if self.notice else ""

    def to_text(self) -> str:
        """The summary printed by ``segearth-geo batch``."""
        done_scenes = sum(s.status == "done" for s in self.scenes)
        lines = []
        if self.dry_run:
            lines.append(f"Dry run: {len(self.scenes)} scene(s), {self.chips_total} chips, {self.units_total} units "
                         f"({self.executor}, {self.workers} worker(s){self._model_notice()}); nothing written.")
            for s in self.scenes:
                what = s.error or f"{s.chips} chips in {s.units} units"
                lines.append(f"  {s.status:8s} {s.source}: {what}")
            lines += [f"  {f.source}: {f.error}" for f in self.failures if f.unit == "calibration"]
            if self.estimate is not None:
                e = self.estimate
                lines.append(f"Estimate: {e.seconds_per_chip:.3g} s per chip (all prompts, from {e.calibration_chips} "
                             f"chips) -> about {_duration(e.seconds)} on {e.workers} worker(s); peak memory about "
                             f"{e.peak_mb:.0f} MiB per worker.")
            return "\n".join(lines)
        lines.append(
            f"{done_scenes} of {len(self.scenes)} scene(s) done; units {self.units_done}/{self.units_total} done "
            f"({self.units_run} this run, {self.units_resumed} from earlier runs), {self.units_failed} failed; "
            f"chips {self.chips_done}/{self.chips_total}; {self.seconds:.1f} s ({self.executor}, {self.workers} "
            f"worker(s){', ' + self.device if self.device else ''}{self._model_notice()}). Results in "
            f"{self.out_dir}/results.")
        rasters = next((s.rasters for s in self.scenes if s.rasters), None)
        if rasters:
            names = ", ".join(f"{Path(v).name} ({'probabilities' if k == 'raster_out' else 'polygon ids'})"
                              for k, v in rasters.items())
            lines.append(f"Rasters in each done scene's folder: {names}.")
        for s in self.scenes:
            if s.status == "skipped":
                lines.append(f"  skipped {s.source}: {s.error}")
        if self.failures:
            lines.append(f"Failed ({len(self.failures)}; rerun with {field_name('retry_failed')}):")
            lines += [f"  {f.source} [{f.unit}]: {f.error}" for f in self.failures]
        if self.merged:
            layers = f" (layers {', '.join(self.merge_layers)})" if len(self.merge_layers) > 1 else ""
            lines.append(f"Merged file: {self.merged}{layers}.")
        lines += list(self.notes)
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
