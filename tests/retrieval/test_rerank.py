"""The light stemmer that matches a question's words to a passage's (coverage, windows, weights)."""

from __future__ import annotations

import pytest

from retrieval.rerank import coverage, stems


@pytest.mark.parametrize(
    ("plural", "singular"),
    [
        ("tyres", "tyre"),
        ("brakes", "brake"),
        ("cycles", "cycle"),
        ("batteries", "battery"),
        ("bolts", "bolt"),
        ("boxes", "box"),
        ("matches", "match"),
        ("classes", "class"),
        ("hours", "hour"),
    ],
)
def test_a_plural_and_its_singular_share_a_stem(plural: str, singular: str) -> None:
    assert stems(plural) == stems(singular)


def test_words_that_only_end_like_plurals_keep_their_ending() -> None:
    assert stems("class glass yes") == {"class", "glass", "yes"}


def test_coverage_counts_a_passage_in_the_plural() -> None:
    query = stems("tyre pressure")
    assert coverage(query, "Recommended pressure for the Selkie tyres: 3.5 bar") == 1.0
