"""Split a user prompt into SAM3 concept queries (short noun phrases).

SAM3 is prompted with one *concept* at a time: a short noun phrase such as ``"swimming pool"`` or
``"yellow school bus"``. A prompt may name several concepts; each becomes its own query and its
instances carry that concept as their label.

Rules (in this order):

1. the prompt is split at commas, semicolons and line breaks — and *only* there: ``" and "`` and
   ``" or "`` are not separators, because they are part of many single concepts ("red and white
   roofs", "black or grey cars", "sand and gravel pits"); write ``"roads, rivers"`` for two queries;
2. a piece that starts with ``and``/``or`` after a separator loses that word (the Oxford comma of
   ``"roads, rivers, and lakes"``); ``"&"`` likewise;
3. a leading instruction verb is dropped, with an optional ``"me"`` and leading determiners
   (``"segment all the buildings"`` → ``"buildings"``, ``"find every tennis court"`` →
   ``"tennis court"``), since SAM3 was trained on noun phrases, not instructions; the verb is only
   dropped when words follow it (``"find"`` alone stays ``"find"``);
4. trailing ``. ! ?`` and surrounding quotes are removed, inner whitespace collapsed;
5. empty pieces are dropped and repeated concepts (compared case-insensitively) kept once, in
   first-seen order.

The label of an instance is its concept exactly as returned here (case kept; the stitcher
normalises case when it groups labels).

**Synonyms** (after SegEarth-OV3 and ProC-SAM3, which query remote-sensing concepts by several names): a
vertical bar inside one concept separates names of the *same* concept — ``"building|roof|house"`` is one
concept queried three times, its masks combined by per-pixel maximum and labelled with the first name
(``building``); a comma still separates concepts (``"building|roof, tree|forest"``). Each name is cleaned by
the rules above; repeated names are kept once. :func:`split_concepts` returns the labels,
:func:`concept_queries` the names to query per concept.
"""

from __future__ import annotations

import re

from segearth_geo.errors import UsageError

SEPARATORS = re.compile(r"[,;\n\r]+")
SYNONYMS = "|"  # separates names of one concept
_CONJUNCTION = re.compile(r"^(?:and|or|&)(?:\s+|$)", re.IGNORECASE)
# Verbs only: words that also start noun phrases ("mark", "map", "plot") are left out.
_INSTRUCTION_VERBS = ("segment", "find", "detect", "show", "highlight", "outline", "extract", "locate", "identify",
                      "delineate", "select", "count")
_INSTRUCTION = re.compile(
    r"^(?:please\s+)?(?:" + "|".join(_INSTRUCTION_VERBS) + r")\s+(?:me\s+)?(?:(?:all|the|every|each|any|a|an)\s+)*",
    re.IGNORECASE,
)
_DETERMINERS = re.compile(r"^(?:(?:all|the|every|each|any)\s+)+(?=\S)", re.IGNORECASE)
_QUOTES = "\"'`“”‘’"


def split_concepts(prompt: str) -> list[str]:
    """``"buildings, swimming pools"`` → ``["buildings", "swimming pools"]``: each concept's label (its first
    name; see the module docstring).

    Raises:
        UsageError: nothing is left to segment (``""``, ``" , ; "``).
    """
    return [names[0] for names in concept_queries(prompt)]


def concept_queries(prompt: str) -> list[tuple[str, ...]]:
    """Per concept, the names it is queried by: ``"building|roof, pools"`` → ``[("building", "roof"),
    ("pools",)]``; the first name is the concept's label. Concepts with the same label are kept once.

    Raises:
        UsageError: nothing is left to segment (``""``, ``" , ; | "``).
    """
    concepts: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for piece in SEPARATORS.split(str(prompt)):
        names: list[str] = []
        for part in piece.split(SYNONYMS):
            name = clean_concept(part)
            if name and name.casefold() not in {n.casefold() for n in names}:
                names.append(name)
        if names and names[0].casefold() not in seen:
            seen.add(names[0].casefold())
            concepts.append(tuple(names))
    if not concepts:
        raise UsageError(f"the prompt {prompt!r} names no concept to segment; give noun phrases such as "
                         "'buildings, swimming pools' (synonyms of one concept: 'building|roof|house')")
    return concepts


def clean_concept(piece: str) -> str:
    """One piece of a prompt as a SAM3 noun phrase (rules 2-4 of the module docstring); may be ``""``."""
    text = " ".join(piece.split()).strip(_QUOTES + " ")
    text = text.rstrip(".!? ").strip(_QUOTES + " ")
    text = _CONJUNCTION.sub("", text)
    stripped = _INSTRUCTION.sub("", text)
    if stripped and stripped != text:
        text = stripped
    else:
        stripped = _DETERMINERS.sub("", text)
        text = stripped or text
    return text.strip(_QUOTES + " ")
