"""The QGIS settings dialog offers the registry's known models (read from the plugin file: no qgis import here)."""

from __future__ import annotations

import ast
from pathlib import Path

from segearth_geo.model.registry import KNOWN_MODELS

DIALOG = Path(__file__).resolve().parents[1] / "qgis_plugin" / "segearth_qgis" / "settings_dialog.py"


def _plugin_aliases() -> tuple[str, ...]:
    tree = ast.parse(DIALOG.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODEL_ALIASES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError(f"{DIALOG} has no MODEL_ALIASES")


def test_the_dialog_lists_exactly_the_registry_aliases_in_its_order():
    assert _plugin_aliases() == tuple(KNOWN_MODELS)
    assert "demo" in _plugin_aliases()
