"""The colour of each label: the same in every run, in the dock, in Processing and in the engine's PNG previews.

A copy of ``segearth_geo/preview.py``'s ``label_colour`` (the plugin never imports the library);
``tests/test_plugin_tables.py`` checks that both give the same colours. Pure Python (no Qt).
"""

from __future__ import annotations

import colorsys
import hashlib

# Conventional colours for the labels remote-sensing users meet most (water blue, vegetation green, ...), chosen to
# be told apart; any other label gets a colour from a hash of its text (its hue and one of three shades).
CONVENTIONAL = {
    "building": (230, 25, 75), "roof": (230, 25, 75), "house": (230, 25, 75),
    "road": (255, 225, 25), "street": (255, 225, 25),
    "water": (0, 130, 200), "river": (0, 130, 200), "lake": (0, 130, 200), "sea": (0, 130, 200),
    "tree": (60, 180, 75), "forest": (60, 180, 75), "vegetation": (60, 180, 75),
    "field": (210, 245, 60), "farmland": (210, 245, 60), "grass": (210, 245, 60),
    "car": (245, 130, 48), "vehicle": (245, 130, 48),
    "ship": (70, 240, 240), "boat": (70, 240, 240),
    "airplane": (240, 50, 230), "plane": (240, 50, 230), "aircraft": (240, 50, 230),
    "runway": (128, 128, 128), "parking lot": (170, 110, 40), "bare soil": (170, 110, 40),
    "swimming pool": (0, 210, 255), "pool": (0, 210, 255), "tennis court": (145, 30, 180),
    "storage tank": (250, 190, 212), "solar panel": (0, 0, 128), "bridge": (128, 0, 0),
}
# (saturation, value) of the three shades a hashed label's hue comes in.
SHADES = ((0.85, 0.95), (0.5, 1.0), (0.95, 0.7))


def label_colour(label: str) -> tuple[int, int, int]:
    """``(r, g, b)`` of ``label``: the conventional colour of a common label (:data:`CONVENTIONAL`), else a
    blake2b digest of its lower-cased text gives the hue and one of three shades; a label keeps its colour
    whatever other labels a run finds."""
    text = " ".join(str(label).lower().split())
    for key in (text, text[:-1] if text.endswith("s") else None, text[:-2] if text.endswith("es") else None):
        if key in CONVENTIONAL:
            return CONVENTIONAL[key]
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=3).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    saturation, value = SHADES[digest[2] % len(SHADES)]
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, saturation, value))
