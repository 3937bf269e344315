"""What the Processing algorithms tell the user: errors as one short line (full text in the SegEarth log), the
model's answers without markup, and the run's notes as warnings."""

from __future__ import annotations

from qgis.core import Qgis, QgsMessageLog, QgsProcessingException, QgsProcessingFeedback
from qgis.PyQt.QtCore import QCoreApplication

from ..core.answers import answer_lines
from ..core.messages import LOG_TAG, bar_message
from ..core.result import SegmentResult


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


def engine_failure(message: str, feedback: QgsProcessingFeedback | None = None) -> QgsProcessingException:
    """The exception to raise for an engine error: its short line; the full text goes to the SegEarth log panel
    (and to the algorithm's log when the line left something out)."""
    QgsMessageLog.logMessage(message, LOG_TAG, Qgis.MessageLevel.Critical)
    short = bar_message(message)
    if feedback is not None and short != message:
        feedback.pushInfo(tr("Engine error in full: {0}").format(message))
    return QgsProcessingException(short)


def report_result(result: SegmentResult, prompt: str, feedback: QgsProcessingFeedback) -> None:
    """The answers (without markup) and what a zoom strategy did, then the notice and notes as warnings (also in the
    SegEarth log)."""
    for answer in answer_lines(result.answers):
        feedback.pushInfo(tr("Answer: {0}").format(answer))
    for line in result.zoom.lines() if result.zoom is not None else []:
        feedback.pushInfo(line)
    for remark in ([result.notice] if result.notice else []) + result.remarks(prompt):
        feedback.pushWarning(remark)
        QgsMessageLog.logMessage(remark, LOG_TAG, Qgis.MessageLevel.Warning)
