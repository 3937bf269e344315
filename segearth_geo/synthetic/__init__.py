"""SynthEarth: a procedural, deterministic aerial benchmark at a nominal 0.5 m GSD.

Modules, in data-flow order:

* ``objects``  — object makers (building, road, water, tree, car, tennis court + net, runway,
  airplane + wings/engines, ship + bow/stern, swimming pool, track field, parking lot) as
  coloured polygons in scene metres;
* ``layout``   — four themes (city, airport, harbour, rural) placing objects over an area;
* ``scene``    — rendering any pixel window of a layout (textures from global coordinates);
* ``questions``— LaSeRS-style questions/answers with dimension tags about a rendered window;
* ``dataset``  — in-memory samples and LaSeRS-layout splits on disk;
* ``geoscene`` — one large tiled GeoTIFF scene plus its ground-truth GeoPackage.

Every function takes its randomness from an explicit seed or ``numpy.random.Generator``.
"""

from __future__ import annotations

from segearth_geo.synthetic.dataset import (
    NOMINAL_GSD,
    SplitSummary,
    SynthEarthSamples,
    generate_sample,
    split_sample,
    write_split,
)
from segearth_geo.synthetic.geoscene import SceneSummary, scene_origin, write_scene
from segearth_geo.synthetic.layout import THEMES, compose_layout
from segearth_geo.synthetic.objects import CATEGORIES, PARTS
from segearth_geo.synthetic.scene import SceneRenderer

__all__ = [
    "CATEGORIES",
    "NOMINAL_GSD",
    "PARTS",
    "THEMES",
    "SceneRenderer",
    "SceneSummary",
    "SplitSummary",
    "SynthEarthSamples",
    "compose_layout",
    "generate_sample",
    "scene_origin",
    "split_sample",
    "write_scene",
    "write_split",
]
