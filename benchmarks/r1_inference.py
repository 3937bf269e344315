"""SegEarth-R1 inference benchmark at the released size (1.59 B parameters, 1024-px canvas), random weights.

Speed does not depend on the weights' values. Reports seconds per chip through
:class:`~segearth_geo.model.segearth_r1.SegEarthR1Segmenter` and a per-stage split (letterbox, Swin-B once,
connector + Phi-1.5 over the spliced prompt, description path, pixel decoder, mask decoder), build time and
peak memory. The mask-only model (no ``lm_head``) is built, as the segmenter loads it.

CPU (what the test machine can run)::

    python benchmarks/r1_inference.py --device cpu --chips 2 --batch-size 1

GPU, bf16, batched::

    python benchmarks/r1_inference.py --device cuda --dtype bf16 --chips 32 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from collections import defaultdict

import numpy as np
import torch

PROMPT = "the white storage tank on the left of the large building"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def stage_times(segmenter, chips: list[np.ndarray]) -> dict[str, float]:
    """One forward over ``chips`` split into stages (seconds)."""
    from segearth_geo.model.segearth_r1.preprocess import letterbox_image, uncrop_logits
    from segearth_geo.model.segearth_r1.prompt import encode_prompt

    model, cfg, dev = segmenter.model, segmenter.config, segmenter.device
    times: dict[str, float] = defaultdict(float)

    def tick(name: str, began: float) -> float:
        _sync(dev)
        now = time.perf_counter()
        times[name] += now - began
        return now

    with torch.inference_mode(), segmenter.autocast():
        t = time.perf_counter()
        prepared = [letterbox_image(c, segmenter.chip_size, cfg.mask.pixel_mean, cfg.mask.pixel_std, dev) for c in chips]
        canvas = torch.stack([p[0] for p in prepared]).to(segmenter.dtype)
        encoded = [encode_prompt(segmenter.tokenizer, PROMPT, segmenter.template, seg_token_id=cfg.seg_token_id)
                   for _ in chips]
        t = tick("letterbox", t)
        features = model.model.vision_tower(canvas)
        t = tick("swin", t)
        tokens = model.model.mm_projector(features[-1])
        inputs = model.build_inputs([e.input_ids for e in encoded], [e.refer_ids for e in encoded], tokens)
        hidden = model.language_states(inputs)
        t = tick("connector+phi", t)
        queries = model.describe(hidden, inputs.refer_mask, features[-1])
        t = tick("description", t)
        pixels = model.pixel_decoder(features)
        t = tick("pixel_decoder", t)
        masks = model.predictor(queries.to(pixels.mask_features.dtype), pixels)
        for b, (_, box) in enumerate(prepared):
            torch.sigmoid(uncrop_logits(masks.pred_masks[b:b + 1].float(), box))
        tick("mask_decoder+uncrop", t)
    times["tokens"] = float(inputs.attention_mask.sum(1).max())
    return dict(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=[None, "fp32", "bf16", "fp16"])
    parser.add_argument("--chips", type=int, default=2, help="timed chips (after one warm-up chip)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from segearth_geo.model.device import resolve_device
    from segearth_geo.model.segearth_r1.segmenter import SegEarthR1Segmenter
    from segearth_geo.model.testing import r1_tokenizer, random_chips, random_r1

    device, dtype = resolve_device(args.device, args.dtype)
    began = time.perf_counter()
    model, tokenizer = random_r1("segearth-r1", args.seed, device, dtype), r1_tokenizer("segearth-r1")
    built = time.perf_counter() - began
    segmenter = SegEarthR1Segmenter(model, tokenizer, device=device, dtype=dtype, batch_size=args.batch_size)
    chips = random_chips(model.config.mask.image_size, args.chips + 1, args.seed)
    segmenter.segment(chips[:1], PROMPT)  # warm-up
    _sync(device)
    t = time.perf_counter()
    cpu = time.process_time()
    segmenter.segment(chips[1:], PROMPT)
    _sync(device)
    wall = time.perf_counter() - t
    stages = stage_times(segmenter, chips[1:1 + segmenter.batch_size])
    report = {
        "device": segmenter.device_description, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "parameters": sum(p.numel() for p in model.parameters()),
        "build_s": round(built, 1), "batch_size": segmenter.batch_size, "chips": args.chips,
        "s_per_chip": round(wall / args.chips, 2), "cpu_s_per_chip": round((time.process_time() - cpu) / args.chips, 2),
        "stages_s_per_batch": {k: round(v, 3) for k, v in stages.items()}, "peak_mib": round(_peak_mib(device)),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
