"""Planning a batch job: scenes -> chip grids -> work units with deterministic ids.

A **work unit** is one scene x one block of at most ``chips_per_unit`` chips (in the
grid's row-major order) x all the prompts. Its id is a hash of the source, the scene's
processing grid (size and transform), the chip indices, the prompts, the model and the
engine parameters, so the same job always plans the same ids (that is what resume
relies on) and anything that changes a unit's result changes its id.

The grid is exactly the one :func:`~segearth_geo.engine.segment_raster` uses
(:func:`~segearth_geo.chips.chip_grid` over the scene of
:func:`~segearth_geo.raster.open_scene`), so the units of a scene partition its chips and
stitching them gives the same polygons as one ``segment`` run.

With an AOI only chips whose *core* intersects the AOI (reprojected to the scene's
CRS) are planned: every AOI pixel lies in exactly one core, so the polygons clipped to
the AOI are the same as those of the whole scene clipped to it. The AOI is first cut to the
scene's footprint *in the AOI's own CRS* and only that piece is reprojected
(:func:`aoi_in_scene`), so a world-sized AOI in EPSG:4326 works on a UTM scene.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import shapely
from affine import Affine
from rasterio.windows import Window

from segearth_geo.batch.config import LARGE_JOB_CHIPS, JobSpec
from segearth_geo.chips import MAX_CHIPS, Chip, axis_spans, chip_count
from segearth_geo.errors import SegEarthGeoError, UsageError
from segearth_geo.params import field_name
from segearth_geo.raster import open_scene


@dataclass(frozen=True)
class UnitSpec:
    """One work unit (everything a worker needs besides the model and the engine parameters).

    Attributes:
        id: deterministic id (hex).
        scene_id: id of its scene.
        source: the GDAL source, read by the worker itself (windowed reads).
        block: position of the block within the scene (0, 1, …).
        chips: row-major chip indices of the scene's grid.
    """

    id: str
    scene_id: str
    source: str
    block: int
    chips: tuple[int, ...]


@dataclass(frozen=True)
class ScenePlan:
    """One scene of the job.

    Attributes:
        id: deterministic id (hex), also the name of its shard folder.
        source: the GDAL source.
        name: file-system friendly name, unique within the job (results folder).
        crs_wkt: the scene's CRS as ``EPSG:n`` when it has a code, else WKT (``None`` without one).
        transform: processing-grid pixel -> map affine ``(a, b, c, d, e, f)``.
        width, height: processing-grid size in pixels.
        chips_total: chips of the whole grid.
        units: the units (empty when the scene failed or lies outside the AOI).
        aoi_wkb: the AOI in the scene's CRS (map coordinates) as WKB, ``None`` without AOI.
        error: why the scene cannot be processed (one line), else ``None``.
        skipped: why the scene needs no work (outside the AOI), else ``None``.
    """

    id: str
    source: str
    name: str
    crs_wkt: str | None = None
    transform: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    width: int = 0
    height: int = 0
    chips_total: int = 0
    units: tuple[UnitSpec, ...] = ()
    aoi_wkb: bytes | None = None
    error: str | None = None
    skipped: str | None = None

    @property
    def chips(self) -> int:
        """Chips to process (all units)."""
        return sum(len(u.chips) for u in self.units)

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)


def chips_at(width: int, height: int, chip_size: int, overlap: int, indices: Sequence[int]) -> list[Chip]:
    """The chips of ``chip_grid(width, height, chip_size, overlap)`` with these row-major ``indices``.

    Built from the 1-D spans without materialising the whole grid (a unit needs only its own).
    """
    cols = axis_spans(width, chip_size, overlap)
    rows = axis_spans(height, chip_size, overlap)
    chips = []
    for index in indices:
        r0, r1, cr0, cr1 = rows[index // len(cols)]
        c0, c1, cc0, cc1 = cols[index % len(cols)]
        chips.append(Chip(index=int(index), window=Window(c0, r0, c1 - c0, r1 - r0),
                          core=Window(cc0, cr0, cc1 - cc0, cr1 - cr0)))
    return chips


def _digest(data: Any, size: int) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:size]


def _slug(text: str, limit: int = 60) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
    return slug[:limit]


def scene_name(source: str) -> str:
    """Readable name of a source: its file stem (``/vsicurl/…/a.tif?x`` -> ``a``)."""
    tail = source.split("?", 1)[0].rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]
    return _slug(os.path.splitext(tail)[0])


def prompt_slug(prompt: str) -> str:
    """File name part for a prompt (readable, plus a short hash so two prompts never collide)."""
    return f"{_slug(prompt, 40)}-{hashlib.sha256(prompt.encode()).hexdigest()[:6]}"


@dataclass
class _Opened:
    source: str
    crs: Any
    transform: Affine
    width: int
    height: int


def plan_job(
    spec: JobSpec,
    *,
    aoi: Any = None,
    allow_large: bool = False,
    on_scene: Callable[[int, int], None] | None = None,
) -> list[ScenePlan]:
    """Plan every scene of ``spec``; ``aoi`` is the AOI GeoDataFrame (any CRS) or ``None``.

    A scene that cannot be opened gets a :class:`ScenePlan` with ``error`` set (the job goes on).
    Raises :class:`UsageError` when a scene has more than :data:`~segearth_geo.chips.MAX_CHIPS` chips
    or the job more than :data:`LARGE_JOB_CHIPS`, and ``allow_large`` is false (nothing is planned then).
    """
    params = spec.params
    opened: list[_Opened | str] = []
    for i, source in enumerate(spec.sources):
        try:
            with open_scene(source, bands=params.bands, gsd=params.gsd) as reader:
                s = reader.scene
            opened.append(_Opened(source, s.crs, s.transform, s.width, s.height))
        except (SegEarthGeoError, OSError, ValueError) as exc:
            opened.append(_one_line(exc))
        if on_scene is not None:
            on_scene(i + 1, len(spec.sources))
    counts = {o.source: chip_count(o.width, o.height, spec.chip_size, params.overlap)
              for o in opened if isinstance(o, _Opened)}
    if counts and not allow_large:
        worst = max(counts, key=counts.__getitem__)
        if counts[worst] > MAX_CHIPS:
            raise UsageError(
                f"{worst} would be cut into {counts[worst]:,} chips of {spec.chip_size} px (more than "
                f"{MAX_CHIPS:,} in one scene); check {field_name('gsd')}, or confirm with {field_name('allow_large')}")
        if sum(counts.values()) > LARGE_JOB_CHIPS:
            raise UsageError(
                f"the job has {sum(counts.values()):,} chips of {spec.chip_size} px over {len(counts)} scene(s) "
                f"(more than {LARGE_JOB_CHIPS:,}); check {field_name('gsd')}, or confirm with {field_name('allow_large')}")
    names = _unique_names(spec.sources)
    return [
        _plan_scene(spec, source, names[source], o, aoi)
        for source, o in zip(spec.sources, opened)
    ]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _unique_names(sources: Sequence[str]) -> dict[str, str]:
    stems = [scene_name(s) for s in sources]
    seen: dict[str, int] = {}
    for stem in stems:
        seen[stem] = seen.get(stem, 0) + 1
    return {s: stem if seen[stem] == 1 else f"{stem}-{hashlib.sha256(s.encode()).hexdigest()[:6]}"
            for s, stem in zip(sources, stems)}


def _plan_scene(spec: JobSpec, source: str, name: str, opened: _Opened | str, aoi: Any) -> ScenePlan:
    scene_id = _digest({"source": source, "job": spec.fingerprint()}, 16)
    if isinstance(opened, str):
        return ScenePlan(id=scene_id, source=source, name=name, error=opened)
    transform = tuple(float(v) for v in list(opened.transform)[:6])
    crs_wkt = None if opened.crs is None else (opened.crs.to_string() if opened.crs.to_epsg() else opened.crs.to_wkt())
    total = chip_count(opened.width, opened.height, spec.chip_size, spec.params.overlap)
    base = dict(id=scene_id, source=source, name=name, crs_wkt=crs_wkt, transform=transform,
                width=opened.width, height=opened.height, chips_total=total)
    aoi_wkb = None
    if aoi is None:
        selected = np.arange(total)
    else:
        if opened.crs is None:
            return ScenePlan(**base, error="the raster has no CRS, so the AOI cannot be placed on it")
        try:
            area = aoi_in_scene(aoi, opened.crs, _bounds(opened))
        except UsageError as exc:
            return ScenePlan(**base, error=str(exc))
        if area.is_empty or area.area == 0:
            return ScenePlan(**base, skipped="outside the AOI")
        aoi_wkb = shapely.to_wkb(area)
        selected = _chips_in(area, opened, spec.chip_size, spec.params.overlap)
        if not len(selected):
            return ScenePlan(**base, skipped="outside the AOI")
    identity = {
        "source": source, "width": opened.width, "height": opened.height, "transform": transform,
        "prompts": list(spec.prompts), "model": spec.model, "engine": spec.to_dict()["engine"],
        "aoi": spec.aoi_sha256,
    }
    # strategy zoom/auto (issue 22): a scene is one unit, since its levels depend on the whole scene
    step = spec.chips_per_unit if spec.params.strategy == "grid" else max(1, len(selected))
    units = tuple(
        UnitSpec(
            id=_digest({**identity, "chips": [int(c) for c in selected[k:k + step]]}, 20),
            scene_id=scene_id, source=source, block=k // step,
            chips=tuple(int(c) for c in selected[k:k + step]),
        )
        for k in range(0, len(selected), step)
    )
    return ScenePlan(**base, units=units, aoi_wkb=aoi_wkb)


def aoi_in_scene(aoi: Any, scene_crs: Any, bounds: tuple[float, float, float, float]) -> shapely.Geometry:
    """The part of the AOI (a GeoDataFrame, any CRS) over a scene, in the scene's CRS.

    The scene's footprint (densified, so its edges follow the projection) goes to the AOI's CRS, the AOI is
    cut to it there, and only that piece comes back to the scene's CRS: reprojecting a whole
    world-sized AOI to a UTM zone would fold it over itself and lose the scene. Raises :class:`UsageError`
    when the two CRSs cannot be related over this scene.
    """
    from pyproj import Transformer

    minx, miny, maxx, maxy = bounds
    footprint = shapely.segmentize(shapely.box(minx, miny, maxx, maxy), max(maxx - minx, maxy - miny) / 64)
    to_aoi = Transformer.from_crs(scene_crs, aoi.crs, always_xy=True)
    to_scene = Transformer.from_crs(aoi.crs, scene_crs, always_xy=True)
    outline = _transform(footprint, to_aoi)
    if outline is None or not outline.is_valid:
        raise UsageError("the scene's footprint cannot be expressed in the AOI's CRS; give the AOI in the scene's CRS")
    piece = shapely.intersection(shapely.make_valid(aoi.geometry.union_all()), outline)
    if piece.is_empty:
        return piece
    back = _transform(piece, to_scene)  # the AOI's own vertices go as they are (as GeoPandas' to_crs would)
    if back is None:
        raise UsageError("the AOI cannot be reprojected onto the scene's CRS; give the AOI in the scene's CRS")
    return shapely.intersection(shapely.make_valid(back), shapely.box(minx, miny, maxx, maxy))


def _transform(geometry: shapely.Geometry, transformer: Any) -> shapely.Geometry | None:
    """``geometry`` through a pyproj transformer; ``None`` when a vertex has no finite image."""
    moved = shapely.transform(geometry, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
    coords = shapely.get_coordinates(moved)
    return moved if np.isfinite(coords).all() else None


def _bounds(o: _Opened) -> tuple[float, float, float, float]:
    t = o.transform
    corners = [(t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f) for c in (0, o.width) for r in (0, o.height)]
    xs, ys = zip(*corners)
    return min(xs), min(ys), max(xs), max(ys)


def _chips_in(area: shapely.Geometry, o: _Opened, chip_size: int, overlap: int) -> np.ndarray:
    """Row-major indices of the chips whose core overlaps ``area`` (map coordinates) with a positive area."""
    i = ~o.transform
    pixel_area = shapely.transform(
        area, lambda xy: np.column_stack([i.a * xy[:, 0] + i.b * xy[:, 1] + i.c, i.d * xy[:, 0] + i.e * xy[:, 1] + i.f]))
    cols = axis_spans(o.width, chip_size, overlap)
    rows = axis_spans(o.height, chip_size, overlap)
    cores = shapely.box(
        np.tile([c[2] for c in cols], len(rows)), np.repeat([r[2] for r in rows], len(cols)),
        np.tile([c[3] for c in cols], len(rows)), np.repeat([r[3] for r in rows], len(cols)),
    )
    shapely.prepare(pixel_area)
    hits = np.flatnonzero(shapely.intersects(pixel_area, cores))
    if len(hits):
        overlap_area = shapely.area(shapely.intersection(pixel_area, cores[hits]))
        hits = hits[overlap_area > 0]
    return hits
