"""Passage focusing: the window of a chunk that bears on the question, cut from its own text."""

from __future__ import annotations

import random

import pytest

from ingest.document import Chunk
from retrieval.retriever import Hit
from serve.focus import SIMILARITY_WEIGHT, focus, with_similarity
from serve.prompt import build_messages
from tuning.generator import EchoGenerator

TABLE = (
    "Values below are for clean, lightly greased threads.\n"
    "Stem steerer clamp bolts 5 Nm 4 mm hex\n"
    "Adjustable stem hinge bolt 10 Nm 5 mm hex\n"
    "Brake lever clamp bolts 4.5 Nm 4 mm hex\n"
    "Seatpost clamp 6 Nm 5 mm hex\n"
    "Pedals 35 Nm 15 mm spanner, grease the threads first.\n"
    "Rear axle nuts 35 Nm 15 mm, check the anti-rotation washers on both sides.\n"
)


def test_the_window_holds_the_questions_words_and_is_the_chunks_own_text() -> None:
    window = focus(TABLE, "What torque do the brake lever clamp bolts take?", 90)
    assert "Brake lever clamp bolts 4.5 Nm" in window
    assert window in TABLE and len(window) <= 90


def test_a_chunk_that_fits_is_shown_whole() -> None:
    assert focus(TABLE, "anything", len(TABLE)) == TABLE


@pytest.mark.parametrize("chars", [10, 40, 200])
def test_the_limit_holds_even_for_one_long_sentence(chars: int) -> None:
    text = "word " * 200 + "torque 4.5 Nm here. " + "more " * 200
    window = focus(text, "torque", chars)
    assert 0 < len(window) <= chars and window in text


def test_sentences_of_one_long_line_are_units_too() -> None:
    text = "The frame is guaranteed for 10 years. " * 5 + "Batteries get 2 years or 800 cycles. "
    text += "Paint is covered for 2 years. " * 5
    assert "Batteries get 2 years or 800 cycles." in focus(text, "battery warranty", 80)


def test_the_prompt_shows_excerpts_but_cites_the_whole_hits() -> None:
    chunk = Chunk("manual#1", "manual.pdf", TABLE, 6, 0, len(TABLE), "h")
    hits = [Hit(chunk, "/corpus/manual.pdf", 1.0, 1, 3)]
    question = "What torque do the brake lever clamp bolts take?"
    messages, used = build_messages(
        question,
        hits,
        system="s",
        count_tokens=EchoGenerator().count_tokens,
        budget=500,
        excerpt=lambda h: focus(h.text, question, 90),
    )
    assert used == hits and used[0].text == TABLE
    user = messages[-1]["content"]
    assert "[1] manual.pdf, page 6\n" in user and "4.5 Nm" in user
    assert "Pedals 35 Nm" not in user


# A period table as policies print it: "warranty" in the document's name and in one wrong row.
PERIODS = (
    "Frame 10 years Original owner only\n"
    "Motor and display 3 years\n"
    "Battery 2 years or 800 full charge cycles Whichever comes first\n"
    "Paint 2 years Excludes stone chips\n"
    "Wearing parts (tyres, chain, brake pads) 6 months Defects only\n"
    "Replacement parts fitted under warranty Remainder of period or 6 months\n"
    "Battery capacity guarantee\n"
)


def test_words_the_label_shows_count_as_covered() -> None:
    question = "How long is the battery warranty?"
    # Alone, the rows that say both "warranty" and "battery" win, and the answer is not in them.
    assert "800 full charge cycles" not in focus(PERIODS, question, 110)
    window = focus(PERIODS, question, 110, label="policies/warranty-and-returns.pdf, page 1")
    assert window.startswith("Battery 2 years or 800 full charge cycles")
    assert window in PERIODS and len(window) <= 110


def test_a_number_above_the_questions_words_is_not_a_reason_to_show_it() -> None:
    text = "Call 0800 123 456 for help.\nBattery storage\nKeep it at 40 to 60 percent charge.\n"
    text += "Never leave it in a car in summer or in frost. " * 3
    window = focus(text, "How should the battery be stored?", 80)
    assert window.startswith("Battery storage") and "0800" not in window


def _full(scores: list[float], cosines: list[float], keep: int) -> list[int]:
    totals = [s + SIMILARITY_WEIGHT * c for s, c in zip(scores, cosines, strict=True)]
    return sorted(range(len(scores)), key=lambda i: (-totals[i], i))[:keep]


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_similarity_is_skipped_only_where_it_cannot_change_the_choice(keep: int) -> None:
    rng = random.Random(keep)
    embedded_total = asked_total = 0
    for _ in range(400):
        n = rng.randint(keep + 1, 8)
        # Word scores as `window` gives them (shares of the question, bonuses, costs), cosines
        # anywhere a unit vector's can be, ties included.
        scores = [rng.choice([0.0, 0.25, 0.5, 0.55, 1.0, 1.05]) - 0.03 * i for i in range(n)]
        cosines = [rng.choice([-0.2, 0.1, 0.4, 0.6, 0.85, 1.0]) for _ in range(n)]
        asked: list[int] = []

        def similarity(
            rows: list[int], texts: list[str], c: list[float] = cosines, seen: list[int] = asked
        ) -> list[float]:
            assert texts == [f"w{i}" for i in rows]
            seen.extend(rows)
            return [c[i] for i in rows]

        totals = with_similarity(scores, [f"w{i}" for i in range(n)], keep, similarity)
        chosen = sorted(range(n), key=lambda i: (-totals[i], i))[:keep]
        assert chosen == _full(scores, cosines, keep)
        assert len(asked) == len(set(asked))  # nothing embedded twice
        embedded_total += len(asked)
        asked_total += n
    assert embedded_total < asked_total  # and it does skip


def test_a_window_far_behind_on_the_questions_words_is_not_embedded() -> None:
    asked: list[str] = []

    def similarity(rows: list[int], texts: list[str]) -> list[float]:
        asked.extend(texts)
        return [0.3] * len(texts)

    # 1.0 + 0.5 x 0.3 = 1.15 for the first; the third could reach 0.6 + 0.5 = 1.1 at most.
    totals = with_similarity([1.0, 0.9, 0.6], ["a", "b", "c"], 1, similarity)
    assert asked == ["a", "b"]
    assert totals[2] == float("-inf")
