"""``segearth-geo serve --model M``: serve a model over HTTP to many clients (see docs/serve.md).

The server options come from :class:`~segearth_geo.serve.config.ServeOptions`, the model's from
:class:`~segearth_geo.params.LoadOptions` (``--model --device --dtype --score-threshold --cache-mb --template``);
``--batch-size`` is the server's (chips per model call over all clients). The token is read from ``--token-file``
or ``SEGEARTH_TOKEN``, never from a command-line value.
"""

from __future__ import annotations

from dataclasses import fields

import click
from segearth_geo_cli.options import load_options, load_params, option_for

from segearth_geo.serve.config import ServeOptions


def serve_options(func):
    for f in reversed(fields(ServeOptions)):
        func = option_for(ServeOptions, f.name)(func)
    return func


@click.command(name="serve")
@load_options()
@serve_options
def command(**values) -> None:
    """Load --model once per GPU and serve it over HTTP: clients use --model http://HOST:PORT.

    Binds to 127.0.0.1 unless --host says otherwise (another address needs a token). SIGTERM or Ctrl-C drains:
    requests in progress are answered, then the server exits.
    """
    from segearth_geo.errors import UsageError
    from segearth_geo.serve import is_remote_spec
    from segearth_geo.serve.server import run_server

    options = ServeOptions(**{k: values.pop(k) for k in ServeOptions.names()}).check("cli")
    load = load_params(values)
    if is_remote_spec(load.model):
        raise UsageError("--model of serve must be a model this machine runs, not another server")
    run_server(load, options, announce=lambda line: click.echo(line))
