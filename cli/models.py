"""``segearth-geo models``: the known models and aliases, their facts, cache state and the device they would use."""

from __future__ import annotations

import json

import click
from segearth_geo_cli.options import device_option


@click.command(name="models")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of text.")
def command(device: str, as_json: bool) -> None:
    """List the models --model accepts by name: hub id, licence, size, native chip size, strengths, cached?"""
    from segearth_geo.model.registry import list_models, supported_forms

    rows = list_models(device=device)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2, ensure_ascii=False))
        return
    for row in rows:
        click.echo(f"{row.alias}  [{row.backend}]")
        click.echo(f"    hub id: {row.hub_id}   licence: {row.licence}")
        click.echo(f"    parameters: {row.parameters}   download: {row.download}   native chip: {row.chip_size} px   "
                   f"trained on: {row.gsd} per pixel")
        click.echo(f"    good at: {row.strengths}")
        click.echo(f"    cached locally: {row.cached}   device: {row.device}")
    click.echo(f"\n--model also takes {supported_forms()}.")
