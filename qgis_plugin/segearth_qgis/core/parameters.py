"""The parameters of one segmentation run, built on the main thread and sent to the engine."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

SCOPE_VISIBLE = "visible"
SCOPE_LAYER = "layer"
SCOPE_DRAWN = "drawn"
SCOPES = (SCOPE_VISIBLE, SCOPE_LAYER, SCOPE_DRAWN)


@dataclass
class SegmentParameters:
    """Everything the engine needs for one run, already resolved to files and the raster's CRS.

    Attributes:
        raster: local file the engine reads (the layer's file or a rendered temporary GeoTIFF).
        prompt: the user's instruction.
        output: GeoPackage to write (must not exist).
        layer_name: name of the source layer (used to name the result layer).
        bbox: ``(minx, miny, maxx, maxy)`` in ``bbox_crs``, or ``None`` for the whole raster.
        bbox_crs: CRS of ``bbox`` (authid or WKT) — always the raster layer's CRS here.
        gsd: metres per pixel to resample to, or ``None`` for the raster's native resolution.
        threshold / min_area / simplify: vectorisation settings (min area in m², simplify in map units).
        temporary_files: files this run created (rendered rasters) to delete when it ends.
    """

    raster: str
    prompt: str
    output: str
    layer_name: str = ""
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str | None = None
    gsd: float | None = None
    threshold: float = 0.5
    min_area: float | None = None
    simplify: float | None = None
    temporary_files: list[str] = field(default_factory=list)

    def to_request(self) -> dict[str, Any]:
        """Fields of the worker's ``segment`` request (see docs/worker-protocol.md)."""
        request: dict[str, Any] = {
            "raster": self.raster,
            "prompt": self.prompt,
            "output": self.output,
            "threshold": float(self.threshold),
        }
        if self.bbox is not None:
            request["bbox"] = [float(v) for v in self.bbox]
            if self.bbox_crs:
                request["bbox_crs"] = self.bbox_crs
        for key in ("gsd", "min_area", "simplify"):
            value = getattr(self, key)
            if value:
                request[key] = float(value)
        return request

    def remove_temporary_files(self) -> None:
        for path in self.temporary_files:
            for candidate in (path, path + ".aux.xml"):
                try:
                    os.remove(candidate)
                except FileNotFoundError:
                    pass
        self.temporary_files.clear()
