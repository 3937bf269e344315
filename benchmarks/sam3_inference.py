"""SAM3 inference benchmark at the real size (``Sam3Config()`` = facebook/sam3's detector), random weights.

Speed does not depend on the weights' values. Reports the seconds per 1008-px chip through
:class:`~segearth_geo.model.sam3.Sam3Segmenter` (text encoding cached after the first call, as in a run),
split into the vision encoder (once per chip) and the rest (DETR encoder/decoder + mask decoder + mask
post-processing, once per chip and concept), plus the process's CPU time per chip, build time and peak memory.

CPU, one chip, one concept (what the test machine can run)::

    python benchmarks/sam3_inference.py --device cpu --chips 2 --concepts 1

GPU, bf16, batched::

    python benchmarks/sam3_inference.py --device cuda --dtype bf16 --chips 16 --batch-size 8 --concepts 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import torch

CONCEPTS = ["buildings", "swimming pools", "roads", "trees"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=[None, "fp32", "bf16", "fp16"])
    parser.add_argument("--chips", type=int, default=2, help="timed chips (after one warm-up chip)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--concepts", type=int, default=1, choices=range(1, len(CONCEPTS) + 1))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import Sam3Model

    from segearth_geo.model.device import resolve_device
    from segearth_geo.model.sam3 import Sam3Segmenter
    from segearth_geo.model.testing import clip_tokenizer, random_chips, sam3_config

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype)
    device, dtype = resolve_device(args.device, dtype)
    began = time.perf_counter()
    torch.manual_seed(args.seed)
    config = sam3_config("sam3")
    with torch.device(device):
        model = Sam3Model(config)
    # a byte-level CLIP BPE: its ids fit the real vocabulary
    segmenter = Sam3Segmenter(model, clip_tokenizer(), device=device, dtype=dtype, batch_size=args.batch_size)
    build_s = time.perf_counter() - began
    parameters = sum(p.numel() for p in model.parameters())

    size = segmenter.chip_size
    chips = random_chips(size, args.chips + 1, args.seed)
    prompt = ", ".join(CONCEPTS[: args.concepts])
    segmenter.segment(chips[:1], prompt)  # warm-up (and the text encoding, cached from here on)
    _sync(device)
    began, began_cpu = time.perf_counter(), time.process_time()
    segmenter.segment(chips[1:], prompt)
    _sync(device)
    total, total_cpu = time.perf_counter() - began, time.process_time() - began_cpu

    from segearth_geo.model.sam3.preprocess import prepare_chips

    pixels, _ = prepare_chips(chips[1:2], segmenter.preprocessing, device, dtype)
    with torch.inference_mode():
        _sync(device)
        began = time.perf_counter()
        segmenter.model.get_vision_features(pixel_values=pixels)
        _sync(device)
        vision = time.perf_counter() - began

    per_chip = total / args.chips
    report = {
        "model": "Sam3Config() (facebook/sam3 detector), random weights",
        "parameters": parameters,
        "device": segmenter.device_description,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "chip_size": size,
        "concepts": args.concepts,
        "batch_size": segmenter.batch_size,
        "chips_timed": args.chips,
        "build_s": round(build_s, 1),
        "s_per_chip": round(per_chip, 2),
        # CPU time of this process per chip (all threads): on a shared machine, wall time / threads is
        # inflated by other load while this figure is not.
        "process_cpu_s_per_chip": round(total_cpu / args.chips, 2),
        "vision_s_per_chip": round(vision, 2),
        "detector_and_masks_s_per_chip": round(per_chip - vision, 2),
        "peak_mib": round(_peak_mib(device)),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
