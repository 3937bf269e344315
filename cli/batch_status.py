"""``segearth-geo batch-status OUT_DIR [--json]``: read a batch job's ledger (running or finished)."""

from __future__ import annotations

import json

import click


@click.command(name="batch-status")
@click.argument("out_dir", metavar="OUT_DIR")
@click.option("--json", "as_json", is_flag=True, help="Print the state as one JSON object.")
def command(out_dir: str, as_json: bool) -> None:
    """Show what the batch job in OUT_DIR has done: units, chips, failures, what runs now."""
    from segearth_geo.batch.status import job_status

    status = job_status(out_dir)
    click.echo(json.dumps(status.to_dict(), indent=2) if as_json else status.to_text())
