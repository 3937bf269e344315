"""``segearth-geo segment RASTER PROMPT -o OUT``: labeled polygons from a text prompt.

Cheap checks (prompt, output path, numbers, the raster, bands and bbox) run before the
model is loaded, so a typo fails in a second. Library errors reach ``main()``, which
prints one line and exits 1 (2 for usage errors).
"""

from __future__ import annotations

import time

import click
from segearth_geo_cli.options import default_overlap, overlap_option, raster_argument, scene_options


@click.command(name="segment")
@raster_argument
@click.argument("prompt", metavar="PROMPT")
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
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--preview", type=click.Path(dir_okay=False), metavar="PNG",
              help="Also draw the polygons over the scene into this PNG.")
@click.pass_context
def command(ctx: click.Context, raster: str, prompt: str, output: str, model: str, bands, bbox, bbox_crs, gsd,
            overlap: int | None, threshold: float, min_area, simplify, batch_size: int, device: str, overwrite: bool,
            preview: str | None) -> None:
    """Segment RASTER by PROMPT and write labeled polygons to OUT."""
    from segearth_geo.engine import check_request, segment_raster
    from segearth_geo.model.loading import load_segmenter
    from segearth_geo.raster import open_scene

    started = time.perf_counter()
    check_request(prompt, out=output, overwrite=overwrite, overlap=overlap or 0, threshold=threshold,
                  min_area=min_area, simplify=simplify, batch_size=batch_size)
    if preview is not None:
        _check_preview(preview, overwrite)
    with open_scene(raster, bands=bands, gsd=gsd, bbox=bbox, bbox_crs=bbox_crs):
        pass  # raster, bands and bbox are checked before the (slow) model load
    segmenter = load_segmenter(model, device=device, batch_size=batch_size)
    quiet = bool((ctx.obj or {}).get("quiet"))
    used = getattr(segmenter, "device_description", None) or getattr(segmenter, "device", device)
    if overlap is None:
        overlap = default_overlap(segmenter.chip_size)
    if not quiet:
        click.echo(f"Model {model} on {used}: {segmenter.chip_size}-px chips, overlap {overlap} px.", err=True)
    gdf = segment_raster(raster, prompt, segmenter=segmenter, out=output, bbox=bbox, bbox_crs=bbox_crs,
                         overlap=overlap, gsd=gsd, bands=bands, threshold=threshold, min_area=min_area,
                         simplify=simplify, batch_size=batch_size, progress=not quiet, overwrite=overwrite)
    if preview is not None:
        from segearth_geo.preview import render_preview

        render_preview(raster, gdf, preview, bands=bands, bbox=bbox, bbox_crs=bbox_crs, overwrite=overwrite)
    stats = gdf.attrs.get("segearth", {})
    counts = gdf["label"].value_counts().sort_index() if len(gdf) else {}
    per_label = ", ".join(f"{count} {label!r}" for label, count in counts.items()) or "none"
    if quiet:
        return
    click.echo(
        f"Wrote {len(gdf)} polygon{'s' if len(gdf) != 1 else ''} to {output} ({per_label}) from "
        f"{stats.get('chips_processed', '?')} of {stats.get('chips_total', '?')} chips "
        f"({stats.get('chips_skipped', 0)} skipped as nodata) in {time.perf_counter() - started:.1f} s "
        f"on {used} with model {model}" + (f"; preview in {preview}." if preview else "."),
    )


def _check_preview(path: str, overwrite: bool) -> None:
    """The preview PNG must be writable too (checked before any work)."""
    from pathlib import Path

    from segearth_geo.errors import OutputError
    from segearth_geo.output import check_folder

    target = Path(path).expanduser()
    if target.suffix.lower() != ".png":
        raise OutputError(f"--preview must name a .png file, got {path}")
    if target.exists() and not overwrite:
        raise OutputError(f"preview {path} exists; choose another name or pass --overwrite")
    check_folder(target)
