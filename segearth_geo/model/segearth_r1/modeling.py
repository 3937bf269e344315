"""SegEarth-R1: the top model only wires the parts (spec ``segearth_r1_model.md`` §1, §2, §7).

Module tree = checkpoint key names (§2, after the fused Phi ``query_key_value`` is split, §8.1)::

    seg_query                     [100, D] checkpoint-only (use_seg_query is False upstream)
    model                         Phi-1.5 (embed_tokens [V, D], layers, final_layernorm) plus
      .vision_tower               Swin-B (shared with R2: segearth_geo.model.parts.swin)
      .mm_projector               compression connector (res5 → T_img tokens)
    lm_head                       Linear(D → V), no bias; checkpoint-only here (R1 generates no text)
    text_projector                Linear(D → d)
    origin_SEG_token_projector    Linear(D → d)
    local_project                 Linear(C5 → d)
    SEG_token_projector           Linear(2d → C)
    d_layers                      D-Projector (one perceiver layer)
    pixel_decoder                 MSDeformAttn pixel decoder (shared with R2)
    predictor                     masked-attention decoder (shared with R2) + checkpoint-only CLASS_proj

Notation: B samples, L spliced length, R refer span length (instruction ids + one ``[SEG]``), D LLM width,
T_img image tokens, C5 res5 width, d description width, C mask width, S canvas side, M = S/4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from segearth_geo.errors import UsageError
from segearth_geo.model.parts.mask_decoder import MLP, MaskPredictions, MultiScaleMaskedTransformerDecoder
from segearth_geo.model.parts.phi import PhiLanguageModel
from segearth_geo.model.parts.pixel_decoder import MSDeformAttnPixelDecoder, PixelFeatures
from segearth_geo.model.parts.swin import SwinTransformer
from segearth_geo.model.segearth_r1.configuration import SegEarthR1Config


@dataclass
class R1Inputs:
    """The spliced LLM batch built by :meth:`SegEarthR1.build_inputs` (right padding).

    Attributes:
        inputs_embeds: ``[B, L, D]`` (padding rows are zeros).
        attention_mask: ``[B, L]`` long, 1 on real positions.
        position_ids: ``[B, L]``, 0..L−1.
        refer_mask: ``[B, L]`` bool, True exactly on the R refer positions of each sample.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    refer_mask: torch.Tensor


@dataclass
class SegEarthR1Output:
    """One forward pass.

    Attributes:
        pred_masks: ``[B, 1, M, M]`` mask logits after the last decoder layer.
        aux_masks: ``decoder_layers`` tensors ``[B, 1, M, M]`` (deep supervision).
        queries: ``[B, C]`` the one Mask2Former query per sample.
        hidden_states: ``[B, L, D]`` last layer after ``final_layernorm``.
        inputs: the spliced batch the LLM saw.
    """

    pred_masks: torch.Tensor
    aux_masks: list[torch.Tensor]
    queries: torch.Tensor
    hidden_states: torch.Tensor
    inputs: R1Inputs


class CompressionConnector(nn.Module):
    """``SparseConv_1`` (§2.3): two strided 3×3 convs, each followed by a LayerNorm over (C, h, w) jointly,
    then a 1×1 conv; no activations. The LayerNorm shapes fix the canvas side S."""

    def __init__(self, config: SegEarthR1Config) -> None:
        super().__init__()
        c_in, c_out = config.mask.swin_dims[-1], config.description.connector_dim
        _, first, second = config.grid_sizes
        self.proj1 = nn.Conv2d(c_in, c_out, 3, 2, 1)
        self.norm1 = nn.LayerNorm([c_out, first, first])
        self.proj2 = nn.Conv2d(c_out, c_out, 3, 2, 1)
        self.norm2 = nn.LayerNorm([c_out, second, second])
        self.fc = nn.Conv2d(c_out, c_out, 1, 1)

    def forward(self, res5: torch.Tensor) -> torch.Tensor:
        """``res5 [B, C5, S/32, S/32]`` → image tokens ``[B, T_img, D]`` (token = row·w + col)."""
        x = self.norm1(self.proj1(res5))  # [B, D, S/64, S/64]
        x = self.fc(self.norm2(self.proj2(x)))  # [B, D, S/128, S/128]
        return x.flatten(2).transpose(1, 2).contiguous()


class PerceiverAttention(nn.Module):
    """Latents attend to [media ; first latent] (§2.4); bias-free projections, heads split as head·dh + k."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head**-0.5
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """``media [B, X, d]``, ``latents [B, n, d]`` → update ``[B, n, d]``."""
        media, latents = self.norm_media(media), self.norm_latents(latents)
        b, n, _ = latents.shape
        q = self.to_q(latents)  # [B, n, h·dh]
        k, v = self.to_kv(torch.cat([media, latents[:, :1]], dim=1)).chunk(2, dim=-1)  # [B, X+1, h·dh] each

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)  # [B, h, ·, dh]

        attn = (heads(q) * self.scale) @ heads(k).transpose(-1, -2)  # [B, h, n, X+1]
        out = attn.softmax(dim=-1) @ heads(v)  # [B, h, n, dh]
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class DProjector(nn.Module):
    """The D-Projector (§2.4): ``layers.{i}.0`` perceiver attention, ``layers.{i}.1`` pre-LN feed-forward
    (Linear → exact GELU → Linear, bias-free), residuals, final ``norm``. Returns the first latent."""

    def __init__(self, config: SegEarthR1Config, depth: int = 1) -> None:
        super().__init__()
        d = config.description
        inner = d.dim * d.ff_mult
        self.layers = nn.ModuleList(
            nn.ModuleList([
                PerceiverAttention(d.dim, d.heads, d.dim_head),
                nn.Sequential(nn.LayerNorm(d.dim), nn.Linear(d.dim, inner, bias=False), nn.GELU(),
                              nn.Linear(inner, d.dim, bias=False)),
            ])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(d.dim)

    def forward(self, latents: torch.Tensor, media: torch.Tensor) -> torch.Tensor:
        """``latents [B, n, d]`` (row 0 = the pooled description), ``media [B, X, d]`` → ``[B, d]``.

        Keys and values see only the first latent, so rows 1..n−1 never change row 0: pass ``n = 1``.
        """
        for attn, ff in self.layers:
            latents = attn(media, latents) + latents
            latents = ff(latents) + latents
        return self.norm(latents)[:, 0]


class R1MaskDecoder(MultiScaleMaskedTransformerDecoder):
    """The R2 masked-attention decoder plus R1's checkpoint-only ``CLASS_proj`` (never used in forward)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.CLASS_proj = MLP(config.hidden_dim, config.hidden_dim, config.hidden_dim, 2)

    def checkpoint_only_parameters(self) -> list[nn.Parameter]:
        return super().checkpoint_only_parameters() + list(self.CLASS_proj.parameters())


class SegEarthR1LanguageModel(PhiLanguageModel):
    """Phi-1.5 (``model.*``) holding the Swin encoder and the compression connector as extra children."""

    def __init__(self, config: SegEarthR1Config) -> None:
        super().__init__(config.text.to_phi_config(config.vocab_size, eos_token_id=None))  # no generation
        self.vision_tower = SwinTransformer(config.mask)
        self.mm_projector = CompressionConnector(config)


class SegEarthR1(nn.Module):
    """The SegEarth-R1 network. Build with ``SegEarthR1(SegEarthR1Config.from_preset(...))``.

    Args:
        config: the sizes.
        lm_head: build the (checkpoint-only) ``lm_head``; the segmenter drops it to save ``V × D`` weights.
    """

    def __init__(self, config: SegEarthR1Config, lm_head: bool = True) -> None:
        super().__init__()
        self.config = config
        d, width = config.description, config.text.hidden_size
        # Checkpoint-only (use_seg_query is False upstream): stored, never read.
        self.seg_query = nn.Parameter(torch.zeros(d.num_seg_queries, width))
        self.model = SegEarthR1LanguageModel(config)
        self.lm_head = nn.Linear(width, config.vocab_size, bias=False) if lm_head else None
        self.text_projector = nn.Linear(width, d.dim)
        self.origin_SEG_token_projector = nn.Linear(width, d.dim)
        self.local_project = nn.Linear(config.mask.swin_dims[-1], d.dim)
        self.SEG_token_projector = nn.Linear(2 * d.dim, config.mask.hidden_dim)
        self.d_layers = DProjector(config)
        self.pixel_decoder = MSDeformAttnPixelDecoder(config.mask)
        self.predictor = R1MaskDecoder(config.mask)

    # ------------------------------------------------------------------ housekeeping
    def materialize_buffers(self, device: torch.device | str | None = None) -> None:
        """Recompute the non-persistent rotary buffers (needed after a ``meta``-device build)."""
        if device is None:
            device = self.model.final_layernorm.weight.device
        self.model.rebuild_rotary(device)

    def checkpoint_only_parameters(self) -> list[nn.Parameter]:
        """Stored but never used in forward: ``seg_query``, ``lm_head``, the predictor's query tables,
        ``SEG_proj`` and ``CLASS_proj`` (spec §8.4)."""
        head = [] if self.lm_head is None else list(self.lm_head.parameters())
        return [self.seg_query, *head, *self.predictor.checkpoint_only_parameters()]

    # ------------------------------------------------------------------ stages
    def encode_images(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``images [B, 3, S, S]`` (normalised letterbox) → (Swin ``[res2..res5]``, image tokens ``[B, T_img, D]``).

        Swin runs once for both the LLM tokens and the mask branch (upstream runs it twice, same result).
        """
        swin = self.model.vision_tower
        features = swin(images.to(swin.patch_embed.proj.weight.dtype))
        return features, self.model.mm_projector(features[-1])

    def build_inputs(self, input_ids: list[list[int]], refer_ids: list[list[int]],
                     image_tokens: torch.Tensor) -> R1Inputs:
        """Splice each sample's image tokens and refer span at its placeholders; right-pad the batch.

        Args:
            input_ids: B id lists with exactly one ``image_token_index`` and one ``refer_token_index``.
            refer_ids: B id lists (instruction ids + ``[SEG]``), embedded at the refer placeholder.
            image_tokens: ``[B, T_img, D]`` from :meth:`encode_images`.
        """
        cfg = self.config
        if not len(input_ids) == len(refer_ids) == image_tokens.shape[0]:
            raise UsageError("build_inputs needs one id list, one refer list and one image per sample")
        embed = self.model.embed_tokens
        device, dtype = embed.weight.device, embed.weight.dtype
        rows, refer_rows = [], []
        for b, (ids, refer) in enumerate(zip(input_ids, refer_ids)):
            pieces, flags = [], []
            for token in _split_placeholders(ids, (cfg.image_token_index, cfg.refer_token_index), b):
                if token == cfg.image_token_index:
                    pieces.append(image_tokens[b].to(dtype))
                    flags.append(torch.zeros(image_tokens.shape[1], dtype=torch.bool, device=device))
                    continue
                chunk = torch.as_tensor(refer if token == cfg.refer_token_index else token, dtype=torch.long,
                                        device=device)
                if chunk.numel() and (chunk.min() < 0 or chunk.max() >= cfg.vocab_size):
                    raise UsageError(f"sample {b} has ids outside [0, {cfg.vocab_size}) besides the placeholders")
                pieces.append(embed(chunk))
                flags.append(torch.full((chunk.numel(),), token == cfg.refer_token_index, device=device))
            rows.append(torch.cat(pieces))
            refer_rows.append(torch.cat(flags))
        longest = max(r.shape[0] for r in rows)
        if longest > cfg.max_length:
            raise UsageError(f"a spliced sequence has {longest} positions, more than max_length={cfg.max_length}; "
                             "shorten the instruction")
        bsz = len(rows)
        inputs_embeds = torch.zeros(bsz, longest, embed.weight.shape[1], dtype=dtype, device=device)
        attention_mask = torch.zeros(bsz, longest, dtype=torch.long, device=device)
        refer_mask = torch.zeros(bsz, longest, dtype=torch.bool, device=device)
        for b, (row, flag) in enumerate(zip(rows, refer_rows)):
            inputs_embeds[b, : row.shape[0]] = row
            attention_mask[b, : row.shape[0]] = 1
            refer_mask[b, : row.shape[0]] = flag
        position_ids = torch.arange(longest, device=device).expand(bsz, -1)
        return R1Inputs(inputs_embeds, attention_mask, position_ids, refer_mask)

    def language_states(self, inputs: R1Inputs) -> torch.Tensor:
        """Phi-1.5 over the spliced batch → ``last_hidden_state [B, L, D]`` (after ``final_layernorm``)."""
        out = self.model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                         position_ids=inputs.position_ids, use_cache=False)
        return out.last_hidden_state

    def describe(self, hidden: torch.Tensor, refer_mask: torch.Tensor, res5: torch.Tensor) -> torch.Tensor:
        """The one query per sample (§2.4, §7 steps 7–11).

        Args:
            hidden: ``[B, L, D]`` final hidden states; refer_mask: ``[B, L]`` bool; res5: ``[B, C5, h5, w5]``.
        Returns:
            ``[B, C]``: ``SEG_token_projector(concat(origin(p), D-Projector(text_projector(p), local(res5))))``
            with ``p`` the mean of ``hidden`` over the refer positions.
        """
        weights = refer_mask.float()  # [B, L]; the mean is taken in fp32 (bf16 would round the sum)
        pooled = (hidden.float() * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)  # [B, D]
        pooled = pooled.to(self.text_projector.weight.dtype)
        media = self.local_project(res5.flatten(2).transpose(1, 2).to(pooled.dtype))  # [B, h5·w5, d]
        described = self.d_layers(self.text_projector(pooled)[:, None], media)  # [B, d]
        origin = self.origin_SEG_token_projector(pooled)  # [B, d]
        return self.SEG_token_projector(torch.cat([origin, described], dim=-1))  # [B, C]

    def pixel_features(self, features: list[torch.Tensor]) -> PixelFeatures:
        """Swin ``[res2..res5]`` → pixel-decoder features (``mask_features [B, C, M, M]``, 3 multi-scale maps),
        cast to the predictor's dtype. They depend on the image only (the segmenter caches them per chip)."""
        pixels = self.pixel_decoder(features)
        dtype = self.predictor.decoder_norm.weight.dtype
        pixels.mask_features = pixels.mask_features.to(dtype)
        pixels.multi_scale = [m.to(dtype) for m in pixels.multi_scale]
        return pixels

    def decode_pixels(self, queries: torch.Tensor, pixels: PixelFeatures) -> MaskPredictions:
        """``queries [B, C]``, :meth:`pixel_features` of the same B images → mask logits ``[B, 1, M, M]`` (+ aux)."""
        return self.predictor(queries.to(self.predictor.decoder_norm.weight.dtype), pixels)

    def decode_masks(self, queries: torch.Tensor, features: list[torch.Tensor]) -> MaskPredictions:
        """``queries [B, C]``, Swin features of the same B images → mask logits ``[B, 1, M, M]`` (+ aux)."""
        return self.decode_pixels(queries, self.pixel_features(features))

    def forward(self, images: torch.Tensor, input_ids: list[list[int]], refer_ids: list[list[int]]) -> SegEarthR1Output:
        """Images + prompt ids → one mask per sample (no text is generated).

        Args:
            images: ``[B, 3, S, S]`` normalised letterboxed canvases.
            input_ids: B id lists with one image and one refer placeholder (see :mod:`.prompt`).
            refer_ids: B refer spans (instruction ids + ``[SEG]``).
        """
        features, image_tokens = self.encode_images(images)
        inputs = self.build_inputs(input_ids, refer_ids, image_tokens)
        hidden = self.language_states(inputs)
        queries = self.describe(hidden, inputs.refer_mask, features[-1])
        masks = self.decode_masks(queries, features)
        return SegEarthR1Output(masks.pred_masks, masks.aux_masks, queries, hidden, inputs)


def _split_placeholders(ids: list[int], placeholders: tuple[int, int], sample: int) -> list:
    """``ids`` → chunks: plain id lists and the placeholder ids themselves (each exactly once)."""
    chunks: list = []
    current: list[int] = []
    for token in ids:
        if token in placeholders:
            if current:
                chunks.append(current)
                current = []
            chunks.append(token)
        else:
            current.append(int(token))
    if current:
        chunks.append(current)
    for placeholder in placeholders:
        count = sum(1 for c in chunks if c == placeholder)
        if count != 1:
            raise UsageError(f"sample {sample} has {count} placeholders {placeholder}; exactly one is needed")
    return chunks
