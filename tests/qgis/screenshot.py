"""Run the plugin in a QGIS window under X (Xvfb) and save a screenshot of the dock and the result.

    xvfb-run -a /usr/bin/python3 tests/qgis/screenshot.py OUT.png WORKDIR [RASTER PROMPT MODEL]

Used by ``test_screenshot_under_xvfb`` (a generated scene and the colour test segmenter); prints
one JSON line with what it saw. README's picture is the airport sample scene with the demo model:

    xvfb-run -a /usr/bin/python3 tests/qgis/screenshot.py docs/images/qgis_segearth_dock.png /tmp/shot \
        sample_tiles/synthearth_airport.tif "all the airplanes" demo
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "qgis_plugin")]


def main(out: str, workdir: str, raster: str | None = None, prompt: str | None = None, model: str | None = None) -> int:
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
    from qgis.testing import start_app

    app = start_app()
    import qgis.utils
    from engine_models import COLOUR_MODEL, PROMPT
    from qgis_interface import HeadlessInterface
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import save_engine_settings
    from synthetic_scene import write_geotiff

    iface = HeadlessInterface()
    qgis.utils.iface = iface
    save_engine_settings(EngineSettings(command=os.environ.get("SEGEARTH_ENGINE") or shutil.which("segearth-geo"),
                                        model=model or COLOUR_MODEL, device="cpu"))
    qgis.utils.plugin_paths.append(str(HERE.parents[1] / "qgis_plugin"))
    qgis.utils.updateAvailablePlugins()
    assert qgis.utils.loadPlugin("segearth_qgis") and qgis.utils.startPlugin("segearth_qgis")
    plugin = qgis.utils.plugins["segearth_qgis"]
    project = QgsProject.instance()
    project.setFileName(str(Path(workdir) / "screenshot.qgz"))
    project.write()
    if raster:  # a copy: QGIS writes statistics (.aux.xml) next to the rasters it opens
        source = Path(shutil.copy(raster, Path(workdir) / Path(raster).name))
    else:
        source = write_geotiff(Path(workdir) / "scene.tif")
    layer = QgsRasterLayer(str(source), source.stem, "gdal")
    project.addMapLayer(layer)
    iface.window.show()
    dock = plugin.dock
    dock.setVisible(True)
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(layer.extent())
    dock.layer_combo.setLayer(layer)
    dock.prompt_combo.setCurrentText(prompt or PROMPT)
    task = dock.run()
    deadline = time.monotonic() + 600
    while dock.task is not None and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    canvas.refreshAllLayers()
    for _ in range(50):
        QgsApplication.processEvents()
        time.sleep(0.02)
    canvas.waitWhileRendering()
    QgsApplication.processEvents()
    image = iface.window.grab().toImage()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    saved = image.save(out, "PNG")
    report = {"saved": saved, "platform": app.platformName(), "width": image.width(), "height": image.height(),
              "labels": sorted(task.result.polygons) if task.result else None, "error": task.error,
              "status": dock.status_label.text(), "notice": dock.notice_label.text(), "gsd": dock.gsd_label.text()}
    print(json.dumps(report))
    qgis.utils.unloadPlugin("segearth_qgis")
    return 0 if saved and task.result else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
