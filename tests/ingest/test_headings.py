"""Titles and heading paths: what a chunk carries as its context, per way of marking headings."""

from __future__ import annotations

import pytest

from ingest.config import ChunkingConfig
from ingest.document import Document, PageSpan
from ingest.headings import SectionContext, find_headings


def doc(text: str, doc_id: str = "folder/some-file_name.txt") -> Document:
    return Document(doc_id, doc_id, text, "0" * 64, (PageSpan(None, 0, len(text)),))


PARAGRAPH = "This paragraph is long enough to read as body text under a heading, not a heading."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# Guide\n\n## Setup\n\nBody.\n\n### Step one ###\n\nMore.", [(1, "Guide"), (2, "Setup"), (3, "Step one")]),
        ("Overview\n========\nBody.\n\nDetails\n-------\nMore.", [(1, "Overview"), (2, "Details")]),
        (f"1. Scope and Safety\n{PARAGRAPH}\n2.1 Before you start\n{PARAGRAPH}", [(2, "1. Scope and Safety"), (3, "2.1 Before you start")]),
        (f"SECTION A - BUYING A BIKE\n\nA1. Can I try a bike?\n{PARAGRAPH}", [(1, "SECTION A - BUYING A BIKE"), (3, "A1. Can I try a bike?")]),
        (f"Intro text ends here.\n\nHow it started\n\n{PARAGRAPH}", [(9, "How it started")]),
    ],
)  # fmt: skip
def test_each_way_of_marking_headings(text: str, expected: list[tuple[int, str]]) -> None:
    assert [(h.level, h.text) for h in find_headings(text)] == expected


@pytest.mark.parametrize(
    "text",
    [
        "1 Breeze about 110 km\n2 Cruise about 85 km",  # table rows, not sections
        f"1.1 Safety boots with toe caps must be worn in the hall and the\nstore at all times.\n{PARAGRAPH}",
        "2. Switch off, wait 10 seconds, switch on again.\n3. Charge it.",  # list steps
        "Bikes\nTest rides\nService\nDealers",  # a navigation menu
    ],
)  # fmt: skip
def test_body_lines_are_not_headings(text: str) -> None:
    assert find_headings(text) == []


def test_path_nests_by_level_and_resets_on_a_sibling() -> None:
    text = "# Handbook\n\n## Leave\n\n### Annual leave\n\nBody one.\n\n## Pay\n\nBody two."
    sections = SectionContext(doc(text))
    assert sections.title == "Handbook"
    assert sections.at(text.index("Body one")) == "Handbook > Leave > Annual leave"
    assert sections.at(text.index("Body two")) == "Handbook > Pay"


def test_title_falls_back_to_the_file_name() -> None:
    sections = SectionContext(doc("This document opens with a sentence, not a title.\nMore."))
    assert sections.title == "some file name"


def test_a_chunk_opening_the_next_section_belongs_to_it() -> None:
    text = f"# T\n\n## First\n\n{PARAGRAPH}\n\n## Second\n\n{PARAGRAPH} {PARAGRAPH} {PARAGRAPH}"
    sections = SectionContext(doc(text))
    tail_of_first = text.index("enough")  # the chunk starts inside "First", then opens "Second"
    assert sections.of_span(tail_of_first, len(text)) == "T > Second"
    assert sections.of_span(text.index("## First"), len(text)) == "T > First"


def test_context_setting_changes_the_fingerprint() -> None:
    on, off = ChunkingConfig(), ChunkingConfig(contextual=False)
    assert on.fingerprint() != off.fingerprint()
