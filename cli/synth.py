"""``segearth-geo synth``: write a SynthEarth dataset split, or one large georeferenced scene.

Dataset split (LaSeRS layout ``OUT_DIR/<split>/images``, ``OUT_DIR/<split>/annotations/<split>.json``)::

    segearth-geo synth data/synthearth --split train --n 2000 --seed 0 [--size 256]

Scene (``OUT_DIR/<name>.tif`` plus ``OUT_DIR/<name>_truth.gpkg``)::

    segearth-geo synth sample_tiles --scene --width 2560 --height 2560 --gsd 0.5 \\
        --crs EPSG:32650 --seed 1 --theme city
"""

from __future__ import annotations

import click

from segearth_geo.errors import UsageError

SPLIT_ONLY = ("split", "n", "size")
SCENE_ONLY = ("width", "height", "gsd", "crs", "theme", "name", "compress", "block", "sparse")


class _LazyBar:
    """A tqdm bar created on the first update, so that argument errors print nothing but their message."""

    def __init__(self, total: int, unit: str, desc: str, disable: bool) -> None:
        self.kwargs = {"total": total, "unit": unit, "desc": desc, "disable": disable}
        self.bar = None

    def update(self, n: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(**self.kwargs)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.command(name="synth")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--split", default="train", show_default=True, help="Dataset split: train, val or test.")
@click.option("--n", "n", type=int, default=None, help="Number of samples to write (dataset mode).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (the only source of randomness).")
@click.option("--size", type=int, default=256, show_default=True, help="Sample side in pixels (dataset mode).")
@click.option("--scene", is_flag=True, help="Write one large georeferenced GeoTIFF scene instead of a dataset split.")
@click.option("--width", type=int, default=None, help="Scene width in pixels (scene mode).")
@click.option("--height", type=int, default=None, help="Scene height in pixels (scene mode).")
@click.option("--gsd", type=float, default=0.5, show_default=True, help="Scene ground sampling distance, metres per pixel.")
@click.option("--crs", default="EPSG:32650", show_default=True, help="Scene CRS: a projected CRS in metres.")
@click.option("--theme", default="city", show_default=True, help="Scene theme: city, airport, harbour or rural.")
@click.option("--name", default=None, help="Scene file stem (default synthearth_<theme>).")
@click.option("--compress", default="jpeg", show_default=True, help="Scene compression: jpeg (YCbCr) or deflate.")
@click.option("--block", type=int, default=1024, show_default=True, help="Scene render block in pixels (multiple of 256).")
@click.option("--sparse", is_flag=True,
              help="Scene mode, harbour or rural theme: a few targets far apart (ships on open sea, tennis courts in "
                   "fields), the kind of scene --strategy zoom is for.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.pass_context
def command(ctx: click.Context, out_dir: str, scene: bool, overwrite: bool, seed: int, **options) -> None:
    """Write a SynthEarth dataset split (default) or, with --scene, one large GeoTIFF scene and its truth GeoPackage."""
    quiet = bool((ctx.obj or {}).get("quiet"))
    source = ctx.get_parameter_source
    wrong = [k for k in (SPLIT_ONLY if scene else SCENE_ONLY) if source(k) == click.core.ParameterSource.COMMANDLINE]
    if wrong:
        mode = "--scene" if scene else "dataset"
        raise UsageError(f"option(s) {', '.join('--' + k for k in wrong)} do not apply in {mode} mode")
    if scene:
        from segearth_geo.synthetic.geoscene import write_scene

        if options["width"] is None or options["height"] is None:
            raise UsageError("--scene needs --width and --height (pixels)")
        block = options["block"]
        blocks = -(-max(options["width"], 1) // max(block, 1)) * -(-max(options["height"], 1) // max(block, 1))
        bar = _LazyBar(blocks, "block", "render", quiet)
        try:
            summary = write_scene(
                out_dir, options["width"], options["height"], gsd=options["gsd"], crs=options["crs"], seed=seed,
                theme=options["theme"], name=options["name"], block=block, compress=options["compress"],
                overwrite=overwrite, progress=bar.update, sparse=options["sparse"],
            )
        finally:
            bar.close()
        if not quiet:
            click.echo(f"wrote {summary.path} ({summary.width}x{summary.height} px, {summary.gsd} m, {summary.crs}) "
                       f"and {summary.truth_path} ({summary.n_objects} objects, {summary.n_parts} parts) "
                       f"in {summary.seconds:.1f} s")
        return
    from segearth_geo.synthetic.dataset import write_split

    if options["n"] is None:
        raise UsageError("dataset mode needs --n (number of samples); use --scene for a GeoTIFF scene")
    bar = _LazyBar(max(options["n"], 0), "sample", options["split"], quiet)
    try:
        split = write_split(out_dir, options["split"], options["n"], seed=seed, size=options["size"],
                            overwrite=overwrite, progress=bar.update)
    finally:
        bar.close()
    if not quiet:
        click.echo(f"wrote {split.n_samples} samples ({split.n_masks} masks) to {split.annotation_path}")
