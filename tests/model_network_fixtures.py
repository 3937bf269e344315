"""Shared helpers for the SegEarth-R2 network tests (tiny sizes, CPU)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from segearth_geo.model.segearth_r2.configuration import SegEarthR2Config
from segearth_geo.model.segearth_r2.modeling import SegEarthR2

KEY_INVENTORY = Path("/work/shared/spec/segearth_r2_state_dict_keys.txt")


def tiny_model(seed: int = 0, **overrides) -> SegEarthR2:
    """A tiny SegEarth-R2 in eval mode with deterministic weights."""
    torch.manual_seed(seed)
    return SegEarthR2(SegEarthR2Config.from_preset("tiny", **overrides)).eval()


def read_inventory(vocab_size: int, path: Path = KEY_INVENTORY) -> dict[str, tuple[int, ...]]:
    """Key → shape from the spec's inventory file, with ``V`` replaced by ``vocab_size``."""
    shapes = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")[:2]
        shapes[key] = tuple(vocab_size if d == "V" else int(d) for d in shape.split("x"))
    return shapes


def key_pattern(key: str) -> str:
    """A key with every layer/block index replaced by ``#`` (compares module trees of different depths)."""
    return re.sub(r"\.\d+\.", ".#.", re.sub(r"\.\d+\.", ".#.", key))


def sample_ids(config: SegEarthR2Config, lengths_before: list[int], lengths_after: list[int],
               seed: int = 0) -> list[torch.Tensor]:
    """Random text ids (avoiding [SEG]) with one image placeholder after ``lengths_before[b]`` ids."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for before, after in zip(lengths_before, lengths_after):
        text = torch.randint(0, config.vocab_size - 1, (before + after,), generator=g)
        rows.append(torch.cat([text[:before], torch.tensor([config.image_token_index]), text[before:]]))
    return rows


def swin_to_hf_state_dict(state: dict[str, torch.Tensor], depths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Rename our (Mask2Former) Swin weights to transformers' ``SwinBackbone`` names; split the fused qkv."""
    out = {
        "swin.embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "swin.embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "swin.embeddings.norm.weight": state["patch_embed.norm.weight"],
        "swin.embeddings.norm.bias": state["patch_embed.norm.bias"],
    }
    for i, depth in enumerate(depths):
        for j in range(depth):
            ours, hf = f"layers.{i}.blocks.{j}.", f"swin.encoder.layers.{i}.blocks.{j}."
            for name in ("weight", "bias"):
                q, k, v = state[ours + f"attn.qkv.{name}"].chunk(3, dim=0)
                out[hf + f"attention.q_proj.{name}"] = q
                out[hf + f"attention.k_proj.{name}"] = k
                out[hf + f"attention.v_proj.{name}"] = v
                out[hf + f"attention.o_proj.{name}"] = state[ours + f"attn.proj.{name}"]
                out[hf + f"layernorm_before.{name}"] = state[ours + f"norm1.{name}"]
                out[hf + f"layernorm_after.{name}"] = state[ours + f"norm2.{name}"]
                out[hf + f"mlp.fc1.{name}"] = state[ours + f"mlp.fc1.{name}"]
                out[hf + f"mlp.fc2.{name}"] = state[ours + f"mlp.fc2.{name}"]
            out[hf + "attention.relative_position_bias.relative_position_bias_table"] = state[
                ours + "attn.relative_position_bias_table"]
        if i < len(depths) - 1:
            for name in ("reduction.weight", "norm.weight", "norm.bias"):
                out[f"swin.encoder.layers.{i}.downsample.{name}"] = state[f"layers.{i}.downsample.{name}"]
        out[f"hidden_states_norms.stage{i + 1}.weight"] = state[f"norm{i}.weight"]
        out[f"hidden_states_norms.stage{i + 1}.bias"] = state[f"norm{i}.bias"]
    return out


def bilinear_zero_pad(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Explicit bilinear read of ``image [d, H, W]`` at normalised (x, y) ∈ ℝ² with zero padding,
    ``align_corners=False`` (pixel centres at (j + 0.5) / W)."""
    d, h, w = image.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = int(torch.floor(torch.tensor(px))), int(torch.floor(torch.tensor(py)))
    fx, fy = px - x0, py - y0
    total = torch.zeros(d, dtype=torch.float64)
    for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
        for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * image[:, yy, xx].double()
    return total


def naive_ms_deform_attn(value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor,
                         weights: torch.Tensor) -> torch.Tensor:
    """Per-sampling-point loop: ``value [B, Lv, h, d]``, ``locations [B, Lq, h, L, P, 2]``,
    ``weights [B, Lq, h, L, P]`` → ``[B, Lq, h·d]`` (float64)."""
    b, _, heads, d = value.shape
    _, lq, _, levels, points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(b, lq, heads, d, dtype=torch.float64)
    for bi in range(b):
        for q in range(lq):
            for hi in range(heads):
                for lvl, (h, w) in enumerate(shapes):
                    image = value[bi, starts[lvl]:starts[lvl + 1], hi].T.reshape(d, h, w)
                    for p in range(points):
                        x, y = locations[bi, q, hi, lvl, p].tolist()
                        out[bi, q, hi] += weights[bi, q, hi, lvl, p].double() * bilinear_zero_pad(image, x, y)
    return out.reshape(b, lq, heads * d)
