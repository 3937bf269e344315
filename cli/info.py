"""``segearth-geo info RASTER``: what the engine will see (CRS, GSD, bands, stretch, validity, chips)."""

from __future__ import annotations

import json

import click
from segearth_geo_cli.options import chip_size_option, overlap_option, raster_argument, scene_options


@click.command(name="info")
@raster_argument
@scene_options
@chip_size_option
@overlap_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def command(raster: str, bands, bbox, bbox_crs, gsd, chip_size: int, overlap: int, as_json: bool) -> None:
    """Show what the engine will see in RASTER: CRS, GSD, grid size, bands, stretch, nodata/mask, chip count."""
    from segearth_geo.chips import default_overlap
    from segearth_geo.summary import summarize_scene

    summary = summarize_scene(
        raster, bands=bands, gsd=gsd, bbox=bbox, bbox_crs=bbox_crs, chip_size=chip_size,
        overlap=default_overlap(chip_size) if overlap is None else overlap,
    )
    click.echo(json.dumps(summary.to_dict(), indent=2) if as_json else summary.to_text())
