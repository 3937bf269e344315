"""Plugin object: actions, dock, Processing provider and the shared engine worker."""

from __future__ import annotations

import os

from qgis.core import Qgis, QgsApplication, QgsMessageLog
from qgis.PyQt.QtCore import QCoreApplication, Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .core.engine_client import EngineClient, EngineSettings
from .dock import LOG_TAG, SegEarthDock
from .processing.provider import SegEarthProvider
from .settings_dialog import SettingsDialog, load_engine_settings, save_engine_settings

ICON = os.path.join(os.path.dirname(__file__), "icon.png")
MENU = "&SegEarth"


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


class SegEarthPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.actions: list[QAction] = []
        self.dock: SegEarthDock | None = None
        self.provider: SegEarthProvider | None = None
        self._client: EngineClient | None = None

    # -- engine ---------------------------------------------------------------------------------
    def client(self) -> EngineClient:
        """The shared engine client (created from the settings on first use; started lazily)."""
        settings = load_engine_settings()
        if self._client is not None and self._client.settings != settings:
            self._client.stop()
            self._client = None
        if self._client is None:
            self._client = EngineClient(settings, log=self._log_engine)
        return self._client

    @staticmethod
    def _log_engine(line: str) -> None:
        QgsMessageLog.logMessage(line, f"{LOG_TAG} engine", Qgis.MessageLevel.Info, False)

    # -- QGIS hooks -----------------------------------------------------------------------------
    def initProcessing(self) -> None:  # noqa: N802
        if self.provider is None:
            self.provider = SegEarthProvider(self.client)
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        self.dock = SegEarthDock(self.iface, self.client, self.iface.mainWindow())
        self.dock.setVisible(False)
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        panel = QAction(QIcon(ICON), tr("SegEarth panel"), self.iface.mainWindow())
        panel.setCheckable(True)
        panel.toggled.connect(self.dock.setVisible)
        self.dock.visibilityChanged.connect(panel.setChecked)
        settings = QAction(tr("SegEarth settings…"), self.iface.mainWindow())
        settings.triggered.connect(self.open_settings)
        self.iface.addToolBarIcon(panel)
        for action in (panel, settings):
            self.iface.addPluginToRasterMenu(MENU, action)
            self.actions.append(action)

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.iface.mainWindow(), load_engine_settings())
        if dialog.exec():
            self.apply_settings(dialog.engine_settings())

    def apply_settings(self, settings: EngineSettings) -> None:
        save_engine_settings(settings)
        self.client()  # restarts the worker lazily when the settings changed
        if self.dock is not None:
            self.dock.show_status()

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions.clear()
        if self.dock is not None:
            self.dock.close_tools()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if self._client is not None:
            self._client.stop()
            self._client = None
