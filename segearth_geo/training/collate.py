"""Training batches: samples → ids, labels, images and targets (spec §3, §4.2, §5, §8.3).

One template for training and inference: ids and labels come from
:func:`segearth_geo.model.segearth_r2.prompt.encode_conversation`. Truncation happens on the unspliced ids
with the image's size already accounted for (defect §16.12): the single ``<image>`` placeholder
becomes ``T_img`` embeddings, so at most ``max_length − T_img + 1`` ids are kept and the spliced
sequence never exceeds ``max_length``. Only the answer (every ``[SEG]`` and the EOS included) is
supervised; a target is an answer ``[SEG]`` that survived truncation and has a mask.

Ground truth stays at the image's own resolution (the mask loss maps canvas points onto it,
§8.2); the attention grids are ``d×d`` on the stretched image (§8.3, ``d`` = SigLIP grid side).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from segearth_geo.errors import UsageError
from segearth_geo.model.segearth_r2.preprocess import prepare_images
from segearth_geo.model.segearth_r2.prompt import encode_conversation
from segearth_geo.model.tokenizer import seg_token_id
from segearth_geo.training.losses import attention_grid

log = logging.getLogger(__name__)


@dataclass
class TrainBatch:
    """One collated batch of ``B`` samples with ``N`` targets (batch-major, answer order).

    Attributes:
        input_ids: ``B`` LongTensors ``(T_b,)``, unspliced (one ``image_token_index`` each).
        labels: ``B`` LongTensors ``(T_b,)`` (−100 = not supervised).
        image_positions: ``[B]`` index of the image placeholder in each ``input_ids``.
        siglip: ``[B,3,s,s]`` SigLIP inputs; mask_images: ``[B,3,S,S]`` normalised canvases.
        resized_hw: ``[B,2]`` (newh, neww) on the canvas; original_hw: ``[B,2]`` (H, W).
        target_owner: ``[N]`` sample index of each target.
        target_positions: ``[N]`` the target ``[SEG]``'s index in its unspliced ``input_ids``.
        gt_masks: ``N`` uint8 tensors ``[H_b,W_b]`` at the owner's original resolution.
        attention_grids: ``[N,d²]`` bool GT grids of the attention loss.
        sample_ids: the samples' ids (for logs).
    """

    input_ids: list[torch.Tensor]
    labels: list[torch.Tensor]
    image_positions: torch.Tensor
    siglip: torch.Tensor
    mask_images: torch.Tensor
    resized_hw: torch.Tensor
    original_hw: torch.Tensor
    target_owner: torch.Tensor
    target_positions: torch.Tensor
    gt_masks: list[torch.Tensor]
    attention_grids: torch.Tensor
    sample_ids: list[str] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return len(self.input_ids)

    @property
    def num_targets(self) -> int:
        return int(self.target_owner.numel())

    def to(self, device: torch.device | str) -> TrainBatch:
        """Tensors moved to ``device`` (ids and masks too; they are small)."""
        move = lambda t: t.to(device, non_blocking=True)
        return TrainBatch(
            input_ids=[move(t) for t in self.input_ids],
            labels=[move(t) for t in self.labels],
            image_positions=move(self.image_positions),
            siglip=move(self.siglip),
            mask_images=move(self.mask_images),
            resized_hw=move(self.resized_hw),
            original_hw=move(self.original_hw),
            target_owner=move(self.target_owner),
            target_positions=move(self.target_positions),
            gt_masks=[move(m) for m in self.gt_masks],
            attention_grids=move(self.attention_grids),
            sample_ids=list(self.sample_ids),
        )


@dataclass
class EncodedSample:
    """One sample's ids after truncation and its target bookkeeping."""

    input_ids: list[int]
    labels: list[int]
    image_position: int
    target_positions: list[int]


def encode_sample(
    tokenizer, instruction: str, answer: str, num_masks: int, config, max_length: int | None = None
) -> EncodedSample | None:
    """Ids/labels of one sample, truncated after accounting for the spliced image (``None`` = unusable).

    ``max_length`` defaults to ``config.max_length``. A sample is unusable when the template's label
    boundary cannot be found (then no position would be supervised) or the prompt alone does not fit.
    """
    max_length = config.max_length if max_length is None else max_length
    encoded = encode_conversation(
        tokenizer, instruction, answer, eos_token_id=config.eos_token_id, image_token_index=config.image_token_index,
        template=config.template,
    )
    if not encoded.valid:
        return None
    budget = max_length - config.num_image_tokens + 1  # ids; the placeholder becomes T_img positions
    ids, labels = encoded.input_ids[:budget], encoded.labels[:budget]
    if config.image_token_index not in ids or encoded.prompt_length >= len(ids):
        return None  # prompt does not fit: nothing left to supervise
    seg = seg_token_id(tokenizer)
    positions = [i for i, lab in enumerate(labels) if lab == seg][:num_masks]
    return EncodedSample(ids, labels, ids.index(config.image_token_index), positions)


def _field(sample: Any, name: str):
    try:
        return getattr(sample, name)
    except AttributeError as exc:
        raise UsageError(f"training samples need a {name!r} attribute (see segearth_geo.data.Sample)") from exc


class Collator:
    """Callable turning a list of samples (``image``, ``instruction``, ``answer``, ``masks``) into a :class:`TrainBatch`.

    Args:
        tokenizer: the model's tokenizer (``[SEG]`` = last id).
        config: the model's :class:`~segearth_geo.model.segearth_r2.configuration.SegEarthR2Config`.
        max_length: spliced-sequence limit (default and upper bound ``config.max_length``).
        attention_gt_size: intermediate nearest-resize side of the attention GT (official 800).
    """

    def __init__(self, tokenizer, config, max_length: int | None = None, attention_gt_size: int = 800) -> None:
        self.tokenizer = tokenizer
        self.config = config
        # never longer than the model accepts (build_inputs checks config.max_length)
        self.max_length = config.max_length if max_length is None else min(max_length, config.max_length)
        if self.max_length <= config.num_image_tokens:
            raise UsageError(
                f"max_length {self.max_length} leaves no room for text next to the {config.num_image_tokens} image tokens"
            )
        self.attention_gt_size = attention_gt_size
        self.skipped = 0

    def __call__(self, samples: Sequence[Any]) -> TrainBatch:
        ids, labels, image_pos, siglip, canvases, resized, original = [], [], [], [], [], [], []
        owner, positions, masks, grids, names = [], [], [], [], []
        grid_side = self.config.vision.grid_size
        for sample in samples:
            sample_masks = list(_field(sample, "masks"))
            encoded = encode_sample(
                self.tokenizer, _field(sample, "instruction"), _field(sample, "answer"),
                len(sample_masks), self.config, self.max_length,
            )
            if encoded is None:
                self.skipped += 1
                log.warning("sample %s skipped: its prompt does not fit or its labels are undefined",
                            getattr(sample, "id", "?"))
                continue
            b = len(ids)
            prepared = prepare_images(_field(sample, "image"), self.config)
            ids.append(torch.tensor(encoded.input_ids, dtype=torch.long))
            labels.append(torch.tensor(encoded.labels, dtype=torch.long))
            image_pos.append(encoded.image_position)
            siglip.append(prepared.siglip)
            canvases.append(prepared.mask_image)
            resized.append(prepared.resized_hw)
            original.append(prepared.original_hw)
            names.append(str(getattr(sample, "id", b)))
            for k, pos in enumerate(encoded.target_positions):
                mask = torch.from_numpy(np.ascontiguousarray(sample_masks[k], dtype=np.uint8))
                owner.append(b)
                positions.append(pos)
                masks.append(mask)
                grids.append(attention_grid(mask, grid_side, self.attention_gt_size))
        if not ids:
            raise UsageError("no usable sample in this batch (prompts too long for max_length?)")
        t_img = self.config.num_image_tokens
        return TrainBatch(
            input_ids=ids,
            labels=labels,
            image_positions=torch.tensor(image_pos, dtype=torch.long),
            siglip=torch.stack(siglip),
            mask_images=torch.stack(canvases),
            resized_hw=torch.tensor(resized, dtype=torch.long),
            original_hw=torch.tensor(original, dtype=torch.long),
            target_owner=torch.tensor(owner, dtype=torch.long),
            target_positions=torch.tensor(positions, dtype=torch.long),
            gt_masks=masks,
            attention_grids=torch.stack(grids) if grids else torch.zeros(0, t_img, dtype=torch.bool),
            sample_ids=names,
        )
