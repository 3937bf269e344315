"""SegEarth-R2: the top model only wires the parts (spec §1, §5, §6).

Module tree = checkpoint key names (spec §15)::

    model                      Phi-2 (embed_tokens [V, D], layers, final_layernorm) plus
      .vision_tower            SigLIP tower (.vision_model = transformers SiglipVisionModel)
      .mm_projector            mlp2x_gelu
      .vision_tower_mask       Swin backbone
    lm_head                    Linear(D → lm_head_size), no bias
    pixel_decoder              MSDeformAttn pixel decoder
    predictor                  masked-attention decoder
    SEG_token_projector        Linear(D → C)

Notation: B samples, T_b text ids of sample b (one image placeholder each), T_img image tokens, L spliced
length, D LLM width, N [SEG] targets, C mask width, S canvas side, M = S/4, s SigLIP side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from segearth_geo.errors import UsageError
from segearth_geo.model.parts.mask_decoder import MaskPredictions, MultiScaleMaskedTransformerDecoder
from segearth_geo.model.parts.phi import PhiLanguageModel
from segearth_geo.model.parts.pixel_decoder import MSDeformAttnPixelDecoder, PixelFeatures
from segearth_geo.model.parts.swin import SwinTransformer
from segearth_geo.model.segearth_r2.configuration import SegEarthR2Config
from segearth_geo.model.segearth_r2.siglip import SiglipVisionTower, build_projector


@dataclass
class MultimodalInputs:
    """The spliced LLM batch built by :meth:`SegEarthR2.build_inputs`.

    Attributes:
        inputs_embeds: ``[B, L, D]`` (padding rows are zeros).
        attention_mask: ``[B, L]`` long, 1 on real positions (from lengths, never from ids == pad).
        position_ids: ``[B, L]``, 0..len−1 on each sample's real positions (also under left padding), 0 on padding.
        labels: ``[B, L]`` or None; image and padding positions are ``ignore_index``.
        token_ids: ``[B, L]`` ids of the spliced sequence; image positions hold ``image_token_index``,
            padding holds ``pad_token_id``.
        image_start: ``[B]`` position of each sample's first image embedding.
        lengths: ``[B]`` real length of each sample.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None
    token_ids: torch.Tensor
    image_start: torch.Tensor
    lengths: torch.Tensor


@dataclass
class SegEarthR2Output:
    """Teacher-forced forward result.

    Attributes:
        logits: ``[B, L, lm_head_size]``.
        hidden_states: ``[B, L, D]`` last layer after ``final_layernorm``.
        seg_positions: ``[N, 2]`` (sample, position) of the [SEG] states used as queries, batch-major.
        pred_masks: ``[N, 1, M, M]`` mask logits, or None when no masks were decoded.
        aux_masks: ``decoder_layers`` tensors ``[N, 1, M, M]`` (empty list when no masks were decoded).
        inputs: the spliced batch (labels, attention mask, …) the LLM saw.
        attentions: per-layer attention probabilities when requested with eager attention, else None.
    """

    logits: torch.Tensor
    hidden_states: torch.Tensor
    seg_positions: torch.Tensor
    pred_masks: torch.Tensor | None
    aux_masks: list[torch.Tensor]
    inputs: MultimodalInputs
    attentions: tuple[torch.Tensor, ...] | None = None


class SegEarthR2LanguageModel(PhiLanguageModel):
    """transformers ``PhiModel`` that also holds the two vision towers and the projector (checkpoint path
    ``model.*``). ``embed_tokens`` has V rows (``config.vocab_size``); it is never resized."""

    def __init__(self, config: SegEarthR2Config) -> None:
        super().__init__(config.text.to_phi_config(config.vocab_size, config.eos_token_id))
        self.vision_tower = SiglipVisionTower(config.vision)
        self.mm_projector = build_projector(config.vision.hidden_size, config.text.hidden_size)
        self.vision_tower_mask = SwinTransformer(config.mask)


class SegEarthR2(nn.Module):
    """The SegEarth-R2 network. Build with ``SegEarthR2(SegEarthR2Config.from_preset(...))``."""

    def __init__(self, config: SegEarthR2Config) -> None:
        super().__init__()
        self.config = config
        self.model = SegEarthR2LanguageModel(config)
        self.lm_head = nn.Linear(config.text.hidden_size, config.lm_head_size, bias=False)
        self.pixel_decoder = MSDeformAttnPixelDecoder(config.mask)
        self.predictor = MultiScaleMaskedTransformerDecoder(config.mask)
        self.SEG_token_projector = nn.Linear(config.text.hidden_size, config.mask.hidden_dim)

    # ------------------------------------------------------------------ housekeeping
    def set_attn_implementation(self, name: str) -> None:
        """Switch Phi's attention backend (``"sdpa"``, ``"eager"`` or a registered custom name)."""
        self.model.config._attn_implementation = name
        self.config.text.attn_implementation = name

    def materialize_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the non-persistent buffers (Phi rotary ``inv_freq``, SigLIP ``position_ids``).

        Needed after building on the ``meta`` device and loading weights with ``load_state_dict(assign=True)``:
        those buffers are not in checkpoints.
        """
        from transformers.models.phi.modeling_phi import PhiRotaryEmbedding

        if device is None:
            device = self.model.final_layernorm.weight.device
        with torch.device(device):
            self.model.rotary_emb = PhiRotaryEmbedding(config=self.model.config)
        embeddings = self.model.vision_tower.vision_model.embeddings
        ids = torch.arange(embeddings.num_positions, device=device).expand((1, -1))
        embeddings.register_buffer("position_ids", ids, persistent=False)

    def checkpoint_only_parameters(self) -> list[nn.Parameter]:
        """Stored but never used in forward: predictor query tables/SEG_proj, SigLIP head, post_layernorm and
        layers after ``select_layer`` (spec §16.7)."""
        vision = self.model.vision_tower.vision_model
        unused_layers = vision.encoder.layers[self.config.vision.num_layers_run:]
        modules = [vision.post_layernorm, vision.head, *unused_layers]
        return self.predictor.checkpoint_only_parameters() + [p for m in modules for p in m.parameters()]

    # ------------------------------------------------------------------ image branch of the LLM
    def encode_images(self, siglip_pixels: torch.Tensor) -> torch.Tensor:
        """``siglip_pixels [B, 3, s, s]`` → projected image embeddings ``[B, T_img, D]``."""
        feats = self.model.vision_tower(siglip_pixels)  # [B, T_img, Dv]
        return self.model.mm_projector(feats.to(self.model.mm_projector[0].weight.dtype))

    def build_inputs(
        self,
        input_ids: list[torch.Tensor],
        image_embeds: torch.Tensor,
        labels: list[torch.Tensor] | None = None,
        padding_side: str = "right",
    ) -> MultimodalInputs:
        """Splice each sample's image embeddings at its ``image_token_index`` placeholder and pad the batch.

        Args:
            input_ids: B tensors ``[T_b]`` with exactly one ``image_token_index``; refer ids already inline.
            image_embeds: ``[B, T_img, D]`` from :meth:`encode_images`.
            labels: optional B tensors ``[T_b]`` aligned with ``input_ids``.
            padding_side: ``"right"`` (training) or ``"left"`` (batched generation).
        """
        cfg = self.config
        if padding_side not in ("left", "right"):
            raise UsageError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        if len(input_ids) != image_embeds.shape[0]:
            raise UsageError(f"{len(input_ids)} id rows but {image_embeds.shape[0]} images; give one image per sample")
        if labels is not None and len(labels) != len(input_ids):
            raise UsageError("labels must have one row per input_ids row")
        embed = self.model.embed_tokens
        device, dtype = embed.weight.device, embed.weight.dtype
        t_img = image_embeds.shape[1]
        rows = []  # (embeds [len, D], token ids [len], labels [len] | None, image start)
        for b, ids in enumerate(input_ids):
            ids = torch.as_tensor(ids, dtype=torch.long, device=device)
            where = (ids == cfg.image_token_index).nonzero().flatten().tolist()
            if len(where) != 1:
                raise UsageError(f"sample {b} has {len(where)} image placeholders ({cfg.image_token_index}); "
                                 "each sample needs exactly one")
            text = torch.cat([ids[: where[0]], ids[where[0] + 1:]])
            if text.numel() and (text.min() < 0 or text.max() >= cfg.vocab_size):
                raise UsageError(f"sample {b} has ids outside [0, {cfg.vocab_size}) besides the image placeholder "
                                 "(inline the <refer> ids before building inputs)")
            p = where[0]
            image_ids = torch.full((t_img,), cfg.image_token_index, dtype=torch.long, device=device)
            emb = torch.cat([embed(ids[:p]), image_embeds[b].to(dtype), embed(ids[p + 1:])])  # [len, D]
            tok = torch.cat([ids[:p], image_ids, ids[p + 1:]])
            lab = None
            if labels is not None:
                lab_b = torch.as_tensor(labels[b], dtype=torch.long, device=device)
                if lab_b.shape != ids.shape:
                    raise UsageError(f"labels of sample {b} have {lab_b.numel()} entries for {ids.numel()} ids")
                ignore = torch.full((t_img,), cfg.ignore_index, dtype=torch.long, device=device)
                lab = torch.cat([lab_b[:p], ignore, lab_b[p + 1:]])
            rows.append((emb, tok, lab, p))
        lengths = [r[1].numel() for r in rows]
        longest = max(lengths)
        if longest > cfg.max_length:
            raise UsageError(f"a spliced sequence has {longest} positions, more than max_length={cfg.max_length}; "
                             f"shorten the text to at most {cfg.max_length - t_img} ids")
        bsz, width = len(rows), embed.weight.shape[1]
        inputs_embeds = torch.zeros(bsz, longest, width, dtype=dtype, device=device)
        attention_mask = torch.zeros(bsz, longest, dtype=torch.long, device=device)
        position_ids = torch.zeros(bsz, longest, dtype=torch.long, device=device)
        token_ids = torch.full((bsz, longest), cfg.pad_token_id, dtype=torch.long, device=device)
        out_labels = None if labels is None else torch.full((bsz, longest), cfg.ignore_index, dtype=torch.long,
                                                            device=device)
        image_start = torch.zeros(bsz, dtype=torch.long, device=device)
        for b, ((emb, tok, lab, p), n) in enumerate(zip(rows, lengths)):
            s = 0 if padding_side == "right" else longest - n  # first real position
            inputs_embeds[b, s:s + n] = emb
            attention_mask[b, s:s + n] = 1
            position_ids[b, s:s + n] = torch.arange(n, device=device)
            token_ids[b, s:s + n] = tok
            if out_labels is not None:
                out_labels[b, s:s + n] = lab
            image_start[b] = s + p
        return MultimodalInputs(inputs_embeds, attention_mask, position_ids, out_labels, token_ids, image_start,
                                torch.tensor(lengths, dtype=torch.long, device=device))

    def seg_positions(self, inputs: MultimodalInputs) -> torch.Tensor:
        """``[N, 2]`` (sample, position) of the query [SEG] tokens, batch-major in answer order.

        With labels: supervised [SEG] ids only (the input-side [SEG] of ``<refer>`` is not a query).
        Without labels: every [SEG] id on a real position.
        """
        hit = (inputs.token_ids == self.config.seg_token_id) & inputs.attention_mask.bool()
        if inputs.labels is not None:
            hit &= inputs.labels != self.config.ignore_index
        return hit.nonzero()

    # ------------------------------------------------------------------ mask branch
    def encode_mask_features(self, images: torch.Tensor) -> PixelFeatures:
        """``images [B, 3, S, S]`` (normalised canvas) → :class:`PixelFeatures`
        (``mask_features [B, C, S/4, S/4]``, 3 maps low → high resolution)."""
        swin = self.model.vision_tower_mask
        features = swin(images.to(swin.patch_embed.proj.weight.dtype))  # res2..res5
        return self.pixel_decoder(features)

    def decode_masks(self, seg_states: torch.Tensor, features: PixelFeatures, owner: torch.Tensor) -> MaskPredictions:
        """One mask per [SEG] state.

        Args:
            seg_states: ``[N, D]`` final-layer (post final LayerNorm) states at the [SEG] positions.
            features: pixel features of the images, batch B.
            owner: ``[N]`` index into ``features`` of the image each target belongs to.
        """
        queries = self.SEG_token_projector(seg_states.to(self.SEG_token_projector.weight.dtype))  # [N, C]
        dtype = self.predictor.decoder_norm.weight.dtype
        selected = features.select(owner.to(features.mask_features.device))
        selected = PixelFeatures(selected.mask_features.to(dtype), [m.to(dtype) for m in selected.multi_scale])
        return self.predictor(queries.to(dtype), selected)

    # ------------------------------------------------------------------ teacher-forced convenience
    def forward(
        self,
        input_ids: list[torch.Tensor],
        siglip_pixels: torch.Tensor,
        mask_images: torch.Tensor | None = None,
        labels: list[torch.Tensor] | None = None,
        padding_side: str = "right",
        seg_positions: torch.Tensor | None = None,
        **llm_kwargs,
    ) -> SegEarthR2Output:
        """One teacher-forced pass: image tokens → Phi-2 → logits; [SEG] states → masks.

        Args:
            input_ids: B tensors ``[T_b]`` (one image placeholder each).
            siglip_pixels: ``[B, 3, s, s]``.
            mask_images: ``[B, 3, S, S]`` normalised canvases, or None to skip the mask branch.
            labels: optional B tensors ``[T_b]``; they also select which [SEG] are queries (see :meth:`seg_positions`).
            padding_side: see :meth:`build_inputs`.
            seg_positions: ``[N, 2]`` (sample, position) override of the query positions.
            llm_kwargs: passed to the Phi model (e.g. ``output_attentions=True`` with eager attention).
        """
        inputs = self.build_inputs(input_ids, self.encode_images(siglip_pixels), labels, padding_side)
        llm = self.model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                         position_ids=inputs.position_ids, use_cache=False, **llm_kwargs)
        hidden = llm.last_hidden_state  # [B, L, D]
        logits = self.lm_head(hidden)  # [B, L, lm_head_size]
        if seg_positions is None:
            seg_positions = self.seg_positions(inputs)
        pred_masks, aux_masks = None, []
        if mask_images is not None and seg_positions.shape[0] > 0:
            owners, owner = seg_positions[:, 0].unique(return_inverse=True)  # only images with targets
            features = self.encode_mask_features(mask_images[owners.to(mask_images.device)])
            masks = self.decode_masks(hidden[seg_positions[:, 0], seg_positions[:, 1]], features, owner)
            pred_masks, aux_masks = masks.pred_masks, masks.aux_masks
        return SegEarthR2Output(logits, hidden, seg_positions, pred_masks, aux_masks, inputs,
                                getattr(llm, "attentions", None))
