"""The model's answers as an analyst reads them: without markup, and a note when its labels are not what was asked.

Pure Python (no Qt), so it is tested without QGIS (``tests/test_plugin_answers.py``).

* :func:`clean_answer`: ``"Here is the <p>road</p> [SEG]."`` → ``"Here is the road."`` (phrase tags, ``[SEG]``-style
  tokens and special tokens such as ``<image>``, ``</s>``, ``<|endoftext|>`` removed, spaces tidied).
* :func:`unexpected_labels` / :func:`label_note`: the labels none of whose words appear in the prompt (prompt "all the
  airplanes", labels "car", "road": both), said in one line, because the model then found something else.
  Words match in singular or plural ("airplanes" / "airplane", "buses" / "bus", "cities" / "city") and as the end of
  a compound ("plane" / "airplane").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SPECIAL = re.compile(r"<\|[^|<>]*\|>")  # <|endoftext|>, <|im_end|>
_TAG = re.compile(r"</?[A-Za-z_][A-Za-z0-9_]*>")  # <p>, </p>, <image>, </s>, <im_start>
_TOKEN = re.compile(r"\[[A-Z][A-Z0-9_]*\]")  # [SEG], [REJ]
_SPACES = re.compile(r"[ \t]+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"[ \t]+([.,;:!?)])")
_WORD = re.compile(r"[a-z][a-z'-]*")
# Words that say how to segment, not what: never a reason for (or against) a label.
_STOP_WORDS = frozenset("""
a an the of and or in on at to for with from by into near next all any every each some this that these those
please segment segmentation find show mark outline detect highlight identify locate extract get give me us where
which what who is are was be there here it its them they image picture photo scene area region object objects thing
things can could would should you i my""".split())
_MIN_COMPOUND = 4  # a prompt word this long may match the end of a label word ("plane" in "airplane"), and back


def clean_answer(text: str) -> str:
    """``text`` without markup: ``<p>``/``</p>``, ``[SEG]`` and other special tokens removed, spaces tidied.

    Line breaks are kept; an answer of markup only becomes ``""``.
    """
    text = _SPECIAL.sub(" ", str(text))
    text = _TAG.sub("", text)
    text = _TOKEN.sub(" ", text)
    lines = [_SPACE_BEFORE_PUNCTUATION.sub(r"\1", _SPACES.sub(" ", line)).strip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line)


def answer_lines(answers: Iterable[str]) -> list[str]:
    """The cleaned answers without repeats or empty ones, in first-seen order (many chips answer alike)."""
    seen: dict[str, None] = {}
    for answer in answers:
        cleaned = clean_answer(answer)
        if cleaned:
            seen.setdefault(cleaned, None)
    return list(seen)


def _forms(word: str) -> set[str]:
    """``word`` and its possible singulars (``"cities"`` → city, citie, citi, cities)."""
    forms = {word}
    if word.endswith("ies") and len(word) > 4:
        forms.add(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        forms.add(word[:-2])
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        forms.add(word[:-1])
    return forms


def content_words(text: str) -> list[str]:
    """The lower-cased words of ``text`` that name things (no stop words such as "the", "segment", "all")."""
    return [w.strip("'-") for w in _WORD.findall(str(text).lower()) if w.strip("'-") not in _STOP_WORDS]


def _same_thing(label_word: str, prompt_word: str) -> bool:
    label_forms, prompt_forms = _forms(label_word), _forms(prompt_word)
    if label_forms & prompt_forms:
        return True
    return any(len(short) >= _MIN_COMPOUND and long.endswith(short)
               for a in label_forms for b in prompt_forms for short, long in ((a, b), (b, a)))


def unexpected_labels(prompt: str, labels: Iterable[str]) -> list[str]:
    """The labels (in order, without repeats) none of whose words appear in ``prompt``.

    A label of stop words only (``"object"``) is never reported: it names nothing to compare.
    """
    prompt_words = content_words(prompt)
    odd: list[str] = []
    for label in labels:
        words = content_words(label)
        if label in odd or not words:
            continue
        if not any(_same_thing(w, p) for w in words for p in prompt_words):
            odd.append(label)
    return odd


def label_note(prompt: str, labels: Iterable[str]) -> str | None:
    """One line saying that the model labelled what it found with words the prompt does not use, or ``None``."""
    odd = unexpected_labels(prompt, labels)
    if not odd:
        return None
    named = ", ".join(f"“{label}”" for label in odd)
    what = "label" if len(odd) == 1 else "labels"
    return (f"The model found {named} — {what} your prompt “{prompt.strip()}” does not name: it may have found "
            "something else than what you asked for; check the polygons before using them.")
