"""``segearth-geo worker``: serve segmentation requests as JSON lines on stdin/stdout."""

from __future__ import annotations

import click


@click.command(name="worker")
@click.option("--model", "-m", default=None, metavar="M",
              help="Model to load at start: 'demo', a checkpoint folder, a repo id or 'file.py:factory'. "
                   "Without it the worker waits for a \"load\" request.")
@click.option("--device", "-d", default="auto", show_default=True, metavar="D",
              help="auto, cpu, cuda or cuda:N.")
def command(model: str | None, device: str) -> None:
    """Serve requests (ping, load, segment, cancel, shutdown) as JSON lines; see docs/worker-protocol.md."""
    from segearth_geo.worker import run_worker

    run_worker(model=model, device=device)
