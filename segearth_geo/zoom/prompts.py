"""What kind of instruction a prompt is, and which of a segmenter's labels answer it.

* **Referring** (instance-level) instructions name one thing of the whole scene: "the largest airplane",
  "the leftmost ship", "the track field far from the tall buildings". A chip-level model answers them per
  chip, so the grid returns one answer per chip; the zoom strategy answers them once for the scene.
* **Semantic** instructions ask for every instance of something: "all the ships", "buildings",
  "where could a boat sail?".

:func:`prompt_kind` decides by words (no model): an explicit *scene-level criterion* (a superlative, a
position, "the only", "far from" …) after a singular ``the`` makes a prompt referring. The criterion, when it
is one the engine can apply to candidate regions (largest/smallest area, leftmost/… centroid), is returned, so
per-chip candidates can be reduced to the scene's one answer (:func:`pick_candidate` in the runner).

:func:`relevant` says whether a label the model attached to a target answers the prompt (the demo model names
another target — "road" — on chips without the one asked for): a label is relevant when it shares a content
word with the prompt (plural ``s``/``es`` dropped), or is the prompt itself (a segmenter without phrases).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# criterion word -> (key of a candidate region to order by, pick the largest?)
CRITERIA: dict[str, tuple[str, bool]] = {
    "largest": ("area", True), "biggest": ("area", True), "longest": ("area", True), "widest": ("area", True),
    "smallest": ("area", False), "tiniest": ("area", False), "shortest": ("area", False),
    "leftmost": ("x", False), "westernmost": ("x", False), "rightmost": ("x", True), "easternmost": ("x", True),
    "topmost": ("y", False), "northernmost": ("y", False), "uppermost": ("y", False),
    "bottommost": ("y", True), "southernmost": ("y", True), "lowest": ("y", True),
}
# Scene-level wording the engine cannot apply itself (the model must): still referring.
RELATIONS = ("nearest", "closest", "farthest", "furthest", "far from", "next to", "close to", "the only",
             "tallest", "highest", "oldest", "newest", "main", "central", "middle")
_HYPHENATED = re.compile(r"\b(left|right|top|bottom|upper|lower)-most\b")
_PLURAL_SCOPE = re.compile(r"\b(all|every|each|any)\b")
STOP_WORDS = frozenset("""a an the all every each any of in on at to for from by with and or is are be this that these
those there here it its image scene picture please segment find show me detect locate outline highlight mark
where could would can which what who one some only most far near next close""".split())


@dataclass(frozen=True)
class PromptKind:
    """What a prompt asks for.

    Attributes:
        referring: it names one object or region of the whole scene (instance-level).
        criterion: the word that picks that one (``"largest"``), when the engine can apply it to regions.
        words: the prompt's content words, singular (what a relevant label shares).
    """

    referring: bool
    criterion: str | None
    words: frozenset[str]

    @property
    def kind(self) -> str:
        return "referring" if self.referring else "semantic"


def singular(word: str) -> str:
    """``ships`` -> ``ship``, ``courts`` -> ``court``, ``glasses`` -> ``glass`` (enough for matching labels)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def content_words(text: str) -> frozenset[str]:
    """Lower-case content words of ``text``, singular, without stop words and criterion words."""
    words = re.findall(r"[a-z]+", text.lower())
    return frozenset(singular(w) for w in words if w not in STOP_WORDS and w not in CRITERIA and len(w) > 1)


def prompt_kind(prompt: str) -> PromptKind:
    """Classify ``prompt`` (see the module docstring). Pure and deterministic."""
    text = _HYPHENATED.sub(lambda m: m.group(1) + "most", prompt.lower())
    words = content_words(text)
    if _PLURAL_SCOPE.search(text):
        return PromptKind(False, None, words)
    tokens = re.findall(r"[a-z]+", text)
    criterion = next((t for t in tokens if t in CRITERIA), None)
    if criterion is not None:
        return PromptKind(True, criterion, words)
    if any(re.search(rf"\b{re.escape(r)}\b", text) for r in RELATIONS):
        return PromptKind(True, None, words)
    return PromptKind(False, None, words)


def relevant(label: str, prompt: str, kind: PromptKind | None = None) -> bool:
    """Whether a target labelled ``label`` answers ``prompt`` (see the module docstring)."""
    kind = kind or prompt_kind(prompt)
    text = label.strip().lower()
    if not text or text == prompt.strip().lower():
        return True
    return bool(content_words(text) & kind.words)


__all__ = ["CRITERIA", "PromptKind", "content_words", "prompt_kind", "relevant", "singular"]
