"""Local executor: the units run one after another in this process with one segmenter.

The model is loaded once for the whole job; within a unit the reader, segmenter and
vectoriser threads overlap (see :mod:`segearth_geo.batch.unit`), and consecutive units
of a scene reuse the open dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from segearth_geo.batch.config import EngineParams
from segearth_geo.batch.plan import UnitSpec
from segearth_geo.batch.unit import UnitResult, UnitRunner

OnStart = Callable[[UnitSpec, str], None]
OnResult = Callable[[UnitSpec, UnitResult], None]
OnChips = Callable[[int], None]


class LocalExecutor:
    """Runs units in this process.

    Args:
        model: what :func:`~segearth_geo.model.loading.load_segmenter` accepts (ignored with ``segmenter``).
        segmenter: an already loaded segmenter.
        device, batch_size: passed to the loader.
        gdal_options: GDAL configuration options for the reads.
    """

    name = "local"

    def __init__(self, model: str = "demo", *, segmenter: Any = None, device: str = "auto", batch_size: int = 8,
                 gdal_options: dict[str, str] | None = None) -> None:
        self.model, self.segmenter, self.device, self.batch_size = model, segmenter, device, batch_size
        self.gdal_options = dict(gdal_options or {})
        self.workers = 1
        self.device_description = ""
        self.started = False
        self._runner: UnitRunner | None = None

    def start(self) -> int:
        """Load the model (once); returns its ``chip_size``."""
        if self.segmenter is None:
            from segearth_geo.model.loading import load_segmenter

            self.segmenter = load_segmenter(self.model, device=self.device, batch_size=self.batch_size)
        self.device_description = str(getattr(self.segmenter, "device_description", None)
                                      or getattr(self.segmenter, "device", self.device))
        self.started = True
        return int(self.segmenter.chip_size)

    def run(self, units: Sequence[UnitSpec], prompts: tuple[str, ...], params: EngineParams, shard_dir: Path, *,
            on_start: OnStart, on_result: OnResult, on_chips: OnChips, should_stop: Callable[[], bool]) -> None:
        """Run ``units`` in order until done or ``should_stop()``; results go to ``on_result``."""
        runner = UnitRunner(self.segmenter, prompts, params, shard_dir, self.gdal_options)
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
