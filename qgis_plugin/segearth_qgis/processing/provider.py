"""The SegEarth Processing provider."""

from __future__ import annotations

import os
from typing import Callable

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..core.engine_client import EngineClient
from .batch_algorithm import SegmentManyRastersAlgorithm
from .segment_algorithm import SegmentByPromptAlgorithm

ICON = os.path.join(os.path.dirname(os.path.dirname(__file__)), "icon.png")


class SegEarthProvider(QgsProcessingProvider):
    def __init__(self, client_factory: Callable[[], EngineClient]) -> None:
        super().__init__()
        self.client_factory = client_factory

    def id(self) -> str:
        return "segearth"

    def name(self) -> str:
        return "SegEarth"

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802 - QGIS API
        """The engine writes its raster outputs as (Cloud-Optimized) GeoTIFF only."""
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:  # noqa: N802 - QGIS API
        return "tif"

    def loadAlgorithms(self) -> None:
        self.addAlgorithm(SegmentByPromptAlgorithm(self.client_factory))
        self.addAlgorithm(SegmentManyRastersAlgorithm(self.client_factory))
