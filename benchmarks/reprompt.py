"""Re-prompting benchmark: the same view prompted k times, with the per-chip image cache on and off.

Two parts (each prints a table and the ratios the README quotes):

1. ``--part model``: one SegEarth-R2 preset with random weights, ``--chips`` chips at batch
   ``--batch-size``, prompted with k = 1, 2, 4 different prompts one after another on the same
   segmenter object. Per prompt: seconds and the stages (vision towers = SigLIP + Swin/pixel decoder,
   prefill, decode, mask decoder). Cache on vs off (``cache_mb=0``)::

       python benchmarks/reprompt.py --part model --preset segearth-r2-3b --device cpu --chips 1 --batch-size 1 --off-k 2

2. ``--part scene``: the bundled demo model on a sample scene through ``segment_raster``: a cold
   segmenter runs prompt A, then prompt B on the same (warm) segmenter, then prompt B on a new cold
   segmenter; segmenter time only (the engine's reading and vectorising are timed separately).
   Also k prompts in one pass (``segment_raster(source, [p1, ..., pk])``) vs k separate runs::

       python benchmarks/reprompt.py --part scene --scene sample_tiles/synthearth_city.tif

With ``--forced-answer-length K`` (model part) every chip generates exactly K ids, the last one
``[SEG]``, so random weights exercise decode and the mask branch as a real answer would.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from segearth_geo.model.device import resolve_device
from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter, StageTimes
from segearth_geo.model.testing import random_chips, random_r2

PROMPTS = ["Find all buildings with a red roof next to the river.", "the largest building",
           "all the roads and parking lots", "where could a helicopter land?"]
GROUPS = {  # stage -> what the README calls it
    "vision towers": ("siglip", "mask_features"),
    "prefill": ("prefill",),
    "decode": ("decode", "seg_forward"),
    "mask decoder": ("mask_decoder",),
}


def _timed_prompts(segmenter: SegEarthR2Segmenter, chips, prompts: list[str]) -> list[dict]:
    rows = []
    for prompt in prompts:
        segmenter.stage_times = StageTimes()
        started = time.perf_counter()
        segmenter.predict(chips, [prompt] * len(chips))
        seconds = time.perf_counter() - started
        stages = segmenter.stage_times.seconds
        row = {"prompt": prompt, "seconds": seconds}
        for name, members in GROUPS.items():
            row[name] = sum(stages.get(m, 0.0) for m in members)
        rows.append(row)
    return rows


def model_part(args) -> None:
    device, dtype = resolve_device(args.device, {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype])
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = random_r2(args.preset, 0, device, dtype)
    chips = random_chips(model.config.mask.image_size, args.chips, seed=0)
    print(f"# {args.preset}, random weights, {device} {str(dtype).replace('torch.', '')}, {args.chips} chip(s) of "
          f"{model.config.mask.image_size} px, batch {args.batch_size}, forced answer {args.forced_answer_length} ids, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    if not args.no_warmup:  # one untimed run on other pixels: one-time allocations and kernel selection
        warm = SegEarthR2Segmenter(model, tokenizer, device=device, dtype=dtype, batch_size=args.batch_size, cache_mb=0)
        warm.forced_answer_length = args.forced_answer_length
        warm.predict(random_chips(model.config.mask.image_size, 1, seed=99), [PROMPTS[0]])
        del warm
    print("| cache | prompt # | seconds | vision towers s | prefill s | decode s | mask decoder s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    k_max = max(args.k)
    totals = {}
    for label, cache_mb, count in (("on", None, k_max), ("off", 0, min(k_max, args.off_k))):
        if label == "off" and count < 1:
            continue
        # k prompts on one segmenter object = the first k rows: one run of the largest k covers every k.
        segmenter = SegEarthR2Segmenter(model, tokenizer, device=device, dtype=dtype, batch_size=args.batch_size,
                                        cache_mb=cache_mb)
        segmenter.forced_answer_length = args.forced_answer_length
        rows = _timed_prompts(segmenter, chips, PROMPTS[:count])
        for n, row in enumerate(rows, 1):
            print(f"| {label} | {n} | {row['seconds']:.2f} | {row['vision towers']:.2f} | "
                  f"{row['prefill']:.2f} | {row['decode']:.2f} | {row['mask decoder']:.3f} |")
        totals[label] = [r["seconds"] for r in rows]
        if label == "on":
            print(f"# cache after {count} prompts: {segmenter.cache.stats().summary()}")
        del segmenter
    on, off = totals.get("on", []), totals.get("off", [])
    if len(on) > 1:
        print(f"cache on: second prompt / first = {on[1] / on[0]:.3f}")
    if len(off) > 1:
        print(f"cache off: second prompt / first = {off[1] / off[0]:.3f}")
    for k in args.k:
        if k <= len(on):
            uncached = sum(off[:k]) if k <= len(off) else k * (off[0] if off else on[0])
            print(f"k={k}: {sum(on[:k]):.1f} s with the cache vs {uncached:.1f} s without "
                  f"({'measured' if k <= len(off) else 'k x the uncached first prompt'}): "
                  f"ratio {sum(on[:k]) / uncached:.3f}")


class _TimedSegmenter:
    """Wraps a segmenter and adds up the seconds spent inside ``segment`` (the model's share of a run)."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds = inner, 0.0
        self.chip_size = inner.chip_size

    def segment(self, chips, prompt):
        started = time.perf_counter()
        try:
            return self.inner.segment(chips, prompt)
        finally:
            self.seconds += time.perf_counter() - started

    def cache_stats(self):
        return self.inner.cache_stats()


def scene_part(args) -> None:
    from segearth_geo.engine import segment_raster
    from segearth_geo.model.loading import load_segmenter

    def cold():
        return _TimedSegmenter(load_segmenter("demo", device=args.device, batch_size=args.batch_size))

    a, b = PROMPTS[1], PROMPTS[2]
    warm = cold()
    started = time.perf_counter()
    segment_raster(args.scene, a, segmenter=warm, batch_size=args.batch_size)
    first_wall, first_model = time.perf_counter() - started, warm.seconds
    warm.seconds = 0.0
    started = time.perf_counter()
    segment_raster(args.scene, b, segmenter=warm, batch_size=args.batch_size)
    second_wall, second_model = time.perf_counter() - started, warm.seconds
    fresh = cold()
    started = time.perf_counter()
    segment_raster(args.scene, b, segmenter=fresh, batch_size=args.batch_size)
    cold_wall, cold_model = time.perf_counter() - started, fresh.seconds
    stats = warm.cache_stats()
    print(f"# demo model on {args.scene}, {args.device}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print("| run | wall s | segmenter s |")
    print("|---|---:|---:|")
    print(f"| prompt A, cold segmenter | {first_wall:.2f} | {first_model:.2f} |")
    print(f"| prompt B, same segmenter (cache warm) | {second_wall:.2f} | {second_model:.2f} |")
    print(f"| prompt B, cold segmenter | {cold_wall:.2f} | {cold_model:.2f} |")
    print(f"second prompt segmenter time / cold = {second_model / cold_model:.3f} "
          f"(wall {second_wall / cold_wall:.3f}); cache: {stats['hits']} hits, {stats['bytes'] / 2**20:.0f} MiB")
    for k in args.k:
        if k < 2:
            continue
        prompts = PROMPTS[:k]
        one = cold()
        started = time.perf_counter()
        segment_raster(args.scene, prompts, segmenter=one, batch_size=args.batch_size)
        together = time.perf_counter() - started
        started = time.perf_counter()
        for prompt in prompts:
            segment_raster(args.scene, prompt, segmenter=cold(), batch_size=args.batch_size)
        separate = time.perf_counter() - started
        print(f"k={k}: one pass {together:.2f} s vs {k} separate runs (cold segmenters, load excluded) "
              f"{separate:.2f} s: ratio {together / separate:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["model", "scene"], default="model")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--chips", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 1 (model part), 8 (scene part)")
    parser.add_argument("--forced-answer-length", type=int, default=8)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--off-k", type=int, default=4, help="prompts run with the cache off (0: none)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run")
    parser.add_argument("--scene", default="sample_tiles/synthearth_city.tif")
    args = parser.parse_args()
    if args.batch_size is None:
        args.batch_size = 1 if args.part == "model" else 8
    model_part(args) if args.part == "model" else scene_part(args)


if __name__ == "__main__":
    main()
