"""``segearth-geo info RASTER``: what the engine will see (CRS, GSD, bands, stretch, validity, chips)."""

from __future__ import annotations

import json

import click
from segearth_geo_cli.options import (
    chip_size_option,
    option_for,
    overlap_option,
    raster_argument,
    scene_options,
    segment_params,
)

from segearth_geo.params import LoadOptions


@click.command(name="info")
@raster_argument
@scene_options
@option_for(LoadOptions, "model", "demo")
@chip_size_option
@overlap_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def command(raster: str, model: str, chip_size: int | None, as_json: bool, **values) -> None:
    """Show what the engine will see in RASTER: CRS, GSD, grid size, bands, stretch, nodata/mask, and the chips
    the --model would use (its chip size, without loading its weights when it is a known model)."""
    from segearth_geo.engine import gsd_notes
    from segearth_geo.model.loading import model_facts
    from segearth_geo.summary import summarize_scene

    facts = model_facts(LoadOptions(model=model).check("cli"))
    size = chip_size if chip_size is not None else facts.chip_size
    params = segment_params(values).resolve(size, style="cli")
    summary = summarize_scene(raster, bands=params.bands, gsd=params.gsd, bbox=params.bbox, bbox_crs=params.bbox_crs,
                              chip_size=size, overlap=params.overlap)
    notes = tuple(gsd_notes(facts, summary.scene.gsd, model, log=False)) + ((facts.notice,) if facts.notice else ())
    summary = type(summary)(summary.scene, size, params.overlap, summary.chip_count, model, facts.gsd_range, notes)
    click.echo(json.dumps(summary.to_dict(), indent=2) if as_json else summary.to_text())
