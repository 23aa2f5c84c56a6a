"""The absent guard: a question about something the documents never mention.

A 135M model shown passages that do not hold the answer still answers, with a number from
somewhere else. What it cannot see, the index can: a topical word of the question that no chunk
holds (`Retriever.terms`) names something the documents never mention, unless the passages
say it in other words ("camera" where the policy says "CCTV footage"). So such a word counts as
absent only when no word of the retrieved passages is near it in the embedder's space.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

_WORD = re.compile(r"[^\W\d_][\w-]{2,}")
MAX_WORDS = 2000  # distinct passage words compared, at most


def absent_terms(
    unknown: Sequence[str],
    passages: Sequence[str],
    embed: Callable[[list[str]], np.ndarray],
    similarity: float,
) -> tuple[str, ...]:
    """The words of `unknown` for which no word of `passages` reaches `similarity` (cosine of
    unit vectors from `embed`); all of them when there are no passages."""
    if not unknown:
        return ()
    words = sorted({w.lower() for text in passages for w in _WORD.findall(text)})[:MAX_WORDS]
    if not words:
        return tuple(unknown)
    vectors = embed([*unknown, *words])
    best = (vectors[: len(unknown)] @ vectors[len(unknown) :].T).max(axis=1)
    return tuple(term for term, score in zip(unknown, best, strict=True) if score < similarity)
