"""SegEarth-R2 inference benchmark: s/chip, chips/s, per-stage breakdown, batch 1 vs batch N, peak memory.

Random weights (speed does not depend on their values). Stages: preprocess (PIL resize + normalisation),
SigLIP (+ projector), prefill, decode, [SEG] forward (the one teacher-forced pass over the final sequence),
Swin + pixel decoder ("mask_features"), mask decoder (+ crop-back is outside the stages).

CPU, tiny preset (what the test machine can run)::

    python benchmarks/model_inference.py --preset tiny --device cpu --chips 8 --batch-size 8

GPU, 3B preset, bf16, forced answer length K, side by side with the naive official-style loop
(one chip at a time, ``generate(output_hidden_states=True)``, mask branch per chip)::

    python benchmarks/model_inference.py --preset segearth-r2-3b --device cuda --dtype bf16 \\
        --forced-answer-length 16 --chips 64 --batch-size 32 --naive

With ``--forced-answer-length K`` every chip generates exactly K ids (EOS ignored), the last one ``[SEG]``,
so random weights still run the whole pipeline with one target per chip.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import torch

from segearth_geo.model.device import resolve_device
from segearth_geo.model.parts.crop_back import crop_back
from segearth_geo.model.segearth_r2.preprocess import prepare_images
from segearth_geo.model.segearth_r2.prompt import encode_prompt
from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter, StageTimes
from segearth_geo.model.testing import random_chips, random_r2

STAGES = ("preprocess", "siglip", "prefill", "decode", "seg_forward", "mask_features", "mask_decoder")
PROMPT = "Find all buildings with a red roof next to the river."


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # process-wide peak RSS since start (Linux reports KiB): includes the model and Python, never resets
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_batched(segmenter: SegEarthR2Segmenter, chips, batch_size: int) -> dict:
    segmenter.batch_size = batch_size
    segmenter.predict(chips[:batch_size], [PROMPT] * min(batch_size, len(chips)))  # warm-up
    segmenter.stage_times = StageTimes()
    _reset_peak(segmenter.device)
    _sync(segmenter.device)
    began = time.perf_counter()
    results = segmenter.predict(chips, [PROMPT] * len(chips))
    _sync(segmenter.device)
    wall = time.perf_counter() - began
    stages = {name: segmenter.stage_times.seconds.get(name, 0.0) / len(chips) for name in STAGES}
    segmenter.stage_times = None
    return {"mode": f"batched (batch {batch_size})", "chips": len(chips), "s_per_chip": wall / len(chips),
            "chips_per_s": len(chips) / wall, "stage_s_per_chip": stages,
            "targets": sum(len(r.targets) for r in results), "peak_mib": _peak_mib(segmenter.device)}


def naive_official_loop(model, tokenizer, chips, device, dtype, answer_length: int) -> dict:
    """The official style: one chip at a time, ``generate(inputs_embeds, output_hidden_states=True)``,
    [SEG] states gathered from the per-step hidden states, then Swin + pixel decoder + decoder per chip."""
    from transformers import PhiForCausalLM

    config = model.config
    with torch.device("meta"):
        causal = PhiForCausalLM(model.model.config)
    causal.model, causal.lm_head = model.model, model.lm_head  # share the weights (no bias on our lm_head)
    prompt = encode_prompt(tokenizer, PROMPT, image_token_index=config.image_token_index)
    autocast = torch.autocast("cuda", dtype=dtype) if device.type == "cuda" and dtype != torch.float32 else None

    def one(chip):
        prepared = prepare_images(chip, config)
        embeds = model.encode_images(prepared.siglip[None].to(device, dtype))
        inputs = model.build_inputs([torch.tensor(prompt, device=device)], embeds)
        out = causal.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                              max_new_tokens=answer_length, min_new_tokens=answer_length, do_sample=False,
                              eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
                              suppress_tokens=list(range(config.vocab_size, config.lm_head_size)),  # §16.9
                              output_hidden_states=True, return_dict_in_generate=True)
        # official: last layer's hidden state of the last fed position at each step; take the last step as the
        # single [SEG] query (the official code would miss a trailing [SEG]; we only measure its cost)
        seg_state = out.hidden_states[-1][-1][:, -1]  # [1,D]
        features = model.encode_mask_features(prepared.mask_image[None].to(device, dtype))
        masks = model.decode_masks(seg_state, features, torch.zeros(1, dtype=torch.long, device=device))
        return crop_back(masks.pred_masks.float(), prepared.resized_hw, prepared.original_hw, config.mask.image_size)

    with torch.inference_mode():
        context = autocast if autocast is not None else torch.autocast("cpu", enabled=False)
        with context:
            one(chips[0])  # warm-up
            _reset_peak(device)
            _sync(device)
            began = time.perf_counter()
            for chip in chips:
                one(chip)
            _sync(device)
    wall = time.perf_counter() - began
    return {"mode": "naive official loop (batch 1, generate + output_hidden_states)", "chips": len(chips),
            "s_per_chip": wall / len(chips), "chips_per_s": len(chips) / wall, "stage_s_per_chip": {},
            "targets": len(chips), "peak_mib": _peak_mib(device)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "demo", "segearth-r2-3b"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--chips", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--forced-answer-length", type=int, default=16)
    parser.add_argument("--naive", action="store_true", help="also time the naive official-style loop")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = resolve_device(args.device, args.dtype)
    model, tokenizer = random_r2(args.preset, args.seed, device, dtype)
    segmenter = SegEarthR2Segmenter(model, tokenizer, device=device, dtype=dtype,
                                    max_new_tokens=args.forced_answer_length)
    segmenter.forced_answer_length = args.forced_answer_length
    chips = random_chips(model.config.mask.image_size, args.chips, args.seed)
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"
    rows = [run_batched(segmenter, chips, 1)]
    if args.batch_size > 1:
        rows.append(run_batched(segmenter, chips, args.batch_size))
    if args.naive:
        rows.append(naive_official_loop(model, tokenizer, chips, device, dtype, args.forced_answer_length))
    report = {"preset": args.preset, "device": str(device), "machine": machine,
              "dtype": str(dtype).replace("torch.", ""),
              "forced_answer_length": args.forced_answer_length, "chip_side": model.config.mask.image_size,
              "torch": torch.__version__, "rows": rows}
    print(f"SegEarth-R2 {args.preset} on {machine} ({report['dtype']}), chip {report['chip_side']} px, "
          f"answer {args.forced_answer_length} ids")
    header = f"{'mode':<62} {'s/chip':>9} {'chips/s':>9} {'peak MiB':>9}  " + " ".join(f"{s:>13}" for s in STAGES)
    print(header)
    for row in rows:
        stages = " ".join(f"{row['stage_s_per_chip'].get(s, float('nan')):13.4f}" for s in STAGES)
        print(f"{row['mode']:<62} {row['s_per_chip']:9.4f} {row['chips_per_s']:9.2f} {row['peak_mib']:9.0f}  {stages}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
