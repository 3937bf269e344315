"""``segearth-geo eval``: gIoU / cIoU of a model on a benchmark split."""

from __future__ import annotations

from pathlib import Path

import click
from segearth_geo_cli.options import device_option

DATASET_NAMES = ["lasers", "rrsisd", "refsegrs", "earthreason", "risbench", "synthearth"]


@click.command("eval")
@click.option("--model", "model", default="demo", show_default=True,
              help='"demo", a checkpoint folder, a Hugging Face repo id, or "file.py:factory".')
@click.option("--dataset", type=click.Choice(DATASET_NAMES, case_sensitive=False), required=True,
              help="Benchmark format of --data-root (synthearth = LaSeRS layout written by `segearth-geo synth`).")
@click.option("--data-root", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Folder holding the dataset.")
@click.option("--split", default="test", show_default=True, help="Split to evaluate (train, val, test).")
@click.option("--mode", type=click.Choice(["generate", "teacher-forced"]), default="generate", show_default=True,
              help="generate: the model writes its own answer; teacher-forced: the reference answer's [SEG]s are used.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write overall, per-dimension and per-sample results to this JSON file.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Samples per forward pass.")
@device_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N samples.")
@click.pass_context
def command(ctx: click.Context, model: str, dataset: str, data_root: Path, split: str, mode: str,
            json_path: Path | None, batch_size: int, device: str, limit: int | None) -> None:
    """Evaluate a model on a benchmark split and print gIoU / cIoU (overall and per LaSeRS dimension)."""
    from segearth_geo.evaluation.evaluate import evaluate_benchmark

    quiet = bool((ctx.obj or {}).get("quiet"))
    result = evaluate_benchmark(
        model, dataset.lower(), data_root, split, mode=mode, batch_size=batch_size, device=device,
        limit=limit, progress=not quiet, json_path=json_path,
    )
    click.echo(result.to_markdown())
    if result.skipped:
        click.echo(f"skipped samples: {', '.join(f'{k}: {v}' for k, v in sorted(result.skipped.items()))}", err=True)
    if json_path is not None and not quiet:
        click.echo(f"wrote {json_path}", err=True)
