"""SynthEarth layouts: where every object of a scene goes, for four themes.

:func:`compose_layout` places objects over a ``width_m × height_m`` area (scene metres,
``y`` down) for one theme — ``city`` (road grid, houses, pools, courts, track fields,
parking lots), ``airport`` (runway, taxiway, apron with airplanes, terminals),
``harbour`` (coast, piers, ships, warehouses) or ``rural`` (fields, lakes or rivers,
scattered houses). Dataset samples and large scenes use the same composer, so they share
one visual style at one GSD. Only the generator passed in is used: same seed, same layout.

``sparse=True`` (harbour and rural) makes the rare targets of the zoom benchmark: a harbour whose sea
covers most of the scene with a few ships far apart and no piers (:data:`SPARSE_SHIPS_PER_KM2`), and a
rural area with a few tennis courts (:data:`SPARSE_COURTS_PER_KM2`) among fields and scattered houses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import LineString, Polygon
from shapely.geometry.base import BaseGeometry

from segearth_geo.errors import UsageError
from segearth_geo.synthetic import objects as ob

THEMES = ("city", "airport", "harbour", "rural")
SPARSE_THEMES = ("harbour", "rural")
SPARSE_SHIPS_PER_KM2 = 1.0  # ships of a sparse harbour scene (at least 3)
SPARSE_COURTS_PER_KM2 = 0.75  # tennis courts of a sparse rural scene (at least 3)
GROUND = {"city": "urban_ground", "airport": "dry_grass", "harbour": "urban_ground", "rural": "grass"}


@dataclass
class Layout:
    """Everything needed to render any window of a scene.

    Attributes:
        width_m, height_m: scene extent in metres.
        theme: one of :data:`THEMES`.
        ground: colour and texture amplitudes of the bare ground.
        tint: per-channel colour cast of the whole scene (lighting, sensor).
        shapes: every shape in paint order.
        shadows: ``(geometry, z)`` pairs; a shadow darkens shapes painted before index ``z``.
        objects: the labelled objects (ground truth), index = ``Shape.obj``.
    """

    width_m: float
    height_m: float
    theme: str
    ground: tuple[tuple[float, float, float], tuple[float, float, float]]
    tint: tuple[float, float, float]
    shapes: list[ob.Shape]
    shadows: list[tuple[BaseGeometry, int]]
    objects: list[ob.SceneObject]


class Frame:
    """A rotated local frame: ``u`` along ``angle`` from ``(x0, y0)``, ``v`` across."""

    def __init__(self, x0: float, y0: float, angle: float) -> None:
        self.x0, self.y0, self.angle = x0, y0, angle
        self.c, self.s = math.cos(angle), math.sin(angle)

    def world(self, u: float, v: float) -> tuple[float, float]:
        return self.x0 + u * self.c - v * self.s, self.y0 + u * self.s + v * self.c

    def polygon(self, u0: float, u1: float, v0: float, v1: float) -> Polygon:
        return Polygon([self.world(u, v) for u, v in ((u0, v0), (u1, v0), (u1, v1), (u0, v1))])

    def line(self, pts: list[tuple[float, float]]) -> LineString:
        return LineString([self.world(u, v) for u, v in pts])


def compose_layout(theme: str, width_m: float, height_m: float, rng: np.random.Generator, angle: float | None = None,
                   sparse: bool = False) -> Layout:
    """Place the objects of one ``theme`` scene of ``width_m × height_m`` metres.

    ``angle`` (radians) rotates the theme's main axis (road grid, runway, coast);
    ``None`` draws it from ``rng``. ``sparse``: the rare-target variant of a :data:`SPARSE_THEMES` theme (module
    docstring). Raises :class:`UsageError` for an unknown theme or a theme without a sparse variant.
    """
    if theme not in THEMES:
        raise UsageError(f"unknown SynthEarth theme {theme!r}; choose one of {', '.join(THEMES)}")
    if sparse and theme not in SPARSE_THEMES:
        raise UsageError(f"the {theme} theme has no sparse variant; choose one of {', '.join(SPARSE_THEMES)}")
    b = ob.LayoutBuilder(width_m, height_m, rng)
    if angle is None:
        angle = float(rng.uniform(0, math.pi))
    sun_dir = rng.uniform(0, 2 * math.pi)
    sun_len = rng.uniform(0.45, 0.9)
    sun = (math.cos(sun_dir) * sun_len, math.sin(sun_dir) * sun_len)
    frame = Frame(width_m / 2, height_m / 2, angle)
    half = math.hypot(width_m, height_m) / 2 + 20
    if sparse:
        {"harbour": _sparse_harbour, "rural": _sparse_rural}[theme](b, frame, half, sun)
    else:
        {"city": _city, "airport": _airport, "harbour": _harbour, "rural": _rural}[theme](b, frame, half, sun)
    ground_name = GROUND[theme]
    ground = (ob.MATERIALS[ground_name][0], ob.MATERIALS[ground_name][1])
    tint = tuple(float(v) for v in rng.uniform(0.92, 1.08) * rng.uniform(0.96, 1.04, size=3))
    order = sorted(range(len(b.shapes)), key=lambda i: (b.shapes[i].layer, i))  # stable paint order
    shapes = [b.shapes[i] for i in order]
    first: dict[int, int] = {}
    for z, shape in enumerate(shapes):
        if shape.obj >= 0 and shape.obj not in first:
            first[shape.obj] = z
    shadows = []
    for obj in b.objects:
        if obj.height <= 0 or obj.index not in first:
            continue
        moved = affinity.translate(obj.footprint, obj.height * sun[0], obj.height * sun[1])
        geom = shapely.union(obj.footprint, moved).convex_hull if obj.sweep_shadow else moved
        shadows.append((geom, first[obj.index]))
    shadows.sort(key=lambda item: item[1])
    return Layout(width_m, height_m, theme, ground, tint, shapes, shadows, b.objects)


def _grid_lines(rng: np.random.Generator, half: float, low: float, high: float) -> list[float]:
    start = -half + rng.uniform(0, high)
    lines = [start]
    while lines[-1] < half:
        lines.append(lines[-1] + rng.uniform(low, high))
    return lines


def _inside(b: ob.LayoutBuilder, frame: Frame, u: float, v: float, margin: float = 60.0) -> bool:
    x, y = frame.world(u, v)
    return -margin <= x <= b.width_m + margin and -margin <= y <= b.height_m + margin


def _scatter_trees(b: ob.LayoutBuilder, frame: Frame, u0: float, u1: float, v0: float, v1: float, n: int, sun) -> None:
    for _ in range(n):
        u, v = b.rng.uniform(u0, u1), b.rng.uniform(v0, v1)
        if _inside(b, frame, u, v, 10):
            ob.add_tree(b, *frame.world(u, v), float(b.rng.uniform(2.0, 5.5)), sun)


def _road_cars(b: ob.LayoutBuilder, frame: Frame, u0: float, u1: float, v: float, width: float, along_u: bool, density: float) -> None:
    for t in np.arange(u0, u1, 7.0):
        if b.rng.random() < density:
            lane = width / 4 * (1 if b.rng.random() < 0.5 else -1)
            uu, vv = (t, v + lane) if along_u else (v + lane, t)
            if _inside(b, frame, uu, vv, 5):
                heading = frame.angle + (0 if along_u else math.pi / 2) + (math.pi if lane > 0 else 0)
                ob.add_car(b, *frame.world(uu, vv), heading)


# ----------------------------------------------------------------------------- city


def _city(b: ob.LayoutBuilder, f: Frame, half: float, sun) -> None:
    rng = b.rng
    us = _grid_lines(rng, half, 95, 150)
    vs = _grid_lines(rng, half, 85, 140)
    roads = []
    for u in us:
        w = float(rng.uniform(8, 12))
        roads.append((u, w, False))
    for v in vs:
        w = float(rng.uniform(8, 12))
        roads.append((v, w, True))
    for pos, w, along_u in roads:
        pts = [(-half, pos), (half, pos)] if along_u else [(pos, -half), (pos, half)]
        b.surface(f.line(pts).buffer(w / 2 + 2.5, cap_style="flat"), "sidewalk")
    for pos, w, along_u in roads:
        pts = [(-half, pos), (half, pos)] if along_u else [(pos, -half), (pos, half)]
        ob.add_road(b, f.line(pts), w)
    wmax = 6.0 + 2.5
    for i in range(len(us) - 1):
        for j in range(len(vs) - 1):
            u0, u1 = us[i] + wmax + 1, us[i + 1] - wmax - 1
            v0, v1 = vs[j] + wmax + 1, vs[j + 1] - wmax - 1
            if not b.extent.intersects(f.polygon(u0, u1, v0, v1)):
                continue
            kind = rng.choice(["residential", "commercial", "sports", "parking", "park"], p=[0.32, 0.2, 0.2, 0.14, 0.14])
            {"residential": _residential, "commercial": _commercial, "sports": _sports, "parking": _parking, "park": _park}[
                str(kind)
            ](b, f, u0, u1, v0, v1, sun)
    for pos, w, along_u in roads:
        _road_cars(b, f, -half, half, pos, w, along_u, 0.08)


def _residential(b, f, u0, u1, v0, v1, sun) -> None:
    rng = b.rng
    b.surface(f.polygon(u0, u1, v0, v1), "grass", jitter=0.08)
    for edge_v, sign in ((v0, 1), (v1, -1)):
        u = u0 + rng.uniform(2, 8)
        while u < u1 - 12:
            length, width = rng.uniform(10, 18), rng.uniform(8, 12)
            if u + length > u1:
                break
            cu, cv = u + length / 2, edge_v + sign * (4 + width / 2)
            if ob.add_building(b, *f.world(cu, cv), length, width, f.angle) is not None and rng.random() < 0.4:
                pl, pw = rng.uniform(7, 14), rng.uniform(4, 7)
                pv = cv + sign * (width / 2 + pw / 2 + 4)
                ob.add_pool(b, *f.world(cu, pv), pl, pw, f.angle + rng.choice([0.0, math.pi / 2]) * (pl < 9))
            u += length + rng.uniform(4, 10)
    if rng.random() < 0.35:
        cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
        ob.add_tennis_court(b, *f.world(cu, cv), f.angle + rng.choice([0.0, math.pi / 2]))
    _scatter_trees(b, f, u0, u1, v0, v1, int((u1 - u0) * (v1 - v0) / 250), sun)


def _commercial(b, f, u0, u1, v0, v1, sun) -> None:
    rng = b.rng
    depth = v1 - v0
    width = min(rng.uniform(14, 30), depth * 0.45)
    length = (u1 - u0) * rng.uniform(0.55, 0.92)
    cu = u0 + 3 + length / 2 + rng.uniform(0, max(0.0, (u1 - u0) - length - 6))
    ob.add_building(b, *f.world(cu, v0 + 3 + width / 2), length, width, f.angle)
    lot_w = depth - width - 12
    if lot_w > 18:
        ob.add_parking_lot(b, *f.world((u0 + u1) / 2, v1 - 2 - lot_w / 2), (u1 - u0) - 6, lot_w, f.angle, float(rng.uniform(0.15, 0.6)))
    _scatter_trees(b, f, u0, u1, v0, v1, 6, sun)


def _sports(b, f, u0, u1, v0, v1, sun) -> None:
    rng = b.rng
    b.surface(f.polygon(u0, u1, v0, v1), "grass", jitter=0.06)
    lu, lv = u1 - u0, v1 - v0
    if min(lu, lv) > 60 and rng.random() < 0.55:
        length = min(rng.uniform(90, 150), lu - 6, (lv - 6) / 0.52)
        ob.add_track_field(b, *f.world((u0 + u1) / 2, (v0 + v1) / 2), length, f.angle)
    else:
        rotate = lu < lv
        n = int(rng.integers(1, 5))
        for k in range(n):
            if rotate:
                cu, cv = (u0 + u1) / 2, v0 + 12 + k * 21
            else:
                cu, cv = u0 + 21 + k * 21, (v0 + v1) / 2
            ob.add_tennis_court(b, *f.world(cu, cv), f.angle + (0.0 if rotate else math.pi / 2))
    _scatter_trees(b, f, u0, u1, v0, v1, 14, sun)


def _parking(b, f, u0, u1, v0, v1, sun) -> None:
    ob.add_parking_lot(b, *f.world((u0 + u1) / 2, (v0 + v1) / 2), u1 - u0 - 4, v1 - v0 - 4, f.angle, float(b.rng.uniform(0.15, 0.6)))


def _park(b, f, u0, u1, v0, v1, sun) -> None:
    rng = b.rng
    b.surface(f.polygon(u0, u1, v0, v1), "grass", jitter=0.06)
    if rng.random() < 0.6:
        r = min(u1 - u0, v1 - v0) * rng.uniform(0.2, 0.35)
        ob.add_lake(b, *f.world((u0 + u1) / 2 + rng.uniform(-10, 10), (v0 + v1) / 2), r)
    _scatter_trees(b, f, u0, u1, v0, v1, int((u1 - u0) * (v1 - v0) / 120), sun)


# ----------------------------------------------------------------------------- airport


def _airport(b: ob.LayoutBuilder, f: Frame, half: float, sun) -> None:
    rng = b.rng
    # the runway sits off-centre so that apron, terminals and parking fill most of the scene
    shift = min(b.width_m, b.height_m) * float(rng.uniform(0.1, 0.3))
    f = Frame(*f.world(0.0, shift), f.angle)
    rw = float(rng.uniform(45, 60))
    ob.add_runway(b, f.x0, f.y0, 2 * half, rw, f.angle)
    off = float(rng.uniform(110, 150))
    tw = 23.0
    b.surface(f.polygon(-half, half, -off - tw / 2, -off + tw / 2), "apron", "paved")
    b.surface(f.line([(-half, -off), (half, -off)]).buffer(0.4), "paint_yellow", "paved")
    for u in np.arange(-half + rng.uniform(0, 200), half, 380.0):
        b.surface(f.polygon(u - tw / 2, u + tw / 2, -off, -rw / 2), "apron", "paved")
    depth = float(rng.uniform(90, 130))
    a0, a1 = -off - tw / 2 - 8 - depth, -off - tw / 2 - 8
    b.surface(f.polygon(-half, half, a0, a1 + 8), "apron", "paved")
    u = -half + rng.uniform(0, 40)
    while u < half:
        length = float(rng.uniform(30, 65))
        if _inside(b, f, u, (a0 + a1) / 2, 40):
            ob.add_airplane(b, *f.world(u, a1 - length / 2 - 6), length, f.angle - math.pi / 2 + math.pi * (rng.random() < 0.5))
        u += length * 1.05 + rng.uniform(10, 40)
    for v_line in (0.0, -off):
        for _ in range(int(rng.integers(0, 3))):
            length = float(rng.uniform(30, 65))
            pu = float(rng.uniform(-half * 0.6, half * 0.6))
            ob.add_airplane(b, *f.world(pu, v_line), length, f.angle + math.pi * (rng.random() < 0.5))
    t0 = a0 - 10
    u = -half + rng.uniform(0, 60)
    while u < half:
        length, width = float(rng.uniform(40, 160)), float(rng.uniform(20, 40))
        if _inside(b, f, u + length / 2, t0 - width / 2, 60):
            ob.add_building(b, *f.world(u + length / 2, t0 - width / 2), length, width, f.angle)
        u += length + rng.uniform(15, 40)
    road_v = t0 - 48
    ob.add_road(b, f.line([(-half, road_v), (half, road_v)]), 12.0)
    _road_cars(b, f, -half, half, road_v, 12.0, True, 0.1)
    u = -half + rng.uniform(0, 80)
    while u < half:
        length = float(rng.uniform(50, 120))
        lw = float(rng.uniform(30, 60))
        if _inside(b, f, u + length / 2, road_v - 10 - lw / 2, 60):
            ob.add_parking_lot(b, *f.world(u + length / 2, road_v - 10 - lw / 2), length, lw, f.angle, float(rng.uniform(0.3, 0.9)))
        u += length + rng.uniform(20, 120)
    _scatter_trees(b, f, -half, half, road_v - 90, road_v - 8, int(half / 8), sun)
    _rural_fill(b, f, -half, half, road_v - 100 - half, road_v - 100, sun, density=0.5)
    _rural_fill(b, f, -half, half, rw / 2 + 80, half, sun, density=0.3)


# ----------------------------------------------------------------------------- harbour


def _harbour(b: ob.LayoutBuilder, f: Frame, half: float, sun) -> None:
    rng = b.rng
    us = np.linspace(-half, half, 40)
    coast = [(float(u), float(rng.normal(0, 4))) for u in us]
    water = Polygon([f.world(u, v) for u, v in coast] + [f.world(half, half), f.world(-half, half)]).buffer(0)
    b.add_object("water", [(water, "water", None)], "water", reserve=False)
    u = -half + rng.uniform(20, 120)
    while u < half:
        plen, pw = float(rng.uniform(60, 150)), float(rng.uniform(12, 20))
        pier = f.polygon(u - pw / 2, u + pw / 2, -5, plen)
        b.surface(pier, "pier", "paved")
        for side in (-1, 1):
            if rng.random() < 0.75:
                slen = float(rng.uniform(30, min(110, plen)))
                sv = float(rng.uniform(slen / 2, plen - slen / 2 + 1))
                swid = slen * 0.16
                ob.add_ship(b, *f.world(u + side * (pw / 2 + swid / 2 + 2.5), sv), slen, f.angle + math.pi / 2 + math.pi * (rng.random() < 0.5), False)
        b.reserve(pier)
        u += float(rng.uniform(110, 200))
    for _ in range(int(rng.integers(2, 6)) * max(1, int(half / 250))):
        slen = float(rng.uniform(25, 120))
        uu, vv = float(rng.uniform(-half, half)), float(rng.uniform(60, half))
        if _inside(b, f, uu, vv, 0):
            ob.add_ship(b, *f.world(uu, vv), slen, float(rng.uniform(0, 2 * math.pi)), bool(rng.random() < 0.6))
    if rng.random() < 0.5:  # a river reaching the coast, placed before anything that must avoid it
        ru = float(rng.uniform(-half / 2, half / 2))
        ob.add_river(b, f.world(ru, -half), f.world(ru + rng.uniform(-60, 60), 0), float(rng.uniform(15, 35)))
    quay = -14.0
    ob.add_road(b, f.line([(-half, quay), (half, quay)]), 11.0)
    _road_cars(b, f, -half, half, quay, 11.0, True, 0.08)
    v = quay - 12
    u = -half + rng.uniform(0, 40)
    while u < half:
        length, width = float(rng.uniform(40, 140)), float(rng.uniform(18, 36))
        if _inside(b, f, u + length / 2, v - width / 2, 60):
            ob.add_building(b, *f.world(u + length / 2, v - width / 2), length, width, f.angle)
        u += length + rng.uniform(12, 30)
    v2 = v - 50
    ob.add_road(b, f.line([(-half, v2), (half, v2)]), 10.0)
    u = -half + rng.uniform(0, 100)
    while u < half:
        length, lw = float(rng.uniform(50, 110)), float(rng.uniform(30, 50))
        if _inside(b, f, u + length / 2, v2 - 10 - lw / 2, 60):
            ob.add_parking_lot(b, *f.world(u + length / 2, v2 - 10 - lw / 2), length, lw, f.angle, float(rng.uniform(0.3, 0.9)))
        u += length + rng.uniform(30, 150)
    _rural_fill(b, f, -half, half, -half, v2 - 70, sun, density=0.6)


# ----------------------------------------------------------------------------- rural


def _rural_fill(b, f, u0, u1, v0, v1, sun, density: float = 1.0) -> None:
    rng = b.rng
    area = max(0.0, (u1 - u0) * (v1 - v0))
    for _ in range(int(area / 9000 * density) + 1):
        cu, cv = rng.uniform(u0, u1), rng.uniform(v0, v1)
        pl, pw = rng.uniform(40, 140), rng.uniform(30, 100)
        patch = ob.rect(*f.world(cu, cv), pl, pw, f.angle + rng.normal(0, 0.1))
        b.surface(patch, str(rng.choice(["soil", "field", "dry_grass"])), jitter=0.1)
    for _ in range(int(area / 20000 * density) + 1):
        cu, cv = rng.uniform(u0, u1), rng.uniform(v0, v1)
        if not _inside(b, f, cu, cv, 0):
            continue
        ang = f.angle + rng.uniform(-0.3, 0.3)
        for k in range(int(rng.integers(1, 5))):
            x, y = f.world(cu + k * rng.uniform(18, 30), cv + rng.normal(0, 6))
            if ob.add_building(b, x, y, rng.uniform(9, 16), rng.uniform(7, 11), ang) is not None and rng.random() < 0.35:
                ob.add_pool(b, x + rng.uniform(-4, 4), y + 13, rng.uniform(7, 12), rng.uniform(4, 6), ang)
        if rng.random() < 0.25:
            ob.add_tennis_court(b, *f.world(cu, cv + 35), ang)
    for _ in range(int(area / 30000 * density) + 1):
        cu, cv = rng.uniform(u0, u1), rng.uniform(v0, v1)
        n = int(rng.integers(5, 30))
        _scatter_trees(b, f, cu - 25, cu + 25, cv - 25, cv + 25, n, sun)


def _rural(b: ob.LayoutBuilder, f: Frame, half: float, sun) -> None:
    rng = b.rng
    if rng.random() < 0.5:
        ob.add_lake(b, f.x0 + rng.uniform(-80, 80), f.y0 + rng.uniform(-80, 80), float(rng.uniform(30, 70)))
    else:
        ob.add_river(b, f.world(-half, rng.uniform(-60, 60)), f.world(half, rng.uniform(-60, 60)), float(rng.uniform(12, 30)))
    rv = float(rng.uniform(-half / 2, half / 2))
    ob.add_road(b, f.line([(rv, -half), (rv, half)]), 8.0)
    _road_cars(b, f, -half, half, rv, 8.0, False, 0.05)
    _rural_fill(b, f, -half, half, -half, half, sun)


# ----------------------------------------------------------------------------- sparse variants


def _sparse_count(b: ob.LayoutBuilder, per_km2: float) -> int:
    return max(3, round(b.width_m * b.height_m / 1e6 * per_km2))


def _sparse_harbour(b: ob.LayoutBuilder, f: Frame, half: float, sun) -> None:
    """Open sea over most of the scene, a strip of coast with a quay, and a few ships far apart."""
    rng = b.rng
    extent = max(b.width_m, b.height_m)
    coast_v = -0.4 * extent  # the coast lies near one edge: water covers most of the scene
    us = np.linspace(-half, half, 40)
    coast = [(float(u), coast_v + float(rng.normal(0, 4))) for u in us]
    water = Polygon([f.world(u, v) for u, v in coast] + [f.world(half, half), f.world(-half, half)]).buffer(0)
    b.add_object("water", [(water, "water", None)], "water", reserve=False)
    quay = coast_v - 14.0
    ob.add_road(b, f.line([(-half, quay), (half, quay)]), 11.0)
    _road_cars(b, f, -half, half, quay, 11.0, True, 0.05)
    u = -half + rng.uniform(0, 40)
    while u < half:
        length, width = float(rng.uniform(40, 140)), float(rng.uniform(18, 36))
        if _inside(b, f, u + length / 2, quay - 12 - width / 2, 60):
            ob.add_building(b, *f.world(u + length / 2, quay - 12 - width / 2), length, width, f.angle)
        u += length + rng.uniform(12, 30)
    _rural_fill(b, f, -half, half, -half, quay - 60, sun, density=0.4)
    wanted, placed = _sparse_count(b, SPARSE_SHIPS_PER_KM2), 0
    for _ in range(wanted * 20):
        if placed == wanted:
            break
        uu, vv = float(rng.uniform(-half, half)), float(rng.uniform(coast_v + 80, half))
        if _inside(b, f, uu, vv, -60):  # well inside the scene
            length = float(rng.uniform(30, 120))
            if ob.add_ship(b, *f.world(uu, vv), length, float(rng.uniform(0, 2 * math.pi)), bool(rng.random() < 0.6)):
                placed += 1


def _sparse_rural(b: ob.LayoutBuilder, f: Frame, half: float, sun) -> None:
    """Fields, a river or lake, scattered houses, and a few tennis courts far apart."""
    rng = b.rng
    if rng.random() < 0.5:
        ob.add_lake(b, f.x0 + rng.uniform(-80, 80), f.y0 + rng.uniform(-80, 80), float(rng.uniform(30, 70)))
    else:
        ob.add_river(b, f.world(-half, rng.uniform(-60, 60)), f.world(half, rng.uniform(-60, 60)), float(rng.uniform(12, 30)))
    wanted, placed = _sparse_count(b, SPARSE_COURTS_PER_KM2), 0
    for _ in range(wanted * 20):
        if placed == wanted:
            break
        cu, cv = float(rng.uniform(-half, half)), float(rng.uniform(-half, half))
        if _inside(b, f, cu, cv, -40) and ob.add_tennis_court(b, *f.world(cu, cv), f.angle + rng.uniform(-0.3, 0.3)):
            placed += 1
    rv = float(rng.uniform(-half / 2, half / 2))
    ob.add_road(b, f.line([(rv, -half), (rv, half)]), 8.0)
    _road_cars(b, f, -half, half, rv, 8.0, False, 0.05)
    for _ in range(int((2 * half) ** 2 / 9000 * 0.6) + 1):  # fields, as _rural_fill, without its courts
        patch = ob.rect(*f.world(rng.uniform(-half, half), rng.uniform(-half, half)), rng.uniform(40, 140),
                        rng.uniform(30, 100), f.angle + rng.normal(0, 0.1))
        b.surface(patch, str(rng.choice(["soil", "field", "dry_grass"])), jitter=0.1)
    for _ in range(int((2 * half) ** 2 / 40000) + 1):  # hamlets of 1-4 houses
        cu, cv = rng.uniform(-half, half), rng.uniform(-half, half)
        if _inside(b, f, cu, cv, 0):
            for k in range(int(rng.integers(1, 5))):
                x, y = f.world(cu + k * rng.uniform(18, 30), cv + rng.normal(0, 6))
                ob.add_building(b, x, y, rng.uniform(9, 16), rng.uniform(7, 11), f.angle + rng.uniform(-0.3, 0.3))
    for _ in range(int((2 * half) ** 2 / 30000) + 1):
        cu, cv = rng.uniform(-half, half), rng.uniform(-half, half)
        _scatter_trees(b, f, cu - 25, cu + 25, cv - 25, cv + 25, int(rng.integers(5, 30)), sun)
