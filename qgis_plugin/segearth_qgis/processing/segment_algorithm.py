"""Processing algorithm "Segment raster by prompt" (batch mode, Model Builder, processing.run).

Its run parameters come from ``core/parameters.py::RUN_OPTIONS`` (as the dock's); its output is styled by label
like the dock's layers when QGIS loads it; two optional GeoTIFF outputs take the probability per pixel and the
polygons' ids (styled as the dock's when loaded); engine errors are one short line, in full in the SegEarth log.
"""

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
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication

from ..core.engine_client import EngineCancelled, EngineClient, EngineError
from ..core.extent import ScopeError, build_parameters
from ..core.known_models import model_gsd_range
from ..core.layers import LabelStyler
from ..core.parameters import SCOPE_LAYER, SCOPE_VISIBLE, SegmentParameters
from ..core.raster_layers import ID_FIELD, LABEL_FIELD, RasterStyler
from .feedback import engine_failure, report_result
from .run_parameters import add_run_parameters, check_run_values, run_fields


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


class SegmentByPromptAlgorithm(QgsProcessingAlgorithm):
    INPUT, EXTENT, PROMPT, OUTPUT = "INPUT", "EXTENT", "PROMPT", "OUTPUT"  # + the run options (GSD, THRESHOLD, …)
    RASTER_OUT, LABELS_OUT = "RASTER_OUT", "LABELS_OUT"  # the engine's request fields of the same names

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
                  "in the raster's CRS, coloured by label. Leave the extent empty for the whole layer; GSD 0 keeps "
                  "the native resolution (a web layer: its own tile resolution); minimum area is in m². Strategy "
                  "zoom looks at an overview first, then at full resolution only where it saw the target. Regularize "
                  "squares building footprints, Smooth rounds natural outlines (one or the other). The optional "
                  "probability GeoTIFF has one float32 band (0-1) per prompt; the polygon ids GeoTIFF holds each "
                  "polygon's id column value. The answers, what a zoom strategy did and any warnings (e.g. a GSD far "
                  "from the model's) are in the log.")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Raster layer")))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, tr("Extent (empty: whole layer)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterString(self.PROMPT, tr("Prompt")))
        add_run_parameters(self)
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, tr("Segmented polygons"),
                                                            QgsProcessing.SourceType.TypeVectorPolygon))
        for name, text in ((self.RASTER_OUT, tr("Probability GeoTIFF (one band per prompt)")),
                           (self.LABELS_OUT, tr("Polygon ids GeoTIFF"))):
            self.addParameter(QgsProcessingParameterRasterDestination(name, text, optional=True,
                                                                      createByDefault=False))

    def checkParameterValues(self, parameters: dict[str, Any], context) -> tuple[bool, str]:  # noqa: N802
        ok, message = super().checkParameterValues(parameters, context)
        return check_run_values(self, parameters, context) if ok else (ok, message)

    def prepareAlgorithm(self, parameters: dict[str, Any], context, feedback) -> bool:
        # Main thread: a non-file layer may have to be rendered here.
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(tr("Choose a raster layer."))
        has_extent = parameters.get(self.EXTENT) not in (None, "")
        extent = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs()) if has_extent else None
        output = os.path.join(QgsProcessingUtils.tempFolder(), f"segearth_{os.getpid()}_{id(self)}.gpkg")
        client = self.client_factory()
        ready = client.ready if client.is_running() else None
        model_gsd = ready.get("gsd_range") if ready else model_gsd_range(client.settings.model)
        try:
            self.params = build_parameters(
                layer, SCOPE_VISIBLE if extent is not None else SCOPE_LAYER,
                self.parameterAsString(parameters, self.PROMPT, context), area=extent, area_crs=layer.crs(),
                options=run_fields(self, parameters, context), model_gsd=model_gsd, output=output,
                project=context.project(),
            )
        except ScopeError as exc:
            raise QgsProcessingException(str(exc)) from exc
        for name in (self.RASTER_OUT, self.LABELS_OUT):
            path = self.parameterAsOutputLayer(parameters, name, context) if parameters.get(name) else ""
            if path:  # a destination the user chose: replaced, as Processing's outputs are
                setattr(self.params, name.lower(), path)
                self.params.overwrite = True
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
            raise engine_failure(str(exc), feedback) from exc
        finally:
            params.remove_temporary_files()
        report_result(result, params.prompt, feedback)
        source = QgsVectorLayer(result.uri, "segearth", "ogr")
        if not source.isValid():
            raise QgsProcessingException(tr("Cannot open the engine's output {0}.").format(result.output))
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, source.fields(), source.wkbType(),
                                             source.crs() if source.crs().isValid() else self.crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        ids = {}  # {id: label}: the classes of the polygon ids GeoTIFF
        names = source.fields().names()
        for feature in source.getFeatures():
            if feedback.isCanceled():
                return {}
            sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
            if ID_FIELD in names and feature[ID_FIELD] is not None:
                ids[int(feature[ID_FIELD])] = str(feature[LABEL_FIELD]) if LABEL_FIELD in names else ""
        feedback.pushInfo(tr("{0} polygons in {1:.1f} s on {2}").format(result.count, result.seconds, result.device))
        if context.willLoadLayerOnCompletion(dest_id):
            context.layerToLoadOnCompletionDetails(dest_id).setPostProcessor(LabelStyler.create())
        outputs = {self.OUTPUT: dest_id}
        for name, path, styler in ((self.RASTER_OUT, result.raster_out, None), (self.LABELS_OUT, result.labels_out, ids)):
            if path:
                outputs[name] = path
                if context.willLoadLayerOnCompletion(path):
                    context.layerToLoadOnCompletionDetails(path).setPostProcessor(RasterStyler.create(styler))
        return outputs
