"""Peak memory of the spatial-attention supervision: our [SEG]-row capture vs eager ``output_attentions``.

Both variants run one Phi-2 forward + backward of the attention loss (spec §8.3) on one sample at
the 3B sequence length (L = 729 image tokens + text ≈ 800) with the 3B widths (D 2560, 32 heads,
head dim 80). The full 32-layer model does not fit a small CPU machine, so ``--layers`` (default 2)
layers are built; both costs grow linearly with the layer count, so the per-layer figures
extrapolate to 32 layers.

A third variant, SDPA without any attention supervision, is the floor. Measured per variant, each
in a fresh subprocess:

* ``kept``: activation bytes held for backward (saved-tensor hooks, unique storages, weights
  excluded) plus the returned attention tensors;
* ``peak_rss``: the process's peak resident memory during forward + backward, minus the resident
  memory after building the model (CPU), or ``torch.cuda.max_memory_allocated`` on CUDA.

Usage::

    python benchmarks/attention_memory.py                    # CPU, fp32, 2 layers
    python benchmarks/attention_memory.py --device cuda --dtype bf16 --layers 32
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch


def _build(layers: int, dtype: torch.dtype, device: str, attn: str):
    from transformers import PhiConfig, PhiModel

    cfg = PhiConfig(vocab_size=64, hidden_size=2560, intermediate_size=10240, num_hidden_layers=layers,
                    num_attention_heads=32, resid_pdrop=0.0, max_position_embeddings=2048,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.4})
    torch.manual_seed(0)
    model = PhiModel._from_config(cfg, attn_implementation=attn, dtype=dtype).to(device)
    for p in model.parameters():  # LoRA-like setting: frozen base, gradients flow to the inputs
        p.requires_grad_(False)
    return model


def _measure(variant: str, layers: int, length: int, dtype: torch.dtype, device: str) -> dict:
    from segearth_geo.training.attention_rows import (
        SegRowRequest,
        capture_rows,
        use_seg_rows_attention,
    )
    from segearth_geo.training.losses import attention_loss

    t_img, start, seg_pos = 729, 40, length - 3
    model = _build(layers, dtype, device, "eager" if variant == "eager" else "sdpa")
    if variant == "rows":
        use_seg_rows_attention(model)
    embeds = torch.randn(1, length, 2560, dtype=dtype, device=device, requires_grad=True)
    grid = torch.zeros(1, t_img, dtype=torch.bool, device=device)
    grid[0, 300:340] = True
    request = SegRowRequest(torch.tensor([0], device=device), torch.tensor([seg_pos], device=device),
                            torch.tensor([start], device=device), t_img)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    storages: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:  # the frozen weights are held anyway
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if variant == "eager":
            out = model(inputs_embeds=embeds, output_attentions=True)
            cols = start + torch.arange(t_img, device=device)
            rows = [a.sum(1)[0, seg_pos, cols][None] for a in out.attentions]
            returned = sum(a.numel() * a.element_size() for a in out.attentions)
        elif variant == "sdpa":  # no attention supervision at all: the floor
            out = model(inputs_embeds=embeds)
            rows, returned = [], 0
        else:
            out = model(inputs_embeds=embeds, output_attentions=True, seg_rows=request)
            rows = capture_rows(out.attentions, layers)
            returned = sum(r.numel() * r.element_size() for r in rows)
        loss = out.last_hidden_state.float().square().mean()
        if rows:
            loss = loss + attention_loss(rows, grid)
    kept = sum(storages.values()) + returned
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
    return {"variant": variant, "layers": layers, "length": length, "dtype": str(dtype).replace("torch.", ""),
            "device": device, "kept_bytes": kept, "peak_bytes": peak}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--length", type=int, default=800)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variant", choices=["eager", "rows", "sdpa"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    if args.variant:  # child process
        torch.set_num_threads(2)
        print(json.dumps(_measure(args.variant, args.layers, args.length, dtype, args.device)))
        return
    results = {}
    for variant in ("eager", "rows", "sdpa"):
        cmd = [sys.executable, __file__, "--variant", variant, "--layers", str(args.layers), "--length",
               str(args.length), "--dtype", args.dtype, "--device", args.device]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    mib = 2**20
    e, r, f = results["eager"], results["rows"], results["sdpa"]
    print(f"Phi-2 widths, {args.layers} layers, L={args.length}, {args.dtype}, {args.device}, batch 1, 1 [SEG]")
    print("| variant | kept for backward + returned (MiB) | per layer (MiB) | peak fwd+bwd (MiB) |")
    print("|---|---:|---:|---:|")
    for name, v in (("eager output_attentions", e), ("SDPA + [SEG] rows (ours)", r), ("SDPA, no L_S (floor)", f)):
        print(f"| {name} | {v['kept_bytes'] / mib:.1f} | {v['kept_bytes'] / mib / args.layers:.1f} | "
              f"{v['peak_bytes'] / mib:.1f} |")
    kept, peak = e["kept_bytes"] / r["kept_bytes"], e["peak_bytes"] / max(r["peak_bytes"], 1)
    print(f"ratio eager/ours: kept {kept:.2f}x, peak {peak:.2f}x")
    extra = (e["kept_bytes"] - r["kept_bytes"]) / args.layers * 32 / mib
    ours = (r["kept_bytes"] - f["kept_bytes"]) / args.layers * 32 / mib
    print(f"extrapolated to 32 layers, per sample: eager keeps {extra:.0f} MiB more than ours; "
          f"ours keeps {ours:.1f} MiB more than SDPA without L_S")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
