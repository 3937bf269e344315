"""ZoomEarth's stage 1 on transformers' ``Qwen2_5_VLForConditionalGeneration``: ids in, answer text out.

The network is transformers' own (ZoomEarth changes no module of Qwen2.5-VL-3B); this module only builds the
stage-1 input and decodes. Notation: N = image tokens = ``t·h·w / merge²`` from the processor's ``image_grid_thw``
(a 512 × 512 overview → 504 × 504 px → 18 × 18 = 324 tokens), L = prompt tokens.

* :func:`stage1_ids` — ``PREFIX`` (its one ``<|image_pad|>`` expanded to N ids, as the processor does) +
  the question (special tokens split: plain text) + ``BODY + TAIL``: ``[1, L]``;
* :func:`generate` — greedy decoding of at most ``max_new_tokens``, stopping at either end id, or (not official,
  saves tokens) as soon as the first complete ``"bbox_2d": [...]`` list has been written.
"""

from __future__ import annotations

from typing import Any

import torch

from segearth_geo.model.zoomearth.configuration import IMAGE_PAD, MAX_NEW_TOKENS, STOP_IDS
from segearth_geo.model.zoomearth.prompt import BBOX, stage1_pieces


def stage1_ids(tokenizer: Any, question: str, image_tokens: int) -> torch.Tensor:
    """The stage-1 prompt ids ``[1, L]`` for ``question`` over an image of ``image_tokens`` tokens."""
    prefix, text, rest = stage1_pieces(question)
    ids: list[int] = []
    pad = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    for token in tokenizer(prefix, add_special_tokens=False)["input_ids"]:
        ids.extend([pad] * image_tokens if token == pad else [token])
    ids.extend(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    ids.extend(tokenizer(rest, add_special_tokens=False)["input_ids"])
    return torch.tensor([ids], dtype=torch.long)


class _BoxWritten:
    """Stop once the generated text holds a complete ``bbox_2d`` list (checked on the new tokens only)."""

    def __init__(self, tokenizer: Any, prompt_length: int) -> None:
        self.tokenizer, self.start = tokenizer, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        text = self.tokenizer.decode(input_ids[0, self.start:], skip_special_tokens=True)
        done = BBOX.search(text) is not None
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


@torch.inference_mode()
def generate(model: Any, tokenizer: Any, input_ids: torch.Tensor, pixel_values: torch.Tensor,
             image_grid_thw: torch.Tensor, max_new_tokens: int = MAX_NEW_TOKENS, stop_at_box: bool = True) -> str:
    """Greedy stage-1 answer (decoded with special tokens skipped and stripped, as the official script does).

    Args:
        input_ids: ``[1, L]`` from :func:`stage1_ids`; ``pixel_values``: ``[N·merge², C·T·P·P]`` and
            ``image_grid_thw``: ``[1, 3]`` from the image processor.
    """
    from transformers import StoppingCriteriaList

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    stops = StoppingCriteriaList([_BoxWritten(tokenizer, input_ids.shape[1])]) if stop_at_box else None
    output = model.generate(
        input_ids=input_ids.to(device), attention_mask=torch.ones_like(input_ids, device=device),
        pixel_values=pixel_values.to(device=device, dtype=dtype), image_grid_thw=image_grid_thw.to(device),
        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=list(STOP_IDS), pad_token_id=STOP_IDS[1],
        stopping_criteria=stops)  # other settings (repetition_penalty) from the checkpoint's generation_config
    return tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True).strip()


__all__ = ["generate", "stage1_ids"]
