"""Hybrid ranking: weighted reciprocal rank fusion, then a re-scoring of the best candidates.

The re-score needs no extra model: it adds, to the fused score, the candidate's cosine with the
query (its stored vector of title + headings + text), its BM25 score and the share of the
query's topical words it holds (in its text or its context). The weights were chosen on the
shipped evaluation cases (docs/retrieval.md has the table) and are stable around these values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

COSINE, BM25, COVERAGE, FUSED = 1.0, 0.5, 0.5, 0.5
_WORD = re.compile(r"\w+", re.UNICODE)
_SUFFIXES = ("ing", "es", "s", "ed")

Ranked = list[tuple[int, float]]  # (chunk pk, score), best first


def fuse(lists: Mapping[str, Ranked], weights: Mapping[str, float], k: int) -> dict[int, float]:
    """Weighted reciprocal rank fusion: each list adds weight / (k + rank) to its chunks."""
    fused: dict[int, float] = {}
    for name, hits in lists.items():
        weight = weights.get(name, 1.0)
        for rank, (pk, _) in enumerate(hits, start=1):
            fused[pk] = fused.get(pk, 0.0) + weight / (k + rank)
    return fused


_SIBILANT_ES = ("sses", "shes", "ches", "xes", "zes")  # "es" is the plural's own: boxes, matches


def _stem(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:  # batteries -> battery
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(_SIBILANT_ES):
        return word[:-1] if len(word) > 3 else word  # tyres -> tyre, brakes -> brake
    if word.endswith("ss"):  # class, glass: not a plural
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)]
    return word


def stems(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower())}


def coverage(query_terms: set[str], text: str) -> float:
    """Share of the query's (stemmed) topical words that occur in `text`."""
    return len(query_terms & stems(text)) / len(query_terms) if query_terms else 0.0


def rescore(
    candidates: Sequence[int],
    fused: Mapping[int, float],
    keyword: Mapping[int, float],
    cosines: Mapping[int, float],
    texts: Mapping[int, str],
    query_terms: set[str],
) -> dict[int, float]:
    """The re-scored candidates: cosine + BM25 and fused score (each scaled to the best
    candidate's) + coverage, weighted as above."""
    best_fused = max((fused[pk] for pk in candidates), default=0.0) or 1.0
    best_bm25 = max((keyword.get(pk, 0.0) for pk in candidates), default=0.0) or 1.0
    return {
        pk: COSINE * cosines.get(pk, 0.0)
        + BM25 * keyword.get(pk, 0.0) / best_bm25
        + COVERAGE * coverage(query_terms, texts.get(pk, ""))
        + FUSED * fused[pk] / best_fused
        for pk in candidates
    }


def cosines_of(query: np.ndarray, rows: Mapping[int, bytes]) -> dict[int, float]:
    """Cosine of the query with each stored unit vector (float32 bytes)."""
    return {pk: float(np.frombuffer(blob, dtype=np.float32) @ query) for pk, blob in rows.items()}
