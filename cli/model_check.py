"""``segearth-geo model-check CHECKPOINT --data DIR --dataset lasers``: which prompt template fits a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import click
from segearth_geo_cli.options import device_option

DATASET_NAMES = ["lasers", "synthearth", "rrsisd", "refsegrs", "earthreason", "risbench"]


def _templates(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise click.BadParameter("give comma-separated template names, e.g. training,llama2")
    return names


@click.command("model-check")
@click.argument("checkpoint")
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Folder holding the dataset (LaSeRS: <DIR>/<split>/… or <DIR>/rs_reason_seg/LaSeRS/<split>/…).")
@click.option("--dataset", type=click.Choice(DATASET_NAMES, case_sensitive=False), default="lasers",
              show_default=True, help="Benchmark format of --data.")
@click.option("--split", default="test", show_default=True, help="Split to read the samples from.")
@click.option("--samples", type=click.IntRange(min=1), default=16, show_default=True,
              help="Score the first N usable samples.")
@click.option("--templates", callback=_templates, default=None, metavar="A,B,…",
              help="Template variants to compare (default: all: training, training-vision-tags, llama2, "
                   "llama2-question).")
@click.option("--mode", type=click.Choice(["teacher-forced", "generate"]), default="teacher-forced",
              show_default=True, help="How the masks for gIoU are made (the loss is always teacher-forced).")
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Samples per forward pass.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table.")
@click.pass_context
def command(ctx: click.Context, checkpoint: str, data_root: Path, dataset: str, split: str, samples: int,
            templates: list[str] | None, mode: str, device: str, batch_size: int | None, as_json: bool) -> None:
    """Teacher-forced loss and gIoU of a SegEarth-R2 CHECKPOINT for each prompt template variant.

    The template the checkpoint was trained with has the lowest loss; it is named under the table.
    Load it with that template by setting "template" in the checkpoint's config.json "segearth_geo"
    block (or template=... in Python).
    """
    from segearth_geo.evaluation.model_check import check_checkpoint

    quiet = bool((ctx.obj or {}).get("quiet"))
    result = check_checkpoint(checkpoint, data_root, dataset.lower(), split, samples=samples, templates=templates,
                              mode=mode, device=device, batch_size=batch_size, progress=not quiet and not as_json)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        click.echo(result.to_table())
    if result.skipped and not quiet:
        click.echo(f"skipped samples: {', '.join(f'{k}: {v}' for k, v in sorted(result.skipped.items()))}", err=True)
