"""With-context examples train as the server serves them: its system prompt, several passages."""

from __future__ import annotations

from pathlib import Path

from serve.prompt import user_turn
from tests.conftest import ROOT
from tuning.augment import MAX_CHARS, for_serving, parse_turn
from tuning.data import Example, load_examples

PERSONA = "You are the shop's assistant."
RAG = "Answer from the numbered sources and cite them."


def with_context(question: str, passage: str, where: str, answer: str) -> Example:
    user = user_turn(question, [f"[1] {where}\n{passage}"])
    return Example((
        {"role": "system", "content": PERSONA},
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ))  # fmt: skip


def plain(question: str, answer: str) -> Example:
    return Example(
        ({"role": "user", "content": question}, {"role": "assistant", "content": answer})
    )


EXAMPLES = [
    with_context(
        f"Question {i}?",
        f"Passage {i} says {i * 7} euros.",
        f"doc{i}.md",
        f"Hey there! It is {i * 7} euros [1]. Bye",
    )
    for i in range(6)
] + [plain("How are you?", "Hey there! Fine. Bye")]


def test_the_parser_reads_what_the_server_writes() -> None:
    blocks = [
        "[1] faq.txt\nFirst passage.\n\nWith a blank line.",
        "[2] manual.pdf, page 3\nSecond.",
    ]
    turn = parse_turn(user_turn("What now?", blocks))
    assert turn is not None and turn.question == "What now?"
    assert [(n, p.where, p.text) for n, p in turn.passages.items()] == [
        (1, "faq.txt", "First passage.\n\nWith a blank line."),
        (2, "manual.pdf, page 3", "Second."),
    ]
    assert turn.render(list(turn.passages.values())) == user_turn("What now?", blocks)
    assert parse_turn("What now?") is None  # a plain question
    assert parse_turn("Sources:\n<sources>\nno number\n</sources>\n\nQuestion: q") is None


def test_variants_mix_in_other_passages_and_renumber_the_citations() -> None:
    out = for_serving(EXAMPLES, distractors=3, rag_instructions=RAG, seed=1)
    assert out[-1] == EXAMPLES[-1]  # no sources block: untouched
    assert len(out) == 6 * 2 + 1  # each with-context example, then its variant
    for i in range(6):
        original, variant = out[2 * i], out[2 * i + 1]
        assert original.messages[0]["content"] == f"{PERSONA}\n\n{RAG}"  # as served
        assert original.messages[1:] == EXAMPLES[i].messages[1:]
        turn = parse_turn(variant.messages[1]["content"])
        assert turn is not None and 2 <= len(turn.passages) <= 4
        assert turn.question == f"Question {i}?"
        gold = next(n for n, p in turn.passages.items() if p.text.startswith(f"Passage {i} "))
        assert variant.messages[2]["content"] == f"Hey there! It is {i * 7} euros [{gold}]. Bye"
        assert len(variant.messages[1]["content"] + variant.messages[2]["content"]) <= MAX_CHARS
    golds = set()
    for i, variant in enumerate(out[1:12:2]):
        turn = parse_turn(variant.messages[1]["content"])
        assert turn is not None
        golds.add(next(n for n, p in turn.passages.items() if p.text.startswith(f"Passage {i} ")))
    assert len(golds) > 1  # the relevant passage is not always first
    assert for_serving(EXAMPLES, distractors=3, rag_instructions=RAG, seed=1) == out  # seeded
    assert for_serving(EXAMPLES, distractors=3, rag_instructions=RAG, seed=2) != out


def test_no_distractors_and_no_instructions_change_nothing() -> None:
    assert for_serving(EXAMPLES, distractors=0) == EXAMPLES


def test_a_passage_too_long_to_join_leaves_the_example_alone() -> None:
    big = [with_context(f"Q{i}?", "x" * (MAX_CHARS - 100), f"d{i}.md", "A [1].") for i in range(3)]
    assert for_serving(big, distractors=2) == big


def test_the_shipped_with_context_examples_all_parse_and_most_get_a_variant() -> None:
    data = load_examples(Path(ROOT / "data" / "tone" / "brand_voice_with_context.jsonl"))
    assert all(parse_turn(e.messages[-2]["content"]) for e in data.examples)
    out = for_serving(data.examples, distractors=3, rag_instructions=RAG, seed=0)
    assert all(e.messages[0]["content"].endswith(RAG) for e in out)
    variants = len(out) - len(data.examples)
    assert variants >= 0.9 * len(data.examples)  # the rest have no room beside their passage


def test_an_example_without_a_system_prompt_gets_the_servers_default_persona() -> None:
    bare = Example(with_context("Q?", "Passage.", "doc.md", "It is [1].").messages[1:])
    out = for_serving([bare], distractors=0, rag_instructions=RAG, persona="Default persona.")
    assert out[0].messages[0] == {"role": "system", "content": f"Default persona.\n\n{RAG}"}
    (kept,) = for_serving(EXAMPLES[:1], distractors=0, rag_instructions=RAG, persona="Other.")
    assert kept.messages[0]["content"] == f"{PERSONA}\n\n{RAG}"  # its own persona wins
    (alone,) = for_serving([bare], distractors=0, rag_instructions=RAG)
    assert alone.messages[0] == {"role": "system", "content": RAG}
