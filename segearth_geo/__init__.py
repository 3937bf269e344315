"""segearth-geo: prompt a georeferenced raster in plain language, get labeled polygons back."""

from __future__ import annotations

from segearth_geo._version import __version__
from segearth_geo.errors import (  # noqa: E402
    Cancelled,
    CheckpointError,
    DatasetError,
    ModelError,
    OutputError,
    RasterError,
    SegEarthGeoError,
    UsageError,
)
from segearth_geo.prediction import ChipPrediction, Segmenter, Target  # noqa: E402

__all__ = [
    "__version__",
    "ChipPrediction",
    "Target",
    "Segmenter",
    "segment_raster",
    "load_segmenter",
    "run_batch",
    "BatchReport",
    "SegEarthGeoError",
    "UsageError",
    "RasterError",
    "OutputError",
    "ModelError",
    "CheckpointError",
    "DatasetError",
    "Cancelled",
]


def __getattr__(name: str):
    # Lazy: importing the package must stay cheap (no rasterio/torch at import time),
    # which matters for the QGIS worker start-up and for `segearth-geo --version`.
    if name == "segment_raster":
        from segearth_geo.engine import segment_raster

        return segment_raster
    if name in ("run_batch", "BatchReport"):
        from segearth_geo import batch

        return getattr(batch, name)
    if name == "load_segmenter":
        from segearth_geo.model.loading import load_segmenter

        return load_segmenter
    raise AttributeError(f"module 'segearth_geo' has no attribute {name!r}")
