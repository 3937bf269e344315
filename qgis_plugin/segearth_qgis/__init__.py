"""SegEarth QGIS plugin: prompt a raster in plain language through an external segearth-geo engine.

This package never imports torch or ``segearth_geo``: the model runs in a separate
``segearth-geo worker`` process that speaks JSON lines.
"""


def classFactory(iface):  # noqa: N802 - QGIS plugin entry point
    from .plugin import SegEarthPlugin

    return SegEarthPlugin(iface)
