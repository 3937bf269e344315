"""Local executor: the units run one after another in this process with one segmenter.

The model is loaded once for the whole job; within a unit the reader, segmenter and
vectoriser threads overlap (see :mod:`segearth_geo.batch.unit`), and consecutive units
of a scene reuse the open dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from segearth_geo.batch.config import JobSpec
from segearth_geo.batch.plan import UnitSpec
from segearth_geo.batch.unit import UnitResult, UnitRunner
from segearth_geo.params import LoadOptions
from segearth_geo.prediction import describe_segmenter

OnStart = Callable[[UnitSpec, str], None]
OnResult = Callable[[UnitSpec, UnitResult], None]
OnChips = Callable[[int], None]


class LocalExecutor:
    """Runs units in this process.

    Args:
        load: the model and its load options (ignored with ``segmenter``).
        segmenter: an already loaded segmenter.
        gdal_options: GDAL configuration options for the reads.
    """

    name = "local"

    def __init__(self, load: LoadOptions | None = None, *, segmenter: Any = None,
                 gdal_options: dict[str, str] | None = None) -> None:
        self.load, self.segmenter = load or LoadOptions(), segmenter
        self.gdal_options = dict(gdal_options or {})
        self.workers = 1
        self.device_description = ""
        self.notice = ""  # the model's notice (describe_segmenter), once started
        self.started = False
        self._runner: UnitRunner | None = None

    def start(self) -> int:
        """Load the model (once); returns its ``chip_size``."""
        if self.segmenter is None:
            from segearth_geo.model.loading import load_model

            self.segmenter = load_model(self.load)
        info = describe_segmenter(self.segmenter)
        self.device_description = info.device or self.load.device
        self.notice = info.notice or ""
        self.started = True
        return info.chip_size

    def run(self, units: Sequence[UnitSpec], spec: JobSpec, shard_dir: Path, *, on_start: OnStart,
            on_result: OnResult, on_chips: OnChips, should_stop: Callable[[], bool]) -> None:
        """Run ``units`` in order until done or ``should_stop()``; results go to ``on_result``."""
        runner = UnitRunner(self.segmenter, spec, shard_dir, self.gdal_options)
        self._runner = runner
        try:
            for unit in units:
                if should_stop():
                    return
                on_start(unit, runner.worker)
                on_result(unit, runner.run(unit, progress=on_chips))
        finally:
            runner.close()
            self._runner = None

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
