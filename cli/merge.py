"""``segearth-geo merge``: training checkpoint → inference checkpoint (official merged layout)."""

from __future__ import annotations

from pathlib import Path

import click

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@click.command("merge")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dtype", type=click.Choice(sorted(DTYPES)), default=None,
              help="Cast the weights before writing (default: keep float32).")
def command(checkpoint: Path, output: Path, dtype: str | None) -> None:
    """Fold LoRA into the base weights of CHECKPOINT (a step-N folder or a run folder) and write OUTPUT.

    OUTPUT loads with `--model OUTPUT` in segment/eval and with `load_pretrained`.
    """
    import torch

    from segearth_geo.training.fold_lora import merge_checkpoint

    out = merge_checkpoint(checkpoint, output, dtype=getattr(torch, dtype) if dtype else None)
    click.echo(f"inference checkpoint: {out}")
