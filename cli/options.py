"""Click options shared by the commands that read a scene (``info``, ``segment``).

Each option parses its text into the value the library expects (``bands`` a tuple of
1-based ints, ``bbox`` four floats); bad text is a ``click.BadParameter`` (exit code 2).
Whether the values fit the raster (band count, bbox overlap, CRS) is checked by the
library, which raises ``UsageError`` (also exit code 2).

Usage::

    @click.command()
    @raster_argument
    @scene_options          # --bands --bbox --bbox-crs --gsd
    @overlap_option
    def command(raster, bands, bbox, bbox_crs, gsd, overlap): ...
"""

from __future__ import annotations

import math
from typing import Callable

import click


def _parse_bands(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        bands = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated band numbers such as 4,3,2, got {value!r}") from None
    if not 1 <= len(bands) <= 3:
        raise click.BadParameter(f"give 1 band (grey), 2 or 3 bands (R,G,B), got {len(bands)}")
    if any(b < 1 for b in bands):
        raise click.BadParameter(f"band numbers start at 1, got {value!r}")
    return bands


def _parse_bbox(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected four numbers minx,miny,maxx,maxy, got {value!r}") from None
    if len(parts) != 4:
        raise click.BadParameter(f"expected four numbers minx,miny,maxx,maxy, got {len(parts)}")
    if not all(math.isfinite(v) for v in parts):
        raise click.BadParameter(f"bbox values must be finite numbers, got {value!r}")
    minx, miny, maxx, maxy = parts
    if not (minx < maxx and miny < maxy):
        raise click.BadParameter(f"need minx < maxx and miny < maxy, got {value!r}")
    return minx, miny, maxx, maxy


def _check_crs(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from pyproj import CRS  # only when the option is used: keeps --help instant
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(value)
    except CRSError as exc:
        raise click.BadParameter(f"unknown CRS {value!r} (use e.g. EPSG:4326): {exc}") from None
    return value


raster_argument = click.argument("raster", metavar="RASTER")
"""The scene: a path or any GDAL source (``/vsicurl/…``, ``https://…``); checked by the library."""

bands_option = click.option(
    "--bands",
    callback=_parse_bands,
    metavar="B[,B,B]",
    help="1-based source bands shown as R,G,B, e.g. 4,3,2; one band is shown as grey, two as "
    "R=first,G=second,B=first. Default: the RGB colour interpretation, else the first three "
    "non-alpha bands (a raster with one or two shows its first band as grey).",
)
bbox_option = click.option(
    "--bbox",
    callback=_parse_bbox,
    metavar="MINX,MINY,MAXX,MAXY",
    help="Only process this area (in --bbox-crs, default the raster's CRS).",
)
bbox_crs_option = click.option(
    "--bbox-crs", callback=_check_crs, metavar="CRS", help="CRS of --bbox, e.g. EPSG:4326 (default: the raster's CRS)."
)
gsd_option = click.option(
    "--gsd",
    type=click.FloatRange(min=0, min_open=True),
    metavar="METRES",
    help="Resample reads to this ground distance in metres per pixel (default: the raster's own).",
)
overlap_option = click.option(
    "--overlap",
    type=click.IntRange(min=0),
    default=None,
    help="Pixels shared by neighbouring chips (context around each chip's core). "
    "Default: 1/8 of the chip size (128 for SegEarth-R2's 1024-px chips).",
)


chip_size_option = click.option(
    "--chip-size",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Chip side in pixels (the segmenter's input size; 1024 for SegEarth-R2).",
)


def scene_options(func: Callable) -> Callable:
    """Apply ``--bands --bbox --bbox-crs --gsd`` (in that ``--help`` order)."""
    for option in (gsd_option, bbox_crs_option, bbox_option, bands_option):
        func = option(func)
    return func
