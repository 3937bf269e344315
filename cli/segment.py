"""``segearth-geo segment RASTER PROMPT -o OUT``: labeled polygons from a text prompt.

Cheap checks (prompt, output path, every run parameter and load option, the raster, bands and bbox) run
before the model is loaded, so a typo fails in a second. Library errors reach ``main()``, which prints one
line and exits 1 (2 for usage errors).
"""

from __future__ import annotations

import logging
import time

import click
from segearth_geo_cli.options import load_options, load_params, raster_argument, segment_options, segment_params

log = logging.getLogger("segearth_geo_cli.segment")


@click.command(name="segment")
@raster_argument
@click.argument("prompts", metavar="PROMPT...", nargs=-1, required=True)
@click.option("-o", "--output", "output", required=True, metavar="OUT",
              help="Output file: .gpkg (default; layers 'segments' and 'chips'), .geojson (WGS84), .fgb, .parquet.")
@load_options()
@segment_options()
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--preview", type=click.Path(dir_okay=False), metavar="PNG",
              help="Also draw the polygons over the scene into this PNG.")
@click.pass_context
def command(ctx: click.Context, raster: str, prompts: tuple[str, ...], output: str, overwrite: bool,
            preview: str | None, **values) -> None:
    """Segment RASTER by one or more PROMPTs and write labeled polygons to OUT.

    Several prompts run in one pass over the chips (each chip read once, its prompts back to
    back, reusing the model's per-chip image work); the `prompt` column tells them apart.
    """
    from segearth_geo.engine import check_request, segment_scene
    from segearth_geo.model.loading import check_load_options, load_model
    from segearth_geo.preview import check_preview
    from segearth_geo.raster import probe_scene

    started = time.perf_counter()
    params = segment_params(values)
    options = load_params(values, params)
    cleaned, params = check_request(list(prompts), out=output, overwrite=overwrite, params=params, style="cli")
    check_load_options(options, style="cli")
    if preview is not None:
        check_preview(raster, preview, bands=params.bands, bbox=params.bbox, bbox_crs=params.bbox_crs,
                      overwrite=overwrite)
    # The raster, bands and bbox are checked, and one block really read, before the (slow) model load.
    probe_scene(raster, bands=params.bands, gsd=params.gsd, bbox=params.bbox, bbox_crs=params.bbox_crs)
    segmenter = load_model(options, style="cli")
    quiet = bool((ctx.obj or {}).get("quiet"))
    result = segment_scene(raster, cleaned, segmenter, params, out=output, overwrite=overwrite, progress=not quiet,
                           model=options.model)
    stats = result.stats
    log.info("model %s on %s: %d-px chips", options.model, stats.device, stats.chip_size)
    if preview is not None:
        from segearth_geo.preview import render_preview

        render_preview(raster, result.segments, preview, bands=params.bands, bbox=params.bbox,
                       bbox_crs=params.bbox_crs, overwrite=overwrite)
    if quiet:
        return
    gdf = result.segments
    counts = gdf["label"].value_counts().sort_index() if len(gdf) else {}
    per_label = ", ".join(f"{count} {label!r}" for label, count in counts.items()) or "none"
    zoom = ""
    if stats.strategy_reason:  # --strategy zoom/auto (issue 22): what ran, why, and the work per level
        zoom = f"; strategy {stats.strategy} ({stats.strategy_reason})"
        if stats.chips_per_level:
            zoom += (f": chips per level {'/'.join(map(str, stats.chips_per_level))} (full resolution first), "
                     f"{stats.full_res_fraction:.0%} of the area at full resolution")
    click.echo(
        f"Wrote {len(gdf)} polygon{'s' if len(gdf) != 1 else ''} to {output} ({per_label})"
        + (f" for {len(stats.prompts)} prompts" if len(stats.prompts) > 1 else "") + " from "
        f"{stats.chips_processed} of {stats.chips_total} chips ({stats.chips_skipped} skipped as nodata; "
        f"{stats.chip_size}-px chips, overlap {stats.overlap} px) in {time.perf_counter() - started:.1f} s on "
        f"{stats.device or options.device} with model {options.model}" + (f" ({stats.notice})" if stats.notice else "")
        + zoom + "".join(f"; {what} in {path}" for what, path in (("probabilities", params.raster_out),
                                                                    ("polygon ids", params.labels_out)) if path)
        + (f"; preview in {preview}." if preview else "."),
    )
