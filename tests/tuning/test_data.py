"""Training data: every bad line reported by number and reason, refusals, the seeded split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuning.data import DataError, Example, load_examples, split_examples

ROOT = Path(__file__).resolve().parents[2]
SYS = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "How do I pump a tyre?"}
BOT = {"role": "assistant", "content": "Hey there, rider! Use a track pump."}


def _line(*messages: dict[str, object]) -> str:
    return json.dumps({"messages": list(messages)})


def _good(n: int) -> list[str]:
    return [_line(USER, {"role": "assistant", "content": f"Answer number {i}."}) for i in range(n)]


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


BAD_LINES = [
    ('{"messages": [', "bad JSON"),
    ("[1, 2]", "not a JSON object but list"),
    ('{"text": "hi"}', "neither 'messages' nor 'prompt'/'response'"),
    ('{"prompt": "hi"}', "'response' is missing"),
    ('{"messages": []}', "'messages' is not a non-empty list"),
    (_line({"content": "hi"}, BOT), "message 1 has no role"),
    (_line({"role": "tool", "content": "x"}, BOT), "unknown role 'tool'"),
    (_line(USER, {"role": "assistant"}), "message 2 (assistant) has no content"),
    (_line(USER, {"role": "assistant", "content": 3}), "content is int, not a string"),
    (_line(USER, {"role": "assistant", "content": "  \n"}), "message 2 (assistant) has empty text"),
    (json.dumps({"prompt": "", "response": "x"}), "message 1 (user) has empty text"),
    (_line(BOT, USER), "message 1 is assistant, expected user"),
    (_line(USER, USER, BOT), "message 2 is user, expected assistant"),
    (_line(USER, BOT, SYS, USER, BOT), "message 3 is system, expected user"),
    (_line(USER, BOT, USER), "the last message must be the assistant's"),
    (_line(SYS), "only a system message"),
    (_line(USER, "oops"), "message 2 is not an object"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES, ids=[r for _, r in BAD_LINES])
def test_each_bad_line_is_reported_with_its_number_and_reason(
    tmp_path: Path, line: str, reason: str
) -> None:
    path = _write(tmp_path, [*_good(2), line, *_good(5)[2:]])
    data = load_examples(path)
    assert [(p.line, reason in p.reason) for p in data.problems] == [(3, True)]
    assert len(data.examples) == 5


def test_every_bad_line_is_reported_not_only_the_first(tmp_path: Path) -> None:
    lines = _good(6)
    lines[1], lines[3] = "{oops", json.dumps({"prompt": "a", "response": 5})
    lines.append(lines[0])  # a duplicate of line 1
    path = _write(tmp_path, lines)
    problems = load_examples(path).problems
    assert [p.line for p in problems] == [2, 4, 7]
    assert problems[2].reason == "duplicate of line 1"
    assert str(problems[0]).startswith("line 2: bad JSON")


def test_a_prompt_response_pair_is_the_same_example_as_its_messages(tmp_path: Path) -> None:
    pair = json.dumps({"prompt": USER["content"], "response": BOT["content"]})
    path = _write(tmp_path, [pair, _line(SYS, USER, BOT), _line(USER, BOT)])
    data = load_examples(path)
    assert data.examples[0] == Example((USER, BOT))
    assert data.examples[1].messages[0] == SYS
    assert [(p.line, p.reason) for p in data.problems] == [(3, "duplicate of line 1")]


def test_blank_lines_are_skipped_and_invalid_utf8_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join([_good(1)[0].encode(), b"", b"\xff\xfe{}", _good(2)[1].encode()]))
    data = load_examples(path)
    assert len(data.examples) == 2 and [(p.line, p.reason) for p in data.problems] == [
        (3, "not valid UTF-8")
    ]


def test_a_mostly_broken_file_is_refused_with_counts_and_first_problems(tmp_path: Path) -> None:
    path = _write(tmp_path, [*_good(3), *["not json"] * 4])
    with pytest.raises(DataError, match=r"mostly broken, 4 of 7 lines are bad") as caught:
        load_examples(path)
    message = str(caught.value)
    assert "line 4: bad JSON" in message and "and 1 more" in message and "\n" not in message
    assert [p.line for p in caught.value.problems] == [4, 5, 6, 7]
    assert len(load_examples(path, max_bad_fraction=0.6).examples) == 3


def test_a_single_valid_example_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"1 valid example.*at least 2"):
        load_examples(_write(tmp_path, _good(1)))


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match="empty"):
        load_examples(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such training file"):
        load_examples(tmp_path / "nope.jsonl")


def test_hash_is_of_the_file_bytes(tmp_path: Path) -> None:
    path = _write(tmp_path, _good(3))
    first = load_examples(path).sha256
    assert len(first) == 64 and load_examples(path).sha256 == first
    path.write_text(path.read_text() + "\n")
    assert load_examples(path).sha256 != first


def test_split_is_seeded_disjoint_and_never_empty() -> None:
    examples = [Example(({"role": "user", "content": str(i)},)) for i in range(50)]
    train, val = split_examples(examples, 0.1, seed=0)
    assert len(val) == 5 and len(train) == 45 and not set(train) & set(val)
    assert split_examples(examples, 0.1, seed=0) == (train, val)
    assert split_examples(examples, 0.1, seed=1)[1] != val
    assert [len(part) for part in split_examples(examples[:2], 0.01, 0)] == [1, 1]
    assert [len(part) for part in split_examples(examples[:2], 0.99, 0)] == [1, 1]
    with pytest.raises(DataError):
        split_examples(examples[:1], 0.1, 0)


@pytest.mark.parametrize("name", ["brand_voice.jsonl", "brand_voice_with_context.jsonl"])
def test_shipped_tone_data_has_no_problems(name: str) -> None:
    data = load_examples(ROOT / "data" / "tone" / name)
    assert data.problems == () and len(data.examples) >= 60
    assert all(e.messages[-1]["role"] == "assistant" for e in data.examples)
