"""Entry point of the ``segearth-geo`` command.

Each sub-command lives in its own module of this package and exposes a click command
named ``command``; modules are imported only when their command runs, so ``--help`` and
``--version`` stay instant. This is the one place where library errors become a one-line
message and a non-zero exit.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading

import click

from segearth_geo._version import __version__
from segearth_geo.errors import SegEarthGeoError, UsageError
from segearth_geo.params import naming

# command name -> (module in this package, one-line help shown by `segearth-geo --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "segment": ("segment", "Segment a raster by a text prompt and write labeled polygons."),
    "info": ("info", "Show what the engine will see in a raster (CRS, GSD, bands, chips)."),
    "synth": ("synth", "Write a SynthEarth dataset split or one large georeferenced scene."),
    "train": ("train", "Train SegEarth-R2 from a YAML config."),
    "merge": ("merge", "Merge a training checkpoint into an inference checkpoint."),
    "eval": ("evaluate", "Evaluate a model on a benchmark (gIoU / cIoU)."),
    "model-check": ("model_check", "Compare SegEarth-R2 prompt templates on a checkpoint (loss, gIoU per variant)."),
    "worker": ("worker", "Serve segmentation requests as JSON lines on stdin/stdout."),
    "models": ("models", "List the known models (hub id, licence, size, chip size, cached?, device)."),
    "batch": ("batch", "Segment many rasters by many prompts into one resumable job folder (local or Ray)."),
    "batch-status": ("batch_status", "Show the progress and failures of a batch job from its ledger."),
    "serve": ("serve", "Serve a model over HTTP to many clients (--model http://HOST:PORT on their side)."),
}


# Exit codes (README "Exit codes"): the same for every command.
EXIT_CODES = {
    0: "success",
    1: "failure: missing/corrupt raster, model or checkpoint error, output folder missing or unwritable, write error",
    2: "usage error: bad option or value, empty prompt, bbox outside the raster, too many chips, output exists "
       "without --overwrite, unknown output extension, output names a folder",
    130: "interrupted (Ctrl-C)",
    143: "terminated (SIGTERM)",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"segearth_geo_cli.{COMMANDS[cmd_name][0]}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="segearth-geo")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr; no progress bar.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Prompt a georeferenced raster in plain language and get labeled polygons back."""
    setup_logging(verbose, quiet)
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet


class _OwnWarningsOnly(logging.Filter):
    """Default verbosity: this project's warnings and everyone's errors; other libraries' warnings
    (Python ``warnings``, transformers, rasterio, …) reach the terminal only with ``-v``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name.startswith(("segearth_geo", "segearth_geo_cli"))


def setup_logging(verbose: int, quiet: bool) -> None:
    """Log to stderr: ``-q`` errors only, default our warnings, ``-v`` info from every library, ``-vv`` debug.

    Python warnings are routed into logging (logger ``py.warnings``), so they follow the same rule
    instead of interleaving with the progress bar. transformers keeps a handler of its own: its
    verbosity is set here, before it is imported, to match.
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if verbose == 0:
        handler.addFilter(_OwnWarningsOnly())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error" if verbose == 0 else ("info", "debug")[min(verbose, 2) - 1])
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1" if verbose == 0 else "0")


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C (a BaseException, so no `except Exception` swallows it); temporary
    files are removed and nothing half-written stays."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; library errors become one line on stderr and an exit code (see ``EXIT_CODES``)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with naming("cli"):  # library messages name options as they are typed here (--min-area)
            cli.main(args=argv, prog_name="segearth-geo", standalone_mode=False)
    except Terminated:
        click.echo("Terminated.", err=True)
        return 143
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.UsageError as exc:
        # One line, like library usage errors; `--help` shows the full usage.
        hint = f" (see 'segearth-geo {exc.ctx.command.name} --help')" if exc.ctx and exc.ctx.parent else ""
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except UsageError as exc:
        click.echo(f"Error: {exc}", err=True)
        return 2
    except SegEarthGeoError as exc:
        click.echo(f"Error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
