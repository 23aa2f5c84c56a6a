"""Passage focusing: the window of a retrieved chunk that bears on the question.

A small model reads a short, on-topic passage far better than four 200-token chunks: it copies
the fact next to the question's words instead of a number from elsewhere. The window is a
contiguous run of the chunk's lines or sentences (so it is the chunk's own text, and grounding
and citations still hold against the whole chunk) of at most `chars` characters, chosen to
cover as many of the question's topical words as possible, numbers breaking ties.
"""

from __future__ import annotations

import re

from retrieval.read import query_words
from retrieval.rerank import stems

# Where a chunk may be cut: after a line break, or after a sentence end.
_UNIT = re.compile(r"[^\n]*?(?:[.!?](?=\s)|\n|$)\s*")
_NUMBER = re.compile(r"\d")


def _units(text: str) -> list[str]:
    """The chunk as consecutive pieces (lines, or sentences within long lines) whose
    concatenation is the chunk."""
    return [m.group() for m in _UNIT.finditer(text) if m.group()]


def focus(text: str, question: str, chars: int) -> str:
    """The best window of `text` for `question`, at most `chars` long (where one piece alone
    is longer, that piece is cut at a word); the whole text when it already fits."""
    if len(text) <= chars:
        return text
    wanted = stems(" ".join(query_words(question)))
    units = _units(text)
    found = [stems(u) & wanted for u in units]
    best: tuple[float, int, int] = (-1.0, 0, 1)
    for i in range(len(units)):
        size, covered, numbers = 0, set[str](), 0
        for j in range(i, len(units)):
            size += len(units[j])
            if size > chars and j > i:
                break
            covered |= found[j]
            numbers += bool(_NUMBER.search(units[j]))
            score = len(covered) + 0.1 * min(numbers, 3)
            if score > best[0]:
                best = (score, i, j + 1)
    window = "".join(units[best[1] : best[2]]).strip()
    if len(window) > chars:
        window = window[:chars].rsplit(" ", 1)[0]
    return window
