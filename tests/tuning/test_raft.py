"""The reading-skill (RAFT) set: extractive, cited, reproducible, and apart from the eval data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from eval import text
from eval.voice import voice_features
from ingest.config import IngestConfig
from ingest.loaders import DocumentLoader
from serve.prompt import neutralise, user_turn
from tests.conftest import ROOT
from tuning.augment import parse_turn
from tuning.data import load_examples
from tuning.raft import (
    BRAND_GREETING,
    BRAND_SIGNOFF,
    BRAND_SYSTEM,
    NO_ANSWER,
    Passage,
    RaftConfig,
    build_examples,
    in_brand_voice,
    load_passages,
    render,
)
from tuning.raft_facts import facts_in

READER = ROOT / "data" / "reader"
SHIPPED = READER / "reader.jsonl"
CASES = ROOT / "data" / "eval" / "cases.jsonl"
_CITE = re.compile(r" \[(\d+)\]\.\Z")

GZIP = """gzip — Support for gzip files

gzip.open(filename, mode='rb', compresslevel=9, encoding=None)

Open a gzip-compressed file in binary or text mode. The compresslevel argument is an integer \
from 0 to 9, as for the GzipFile constructor.

New in version 3.2.

exception gzip.BadGzipFile

An exception raised for invalid gzip files.

New in version 3.8."""


def lines(path: Path) -> list[dict[str, list[dict[str, str]]]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


@pytest.fixture(scope="module")
def shipped() -> list[dict[str, list[dict[str, str]]]]:
    return lines(SHIPPED)


@pytest.fixture(scope="module")
def passages() -> list[Passage]:
    return load_passages(READER / "source", RaftConfig())


def test_facts_are_read_from_signatures_and_version_notes() -> None:
    facts = {f.question: f for f in facts_in(GZIP)}
    mode = facts["What is the default value of the mode parameter of gzip.open()?"]
    assert (mode.value, mode.evidence) == ("'rb'", "mode='rb'")
    level = facts["What values can the compresslevel argument of gzip.open() take?"]
    assert level.value == "from 0 to 9"
    bad = facts["In which Python version was gzip.BadGzipFile added?"]
    assert bad.answer == "gzip.BadGzipFile was added in Python version 3.8."
    assert facts["In which Python version was gzip.open() added?"].value == "version 3.2"
    assert "What is the default value of the encoding parameter of gzip.open()?" not in facts


def test_the_user_turn_is_the_servers_format() -> None:
    order = [Passage("library/a.txt", "First.\n\nSecond paragraph."), Passage("b.txt", "Two.")]
    blocks = [f"[{n}] {p.where}\n{p.text}" for n, p in enumerate(order, start=1)]
    assert render("Why?", order) == user_turn("Why?", blocks)


def test_the_generator_is_deterministic_per_seed(passages: list[Passage]) -> None:
    config = RaftConfig(count=40)
    first = build_examples(passages, config)
    assert first == build_examples(passages, config)
    assert first != build_examples(passages, RaftConfig(count=40, seed=config.seed + 1))


def test_answers_copy_the_fact_from_the_cited_passage(shipped: list[dict]) -> None:  # type: ignore[type-arg]
    for example in shipped:
        user, answer = (m["content"] for m in example["messages"])
        turn = parse_turn(user)
        assert turn is not None and len(turn.passages) == RaftConfig().passages == 1, user
        for passage in turn.passages.values():
            assert neutralise(passage.text) == passage.text  # shown as the server would show it
        if answer.startswith(NO_ANSWER):
            continue
        cite = _CITE.search(answer)
        assert cite is not None, answer
        oracle = turn.passages[int(cite[1])].text
        matches = [f for f in facts_in(oracle) if f.question == turn.question]
        assert matches, f"the cited passage does not answer {turn.question!r}"
        fact = matches[0]
        assert fact.value in answer and fact.value in oracle and fact.evidence in oracle
        others = [p.text for n, p in turn.passages.items() if n != int(cite[1])]
        assert not any(fact.evidence in text for text in others)  # the citation is unambiguous


def test_no_oracle_examples_hold_no_answering_passage(
    shipped: list[dict],  # type: ignore[type-arg]
    passages: list[Passage],
) -> None:
    by_question = {f.question: f for p in passages for f in facts_in(p.text)}
    absent = [e for e in shipped if e["messages"][1]["content"].startswith(NO_ANSWER)]
    assert 0.05 <= len(absent) / len(shipped) <= 0.15
    for example in absent:
        turn = parse_turn(example["messages"][0]["content"])
        assert turn is not None
        fact = by_question[turn.question]
        assert example["messages"][1]["content"] == f"{NO_ANSWER} {fact.what}."
        for passage in turn.passages.values():
            assert fact.evidence not in passage.text
            assert turn.question not in {f.question for f in facts_in(passage.text)}


def test_the_shipped_file_loads_as_with_context_training_data(shipped: list[dict]) -> None:  # type: ignore[type-arg]
    data = load_examples(SHIPPED, max_bad_fraction=0.0)
    assert len(data.examples) == len(shipped) >= 250 and not data.problems
    assert all(parse_turn(e.messages[-2]["content"]) is not None for e in data.examples)


def _shingles(text: str, n: int = 8) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


# Every file of reading examples and the table source they are made from, with how many
# 8-word shingles each holds at least (so the check is seen to have read it).
TRAINING_TEXT = (
    (SHIPPED, 10_000),
    (READER / "reader_tables.jsonl", 2_000),
    (READER / "tables" / "tables.jsonl", 10_000),
)


@pytest.fixture(scope="module")
def evaluated() -> tuple[set[str], set[str]]:
    """The eval side: 8-word shingles of the corpus and references, and the `new` key facts."""
    cases = [json.loads(line) for line in CASES.read_text("utf-8").splitlines() if line.strip()]
    corpus = ROOT / "data" / "corpus"
    with DocumentLoader(IngestConfig()) as loader:
        documents = [
            loader.load(path, path.relative_to(corpus).as_posix())
            for path in sorted(corpus.rglob("*"))
            if path.is_file() and path.name != "README.md"
        ]
    assert len(documents) >= 10
    shingles = set().union(*(_shingles(d.text) for d in documents))
    shingles |= set().union(*(_shingles(c["reference"]) for c in cases))
    assert len(shingles) > 10_000
    new_facts = {f for c in cases if "new" in c["tags"] for f in c["key_facts"]}
    assert "4.5 Nm" in new_facts and "Halden MX250" in new_facts
    return shingles, new_facts


@pytest.mark.parametrize(("path", "least"), TRAINING_TEXT, ids=lambda v: getattr(v, "name", ""))
def test_no_evaluation_text_or_fact_is_in_the_training_data(
    path: Path, least: int, evaluated: tuple[set[str], set[str]]
) -> None:
    shingles, new_facts = evaluated
    training = path.read_text("utf-8")
    records = [json.loads(line) for line in training.splitlines()]
    trained = _shingles(json.dumps(records, ensure_ascii=False).replace("\\n", " "))
    assert len(trained) > least  # the file was read
    assert not trained & shingles
    for fact in new_facts:
        assert not re.search(rf"(?<!\w){re.escape(fact)}(?!\w)", training, re.I), fact


@pytest.mark.slow
def test_the_shipped_file_is_what_the_generator_makes(passages: list[Passage]) -> None:
    rebuilt = build_examples(passages, RaftConfig())
    assert rebuilt == lines(SHIPPED)


def test_the_brand_file_is_the_same_examples_in_the_brand_voice(shipped: list[dict]) -> None:  # type: ignore[type-arg]
    voiced = lines(SHIPPED.with_name("reader_brand.jsonl"))
    assert voiced == [in_brand_voice(e) for e in shipped]
    # The voice of data/tone, as the comparison's tone metric knows it.
    assert (BRAND_GREETING, BRAND_SIGNOFF) == (text.BRAND_GREETING, text.BRAND_SIGNOFF)
    first = voiced[0]["messages"]
    assert first[0] == {"role": "system", "content": BRAND_SYSTEM}
    assert first[2]["content"].startswith(BRAND_GREETING)
    assert first[2]["content"].endswith("\n" + BRAND_SIGNOFF)
    # The voice rules (data/tone/README.md), measured as the comparison measures them: 2-5
    # sentences between greeting and sign-off, mostly in the second person; and the reader's
    # answer (the fact and its citation) is in every one, unchanged.
    features = [voice_features(e["messages"][2]["content"]) for e in voiced]
    assert all(f.has_greeting and f.has_signoff and 2 <= f.sentences <= 5 for f in features)
    assert sum(f.second_person_rate > 0 for f in features) >= 0.75 * len(features)
    for plain, brand in zip(shipped, voiced, strict=True):
        assert plain["messages"][-1]["content"] in brand["messages"][2]["content"]
