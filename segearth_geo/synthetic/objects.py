"""SynthEarth objects: coloured polygons in scene metres, grouped into labelled objects and parts.

Everything here lives in *scene metres*: ``x`` grows east (right), ``y`` grows south (down),
origin at the scene's top-left corner, so one pixel at GSD ``g`` spans ``g`` metres.
An object is a list of :class:`Shape` (drawn in order) plus a category; some shapes carry a
part name (``"net"``, ``"wing"``, ``"engine"``, ``"bow"``, ``"stern"``). Objects are built by
the ``add_*`` functions of this module through a :class:`LayoutBuilder`, which also keeps
placed footprints apart and sorts shapes into paint order (:data:`LAYERS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

# Categories with their answer phrase (singular) and plural (used in questions).
CATEGORIES: dict[str, str] = {
    "building": "buildings",
    "road": "roads",
    "water": "water areas",
    "tree": "trees",
    "car": "cars",
    "tennis court": "tennis courts",
    "runway": "runways",
    "airplane": "airplanes",
    "ship": "ships",
    "swimming pool": "swimming pools",
    "track field": "track fields",
    "parking lot": "parking lots",
}
# Parts of each category that has them: part name -> phrase used as answer label.
PARTS: dict[str, dict[str, str]] = {
    "tennis court": {"net": "tennis court net"},
    "airplane": {"wing": "airplane wing", "engine": "airplane engine"},
    "ship": {"bow": "ship bow", "stern": "ship stern"},
}
# Paint order: lower layers first; inside a layer, insertion order.
LAYERS = {"ground": 0, "water": 1, "paved": 2, "court": 3, "building": 4, "vehicle": 5, "tree": 6}

# name -> (RGB, texture amplitudes (fine, medium, coarse) as fractions of the colour)
MATERIALS: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "grass": ((86, 116, 60), (0.10, 0.10, 0.14)),
    "dry_grass": ((138, 136, 88), (0.08, 0.08, 0.12)),
    "soil": ((150, 124, 94), (0.08, 0.10, 0.10)),
    "field": ((112, 132, 66), (0.06, 0.05, 0.08)),
    "urban_ground": ((146, 142, 134), (0.07, 0.06, 0.08)),
    "sidewalk": ((178, 174, 166), (0.04, 0.03, 0.03)),
    "asphalt": ((70, 71, 74), (0.08, 0.05, 0.05)),
    "lot_asphalt": ((114, 114, 117), (0.06, 0.04, 0.04)),
    "runway_concrete": ((182, 181, 175), (0.04, 0.03, 0.04)),
    "apron": ((148, 148, 144), (0.05, 0.03, 0.04)),
    "pier": ((160, 150, 132), (0.05, 0.03, 0.03)),
    "paint_white": ((236, 236, 230), (0.02, 0.0, 0.0)),
    "paint_yellow": ((222, 190, 64), (0.02, 0.0, 0.0)),
    "water": ((36, 66, 94), (0.03, 0.07, 0.06)),
    "wake": ((110, 140, 160), (0.15, 0.05, 0.0)),
    "pool_water": ((64, 192, 218), (0.04, 0.05, 0.0)),
    "pool_deck": ((214, 204, 182), (0.03, 0.02, 0.0)),
    "tree": ((38, 76, 32), (0.24, 0.12, 0.05)),
    "tree_light": ((72, 112, 50), (0.20, 0.10, 0.0)),
    "court_green": ((64, 136, 84), (0.02, 0.02, 0.0)),
    "court_blue": ((48, 92, 156), (0.02, 0.02, 0.0)),
    "court_clay": ((182, 96, 62), (0.03, 0.02, 0.0)),
    "court_surround": ((98, 150, 96), (0.02, 0.02, 0.0)),
    "net": ((28, 28, 30), (0.0, 0.0, 0.0)),
    "track_red": ((176, 76, 56), (0.04, 0.02, 0.0)),
    "pitch_green": ((82, 156, 68), (0.04, 0.03, 0.0)),
    "roof_red": ((168, 82, 60), (0.05, 0.03, 0.0)),
    "roof_grey": ((196, 192, 184), (0.04, 0.02, 0.0)),
    "roof_dark": ((92, 96, 104), (0.05, 0.02, 0.0)),
    "roof_brown": ((132, 100, 78), (0.05, 0.03, 0.0)),
    "roof_metal": ((150, 168, 184), (0.03, 0.02, 0.0)),
    "rooftop_unit": ((212, 212, 210), (0.02, 0.0, 0.0)),
    "glass": ((30, 36, 44), (0.02, 0.0, 0.0)),
    "plane_white": ((238, 239, 240), (0.01, 0.0, 0.0)),
    "plane_wing": ((206, 208, 212), (0.01, 0.0, 0.0)),
    "plane_engine": ((72, 76, 84), (0.02, 0.0, 0.0)),
    "hull_dark": ((64, 66, 74), (0.03, 0.01, 0.0)),
    "hull_red": ((150, 52, 44), (0.03, 0.01, 0.0)),
    "hull_grey": ((128, 132, 138), (0.03, 0.01, 0.0)),
    "deck": ((170, 152, 120), (0.04, 0.01, 0.0)),
    "superstructure": ((240, 240, 236), (0.01, 0.0, 0.0)),
}
CAR_COLOURS = [(235, 235, 235), (20, 20, 24), (170, 172, 176), (160, 30, 30), (30, 60, 140), (200, 200, 190), (90, 95, 100)]
CONTAINER_COLOURS = [(170, 50, 40), (40, 90, 150), (60, 130, 70), (200, 150, 40), (120, 120, 120)]


@dataclass(frozen=True)
class Shape:
    """One polygon drawn with one colour and texture.

    Attributes:
        geom: polygon in scene metres.
        rgb: base colour (floats, 0–255).
        amps: texture amplitudes (fine, medium, coarse) as fractions of ``rgb``.
        layer: paint layer (see :data:`LAYERS`).
        obj: index of the object this shape belongs to, ``-1`` for unlabelled surfaces.
        part: part name within the object, or ``None``.
    """

    geom: BaseGeometry
    rgb: tuple[float, float, float]
    amps: tuple[float, float, float]
    layer: int
    obj: int = -1
    part: str | None = None


@dataclass
class SceneObject:
    """One labelled object: its category, full footprint, part geometries and shadow height (m)."""

    index: int
    category: str
    footprint: BaseGeometry
    parts: dict[str, BaseGeometry] = field(default_factory=dict)
    height: float = 0.0
    sweep_shadow: bool = True


def oriented(points: list[tuple[float, float]], cx: float, cy: float, angle: float) -> Polygon:
    """Polygon from local ``(u, v)`` points (u along the object's axis) rotated by ``angle`` rad and moved to ``(cx, cy)``."""
    pts = np.asarray(points, dtype=float)
    c, s = math.cos(angle), math.sin(angle)
    x = cx + pts[:, 0] * c - pts[:, 1] * s
    y = cy + pts[:, 0] * s + pts[:, 1] * c
    return Polygon(np.column_stack([x, y]))


def rect(cx: float, cy: float, length: float, width: float, angle: float, du: float = 0.0, dv: float = 0.0) -> Polygon:
    """Rectangle ``length × width`` metres centred at local offset ``(du, dv)`` of an object at ``(cx, cy)``."""
    hl, hw = length / 2, width / 2
    return oriented([(du - hl, dv - hw), (du + hl, dv - hw), (du + hl, dv + hw), (du - hl, dv + hw)], cx, cy, angle)


def rect_array(cx: float, cy: float, angle: float, du: np.ndarray, dv: np.ndarray, length: float, width: float) -> MultiPolygon:
    """Many equal rectangles at local offsets ``(du[i], dv[i])`` as one multipolygon (vectorised)."""
    du, dv = np.broadcast_arrays(np.asarray(du, float), np.asarray(dv, float))
    corner_u = np.array([-1, 1, 1, -1]) * length / 2
    corner_v = np.array([-1, -1, 1, 1]) * width / 2
    u = du.ravel()[:, None] + corner_u  # (n, 4)
    v = dv.ravel()[:, None] + corner_v
    c, s = math.cos(angle), math.sin(angle)
    coords = np.stack([cx + u * c - v * s, cy + u * s + v * c], axis=-1)  # (n, 4, 2)
    return MultiPolygon(list(shapely.polygons(coords)))


class LayoutBuilder:
    """Collects objects and shapes for one scene; keeps footprints apart with a coarse grid.

    ``fits(geom)`` says whether ``geom`` (buffered by ``gap`` m) touches nothing reserved so far;
    ``reserve(geom)`` records it. Grid cells are 64 m, so checks stay cheap for thousands of objects.
    """

    CELL = 64.0

    def __init__(self, width_m: float, height_m: float, rng: np.random.Generator) -> None:
        self.width_m = width_m
        self.height_m = height_m
        self.rng = rng
        self.extent = box(0.0, 0.0, width_m, height_m)
        self._margin = self.extent.buffer(50.0, join_style="mitre")
        shapely.prepare(self.extent)
        self.shapes: list[Shape] = []
        self.objects: list[SceneObject] = []
        self._grid: dict[tuple[int, int], list[BaseGeometry]] = {}

    def _cells(self, geom: BaseGeometry):
        minx, miny, maxx, maxy = geom.bounds
        for i in range(int(math.floor(minx / self.CELL)), int(math.floor(maxx / self.CELL)) + 1):
            for j in range(int(math.floor(miny / self.CELL)), int(math.floor(maxy / self.CELL)) + 1):
                yield (i, j)

    def fits(self, geom: BaseGeometry, gap: float = 1.0) -> bool:
        """Whether ``geom`` lies at least ``gap`` m from every reserved footprint."""
        probe = geom.buffer(gap) if gap > 0 else geom
        for cell in self._cells(probe):
            for other in self._grid.get(cell, ()):
                if probe.intersects(other):
                    return False
        return True

    def reserve(self, geom: BaseGeometry) -> None:
        """Mark ``geom`` as occupied for later :meth:`fits` checks."""
        for cell in self._cells(geom):
            self._grid.setdefault(cell, []).append(geom)

    def surface(self, geom: BaseGeometry, material: str, layer: str = "ground", jitter: float = 0.0) -> None:
        """Add an unlabelled surface (lawn, apron, sidewalk, pier, wake…)."""
        geom = geom.intersection(self._margin)
        if not geom.is_empty:
            self.shapes.append(Shape(geom, self.colour(material, jitter), MATERIALS[material][1], LAYERS[layer]))

    def colour(self, material: str, jitter: float = 0.0) -> tuple[float, float, float]:
        """A material's colour, scaled by a random brightness factor in ``1 ± jitter``."""
        rgb = np.asarray(MATERIALS[material][0], dtype=float)
        if jitter:
            rgb = rgb * (1.0 + self.rng.uniform(-jitter, jitter))
        return tuple(float(v) for v in np.clip(rgb, 0, 255))

    def add_object(
        self,
        category: str,
        pieces: list[tuple[BaseGeometry, str | tuple[float, float, float], str | None]],
        layer: str,
        height: float = 0.0,
        sweep_shadow: bool = True,
        reserve: bool = True,
        outline: BaseGeometry | None = None,
    ) -> SceneObject | None:
        """Add an object from ``(geometry, material or RGB, part name)`` pieces drawn in order.

        Pieces are clipped to the scene (plus a 50 m margin so shapes run off the edge);
        the footprint recorded for ground truth (``outline`` when given, else the union of
        the pieces) is clipped to the scene itself. Returns ``None`` (nothing added) when the
        object lies outside the scene.
        """
        margin = self._margin
        if outline is None:
            outline = shapely.unary_union([g for g, _, _ in pieces])
        inside = shapely.contains_properly(self.extent, outline)
        footprint = outline if inside else outline.intersection(self.extent)
        if footprint.is_empty or footprint.area < 0.5:
            return None
        index = len(self.objects)
        parts: dict[str, list[BaseGeometry]] = {}
        for geom, paint, part in pieces:
            if not inside:
                geom = geom.intersection(margin)
            if geom.is_empty:
                continue
            if isinstance(paint, str):
                rgb, amps = MATERIALS[paint][0], MATERIALS[paint][1]
            else:
                rgb, amps = paint, (0.03, 0.01, 0.0)
            self.shapes.append(Shape(geom, tuple(float(v) for v in rgb), amps, LAYERS[layer], index, part))
            if part is not None:
                parts.setdefault(part, []).append(geom)
        part_geoms = {}
        for name, geoms in parts.items():
            clipped = shapely.unary_union(geoms) if len(geoms) > 1 else geoms[0]
            clipped = clipped if inside else clipped.intersection(self.extent)
            if not clipped.is_empty:
                part_geoms[name] = clipped
        obj = SceneObject(index, category, footprint, part_geoms, height, sweep_shadow)
        self.objects.append(obj)
        if reserve:
            self.reserve(footprint)
        return obj


# ----------------------------------------------------------------------------- object makers


def add_building(b: LayoutBuilder, cx: float, cy: float, length: float, width: float, angle: float) -> SceneObject | None:
    """A building: gable roof (two shaded halves and a ridge) or flat roof with parapet and rooftop units."""
    rng = b.rng
    outline = rect(cx, cy, length, width, angle)
    if not b.fits(outline, 1.5):
        return None
    pieces: list = []
    if rng.random() < 0.5 and width < 22:
        base = np.asarray(MATERIALS[str(rng.choice(["roof_red", "roof_brown", "roof_dark"]))][0], float)
        base = base * rng.uniform(0.9, 1.1)
        pieces.append((rect(cx, cy, length, width / 2, angle, dv=-width / 4), tuple(base * 1.12), None))
        pieces.append((rect(cx, cy, length, width / 2, angle, dv=width / 4), tuple(base * 0.78), None))
        pieces.append((rect(cx, cy, length, 0.6, angle), tuple(np.minimum(base * 1.3, 255)), None))
    else:
        base = np.asarray(MATERIALS[str(rng.choice(["roof_grey", "roof_metal", "roof_grey", "roof_dark"]))][0], float)
        base = base * rng.uniform(0.9, 1.08)
        pieces.append((outline, tuple(base * 0.8), None))
        pieces.append((rect(cx, cy, length - 1.6, width - 1.6, angle), tuple(base), None))
        for _ in range(int(rng.integers(0, 1 + int(length * width // 300)))):
            du = rng.uniform(-length / 2 + 3, length / 2 - 3)
            dv = rng.uniform(-width / 2 + 3, width / 2 - 3)
            pieces.append((rect(cx, cy, rng.uniform(2, 4), rng.uniform(1.5, 3), angle, du, dv), "rooftop_unit", None))
    return b.add_object("building", pieces, "building", height=float(rng.uniform(5, 18)), outline=outline)


def add_car(b: LayoutBuilder, cx: float, cy: float, angle: float, check: bool = True) -> SceneObject | None:
    """A car 4.5 × 1.9 m with a dark windscreen and rear window."""
    body = rect(cx, cy, 4.5, 1.9, angle)
    if check and not b.fits(body.buffer(0.3, join_style="mitre"), 0.0):
        return None
    rgb = np.asarray(CAR_COLOURS[int(b.rng.integers(len(CAR_COLOURS)))], float)
    pieces = [
        (body, tuple(rgb), None),
        (rect(cx, cy, 1.0, 1.6, angle, du=0.9), "glass", None),
        (rect(cx, cy, 0.6, 1.5, angle, du=-1.5), "glass", None),
    ]
    return b.add_object("car", pieces, "vehicle", height=1.5, outline=body)


def add_tree(b: LayoutBuilder, cx: float, cy: float, radius: float, sun: tuple[float, float]) -> SceneObject | None:
    """A round tree crown with a sun-side highlight."""
    crown = Point(cx, cy).buffer(radius, quad_segs=6)
    if not b.fits(crown, 0.5):
        return None
    highlight = Point(cx - sun[0] * radius * 0.35, cy - sun[1] * radius * 0.35).buffer(radius * 0.55, quad_segs=4)
    return b.add_object("tree", [(crown, "tree", None), (highlight, "tree_light", None)], "tree", height=radius * 1.6)


def add_tennis_court(b: LayoutBuilder, cx: float, cy: float, angle: float) -> SceneObject | None:
    """A tennis court (36 × 18 m with its run-off) with white lines and a dark net part across the middle."""
    outline = rect(cx, cy, 36.0, 18.0, angle)
    if not b.fits(outline, 1.0):
        return None
    surface = str(b.rng.choice(["court_green", "court_blue", "court_clay"]))
    surround = "court_surround" if surface != "court_clay" else "court_clay"
    lines = shapely.unary_union(
        [
            rect(cx, cy, 23.8, 11.0, angle).exterior.buffer(0.3),
            rect(cx, cy, 23.8, 0.6, angle),  # centre service line (under the net crossing)
            rect(cx, cy, 0.6, 8.2, angle, du=-6.4),
            rect(cx, cy, 0.6, 8.2, angle, du=6.4),
        ]
    )
    pieces = [
        (outline, surround, None),
        (rect(cx, cy, 23.8, 11.0, angle), surface, None),
        (lines, "paint_white", None),
        (rect(cx, cy, 1.1, 12.8, angle), "net", "net"),
    ]
    if surround == "court_clay":
        pieces[0] = (outline, tuple(np.asarray(MATERIALS["court_clay"][0]) * 0.85), None)
    return b.add_object("tennis court", pieces, "court", outline=outline)


def add_pool(b: LayoutBuilder, cx: float, cy: float, length: float, width: float, angle: float) -> SceneObject | None:
    """A swimming pool (bright cyan) inside a light deck (the deck is not part of the pool)."""
    deck = rect(cx, cy, length + 3, width + 3, angle)
    if not b.fits(deck, 0.5):
        return None
    b.surface(deck, "pool_deck", "court")
    water = rect(cx, cy, length, width, angle)
    if b.rng.random() < 0.4:
        water = water.buffer(-min(width, length) * 0.2).buffer(min(width, length) * 0.2, quad_segs=4)
    obj = b.add_object("swimming pool", [(water, "pool_water", None)], "court")
    b.reserve(deck)
    return obj


def add_track_field(b: LayoutBuilder, cx: float, cy: float, length: float, angle: float) -> SceneObject | None:
    """A running track (red oval with white lanes) around a green pitch."""
    width = length * 0.52
    radius = width / 2
    du = (length / 2 - radius) * math.cos(angle)
    dv = (length / 2 - radius) * math.sin(angle)
    axis = LineString([(cx - du, cy - dv), (cx + du, cy + dv)])
    outer = axis.buffer(radius, quad_segs=12)
    if not b.fits(outer, 2.0):
        return None
    lane_w = radius * 0.22
    lanes = shapely.unary_union([axis.buffer(radius - k * lane_w / 4, quad_segs=12).exterior.buffer(0.25) for k in range(5)])
    pitch = axis.buffer(radius - lane_w - 0.8, quad_segs=12)
    pieces = [(outer, "track_red", None), (lanes, "paint_white", None), (pitch, "pitch_green", None)]
    return b.add_object("track field", pieces, "court", outline=outer)


def add_parking_lot(b: LayoutBuilder, cx: float, cy: float, length: float, width: float, angle: float, occupancy: float) -> SceneObject | None:
    """A parking lot with rows of white stall lines; cars fill a fraction ``occupancy`` of the stalls."""
    outline = rect(cx, cy, length, width, angle)
    if not b.fits(outline, 1.0):
        return None
    row_pitch = 16.0  # two 5 m stall rows around a 6 m aisle
    n_rows = max(1, int((width - 2) // row_pitch))
    n_cols = max(1, int((length - 4) // 2.6))
    rows = [dv for r in range(n_rows) for dv in (-width / 2 + 3.5 + r * row_pitch, -width / 2 + 14.5 + r * row_pitch) if dv + 2.5 <= width / 2]
    line_u = -length / 2 + 2 + np.arange(n_cols + 1) * 2.6
    lines_u, lines_v = np.meshgrid(line_u, rows)
    stall_u, stall_v = np.meshgrid(line_u[:-1] + 1.3, rows)
    lines = rect_array(cx, cy, angle, lines_u, lines_v, 0.25, 5.0) if rows else None
    stalls = list(zip(stall_u.ravel().tolist(), stall_v.ravel().tolist()))
    pieces = [(outline, "lot_asphalt", None)]
    if lines is not None:
        pieces.append((lines, "paint_white", None))
    obj = b.add_object("parking lot", pieces, "paved", reserve=False, outline=outline)
    if obj is None:
        return None
    c, s = math.cos(angle), math.sin(angle)
    for du, dv in stalls:
        if b.rng.random() < occupancy:
            add_car(b, cx + du * c - dv * s, cy + du * s + dv * c, angle + math.pi / 2 + b.rng.normal(0, 0.03), check=False)
    b.reserve(outline)
    return obj


def add_road(b: LayoutBuilder, line: LineString, width: float, centre_line: bool = True) -> SceneObject | None:
    """A road: asphalt strip along the straight ``line`` with a dashed white centre line."""
    strip = line.buffer(width / 2, cap_style="flat")
    pieces: list = [(strip, "asphalt", None)]
    if centre_line and line.length > 8:
        (x0, y0), (x1, y1) = line.coords[0], line.coords[-1]  # roads are straight
        angle = math.atan2(y1 - y0, x1 - x0)
        du = np.arange(1.5, line.length - 1.5, 9.0)
        dashes = rect_array(x0, y0, angle, du, np.zeros_like(du), 3.0, 0.3)
        pieces.append((dashes, "paint_white", None))
    return b.add_object("road", pieces, "paved", reserve=False, outline=strip)


def add_runway(b: LayoutBuilder, cx: float, cy: float, length: float, width: float, angle: float) -> SceneObject | None:
    """A runway with centre-line dashes, edge lines and threshold 'piano keys' at both ends."""
    marks = [rect(cx, cy, length - 2, 0.9, angle, dv=-width / 2 + 1.5), rect(cx, cy, length - 2, 0.9, angle, dv=width / 2 - 1.5)]
    for du in np.arange(-length / 2 + 90, length / 2 - 90, 50.0):
        marks.append(rect(cx, cy, 30.0, 0.9, angle, du=float(du)))
    for end in (-1, 1):
        for k in range(8):
            dv = -width / 2 + 4 + k * (width - 8) / 7
            marks.append(rect(cx, cy, 30.0, 1.8, angle, du=end * (length / 2 - 25), dv=dv))
    outline = rect(cx, cy, length, width, angle)
    pieces = [(outline, "runway_concrete", None), (shapely.unary_union(marks), "paint_white", None)]
    return b.add_object("runway", pieces, "paved", reserve=False, outline=outline)


def add_airplane(b: LayoutBuilder, cx: float, cy: float, length: float, angle: float, check: bool = True) -> SceneObject | None:
    """An airliner of ``length`` m (nose towards +u): fuselage, swept wings and engines as parts, tailplane."""
    L = length
    span = L * b.rng.uniform(0.9, 1.05)
    fw = L * 0.09  # fuselage width
    fuselage = oriented(
        [(-L / 2, -fw * 0.3), (L * 0.38, -fw / 2), (L / 2, 0.0), (L * 0.38, fw / 2), (-L / 2, fw * 0.3)], cx, cy, angle
    )
    if check and not b.fits(fuselage.buffer(span / 2 - fw), 2.0):
        return None
    root_u, chord, sweep = L * 0.08, L * 0.16, span * 0.22
    wings = []
    engines = []
    for side in (-1, 1):
        wings.append(
            oriented(
                [(root_u, side * fw * 0.4), (root_u - sweep, side * span / 2), (root_u - sweep - chord * 0.35, side * span / 2),
                 (root_u - chord, side * fw * 0.4)],
                cx, cy, angle,
            )
        )
        for frac in (0.32,) if L < 50 else (0.28, 0.55):
            dv = side * span / 2 * frac
            du = root_u - sweep * frac * 1.0 + L * 0.03
            engines.append(rect(cx, cy, L * 0.09, L * 0.045, angle, du=du, dv=dv))
    tail = []
    for side in (-1, 1):
        tail.append(oriented([(-L * 0.36, side * fw * 0.3), (-L * 0.47, side * span * 0.17), (-L * 0.5, side * span * 0.17),
                              (-L * 0.45, side * fw * 0.3)], cx, cy, angle))
    pieces = [
        (shapely.unary_union(wings), "plane_wing", "wing"),
        (shapely.unary_union(tail), "plane_wing", None),
        (fuselage, "plane_white", None),
        (shapely.unary_union(engines), "plane_engine", "engine"),
    ]
    return b.add_object("airplane", pieces, "vehicle", height=4.0, sweep_shadow=False)


def add_ship(b: LayoutBuilder, cx: float, cy: float, length: float, angle: float, moving: bool) -> SceneObject | None:
    """A ship (bow towards +u): pointed bow part, square stern part with bridge, containers or deck between."""
    rng = b.rng
    L, W = length, length * rng.uniform(0.14, 0.18)
    hull = oriented([(-L / 2, -W / 2), (L * 0.25, -W / 2), (L / 2, 0.0), (L * 0.25, W / 2), (-L / 2, W / 2)], cx, cy, angle)
    if not b.fits(hull, 6.0):
        return None
    if moving:
        b.surface(oriented([(-L / 2, -W / 2), (-L * 1.6, -W * 1.6), (-L * 1.6, W * 1.6), (-L / 2, W / 2)], cx, cy, angle), "wake", "paved")
    hull_mat = str(rng.choice(["hull_dark", "hull_red", "hull_grey"]))
    bow = hull.intersection(rect(cx, cy, L * 0.25, W * 2, angle, du=L * 0.375))
    stern = rect(cx, cy, L * 0.18, W, angle, du=-L * 0.41)
    pieces = [
        (hull, hull_mat, None),
        (rect(cx, cy, L * 0.55, W * 0.78, angle, du=-L * 0.02), "deck", None),
    ]
    if rng.random() < 0.6:
        boxes = []
        for du in np.arange(-L * 0.28, L * 0.2, 6.5):
            for dv in np.arange(-W * 0.3, W * 0.31, 2.6):
                if rng.random() < 0.85:
                    colour = CONTAINER_COLOURS[int(rng.integers(len(CONTAINER_COLOURS)))]
                    boxes.append((rect(cx, cy, 6.0, 2.4, angle, du=float(du), dv=float(dv)), colour, None))
        pieces.extend(boxes)
    pieces.append((bow, tuple(np.asarray(MATERIALS[hull_mat][0], float) * 1.15), "bow"))
    pieces.append((stern, hull_mat, "stern"))
    pieces.append((rect(cx, cy, L * 0.09, W * 0.8, angle, du=-L * 0.38), "superstructure", "stern"))
    return b.add_object("ship", pieces, "vehicle", height=3.0, sweep_shadow=False)


def add_lake(b: LayoutBuilder, cx: float, cy: float, radius: float) -> SceneObject | None:
    """A lake: an ellipse-like polygon whose radius wobbles with a few random harmonics."""
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 5):
        r += b.rng.uniform(0.03, 0.12) * np.cos(k * t + b.rng.uniform(0, 2 * np.pi))
    aspect = b.rng.uniform(0.6, 1.0)
    poly = Polygon(np.column_stack([cx + radius * r * np.cos(t), cy + radius * aspect * r * np.sin(t)])).buffer(0)
    if not b.fits(poly, 3.0):
        return None
    return b.add_object("water", [(poly, "water", None)], "water")


def add_river(b: LayoutBuilder, start: tuple[float, float], end: tuple[float, float], width: float) -> SceneObject | None:
    """A meandering river from ``start`` to ``end`` (a sine-perturbed centre line, buffered)."""
    sx, sy = start
    ex, ey = end
    n = 60
    t = np.linspace(0, 1, n)
    dx, dy = ex - sx, ey - sy
    length = math.hypot(dx, dy)
    nx, ny = -dy / length, dx / length
    amp = length * b.rng.uniform(0.03, 0.08)
    off = amp * np.sin(2 * np.pi * t * b.rng.uniform(1.0, 2.5) + b.rng.uniform(0, 2 * np.pi))
    line = LineString(np.column_stack([sx + dx * t + nx * off, sy + dy * t + ny * off]))
    return b.add_object("water", [(line.buffer(width / 2), "water", None)], "water")
