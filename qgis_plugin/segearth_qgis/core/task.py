"""The background ``QgsTask`` that waits on the engine; project and layers stay on the main thread."""

from __future__ import annotations

from typing import Callable

from qgis.core import QgsTask
from qgis.PyQt.QtCore import QCoreApplication

from .engine_client import EngineCancelled, EngineClient, EngineError
from .parameters import SegmentParameters
from .result import SegmentResult


class SegmentTask(QgsTask):
    """Sends one segment request and waits for it in a worker thread.

    ``on_finished(task)`` runs on the main thread when the task ends; it reads
    ``task.result`` (a :class:`SegmentResult`), ``task.error`` (message) or
    ``task.was_cancelled``.
    """

    def __init__(self, client: EngineClient, params: SegmentParameters,
                 on_finished: Callable[["SegmentTask"], None] | None = None) -> None:
        super().__init__(QCoreApplication.translate("SegEarth", "SegEarth: {0}").format(params.prompt),
                         QgsTask.Flag.CanCancel)
        self.client = client
        self.params = params
        self.on_finished = on_finished
        self.result: SegmentResult | None = None
        self.error: str | None = None
        self.was_cancelled = False
        self.request_id: str | None = None
        self.chips_done = 0
        self.chips_total = 0

    def run(self) -> bool:  # worker thread: no project or widget access here
        try:
            self.result = self.client.segment(self.params.to_request(), on_progress=self._progress,
                                              is_cancelled=self.isCanceled, on_started=self._started)
            return True
        except EngineCancelled:
            self.was_cancelled = True
            return False
        except EngineError as exc:
            if self.isCanceled():
                self.was_cancelled = True
            else:
                self.error = str(exc)
            return False

    def _started(self, request_id: str) -> None:
        self.request_id = request_id

    def _progress(self, done: int, total: int) -> None:
        self.chips_done, self.chips_total = done, total
        if total > 0:
            self.setProgress(100.0 * done / total)

    def finished(self, ok: bool) -> None:  # main thread
        if not ok and self.error is None and self.result is None:
            self.was_cancelled = True
        self.params.remove_temporary_files()
        if self.on_finished is not None:
            self.on_finished(self)
