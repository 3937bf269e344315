"""The ONE conversation template of SegEarth-R2, for training and inference (spec §4.2, §4.4).

Training sample (literal strings; ``<image>`` and ``<refer>`` are placeholders)::

    {SYSTEM} USER: This is an image \\n<image>\\n, please doing Reasoning Segmentation according to the
    following instruction:\\n<refer> <|assistant|> ASSISTANT: \\n{answer}<|endoftext|>

* ``<image>`` → one ``image_token_index`` (−200) id, replaced by the image embeddings in the model.
* ``<refer>`` → ``ids(instruction.strip()) + [SEG]`` inline (labels −100; this input ``[SEG]`` is no mask query).
* Label rule (§4.2), computed on the unspliced ids (placeholders count one id each): with ``I`` = length of
  the separately tokenized text up to and including ``" ASSISTANT: "`` minus 2, positions ``< I`` are −100,
  positions ``>= I`` (answer, every ``[SEG]``, the appended EOS) are supervised; placeholder positions −100.
  If the header ids are not a prefix of the full ids (the boundary is ill-defined), every label is −100 and
  ``EncodedConversation.valid`` is False (guard of defect §16.11 is the trainer's job: skip such samples).
* Inference prompt (§4.4) = the same encoding cut before the first supervised position. The model therefore
  generates the tail ``": \\n"`` of the header first; :func:`answer_from_generated` strips it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from segearth_geo.model.tokenizer import SEG_TOKEN, encode_text, encode_user_text, seg_token_id

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
USER_MESSAGE = (
    "This is an image \n<image>\n, please doing Reasoning Segmentation according to the following instruction:"
    "\n<refer> <|assistant|>"
)
ASSISTANT_HEADER = " ASSISTANT: "
IMAGE_TOKEN_INDEX = -200
REFER_TOKEN_INDEX = -204
IGNORE_INDEX = -100
LABEL_OFFSET = 2  # the inherited "−2" of the official label rule
_PLACEHOLDER = re.compile(r"(<image>|<refer>)")


@dataclass
class EncodedConversation:
    """One conversation as ids and labels (refer ids inline, one image placeholder).

    Attributes:
        input_ids: ids (T,) with exactly one ``image_token_index``; the last id is EOS.
        labels: (T,) the §4.2 labels (−100 = not supervised).
        prompt_length: number of leading ids that form the inference prompt (first supervised position).
        valid: False when the label boundary could not be established (then every label is −100).
        instruction_start: index of the first instruction id; the ids before it (template and image
            placeholder) are the same for every instruction, so their LLM state can be reused.
    """

    input_ids: list[int]
    labels: list[int]
    prompt_length: int
    valid: bool = True
    instruction_start: int = 0


def conversation_text(answer: str) -> str:
    """The round text (without the final EOS) with ``<image>``/``<refer>`` placeholders left in place."""
    return f"{SYSTEM} USER: {USER_MESSAGE}{ASSISTANT_HEADER}\n{answer}"


def _encode_with_placeholders(tokenizer, text: str, image_index: int, refer_index: int) -> list[int]:
    ids: list[int] = []
    for chunk in _PLACEHOLDER.split(text):
        if chunk == "<image>":
            ids.append(image_index)
        elif chunk == "<refer>":
            ids.append(refer_index)
        elif chunk:
            ids.extend(encode_text(tokenizer, chunk))
    return ids


def encode_conversation(
    tokenizer,
    instruction: str,
    answer: str,
    *,
    eos_token_id: int | None = None,
    image_token_index: int = IMAGE_TOKEN_INDEX,
) -> EncodedConversation:
    """Encode one training sample per spec §4.2 (see the module docstring for the rule)."""
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    refer_ids = encode_user_text(tokenizer, instruction.strip()) + [seg_token_id(tokenizer)]
    text = conversation_text(answer)
    header = text[: text.index(ASSISTANT_HEADER) + len(ASSISTANT_HEADER)]
    # Unspliced ids: <image> and <refer> count one id each (the official rule is computed on these).
    full = _encode_with_placeholders(tokenizer, text, image_token_index, REFER_TOKEN_INDEX) + [eos]
    prefix = _encode_with_placeholders(tokenizer, header, image_token_index, REFER_TOKEN_INDEX)
    boundary = len(prefix) - LABEL_OFFSET
    # The header must tokenize as a prefix of the full text (its last token may merge with the answer's "\n").
    valid = 0 < boundary and len(prefix) <= len(full) and full[: len(prefix) - 1] == prefix[:-1]
    input_ids: list[int] = []
    labels: list[int] = []
    prompt_length = 0
    instruction_start = 0
    for position, token in enumerate(full):
        if position == boundary:
            prompt_length = len(input_ids)
        if token == REFER_TOKEN_INDEX:
            instruction_start = len(input_ids)
            input_ids.extend(refer_ids)
            labels.extend([IGNORE_INDEX] * len(refer_ids))
            continue
        input_ids.append(token)
        supervised = valid and position >= boundary and token != image_token_index
        labels.append(token if supervised else IGNORE_INDEX)
    if not valid:
        prompt_length = len(input_ids)
    return EncodedConversation(input_ids=input_ids, labels=labels, prompt_length=prompt_length, valid=valid,
                               instruction_start=instruction_start)


def encode_prompt(tokenizer, instruction: str, *, image_token_index: int = IMAGE_TOKEN_INDEX) -> list[int]:
    """Inference prompt ids (§4.4): the training encoding cut before its first supervised position."""
    return encode_prompt_parts(tokenizer, instruction, image_token_index=image_token_index)[0]


def encode_prompt_parts(tokenizer, instruction: str, *,
                        image_token_index: int = IMAGE_TOKEN_INDEX) -> tuple[list[int], int]:
    """``(prompt ids, instruction start)``: :func:`encode_prompt` and where its prompt-independent prefix ends."""
    encoded = encode_conversation(tokenizer, instruction, "", image_token_index=image_token_index)
    if not encoded.valid:
        raise ValueError("the prompt template does not tokenize consistently with this tokenizer")
    return encoded.input_ids[: encoded.prompt_length], encoded.instruction_start


def answer_from_generated(text: str) -> str:
    """Strip the header tail (``": \\n"``) that precedes the answer in generated text."""
    return re.sub(r"^\s*:?[ \t]*\n?", "", text, count=1).strip()


# --- labels of the [SEG] targets ---------------------------------------------------------------------------
_PHRASE = re.compile(r"<p>(.*?)</p>", re.DOTALL)
_CLAUSE_BREAK = re.compile(
    r"[.,;:!?()\[\]\n\"]"
    r"|\b(?:and|or|but|while|whereas|then|which|where|that|with|is|are|was|were|has|have|located|near|beside|behind|to)\b",
    re.I,
)
_LEADING_FILLER = {
    "of", "course", "sure", "yes", "okay", "ok", "certainly", "here", "there", "it", "this", "these", "those",
    "the", "a", "an", "is", "are", "was", "were", "be", "i", "see", "found", "shows", "show", "segmented",
    "segment", "segmentation", "result", "results", "mask", "masks", "target", "targets", "object", "objects",
    "can", "they", "its", "their", "all", "answer",
}
_TRAILING_FILLER = {
    "is", "are", "was", "were", "at", "in", "located", "shown", "here", "as", "be", "by", "the", "a", "an",
}
_MAX_PHRASE_WORDS = 6


def _noun_phrase(segment: str) -> str:
    """The short noun phrase at the end of ``segment`` (the text right before a ``[SEG]``), or ''."""
    pieces = _CLAUSE_BREAK.split(segment)
    for piece in reversed(pieces):
        words = re.findall(r"[\w'\-/]+", piece)
        while words and words[-1].lower() in _TRAILING_FILLER:
            words.pop()
        while words and words[0].lower() in _LEADING_FILLER:
            words.pop(0)
        if words:
            return " ".join(words[-_MAX_PHRASE_WORDS:])
    return ""


def target_labels(answer: str, prompt: str) -> list[str]:
    """One label per ``[SEG]`` of ``answer``, in order.

    The ``<p>…</p>`` phrase right before the ``[SEG]`` if there is one (between the previous ``[SEG]`` and this
    one), else the short noun phrase right before it ("The tennis net is [SEG]." → "tennis net"), else the prompt.
    """
    segments = answer.split(SEG_TOKEN)[:-1]
    fallback = " ".join(prompt.split()).rstrip(" .?!")
    labels = []
    for segment in segments:
        phrases = _PHRASE.findall(segment)
        if phrases and phrases[-1].strip():
            label = " ".join(phrases[-1].split())
        else:
            label = _noun_phrase(_PHRASE.sub(" ", segment))
        labels.append(label or fallback)
    return labels
