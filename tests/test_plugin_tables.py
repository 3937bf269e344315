"""The QGIS plugin's copies of library tables equal the library's (the plugin never imports segearth_geo):
the known segmenter models and their GSD ranges and notices, and the label colours."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from segearth_geo.model.registry import BACKENDS, DEMO_NOTICE, KNOWN_MODELS
from segearth_geo.preview import label_colour

PLUGIN = Path(__file__).resolve().parents[1] / "qgis_plugin"


@pytest.fixture(scope="module")
def plugin_core():
    """The plugin's pure-Python ``core`` modules (no QGIS needed for these)."""
    sys.path.insert(0, str(PLUGIN))
    try:
        from segearth_qgis.core import answers, known_models, label_colours

        yield {"answers": answers, "known_models": known_models, "label_colours": label_colours}
    finally:
        sys.path.remove(str(PLUGIN))


def _segmenter_aliases() -> tuple[str, ...]:
    return tuple(alias for alias, m in KNOWN_MODELS.items() if BACKENDS[m.backend].role == "segmenter")


def test_the_settings_list_exactly_the_registry_segmenter_aliases_in_its_order(plugin_core):
    known = plugin_core["known_models"]
    assert known.MODEL_ALIASES == _segmenter_aliases()
    assert "demo" in known.MODEL_ALIASES and "zoomearth" not in known.MODEL_ALIASES  # a localizer is no --model
    assert set(known.MODEL_USES) == set(known.MODEL_ALIASES)


def test_gsd_ranges_and_notices_equal_the_registry(plugin_core):
    known = plugin_core["known_models"]
    assert known.MODEL_GSD == {a: KNOWN_MODELS[a].gsd for a in _segmenter_aliases()}
    assert known.MODEL_NOTICES == {a: KNOWN_MODELS[a].notice for a in _segmenter_aliases() if KNOWN_MODELS[a].notice}
    assert known.model_notice(" Demo ") == DEMO_NOTICE == "synthetic demo — not for real imagery"
    assert known.MODEL_USES["demo"].startswith(DEMO_NOTICE)
    assert known.model_gsd_range("sam3") == KNOWN_MODELS["sam3"].gsd and known.model_gsd_range("/data/ckpt") is None


def test_gsd_warning_uses_the_engines_factor(plugin_core):
    from segearth_geo.engine import GSD_FAR

    known = plugin_core["known_models"]
    assert known.GSD_FAR == GSD_FAR
    low, high = KNOWN_MODELS["demo"].gsd
    assert known.gsd_warning(high * GSD_FAR * 1.01, (low, high)) == "far coarser"
    assert known.gsd_warning(low / GSD_FAR / 1.01, (low, high)) == "far finer"
    assert known.gsd_warning(high * GSD_FAR, (low, high)) is None and known.gsd_warning(low, (low, high)) is None
    assert known.gsd_warning(30.0, None) is None
    assert known.format_range((0.3, 1.0)) == "0.3–1 m/px" and known.format_gsd(0.29858) == "0.299 m/px"


LABELS = ["building", " Building ", "red roof", "pool", "airplane", "car", "road", "swimming pool", "tennis court",
          "water", "tree", "ship", "runway", "parking lot", "Ölraffinerie", "", "车", "storage tank 2"]


def test_label_colours_equal_the_librarys_rule(plugin_core):
    colours = plugin_core["label_colours"]
    for label in LABELS:
        assert colours.label_colour(label) == tuple(label_colour(label)), label
    common = ("building", "road", "water", "tree", "car", "ship", "airplane", "runway", "pool", "tennis court")
    assert len({colours.label_colour(label) for label in common}) == len(common)  # no two of these share a colour
    assert colours.label_colour("Buildings") == colours.label_colour("building")  # plurals keep the colour
