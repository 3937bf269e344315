"""Click options built from the library's parameter declarations (:mod:`segearth_geo.params`).

Nothing here declares a range or a type of its own: each option is made from its field's
:class:`~segearth_geo.params.Rule` (metavar, help, choices), the text is parsed into Python values by click
(``int``/``float``/``str``), and every rule is then checked once by
:meth:`~segearth_geo.params.SegmentParams.check` / :meth:`~segearth_geo.params.LoadOptions.check` with the
option's own name in the message (``--cache-mb must be a finite number ...``; exit code 2).

Usage::

    @click.command()
    @raster_argument
    @segment_options()                       # every SegmentParams field (--overlap --gsd --bands --bbox ...)
    @load_options()                          # --model --device --dtype --score-threshold --cache-mb --template
    def command(raster, **values):
        params = segment_params(values)      # SegmentParams, checked
        load = load_params(values, params)   # LoadOptions, checked (--batch-size feeds both)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields, replace
from typing import Any

import click

from segearth_geo.params import SECRET_OPTIONS, LoadOptions, SegmentParams, rule_of
from segearth_geo.serve import is_remote_spec
from segearth_geo.serve.config import TOKEN_ENV

raster_argument = click.argument("raster", metavar="RASTER")
"""The scene: a path or any GDAL source (``/vsicurl/…``, ``https://…``); checked by the library."""

chip_size_option = click.option(
    "--chip-size", type=click.IntRange(min=1), default=None, metavar="PX",
    help="Chip side in pixels (default: the --model's; 1024 for SegEarth-R2).")

_CLICK_TYPES = {"count": click.INT, "number": click.FLOAT, "flag": click.BOOL}


def option_for(cls: type, name: str, default: Any = MISSING, callback: Callable | None = None) -> Callable:
    """One click option for field ``name`` of ``cls`` (its default: the field's unless ``default`` is given)."""
    rule = rule_of(cls, name)
    declared = next(f.default for f in fields(cls) if f.name == name)
    default = declared if default is MISSING else default
    flag = rule.flag or "--" + name.replace("_", "-")
    if rule.kind == "flag":
        return click.option(flag, name, is_flag=True, default=bool(default), help=rule.help)
    # A choice with a metavar of its own (dtype: its aliases are accepted, not listed) is checked by its rule.
    listed = rule.kind == "choice" and rule.metavar is None
    kind = click.Choice(rule.choices) if listed else _CLICK_TYPES.get(rule.kind, click.STRING)
    if isinstance(default, tuple):
        default = ",".join(str(v) for v in default)
    return click.option(flag, name, type=kind, default=default, show_default=default is not None,
                        metavar=None if listed else rule.metavar, help=rule.help, callback=callback)


def _apply(func: Callable, options: Iterable[Callable]) -> Callable:
    for option in reversed(list(options)):  # first option first in --help
        func = option(func)
    return func


SCENE_FIELDS = ("bands", "bbox", "bbox_crs", "gsd")


def segment_options(exclude: Iterable[str] = ()) -> Callable[[Callable], Callable]:
    """Every :class:`SegmentParams` field as an option, except ``exclude``."""
    skip = set(exclude)
    return lambda func: _apply(func, [option_for(SegmentParams, f.name) for f in fields(SegmentParams)
                                      if f.name not in skip])


def scene_options(func: Callable) -> Callable:
    """``--bands --bbox --bbox-crs --gsd``: what a command that only reads a scene needs (``info``)."""
    return _apply(func, [option_for(SegmentParams, name) for name in SCENE_FIELDS])


overlap_option = option_for(SegmentParams, "overlap")


def load_options(model_default: Any = MISSING, exclude: Iterable[str] = (),
                 batch_size: bool = False) -> Callable[[Callable], Callable]:
    """Every :class:`LoadOptions` field except ``exclude``; ``--batch-size`` only with ``batch_size`` (commands
    that also take the run parameters use its ``--batch-size``, which bounds the model's forward pass too)."""
    skip = set(exclude) | set(SECRET_OPTIONS) | (set() if batch_size else {"batch_size"})
    options = [option_for(LoadOptions, f.name, model_default if f.name == "model" else MISSING)
               for f in fields(LoadOptions) if f.name not in skip]
    return lambda func: _apply(func, options)


def check_device(device: str) -> str:
    """``--device`` of a command that takes no other load option, checked like everywhere else."""
    return LoadOptions(device=device).check("cli").device


device_option = option_for(LoadOptions, "device", callback=lambda ctx, param, value: check_device(value))
"""``--device`` for commands that take only a device (``models``, ``model-check``, ``eval``), checked at once."""


def segment_params(values: dict[str, Any], base: SegmentParams | None = None) -> SegmentParams:
    """Pop the :class:`SegmentParams` fields out of a command's ``values`` and check them (CLI names)."""
    found = {name: values.pop(name) for name in SegmentParams.names() if name in values}
    given = {k: v for k, v in found.items() if v is not None}
    return replace(base or SegmentParams(), **given).check("cli")


def load_params(values: dict[str, Any], params: SegmentParams | None = None) -> LoadOptions:
    """Pop the :class:`LoadOptions` fields out of a command's ``values`` and check them (CLI names).

    With ``params``, the model's forward batch is the run's ``--batch-size``. A model server's token comes from
    ``SEGEARTH_TOKEN`` (the CLI has no option for it: a secret on a command line shows in process lists).
    """
    found = {name: values.pop(name) for name in LoadOptions.names() if name in values}
    given = {k: v for k, v in found.items() if v is not None}
    if params is not None:
        given.setdefault("batch_size", params.batch_size)
    if is_remote_spec(given.get("model")) and os.environ.get(TOKEN_ENV):
        given["token"] = os.environ[TOKEN_ENV]  # a secret: from the environment, never an option
    return LoadOptions(**given).check("cli")


__all__ = ["check_device", "chip_size_option", "device_option", "load_options", "load_params", "option_for",
           "overlap_option", "raster_argument", "scene_options", "segment_options", "segment_params"]
