"""Passage focusing: which retrieved chunks the prompt shows, and the window of each.

A small model reads one short, on-topic passage far better than four 200-token chunks: it copies
the fact next to the question's words instead of a number from elsewhere. A window is a
contiguous run of the chunk's lines or sentences (so it is the chunk's own text, and grounding
and citations still hold against the whole chunk) of at most `chars` characters, chosen to
cover as much of the question's topical words as possible, each word weighted by its rarity
in the index (so "clamp" counts more than "Aurora"), numbers at or after the question's words
breaking ties. Words the passage's label already shows (its document name, printed above the
window) count as covered: in a table of warranty periods, under "warranty-and-returns.pdf",
the row to show is the one that says "Battery", not one that repeats "warranty". `evidence`
then keeps the chunks whose windows bear most on the question.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import TypeVar

from retrieval.read import query_words
from retrieval.rerank import stems

# Where a chunk may be cut: after a line break, or after a sentence end.
_UNIT = re.compile(r"[^\n]*?(?:[.!?](?=\s)|\n|$)\s*")
_NUMBER = re.compile(r"\d")
# Per piece holding a number, for two at most, from the first piece with a question word on:
# answers are often numbers, and they follow their topic (a number above it is another row's).
NUMBER_BONUS = 0.05
LENGTH_COST = 0.01  # per extra piece: of two windows that cover as much, the shorter
RANK_COST = 0.03  # per retrieval rank: of two chunks whose windows score alike, the better hit
SIMILARITY_WEIGHT = 0.5  # of the embedder's cosine between question and window, when given
_MAX_COSINE = 1.0 + 1e-5  # of two unit vectors, with float32 rounding

T = TypeVar("T")
# Cosines with the question of the given windows: (their items' positions, their texts).
Similarity = Callable[[list[int], list[str]], Sequence[float]]


@dataclass(frozen=True)
class Window:
    text: str
    score: float


def units(text: str) -> list[str]:
    """The chunk as consecutive pieces (lines, or sentences within long lines) whose
    concatenation is the chunk."""
    return [m.group() for m in _UNIT.finditer(text) if m.group()]


def wanted_terms(question: str, weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """The question's topical stems with their weights (1 each where none are given)."""
    wanted = stems(" ".join(query_words(question)))
    return {s: (weights.get(s, 1.0) if weights else 1.0) for s in wanted}


def window(
    text: str, wanted: Mapping[str, float], chars: int, given: Set[str] = frozenset()
) -> Window:
    """The best window of `text`, at most `chars` long (where one piece alone is longer, that
    piece is cut at a word), scored by the weighted share of `wanted` it and `given` (stems
    shown beside it) cover; the whole text when it already fits."""
    total = sum(wanted.values()) or 1.0
    pieces = units(text)
    found = [stems(u) & wanted.keys() for u in pieces]
    shown = given & wanted.keys()
    best: tuple[float, int, int] = (-1.0, 0, 1)
    for i in range(len(pieces)):
        size, covered, numbers, on_topic = 0, set(shown), 0, False
        for j in range(i, len(pieces)):
            size += len(pieces[j])
            if size > chars and j > i:
                break
            covered |= found[j]
            on_topic = on_topic or bool(found[j])
            numbers += on_topic and bool(_NUMBER.search(pieces[j]))
            score = (
                sum(wanted[s] for s in covered) / total
                + NUMBER_BONUS * min(numbers, 2)
                - LENGTH_COST * (j - i)
            )
            if score > best[0]:
                best = (score, i, j + 1)
    if len(text) <= chars:
        return Window(text, best[0])
    picked = "".join(pieces[best[1] : best[2]]).strip()
    if len(picked) > chars:
        picked = picked[:chars].rsplit(" ", 1)[0]
    return Window(picked, best[0])


def focus(
    text: str,
    question: str,
    chars: int,
    weights: Mapping[str, float] | None = None,
    label: str = "",
) -> str:
    """The best window of `text` for `question` (see `window`), under `label`."""
    if len(text) <= chars:
        return text
    return window(text, wanted_terms(question, weights), chars, stems(label)).text


def evidence(
    items: Sequence[T],
    text_of: Callable[[T], str],
    question: str,
    chars: int,
    keep: int,
    weights: Mapping[str, float] | None = None,
    similarity: Similarity | None = None,
    label_of: Callable[[T], str] | None = None,
) -> list[tuple[T, str]]:
    """The `keep` items (retrieved chunks, best first) whose windows bear most on `question`,
    each with its window, in their retrieval order. `similarity`, if given, scores windows
    against the question (the embedder's cosine) on top of the word coverage; `label_of`, if
    given, is what the prompt prints above each item's window (its words count as covered)."""
    wanted = wanted_terms(question, weights)
    windows = [
        window(text_of(item), wanted, chars, stems(label_of(item)) if label_of else frozenset())
        for item in items
    ]
    scores = [w.score - RANK_COST * rank for rank, w in enumerate(windows)]
    if similarity is not None and len(items) > keep:
        scores = with_similarity(scores, [w.text for w in windows], keep, similarity)
    chosen = sorted(range(len(items)), key=lambda i: (-scores[i], i))[:keep]
    return [(items[i], windows[i].text) for i in sorted(chosen)]


def with_similarity(
    scores: Sequence[float],
    texts: Sequence[str],
    keep: int,
    similarity: Similarity,
) -> list[float]:
    """`scores` plus SIMILARITY_WEIGHT x each text's cosine with the question, where that can
    change which `keep` texts rank first. Cosines of unit vectors are at most 1: the `keep` best
    by score are compared first, and a text whose score plus the largest possible similarity
    stays below the lowest of theirs cannot displace any of them, so it is not embedded (and
    is left at minus infinity). The same texts win as when every one is compared, for about
    half the embedder's work on the shipped questions."""
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
    total = [float("-inf")] * len(texts)

    def add(rows: list[int]) -> None:
        if rows:
            cosines = similarity(rows, [texts[i] for i in rows])
            for i, cosine in zip(rows, cosines, strict=True):
                total[i] = scores[i] + SIMILARITY_WEIGHT * float(cosine)

    add(order[:keep])
    bar = min(total[i] for i in order[:keep])  # the final keep-th best is at least this
    add([i for i in order[keep:] if scores[i] + SIMILARITY_WEIGHT * _MAX_COSINE >= bar])
    return total
