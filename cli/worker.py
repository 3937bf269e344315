"""``segearth-geo worker``: serve segmentation requests as JSON lines on stdin/stdout."""

from __future__ import annotations

import click
from segearth_geo_cli.options import load_options, load_params


@click.command(name="worker")
@load_options(model_default=None, batch_size=True)
def command(**values) -> None:
    """Serve requests (ping, load, segment, batch, cancel, shutdown) as JSON lines; see docs/worker-protocol.md.

    Without --model the worker waits for a "load" request; the load options given here are then ignored.
    """
    from segearth_geo.worker import run_worker

    given = values.get("model") is not None
    load = load_params(values)  # checked even without --model: a bad --device fails at once
    run_worker(load=load if given else None)
