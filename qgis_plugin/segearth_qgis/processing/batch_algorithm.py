"""Processing algorithm "Segment many rasters": a batch job run by the engine worker, out of process.

Raster layers or files, prompts (one per line), an output folder and an optional AOI
layer go to the worker as one ``batch`` request (the same worker and loaded model as the
dock's); its progress replies drive the Processing
progress bar, a line per finished scene goes to the log, and the merged layer (in the
project's CRS) is added to the project when the job is done. With "Also write rasters" each
scene's folder also gets ``probability.tif`` and ``ids.tif`` (as ``segment --raster-out/--labels-out``
writes them); the probability rasters are added as heat maps. Running it again on the same
folder resumes the job (finished units are not redone).
"""

from __future__ import annotations

import os
from typing import Any, Callable

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterString,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication

from ..core.batch_request import BatchRequest
from ..core.engine_client import EngineCancelled, EngineClient, EngineError
from ..core.layers import LabelStyler
from ..core.raster_layers import RasterStyler
from .feedback import engine_failure
from .run_parameters import add_run_parameters, check_run_values, run_fields

MERGED_FILE = "merged.gpkg"
# The rasters written in each scene's results folder with RASTERS (the batch request's raster_out / labels_out).
RASTER_FILES = {"raster_out": "probability.tif", "labels_out": "ids.tif"}


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


class SegmentManyRastersAlgorithm(QgsProcessingAlgorithm):
    # + the run options (GSD, THRESHOLD, MIN_AREA, …)
    INPUTS, PROMPTS, AOI, OUTPUT_DIR, MERGED = "INPUTS", "PROMPTS", "AOI", "OUTPUT_DIR", "MERGED"
    RASTERS, PROBABILITIES = "RASTERS", "PROBABILITIES"

    def __init__(self, client_factory: Callable[[], EngineClient]) -> None:
        super().__init__()
        self.client_factory = client_factory
        self.request: BatchRequest | None = None
        self.merge_crs = None

    def createInstance(self) -> "SegmentManyRastersAlgorithm":
        return SegmentManyRastersAlgorithm(self.client_factory)

    def name(self) -> str:
        return "segment_many_rasters"

    def displayName(self) -> str:
        return tr("Segment many rasters")

    def shortHelpString(self) -> str:
        return tr("Runs a SegEarth batch job (an external process) on many rasters and prompts: one result file "
                  "per raster and prompt in the output folder, plus a merged layer in the project's CRS that is "
                  "added to the project. With an AOI layer only the areas it covers are processed. \"Also write "
                  "rasters\" adds probability.tif (one band per prompt, 0–1) and ids.tif (each pixel the id of "
                  "its polygon) to each raster's results folder and loads the probabilities as heat maps. Run "
                  "again on the same folder to resume an interrupted job.")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterMultipleLayers(self.INPUTS, tr("Raster layers or files"),
                                                               QgsProcessing.SourceType.TypeRaster))
        self.addParameter(QgsProcessingParameterString(self.PROMPTS, tr("Prompts (one per line)"), multiLine=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.AOI, tr("Areas of interest (optional)"),
                                                              [QgsProcessing.SourceType.TypeVectorPolygon],
                                                              optional=True))
        add_run_parameters(self)
        self.addParameter(QgsProcessingParameterBoolean(
            self.RASTERS, tr("Also write rasters: probability.tif and ids.tif for each raster"), defaultValue=False))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_DIR, tr("Output folder")))
        self.addOutput(QgsProcessingOutputVectorLayer(self.MERGED, tr("Merged polygons"),
                                                      QgsProcessing.SourceType.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.PROBABILITIES, tr("Probability rasters")))

    def checkParameterValues(self, parameters: dict[str, Any], context) -> tuple[bool, str]:  # noqa: N802
        ok, message = super().checkParameterValues(parameters, context)
        return check_run_values(self, parameters, context) if ok else (ok, message)

    def prepareAlgorithm(self, parameters: dict[str, Any], context, feedback) -> bool:
        layers = self.parameterAsLayerList(parameters, self.INPUTS, context)
        sources = []
        for layer in layers:
            if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
                raise QgsProcessingException(tr("{0} is not a file raster; batch jobs read GDAL rasters (files or "
                                                "/vsicurl/ URLs) only").format(layer.name()))
            sources.append(layer.source())
        if not sources:
            raise QgsProcessingException(tr("Choose at least one raster."))
        prompts = [p.strip() for p in self.parameterAsString(parameters, self.PROMPTS, context).splitlines()
                   if p.strip()]
        if not prompts:
            raise QgsProcessingException(tr("Give at least one prompt (one per line)."))
        out_dir = self.parameterAsString(parameters, self.OUTPUT_DIR, context)
        crs = context.project().crs() if context.project() is not None else None
        if crs is None or not crs.isValid():
            crs = layers[0].crs()
        self.merge_crs = crs
        options = run_fields(self, parameters, context)
        if self.parameterAsBoolean(parameters, self.RASTERS, context):
            options.update(RASTER_FILES)
        self.request = BatchRequest(
            sources=sources, prompts=prompts, out_dir=out_dir, merge=os.path.join(out_dir, MERGED_FILE),
            merge_crs=crs.authid() or crs.toWkt(), options=options)
        return True

    def processAlgorithm(self, parameters: dict[str, Any], context, feedback) -> dict[str, Any]:
        request = self.request
        if parameters.get(self.AOI) not in (None, ""):
            request.aoi = self.parameterAsCompatibleSourceLayerPath(parameters, self.AOI, context, ["gpkg", "shp"],
                                                                    "gpkg", feedback)
        os.makedirs(request.out_dir, exist_ok=True)
        client = self.client_factory()

        def on_event(event: dict[str, Any]) -> None:
            if event.get("event") == "chips":
                feedback.setProgress(100.0 * event.get("done", 0) / max(1, event.get("total", 0)))
            elif event.get("event") == "scene":
                feedback.pushInfo(event.get("message", ""))
            elif event.get("event") == "unit" and "failed" in event.get("message", ""):
                feedback.pushWarning(event.get("message", ""))

        try:
            report = client.batch(request.fields(), on_event=on_event, is_cancelled=feedback.isCanceled)
        except EngineCancelled:
            return {}
        except EngineError as exc:
            raise engine_failure(str(exc), feedback) from exc
        for failure in report.get("failures", []):
            feedback.reportError(tr("{0}: {1}").format(failure["source"], failure["error"]), fatalError=False)
        merged = report.get("merged")
        if not merged:
            raise QgsProcessingException(tr("The batch job wrote no merged file; see the log."))
        layer = QgsVectorLayer(f"{merged}|layername=segments", tr("SegEarth batch"), "ogr")
        if not layer.isValid():
            raise QgsProcessingException(tr("Cannot open the merged file {0}.").format(merged))
        feedback.pushInfo(tr("{0} polygons from {1} scene(s) in {2:.1f} s; results in {3}").format(
            layer.featureCount(), sum(s["status"] == "done" for s in report.get("scenes", [])),
            report.get("seconds", 0.0), request.out_dir))
        context.temporaryLayerStore().addMapLayer(layer)
        details = QgsProcessingContext.LayerDetails(tr("SegEarth batch"), context.project(), self.MERGED)
        details.setPostProcessor(LabelStyler.create())  # coloured by label, as the dock's layers
        context.addLayerToLoadOnCompletion(layer.id(), details)
        probabilities = self._load_probabilities(report, context, feedback)
        return {self.MERGED: layer.id(), self.OUTPUT_DIR: request.out_dir, self.PROBABILITIES: probabilities}

    def _load_probabilities(self, report: dict[str, Any], context, feedback) -> list[str]:
        """Each done scene's probability raster, styled as a heat map, loaded with the merged layer (the ids
        rasters are named in the log: they are for other tools, and the polygons already show every id)."""
        loaded = []
        for scene in report.get("scenes", []):
            rasters = scene.get("rasters") or {}
            if rasters.get("labels_out"):
                feedback.pushInfo(tr("Polygon ids of {0}: {1}").format(scene["name"], rasters["labels_out"]))
            if not rasters.get("raster_out"):
                continue
            name = tr("{0} — probability").format(scene["name"])
            layer = QgsRasterLayer(rasters["raster_out"], name, "gdal")
            if not layer.isValid():
                feedback.reportError(tr("Cannot open {0}.").format(rasters["raster_out"]), fatalError=False)
                continue
            context.temporaryLayerStore().addMapLayer(layer)
            details = QgsProcessingContext.LayerDetails(name, context.project(), self.PROBABILITIES)
            details.setPostProcessor(RasterStyler.create())
            context.addLayerToLoadOnCompletion(layer.id(), details)
            loaded.append(layer.id())
        return loaded
