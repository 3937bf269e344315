"""Splitting a prompt into SAM3 concept queries (no torch needed)."""

from __future__ import annotations

import pytest

from segearth_geo.errors import UsageError
from segearth_geo.model.sam3.prompt import clean_concept, split_concepts


@pytest.mark.parametrize(
    ("prompt", "concepts"),
    [
        ("buildings, swimming pools", ["buildings", "swimming pools"]),
        ("swimming pool", ["swimming pool"]),
        # " and " / " or " are part of single concepts: never separators
        ("red and white roofs", ["red and white roofs"]),
        ("black or grey cars", ["black or grey cars"]),
        ("sand and gravel pits; solar panels", ["sand and gravel pits", "solar panels"]),
        # the Oxford comma's "and" goes, the phrase stays
        ("roads, rivers, and lakes", ["roads", "rivers", "lakes"]),
        ("roads, or rivers", ["roads", "rivers"]),
        ("trees\nfields\r\nponds", ["trees", "fields", "ponds"]),
        # instructions become noun phrases
        ("segment all the buildings", ["buildings"]),
        ("Find me the tennis courts.", ["tennis courts"]),
        ("please detect every ship", ["ship"]),
        ("the river?", ["river"]),
        ('"solar panels"', ["solar panels"]),
        # a lone verb or determiner-free noun stays as typed
        ("find", ["find"]),
        ("mark", ["mark"]),
        ("map tiles", ["map tiles"]),
        # repeats (any case) and empty pieces are dropped, first-seen order and case kept
        ("Cars, cars ,, trucks;", ["Cars", "trucks"]),
    ],
)
def test_split_concepts(prompt, concepts):
    assert split_concepts(prompt) == concepts


@pytest.mark.parametrize("prompt", ["", "   ", " , ; ", "\n", "...", "and"])
def test_a_prompt_without_a_concept_is_a_one_line_usage_error(prompt):
    with pytest.raises(UsageError, match="names no concept"):
        split_concepts(prompt)


def test_clean_concept_collapses_whitespace_and_keeps_inner_words():
    assert clean_concept("  large   white\tboats  ") == "large white boats"
    assert clean_concept("and") == ""
