"""Errors as one short line for the message bar; the full text goes to the log panel (tag "SegEarth").

Pure Python (no Qt), tested without QGIS (``tests/test_plugin_answers.py``).
"""

from __future__ import annotations

import re

LOG_TAG = "SegEarth"
MESSAGE_LIMIT = 180  # characters of the message bar's line
_ASIDE = re.compile(r"\s*\([^()]*\)")  # an innermost "(…)" and the space before it
_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z`'\"“])")  # "…hub. To download…", not "e.g. x" nor "/root/.cache"
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,;:.!?])")


def short_message(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """The first line of ``text``, at most ``limit`` characters, starting with a capital.

    A longer line loses its asides in parentheses first, then everything after its first sentence, and is finally
    cut at a word with "…". ``short_message(x) == x`` (but for the capital) when ``x`` is one short line.
    """
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    if len(line) > limit:
        previous = None
        while previous != line:  # nested asides: innermost first
            previous, line = line, _ASIDE.sub("", line)
        line = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", line).strip()
    if len(line) > limit:
        end = _SENTENCE_END.search(line)
        if end is not None:
            line = line[: end.start() + 1]
    if len(line) > limit:
        cut = line.rfind(" ", 0, limit)
        line = line[: cut if cut > limit // 2 else limit - 1].rstrip(" ,;:-—") + "…"
    return line[:1].upper() + line[1:]


def bar_message(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """What the message bar shows for ``text``: :func:`short_message`, pointing to the log when text was left out."""
    short = short_message(text, limit)
    full = " ".join(line.strip() for line in str(text).splitlines() if line.strip())
    if short.rstrip(".") == (full[:1].upper() + full[1:]).rstrip("."):
        return short
    return f"{short.rstrip('.')} — details in the {LOG_TAG} log panel."
