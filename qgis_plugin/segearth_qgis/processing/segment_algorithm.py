"""Processing algorithm "Segment raster by prompt" (batch mode, Model Builder, processing.run)."""

from __future__ import annotations

import os
from typing import Any, Callable

from qgis.core import (
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication

from ..core.engine_client import EngineCancelled, EngineClient, EngineError
from ..core.extent import ScopeError, build_parameters
from ..core.parameters import SCOPE_LAYER, SCOPE_VISIBLE, SegmentParameters


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


class SegmentByPromptAlgorithm(QgsProcessingAlgorithm):
    INPUT, EXTENT, PROMPT, GSD, THRESHOLD, MIN_AREA, OUTPUT = (
        "INPUT", "EXTENT", "PROMPT", "GSD", "THRESHOLD", "MIN_AREA", "OUTPUT")

    def __init__(self, client_factory: Callable[[], EngineClient]) -> None:
        super().__init__()
        self.client_factory = client_factory
        self.params: SegmentParameters | None = None
        self.crs = None

    def createInstance(self) -> "SegmentByPromptAlgorithm":
        return SegmentByPromptAlgorithm(self.client_factory)

    def name(self) -> str:
        return "segment_by_prompt"

    def displayName(self) -> str:
        return tr("Segment raster by prompt")

    def shortHelpString(self) -> str:
        return tr("Runs the SegEarth engine (an external process) on a raster and returns labeled polygons "
                  "in the raster's CRS. Leave the extent empty for the whole layer; GSD 0 keeps the native "
                  "resolution; minimum area is in m².")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Raster layer")))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, tr("Extent (empty: whole layer)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterString(self.PROMPT, tr("Prompt")))
        self.addParameter(QgsProcessingParameterNumber(self.GSD, tr("GSD (m/px, 0 = native)"),
                                                       QgsProcessingParameterNumber.Type.Double, 0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(self.THRESHOLD, tr("Threshold"),
                                                       QgsProcessingParameterNumber.Type.Double, 0.5,
                                                       minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(self.MIN_AREA, tr("Minimum area (m², 0 = none)"),
                                                       QgsProcessingParameterNumber.Type.Double, 0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, tr("Segmented polygons"),
                                                            QgsProcessing.SourceType.TypeVectorPolygon))

    def prepareAlgorithm(self, parameters: dict[str, Any], context, feedback) -> bool:
        # Main thread: a non-file layer may have to be rendered here.
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(tr("Choose a raster layer."))
        has_extent = parameters.get(self.EXTENT) not in (None, "")
        extent = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs()) if has_extent else None
        output = os.path.join(QgsProcessingUtils.tempFolder(), f"segearth_{os.getpid()}_{id(self)}.gpkg")
        try:
            self.params = build_parameters(
                layer, SCOPE_VISIBLE if extent is not None else SCOPE_LAYER,
                self.parameterAsString(parameters, self.PROMPT, context), area=extent, area_crs=layer.crs(),
                gsd=self.parameterAsDouble(parameters, self.GSD, context) or None,
                threshold=self.parameterAsDouble(parameters, self.THRESHOLD, context),
                min_area=self.parameterAsDouble(parameters, self.MIN_AREA, context) or None,
                output=output, project=context.project(),
            )
        except ScopeError as exc:
            raise QgsProcessingException(str(exc)) from exc
        self.crs = layer.crs()
        return True

    def processAlgorithm(self, parameters: dict[str, Any], context, feedback) -> dict[str, Any]:
        params = self.params
        try:
            result = self.client_factory().segment(
                params.to_request(), on_progress=lambda done, total: feedback.setProgress(100.0 * done / max(total, 1)),
                is_cancelled=feedback.isCanceled)
        except EngineCancelled:
            return {}
        except EngineError as exc:
            raise QgsProcessingException(str(exc)) from exc
        finally:
            params.remove_temporary_files()
        for answer in result.distinct_answers():
            feedback.pushInfo(tr("Answer: {0}").format(answer))
        source = QgsVectorLayer(result.uri, "segearth", "ogr")
        if not source.isValid():
            raise QgsProcessingException(tr("Cannot open the engine's output {0}.").format(result.output))
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, source.fields(), source.wkbType(),
                                             source.crs() if source.crs().isValid() else self.crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        for feature in source.getFeatures():
            if feedback.isCanceled():
                return {}
            sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
        feedback.pushInfo(tr("{0} polygons in {1:.1f} s on {2}").format(result.count, result.seconds, result.device))
        return {self.OUTPUT: dest_id}
