"""``segearth-geo batch INPUT... -o OUT_DIR -p PROMPT``: many scenes x prompts, resumable.

A thin wrapper of :func:`segearth_geo.batch.run_batch`: parses options, prints the
summary, exits 1 when a unit failed (the summary lists them). Run the same command again
after any interruption to resume. ``--json-progress`` (for the QGIS plugin) prints one
JSON object per progress event and the final report on stdout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
from segearth_geo_cli.options import bands_option, gsd_option, overlap_option


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise click.BadParameter(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
    return value


def _prompts(prompts: tuple[str, ...], prompts_file: str | None) -> list[str]:
    found = list(prompts)
    if prompts_file is not None:
        try:
            lines = Path(prompts_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {prompts_file}: {exc.strerror or exc}",
                                     param_hint="--prompts-file") from None
        found += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not found:
        raise click.UsageError("give at least one prompt with -p PROMPT or --prompts-file F")
    return found


@click.command(name="batch")
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("-o", "--output", "out_dir", required=True, metavar="OUT_DIR",
              help="Job folder (created): job.json, ledger.sqlite, shards/, results/<scene>/<prompt>.gpkg.")
@click.option("-p", "--prompt", "prompts", multiple=True, metavar="PROMPT", help="A prompt; repeat for several.")
@click.option("--prompts-file", metavar="F", help="File with one prompt per line ('#' lines ignored).")
@click.option("--model", default="demo", show_default=True, metavar="M",
              help="'demo', a checkpoint folder, a Hugging Face repo id, or 'file.py:factory' (loaded once per worker).")
@click.option("--device", default="auto", show_default=True, callback=_device, metavar="D",
              help="auto, cpu, cuda or cuda:N.")
@gsd_option
@bands_option
@overlap_option
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Probability at or above which a pixel belongs to a target.")
@click.option("--min-area", type=click.FloatRange(min=0), metavar="M2", help="Drop polygons smaller than this (m²).")
@click.option("--simplify", type=click.FloatRange(min=0), metavar="TOL",
              help="Topology-preserving simplification tolerance in map units.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Chips per model call.")
@click.option("--chips-per-unit", type=click.IntRange(min=1), default=64, show_default=True,
              help="Chips per work unit (the most work lost per worker when a job is killed).")
@click.option("--stac", metavar="ITEMS.json", help="A STAC ItemCollection (or Item) JSON whose items are inputs.")
@click.option("--asset", metavar="NAME", help="The STAC asset to read (default: the items' only data asset).")
@click.option("--aoi", metavar="AREAS.gpkg",
              help="Polygon layer: only chips over these areas are processed and polygons are clipped to them.")
@click.option("--merge", metavar="ALL.gpkg|.parquet|.fgb", help="Also write one file across all scenes.")
@click.option("--merge-crs", metavar="EPSG:...",
              help="CRS of the merged file (default: .parquet/.fgb EPSG:4326; .gpkg one layer per CRS).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Run units in this process, or on a Ray cluster (pip install \"segearth-geo[ray]\").")
@click.option("--ray-address", metavar="auto|HOST:PORT", help="Ray cluster to join (default: start a local one).")
@click.option("--workers", type=click.IntRange(min=1), metavar="N",
              help="Model workers for --executor ray (default: one per GPU, else 2).")
@click.option("--dry-run", is_flag=True, help="Print scenes, chips, units and a time/memory estimate; write nothing.")
@click.option("--retry-failed", is_flag=True, help="Run only the units that failed in earlier runs.")
@click.option("--max-failures", type=click.IntRange(min=0), metavar="N",
              help="Stop scheduling units after more than N failures.")
@click.option("--restart", is_flag=True, help="Discard a different job found in OUT_DIR and start over.")
@click.option("--allow-large", is_flag=True, help="Accept a scene of more than 100,000 chips or a job of more than 1,000,000.")
@click.option("--json-progress", is_flag=True, hidden=True,
              help="Print progress events and the final report as JSON lines on stdout (for the QGIS plugin).")
@click.pass_context
def command(ctx: click.Context, inputs: tuple[str, ...], out_dir: str, prompts: tuple[str, ...],
            prompts_file: str | None, model: str, device: str, gsd, bands, overlap, threshold: float, min_area,
            simplify, batch_size: int, chips_per_unit: int, stac, asset, aoi, merge, merge_crs, executor: str,
            ray_address, workers, dry_run: bool, retry_failed: bool, max_failures, restart: bool, allow_large: bool,
            json_progress: bool) -> None:
    """Segment every INPUT (paths, globs, @list.txt, GDAL sources) by every prompt into OUT_DIR.

    Interrupted jobs resume when the same command runs again; finished units are not redone.
    """
    from dataclasses import asdict

    from segearth_geo.batch import run_batch
    from segearth_geo.errors import SegEarthGeoError

    if not inputs and stac is None:
        raise click.UsageError("give at least one INPUT or --stac ITEMS.json")
    quiet = bool((ctx.obj or {}).get("quiet"))
    if json_progress:
        def progress(event):
            click.echo(json.dumps({"type": "progress", **asdict(event)}))
    else:
        progress = not quiet
    report = run_batch(
        list(inputs), _prompts(prompts, prompts_file), out_dir, model=model, executor=executor, stac=stac, asset=asset,
        aoi=aoi, merge=merge, merge_crs=merge_crs, ray_address=ray_address, workers=workers, device=device,
        overlap=overlap, gsd=gsd, bands=bands, threshold=threshold, min_area=min_area, simplify=simplify,
        batch_size=batch_size, chips_per_unit=chips_per_unit, dry_run=dry_run, retry_failed=retry_failed,
        max_failures=max_failures, restart=restart, allow_large=allow_large, progress=progress)
    if json_progress:
        click.echo(json.dumps({"type": "report", **report.to_dict()}))
    elif not quiet or not report.ok:
        click.echo(report.to_text(), err=True)
    if not report.ok:
        raise SegEarthGeoError(f"{len(report.failures)} unit(s) failed (listed above); fix the inputs and rerun "
                               "with --retry-failed")
