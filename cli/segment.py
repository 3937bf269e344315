"""``segearth-geo segment RASTER PROMPT -o OUT``: labeled polygons from a text prompt.

Cheap checks (prompt, output path, numbers, the raster, bands and bbox) run before the
model is loaded, so a typo fails in a second. Library errors reach ``main()``, which
prints one line and exits 1 (2 for usage errors).
"""

from __future__ import annotations

import logging
import time

import click
from segearth_geo_cli.options import overlap_option, raster_argument, scene_options

from segearth_geo.chips import MAX_CHIPS

log = logging.getLogger("segearth_geo_cli.segment")


@click.command(name="segment")
@raster_argument
@click.argument("prompts", metavar="PROMPT...", nargs=-1, required=True)
@click.option("-o", "--output", "output", required=True, metavar="OUT",
              help="Output file: .gpkg (default; layers 'segments' and 'chips'), .geojson (WGS84), .fgb, .parquet.")
@click.option("--model", default="demo", show_default=True, metavar="M",
              help="'demo', a checkpoint folder, a Hugging Face repo id, or 'file.py:factory'.")
@scene_options
@overlap_option
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Probability at or above which a pixel belongs to a target.")
@click.option("--min-area", type=click.FloatRange(min=0), metavar="M2", help="Drop polygons smaller than this (m²).")
@click.option("--simplify", type=click.FloatRange(min=0), metavar="TOL",
              help="Topology-preserving simplification tolerance in map units.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Chips per model call.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--max-chips", type=click.IntRange(min=0), default=MAX_CHIPS, show_default=True, metavar="N",
              help="Refuse a job of more chips than this before any work (0: no limit).")
@click.option("--score-threshold", type=click.FloatRange(0, 1), default=None, metavar="S",
              help="SAM3 only: keep instances whose detection score is above S (default 0.5).")
@click.option("--cache-mb", type=click.FloatRange(min=0), default=None, metavar="MB",
              help="Bound of the model's per-chip image cache, reused across the prompts of one run "
                   "(default: fits the device; 0: off). Models without a cache ignore it.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--preview", type=click.Path(dir_okay=False), metavar="PNG",
              help="Also draw the polygons over the scene into this PNG.")
@click.pass_context
def command(ctx: click.Context, raster: str, prompts: tuple[str, ...], output: str, model: str, bands, bbox, bbox_crs, gsd,
            overlap: int | None, threshold: float, min_area, simplify, batch_size: int, device: str, max_chips: int,
            score_threshold: float | None, cache_mb: float | None, overwrite: bool, preview: str | None) -> None:
    """Segment RASTER by one or more PROMPTs and write labeled polygons to OUT.

    Several prompts run in one pass over the chips (each chip read once, its prompts back to
    back, reusing the model's per-chip image work); the `prompt` column tells them apart.
    """
    from segearth_geo.engine import check_request, segment_raster
    from segearth_geo.model.loading import load_segmenter
    from segearth_geo.preview import check_preview
    from segearth_geo.raster import probe_scene

    started = time.perf_counter()
    check_request(list(prompts), out=output, overwrite=overwrite, overlap=overlap, threshold=threshold,
                  min_area=min_area, simplify=simplify, batch_size=batch_size)
    if preview is not None:
        check_preview(raster, preview, bands=bands, bbox=bbox, bbox_crs=bbox_crs, overwrite=overwrite)
    # The raster, bands and bbox are checked, and one block really read, before the (slow) model load.
    probe_scene(raster, bands=bands, gsd=gsd, bbox=bbox, bbox_crs=bbox_crs)
    options = {name: value for name, value in (("cache_mb", cache_mb), ("score_threshold", score_threshold))
               if value is not None}
    segmenter = load_segmenter(model, device=device, batch_size=batch_size, **options)
    quiet = bool((ctx.obj or {}).get("quiet"))
    used = getattr(segmenter, "device_description", None) or getattr(segmenter, "device", device)
    log.info("model %s on %s: %d-px chips", model, used, segmenter.chip_size)
    gdf = segment_raster(raster, list(prompts), segmenter=segmenter, out=output, bbox=bbox, bbox_crs=bbox_crs,
                         overlap=overlap, gsd=gsd, bands=bands, threshold=threshold, min_area=min_area,
                         simplify=simplify, batch_size=batch_size, progress=not quiet, overwrite=overwrite,
                         max_chips=max_chips)
    if preview is not None:
        from segearth_geo.preview import render_preview

        render_preview(raster, gdf, preview, bands=bands, bbox=bbox, bbox_crs=bbox_crs, overwrite=overwrite)
    if quiet:
        return
    stats = gdf.attrs.get("segearth", {})
    counts = gdf["label"].value_counts().sort_index() if len(gdf) else {}
    per_label = ", ".join(f"{count} {label!r}" for label, count in counts.items()) or "none"
    click.echo(
        f"Wrote {len(gdf)} polygon{'s' if len(gdf) != 1 else ''} to {output} ({per_label})"
        + (f" for {len(stats['prompts'])} prompts" if len(stats.get("prompts", ())) > 1 else "") + " from "
        f"{stats.get('chips_processed', '?')} of {stats.get('chips_total', '?')} chips "
        f"({stats.get('chips_skipped', 0)} skipped as nodata; {stats.get('chip_size', '?')}-px chips, overlap "
        f"{stats.get('overlap', '?')} px) in {time.perf_counter() - started:.1f} s on {used} with model {model}"
        + (f"; preview in {preview}." if preview else "."),
    )
