"""The conversation templates of SegEarth-R2: ONE prompt builder for training and inference (spec §4, §19).

The official files disagree on the prompt (spec §19), so the template is a named choice stored in the
checkpoint's config (``SegEarthR2Config.template``; absent = :data:`DEFAULT_TEMPLATE`) and overridable at load
time. Every variant is encoded by the same code below, so training and inference never drift apart.

``"training"`` (default; spec §4.2, the official training template of the clean-up revision)::

    {SYSTEM} USER: This is an image \\n<image>\\n, please doing Reasoning Segmentation according to the
    following instruction:\\n<refer> <|assistant|> ASSISTANT: \\n{answer}<|endoftext|>

``"training-vision-tags"`` (§4.2 / §19: the dataset-module revision announced with LaSeRS): the same with the
user prefix ``This is an image <|vision_bos|> <image> <|vision_eos|> <|sep|> <|user|>, please doing …``.

``"llama2"`` / ``"llama2-question"`` (§4.3 / §19: the official generation eval, LLaMA-2 style)::

    [INST] <<SYS>>\\n{LLAMA2_SYSTEM}\\n<</SYS>>\\n\\n{prefix}\\n<refer> [/INST] {answer} <|endoftext|>

with ``{prefix}`` = ``This is an image \\n<image>\\n, please doing Reasoning …`` (``"llama2"``, latest revision)
or the "If the instruction is a question, …" prefix of both newest eval scripts (``"llama2-question"``).

Encoding rules (every variant):

* ``<image>`` → one ``image_token_index`` (−200) id, replaced by the image embeddings in the model. It comes
  before ``<refer>`` in every template, so the ids before the instruction are the same for all instructions.
* ``<refer>`` → ``ids(instruction.strip())`` inline, followed by ``[SEG]`` in the training templates (labels
  −100; this input ``[SEG]`` is no mask query); plain text in the LLaMA-2 ones (as the eval script sends it).
* Label rule (§4.2), computed on the unspliced ids (placeholders count one id each): with ``I`` = length of
  the separately tokenized text up to the answer (the header, e.g. ``… ASSISTANT: ``) minus the template's
  ``label_offset`` (2 for the training templates: the inherited "−2"; 0 for LLaMA-2, whose prompt is exactly the
  eval script's), positions ``< I`` are −100, positions ``>= I`` (answer, every ``[SEG]``, the appended EOS)
  are supervised; placeholder positions −100. If the header ids are not a prefix of the full ids (the
  boundary is ill-defined), every label is −100 and ``EncodedConversation.valid`` is False (guard of defect
  §16.11 is the trainer's job: skip such samples).
* Inference prompt (§4.4) = the same encoding cut before the first supervised position. With the training
  templates the model therefore generates the tail ``": \\n"`` of the header first; :func:`answer_from_generated`
  strips it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from segearth_geo.errors import UsageError
from segearth_geo.model.tokenizer import LLAMA2_SYSTEM, SEG_TOKEN, encode_text, encode_user_text, seg_token_id

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
USER_MESSAGE = (
    "This is an image \n<image>\n, please doing Reasoning Segmentation according to the following instruction:"
    "\n<refer> <|assistant|>"
)
USER_MESSAGE_VISION_TAGS = (
    "This is an image <|vision_bos|> <image> <|vision_eos|> <|sep|> <|user|>, please doing Reasoning "
    "Segmentation according to the following instruction:\n<refer> <|assistant|>"
)
ASSISTANT_HEADER = " ASSISTANT: "
PREFIX_REASONING = (
    "This is an image \n<image>\n, please doing Reasoning Segmentation according to the following instruction:"
)
PREFIX_QUESTION = (
    "This is an image \n<image>\n. If the instruction is a question, provide segmentation result + explanation; "
    "if it's a declarative phrase, provide only the segmentation result\n. Please doing Referring or Reasoning "
    "Segmentation according to the following instruction:"
)
IMAGE_TOKEN_INDEX = -200
REFER_TOKEN_INDEX = -204
IGNORE_INDEX = -100
LABEL_OFFSET = 2  # the inherited "−2" of the official label rule
_PLACEHOLDER = re.compile(r"(<image>|<refer>)")


@dataclass(frozen=True)
class PromptTemplate:
    """One named conversation template (see the module docstring).

    Attributes:
        name: the name stored in ``config.json`` and given to ``--templates`` / ``template=``.
        header: the round text up to the answer, with one ``<image>`` and (after it) one ``<refer>``.
        answer_prefix, answer_suffix: text around the answer (before the final EOS id).
        refer_seg: the instruction is followed by an input-side ``[SEG]``.
        label_offset: supervised positions start ``label_offset`` ids before the header's end.
        source: where the template comes from (spec section).
    """

    name: str
    header: str
    answer_prefix: str
    answer_suffix: str
    refer_seg: bool
    label_offset: int
    source: str

    def __post_init__(self) -> None:
        image, refer = self.header.find("<image>"), self.header.find("<refer>")
        if self.header.count("<image>") != 1 or self.header.count("<refer>") != 1 or not 0 <= image < refer:
            raise ValueError(f"template {self.name!r} needs one <image> before one <refer>")

    def text(self, answer: str) -> str:
        """The round text (without the final EOS) with ``<image>``/``<refer>`` placeholders left in place."""
        return f"{self.header}{self.answer_prefix}{answer}{self.answer_suffix}"


def _llama2_header(prefix: str) -> str:
    return f"[INST] <<SYS>>\n{LLAMA2_SYSTEM}\n<</SYS>>\n\n{prefix}\n<refer> [/INST]"


DEFAULT_TEMPLATE = "training"
TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (
    PromptTemplate("training", f"{SYSTEM} USER: {USER_MESSAGE}{ASSISTANT_HEADER}", "\n", "", True, LABEL_OFFSET,
                   "spec §4.2: official training template (clean-up revision)"),
    PromptTemplate("training-vision-tags", f"{SYSTEM} USER: {USER_MESSAGE_VISION_TAGS}{ASSISTANT_HEADER}", "\n", "",
                   True, LABEL_OFFSET, "spec §4.2/§19: training prefix of the revision announced with LaSeRS"),
    PromptTemplate("llama2", _llama2_header(PREFIX_REASONING), " ", " ", False, 0,
                   "spec §4.3: LLaMA-2 generation-eval template, latest prefix"),
    PromptTemplate("llama2-question", _llama2_header(PREFIX_QUESTION), " ", " ", False, 0,
                   "spec §19: LLaMA-2 template of the newest generation-eval scripts (\"If the instruction is a "
                   "question …\")"),
)}
TEMPLATE_NAMES = tuple(TEMPLATES)


def get_template(template: str | PromptTemplate | None = None) -> PromptTemplate:
    """The :class:`PromptTemplate` named ``template`` (``None``: the default); :class:`UsageError` if unknown."""
    if isinstance(template, PromptTemplate):
        return template
    name = DEFAULT_TEMPLATE if template is None else str(template)
    if name not in TEMPLATES:
        raise UsageError(f"unknown SegEarth-R2 prompt template {name!r}; choose one of {', '.join(TEMPLATE_NAMES)}")
    return TEMPLATES[name]


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
        answer_start: index of the first id that belongs to the answer part (not to the header alone); the
            labels from here on are the answer's (and the EOS), the same targets for every template.
    """

    input_ids: list[int]
    labels: list[int]
    prompt_length: int
    valid: bool = True
    instruction_start: int = 0
    answer_start: int = 0


def conversation_text(answer: str, template: str | PromptTemplate | None = None) -> str:
    """The round text (without the final EOS) with ``<image>``/``<refer>`` placeholders left in place."""
    return get_template(template).text(answer)


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
    template: str | PromptTemplate | None = None,
) -> EncodedConversation:
    """Encode one training sample with ``template`` (default :data:`DEFAULT_TEMPLATE`; see the module docstring)."""
    spec = get_template(template)
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    refer_ids = encode_user_text(tokenizer, instruction.strip())
    if spec.refer_seg:
        refer_ids = refer_ids + [seg_token_id(tokenizer)]
    text = spec.text(answer)
    # Unspliced ids: <image> and <refer> count one id each (the official rule is computed on these).
    full = _encode_with_placeholders(tokenizer, text, image_token_index, REFER_TOKEN_INDEX) + [eos]
    prefix = _encode_with_placeholders(tokenizer, spec.header, image_token_index, REFER_TOKEN_INDEX)
    boundary = len(prefix) - spec.label_offset
    # The header must tokenize as a prefix of the full text; with an offset its last token may merge with the
    # answer's first characters (it is supervised anyway), without one the prompt must end exactly there.
    need = len(prefix) - 1 if spec.label_offset > 0 else len(prefix)
    valid = 0 < boundary and len(prefix) <= len(full) and full[:need] == prefix[:need]
    common = 0
    while common < min(len(prefix), len(full)) and full[common] == prefix[common]:
        common += 1
    input_ids: list[int] = []
    labels: list[int] = []
    prompt_length = 0
    instruction_start = 0
    answer_start = 0
    for position, token in enumerate(full):
        if position == boundary:
            prompt_length = len(input_ids)
        if position == common:
            answer_start = len(input_ids)
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
                               instruction_start=instruction_start, answer_start=answer_start)


def encode_prompt(tokenizer, instruction: str, *, image_token_index: int = IMAGE_TOKEN_INDEX,
                  template: str | PromptTemplate | None = None) -> list[int]:
    """Inference prompt ids (§4.4): the training encoding cut before its first supervised position."""
    return encode_prompt_parts(tokenizer, instruction, image_token_index=image_token_index, template=template)[0]


def encode_prompt_parts(tokenizer, instruction: str, *, image_token_index: int = IMAGE_TOKEN_INDEX,
                        template: str | PromptTemplate | None = None) -> tuple[list[int], int]:
    """``(prompt ids, instruction start)``: :func:`encode_prompt` and where its prompt-independent prefix ends."""
    encoded = encode_conversation(tokenizer, instruction, "", image_token_index=image_token_index,
                                  template=template)
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
