"""``segearth-geo info``: what the engine will see for one job, without reading pixels.

:func:`summarize_scene` opens a raster as :func:`~segearth_geo.raster.open_scene` does and counts
the chips of its processing grid in constant time (:func:`~segearth_geo.chips.chip_count`), so a
request that would make an absurd grid is reported, not built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from rasterio.crs import CRS

from segearth_geo.raster import Scene, open_scene


@dataclass(frozen=True)
class SceneSummary:
    """What the engine will see for one job (the ``segearth-geo info`` report)."""

    scene: Scene
    chip_size: int
    overlap: int
    chip_count: int
    model: str | None = None
    model_gsd: tuple[float, float] | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready description (CRS as ``EPSG:xxxx`` when it has a code, else WKT)."""
        s = self.scene
        src = s.source_window
        return {
            "source": s.source,
            "crs": _crs_text(s.crs),
            "source_size": list(s.source_size),
            "band_count": s.band_count,
            "dtype": s.dtype,
            "bands": list(s.bands),
            "stretch": None if s.stretch is None else [list(p) for p in s.stretch],
            "nodata": s.nodata,
            "mask": s.mask,
            "warped": s.warped,
            "source_window": [src.col_off, src.row_off, src.width, src.height],
            "width": s.width,
            "height": s.height,
            "gsd": s.gsd,
            "gsd_xy": None if s.gsd_xy is None else list(s.gsd_xy),
            "transform": list(s.transform)[:6],
            "bounds": list(s.bounds),
            "chip_size": self.chip_size,
            "overlap": self.overlap,
            "chip_count": self.chip_count,
            "model": self.model,
            "model_gsd": None if self.model_gsd is None else list(self.model_gsd),
            "notes": list(self.notes),
        }

    def to_text(self) -> str:
        """Human-readable report, one fact per line."""
        s = self.scene
        crs = "none (pixel coordinates)" if s.crs is None else _crs_text(s.crs)
        gsd = "unknown GSD (no CRS)" if s.gsd_xy is None else f"{s.gsd_xy[0]:.4g} x {s.gsd_xy[1]:.4g} m per pixel"
        if s.stretch is None:
            radiometry = f"{s.dtype}, passed through"
        else:
            ranges = ", ".join(f"{lo:.6g}..{hi:.6g}" for lo, hi in s.stretch)
            radiometry = f"{s.dtype}, scene stretch 2-98 %: {ranges}"
        if s.mask == "nodata":
            validity = f"nodata value {s.nodata:g}"
        else:
            validity = {"alpha": "alpha band", "mask": "mask band", "none": "none (all pixels valid)"}[s.mask]
        src = s.source_window
        return "\n".join(
            [
                f"source:     {s.source}",
                f"CRS:        {crs}",
                f"raster:     {s.source_size[0]} x {s.source_size[1]} px, {s.band_count} band(s)"
                + (" (not north-up: read through a north-up warp)" if s.warped else ""),
                f"bands:      R,G,B = {','.join(str(b) for b in s.bands)}",
                f"radiometry: {radiometry}",
                f"validity:   {validity}",
                f"area:       source pixels {src.col_off:g},{src.row_off:g} size {src.width:g} x {src.height:g}; "
                f"bounds {', '.join(f'{v:.10g}' for v in s.bounds)}",
                f"grid:       {s.width} x {s.height} px at {gsd}",
                f"chips:      {self.chip_count} of up to {self.chip_size} px, overlap {self.overlap} px"
                + (f" (model {self.model})" if self.model else ""),
            ]
            + ([f"model GSD:  trained on {self.model_gsd[0]:g}–{self.model_gsd[1]:g} m per pixel"]
               if self.model_gsd else [])
            + [f"note:       {note}" for note in self.notes]
        )


def _crs_text(crs: CRS | None) -> str | None:
    if crs is None:
        return None
    return crs.to_string() if crs.to_epsg() else crs.to_wkt()


def summarize_scene(
    source: str | os.PathLike,
    *,
    bands: Sequence[int] | str | None = None,
    gsd: float | None = None,
    bbox: Sequence[float] | None = None,
    bbox_crs: CRS | str | int | None = None,
    chip_size: int = 1024,
    overlap: int = 128,
) -> SceneSummary:
    """Open ``source`` as :func:`open_scene` would and count its chips (reads only the stretch sample)."""
    from segearth_geo.chips import chip_count

    with open_scene(source, bands=bands, gsd=gsd, bbox=bbox, bbox_crs=bbox_crs) as reader:
        scene = reader.scene
    count = chip_count(scene.width, scene.height, chip_size, overlap)
    return SceneSummary(scene=scene, chip_size=chip_size, overlap=overlap, chip_count=count)
