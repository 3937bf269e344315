"""A small but real ``QgisInterface`` for headless plugin tests (no QGIS main window binary).

It owns a real main window, map canvas (kept in sync with the project's layer tree),
message bar, toolbar and Raster menu — everything the plugin touches through ``iface``.
"""

from __future__ import annotations

from qgis.core import QgsProject
from qgis.gui import QgisInterface, QgsLayerTreeMapCanvasBridge, QgsMapCanvas, QgsMessageBar
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtWidgets import QMainWindow, QMenu, QToolBar, QVBoxLayout, QWidget


class HeadlessInterface(QgisInterface):
    def __init__(self) -> None:
        super().__init__()
        self.window = QMainWindow()
        self.window.resize(QSize(1200, 760))
        central = QWidget(self.window)
        layout = QVBoxLayout(central)
        self.bar = QgsMessageBar(central)
        self.canvas = QgsMapCanvas(central)
        self.canvas.resize(QSize(800, 600))
        self.canvas.setCanvasColor(Qt.GlobalColor.white)
        layout.addWidget(self.bar)
        layout.addWidget(self.canvas, 1)
        self.window.setCentralWidget(central)
        self.toolbar = QToolBar("Plugins", self.window)
        self.window.addToolBar(self.toolbar)
        self.raster_menu = self.window.menuBar().addMenu("&Raster")
        self.plugin_menus: dict[str, QMenu] = {}
        self.bridge = QgsLayerTreeMapCanvasBridge(QgsProject.instance().layerTreeRoot(), self.canvas)

    # -- what the plugin and qgis.utils use ------------------------------------------------------
    def mainWindow(self):  # noqa: N802
        return self.window

    def mapCanvas(self):  # noqa: N802
        return self.canvas

    def messageBar(self):  # noqa: N802
        return self.bar

    def activeLayer(self):  # noqa: N802
        return None

    def addDockWidget(self, area, dock):  # noqa: N802
        self.window.addDockWidget(area, dock)

    def removeDockWidget(self, dock):  # noqa: N802
        self.window.removeDockWidget(dock)

    def addToolBarIcon(self, action):  # noqa: N802
        self.toolbar.addAction(action)
        return 0

    def removeToolBarIcon(self, action):  # noqa: N802
        self.toolbar.removeAction(action)

    def addPluginToRasterMenu(self, name, action):  # noqa: N802
        menu = self.plugin_menus.get(name)
        if menu is None:
            menu = self.plugin_menus[name] = self.raster_menu.addMenu(name)
        menu.addAction(action)

    def removePluginRasterMenu(self, name, action):  # noqa: N802
        menu = self.plugin_menus.get(name)
        if menu is None:
            return
        menu.removeAction(action)
        if not menu.actions():
            self.raster_menu.removeAction(menu.menuAction())
            del self.plugin_menus[name]
