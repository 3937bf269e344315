"""``segearth-geo batch INPUT... -o OUT_DIR -p PROMPT``: many scenes x prompts, resumable.

A thin wrapper of :func:`segearth_geo.batch.run_batch`: parses options (the same run parameters and load
options as ``segment``, plus the job's :class:`~segearth_geo.batch.config.BatchOptions`), prints the
summary, exits 1 when a unit failed (the summary lists them). Run the same command again after any
interruption to resume. ``--json-progress`` prints one JSON object per progress event and the final report
on stdout.
"""

from __future__ import annotations

import json
from dataclasses import fields

import click
from segearth_geo_cli.options import load_options, load_params, option_for, segment_options, segment_params

from segearth_geo.batch.config import BatchOptions

# A job has no bbox (its --aoi does that); --allow-large replaces --max-chips; its raster outputs are file names
# written in each scene's results folder (options of their own below).
NOT_BATCH = ("bbox", "bbox_crs", "max_chips", "raster_out", "labels_out")
RASTER_OPTIONS = (
    click.option("--raster-out", "raster_out", metavar="NAME.tif",
                 help="Also write each scene's stitched probability (one float32 band per prompt) as "
                      "results/<scene>/NAME.tif, a Cloud-Optimized GeoTIFF."),
    click.option("--labels-out", "labels_out", metavar="NAME.tif",
                 help="Also write each scene's polygon ids (one int32 band per prompt, the id column of its "
                      "files) as results/<scene>/NAME.tif."),
)


def read_prompts_file(path: str) -> list[str]:
    """One prompt per line of a UTF-8 text file (a byte-order mark is ignored; ``#`` lines are comments)."""
    try:
        data = open(path, "rb").read()  # noqa: SIM115
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="--prompts-file") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                                 "save it as UTF-8", param_hint="--prompts-file") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def batch_options(func):
    for f in reversed(fields(BatchOptions)):
        func = option_for(BatchOptions, f.name)(func)
    return func


@click.command(name="batch")
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("-o", "--output", "out_dir", required=True, metavar="OUT_DIR",
              help="Job folder (created): job.json, ledger.sqlite, shards/, results/<scene>/<prompt>.gpkg.")
@click.option("-p", "--prompt", "prompts", multiple=True, metavar="PROMPT", help="A prompt; repeat for several.")
@click.option("--prompts-file", metavar="F", help="UTF-8 file with one prompt per line ('#' lines ignored).")
@load_options()
@segment_options(exclude=NOT_BATCH)
@RASTER_OPTIONS[0]
@RASTER_OPTIONS[1]
@batch_options
@click.option("--json-progress", is_flag=True, hidden=True,
              help="Print progress events and the final report as JSON lines on stdout.")
@click.pass_context
def command(ctx: click.Context, inputs: tuple[str, ...], out_dir: str, prompts: tuple[str, ...],
            prompts_file: str | None, json_progress: bool, **values) -> None:
    """Segment every INPUT (paths, globs, @list.txt, GDAL sources) by every prompt into OUT_DIR.

    Interrupted jobs resume when the same command runs again; finished units are not redone.
    """
    from dataclasses import asdict

    from segearth_geo.batch import run_batch
    from segearth_geo.errors import SegEarthGeoError

    found = list(prompts) + (read_prompts_file(prompts_file) if prompts_file is not None else [])
    if not found:
        raise click.UsageError("give at least one prompt with -p PROMPT or --prompts-file F")
    params = segment_params(values)
    load = load_params(values, params)
    options = BatchOptions(**{k: values.pop(k) for k in BatchOptions.names()}).check("cli")
    if not inputs and options.stac is None:
        raise click.UsageError("give at least one INPUT or --stac ITEMS.json")
    quiet = bool((ctx.obj or {}).get("quiet"))
    if json_progress:
        def progress(event):
            click.echo(json.dumps({"type": "progress", **asdict(event)}))
    else:
        progress = not quiet
    report = run_batch(list(inputs), found, out_dir, load=load, params=params, options=options, progress=progress,
                       style="cli")
    if json_progress:
        click.echo(json.dumps({"type": "report", **report.to_dict()}))
    elif not quiet or not report.ok:
        click.echo(report.to_text(), err=True)
    if not report.ok and report.dry_run:
        raise SegEarthGeoError(f"the dry run found {len(report.failures)} problem(s) (listed above); fix them before "
                               "running the job")
    if not report.ok:
        raise SegEarthGeoError(f"{len(report.failures)} unit(s) failed (listed above); fix the inputs and rerun "
                               "with --retry-failed")
