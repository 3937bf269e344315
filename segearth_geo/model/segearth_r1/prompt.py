"""SegEarth-R1 prompt ids (spec ``segearth_r1_model.md`` §4, §5) and the label of its one target.

The official prompt (conversation ``llava_phi``, LLaMA-2 style) for one image and one instruction::

    [INST] <<SYS>>\\n{SYSTEM}\\n<</SYS>>\\n\\nThis is an image <image>, Please doing {Referring|Reasoning}
    Segmentation according to the following instruction:\\n<refer> [/INST] …answer…

* Pieces between placeholders are tokenized separately, without special tokens and without BOS.
* ``<image>`` → ``image_token_index`` (−200), replaced by the T_img image tokens in the model.
* ``<refer>`` → ``refer_token_index`` (−204), replaced by ``embed(encode(" " + instruction) + [SEG])``
  (note the leading space).
* The mask reads only the hidden states of the refer span, which by causality depend only on the ids up to
  its end, so inference stops there (§5 "causality rule"): nothing after ``<refer>`` is encoded.

``"referring"`` is the RRSIS-D template, ``"reasoning"`` the EarthReason one ("Please doing" is the authors').
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from segearth_geo.errors import UsageError
from segearth_geo.model.tokenizer import LLAMA2_SYSTEM as SYSTEM

TASK_WORDS = {"referring": "Referring", "reasoning": "Reasoning"}
PAD_TOKEN = "[PAD]"
ANSWER_TEXT = "SegEarth-R1 does not generate text; the mask comes from the instruction in one forward pass."


def prompt_text(template: str) -> str:
    """The prompt up to and including ``<refer>`` (the only part that affects the mask)."""
    if template not in TASK_WORDS:
        raise UsageError(f"unknown SegEarth-R1 template {template!r}; choose one of {sorted(TASK_WORDS)}")
    user = (f"This is an image <image>, Please doing {TASK_WORDS[template]} Segmentation according to the "
            "following instruction:\n<refer>")
    return f"[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{user}"


@dataclass
class EncodedPrompt:
    """One sample's ids.

    Attributes:
        input_ids: prompt ids with one ``image_token_index`` and one ``refer_token_index`` (the last id).
        refer_ids: ``encode(" " + instruction) + [SEG]`` (R ids).
    """

    input_ids: list[int]
    refer_ids: list[int]


def encode_prompt(tokenizer, instruction: str, template: str, *, seg_token_id: int,
                  image_token_index: int = -200, refer_token_index: int = -204) -> EncodedPrompt:
    """Encode ``instruction`` with ``template`` exactly as the official code does (see module docstring)."""
    text = " ".join(str(instruction).split())
    if not text:
        raise UsageError("the SegEarth-R1 instruction is empty; say what to segment")
    ids: list[int] = []
    for chunk in re.split(r"(<image>|<refer>)", prompt_text(template)):
        if chunk == "<image>":
            ids.append(image_token_index)
        elif chunk == "<refer>":
            ids.append(refer_token_index)
        elif chunk:
            ids.extend(tokenizer.encode(chunk, add_special_tokens=False))
    refer = list(tokenizer.encode(" " + text, add_special_tokens=False)) + [int(seg_token_id)]
    return EncodedPrompt(input_ids=ids, refer_ids=refer)


# --- the label of the one target -----------------------------------------------------------------------------
_LEADING = re.compile(
    r"^(?:(?:please|kindly|can you|could you|would you|now|then)\s+)*"
    r"(?:(?:segment|find|show|detect|highlight|locate|outline|extract|identify|mark|map|select|give)"
    r"(?:\s+me)?\s+)?"
    r"(?:(?:all|every|each|any)\s+(?:of\s+)?)?(?:(?:the|a|an|these|those|this|that)\s+)?",
    re.I,
)
_QUESTION = re.compile(r"^(?:where|what|which|who|how)\b", re.I)
_CLAUSE = re.compile(
    r"[.,;:!?()\[\]\n\"]|\s(?:that|which|who|where|while|with|located|near|next to|beside|behind|in front of|"
    r"on the|in the|at the|to the|along|between|around|above|below|under|over)\s",
    re.I,
)
_MAX_WORDS = 6


def prompt_label(prompt: str) -> str:
    """The noun phrase a plain prompt names: ``"segment the buildings next to the road"`` → ``"buildings"``.

    Leading request words and articles are dropped and the first clause is kept (at most six words). A question
    or a prompt that reduces to nothing keeps its whole (whitespace-normalised) text.
    """
    text = " ".join(str(prompt).split()).strip(" .?!")
    if not text or _QUESTION.match(text):
        return text
    rest = _LEADING.sub("", text, count=1)
    head = _CLAUSE.split(" " + rest + " ", maxsplit=1)[0].strip()
    words = head.split()
    return " ".join(words[:_MAX_WORDS]) if words else text
