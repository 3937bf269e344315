"""``segearth-geo train``: train SegEarth-R2 from a YAML config (keys: :class:`segearth_geo.training.config.TrainConfig`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("train")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="YAML file of training settings (key: value); every key is optional.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one setting, value parsed as YAML (repeatable): --set lr=2e-4 --set lora=false.")
@click.option("--resume", default=None, metavar="DIR|auto",
              help="Continue from a checkpoint folder, a run folder (its latest), or 'auto' (latest in output_dir).")
@click.pass_context
def command(ctx: click.Context, config_path: Path | None, overrides: tuple[str, ...], resume: str | None) -> None:
    """Train (or continue training) SegEarth-R2; multi-GPU with `torchrun --nproc-per-node N -m segearth_geo_cli.main train ...`.

    Writes <output_dir>/checkpoints/step-N (resumable), log.csv, tb/ (TensorBoard) and, at the end,
    the merged inference checkpoint <output_dir>/final. Ctrl-C saves a checkpoint first.
    """
    from segearth_geo.training.config import TrainConfig
    from segearth_geo.training.trainer import train

    config = TrainConfig.load(config_path, overrides)
    if (ctx.obj or {}).get("quiet"):
        config.progress = False
    try:
        result = train(config, resume=resume)
    except KeyboardInterrupt:
        click.echo(f"checkpoint saved in {Path(config.output_dir) / 'checkpoints'}; continue with --resume auto",
                   err=True)
        raise
    last = result.history[-1] if result.history else {}
    summary = ", ".join(f"{k} {last[k]:.4f}" for k in ("loss", "text", "bce", "dice", "attn") if k in last)
    click.echo(f"trained to step {result.step}" + (f" ({summary})" if summary else ""))
    if result.merged is not None:
        click.echo(f"inference checkpoint: {result.merged}")
