"""Evaluation cases: the shipped set loads clean; every bad line is reported by number."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from eval.cases import CaseError, EvalCase, load_cases

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "data" / "eval" / "cases.jsonl"


def case(i: int, **fields: object) -> str:
    obj: dict[str, object] = {
        "id": f"c{i}",
        "question": f"Question number {i}?",
        "reference": f"Answer {i}.",
        "document_ids": [f"doc{i}.md"],
    }
    obj.update(fields)
    return json.dumps(obj)


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_shipped_cases_load_clean() -> None:
    loaded = load_cases(SHIPPED)
    assert loaded.problems == ()
    assert len(loaded.cases) >= 60
    for tag in ("new", "known", "paraphrase"):
        assert loaded.with_tag(tag), tag
    assert len(loaded.with_tag("new")) > len(loaded.cases) / 2  # mostly corpus-only facts
    ids = {c.id for c in loaded.cases}
    assert all(c.paraphrase_of in ids for c in loaded.cases if c.paraphrase_of)
    assert all(c.document_ids for c in loaded.with_tag("new"))
    absent = loaded.with_tag("absent")
    assert len(absent) >= 10  # issue 13: questions the corpus does not answer
    assert all(not c.document_ids and not c.key_facts for c in absent)
    assert all(c.key_facts for c in loaded.cases if c not in absent)
    assert loaded.sha256 == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()


def test_a_good_line_becomes_an_eval_case(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            case(1, tags=["new"], key_facts=["4.5 Nm"]),
            case(2, document_ids=[], paraphrase_of="c1"),
        ],
    )
    first, second = load_cases(path).cases
    assert first == EvalCase(
        "c1", "Question number 1?", "Answer 1.", ("doc1.md",), ("new",), ("4.5 Nm",), None
    )
    assert second.document_ids == () and second.tags == () and second.paraphrase_of == "c1"


def test_every_bad_line_is_reported_with_number_and_reason(tmp_path: Path) -> None:
    good = [case(i) for i in range(1, 11)]
    bad = [
        "{not json",
        json.dumps({"id": "b1", "reference": "x", "document_ids": []}),
        case(12, reference="   "),
        case(13, document_ids="doc.md"),
        case(14, document_ids=["a.md", 3]),
        case(1, question="A new question?"),  # duplicate id c1
        case(15, question="  question NUMBER 2? "),  # duplicate of c2's question
        case(16, paraphrase_of="nope"),
        case(17, paraphrase_of="c18"),  # forward reference: fine
        case(18),
    ]
    path = write(tmp_path, [*good, "", *bad])  # the blank line 11 is skipped but counted
    loaded = load_cases(path)
    reasons = {p.line: p.reason for p in loaded.problems}
    assert sorted(reasons) == list(range(12, 20))
    assert reasons[12].startswith("bad JSON")
    assert reasons[13] == "'question' is missing"
    assert reasons[14] == "'reference' is empty"
    assert "document_ids" in reasons[15] and "document_ids" in reasons[16]
    assert reasons[17] == "duplicate id 'c1' (line 1)"
    assert reasons[18] == "duplicate question (line 2)"
    assert "unknown case 'nope'" in reasons[19]
    assert [c.id for c in loaded.cases][-2:] == ["c17", "c18"]
    assert str(loaded.problems[0]).startswith("line 12: bad JSON")


def test_mostly_broken_file_is_refused_with_its_problems(tmp_path: Path) -> None:
    path = write(tmp_path, [case(1), "[]", "{", case(4, question="")])
    with pytest.raises(CaseError, match="mostly broken, 3 of 4") as caught:
        load_cases(path)
    assert [p.line for p in caught.value.problems] == [2, 3, 4]
    assert "not a JSON object but list" in caught.value.problems[0].reason


def test_half_bad_is_still_accepted(tmp_path: Path) -> None:
    loaded = load_cases(write(tmp_path, [case(1), "{"]))
    assert len(loaded.cases) == 1 and len(loaded.problems) == 1


@pytest.mark.parametrize("content", ["", "\n\n   \n"])
def test_empty_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CaseError, match="empty"):
        load_cases(path)


def test_missing_file_and_self_paraphrase(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="no such evaluation file"):
        load_cases(tmp_path / "absent.jsonl")
    loaded = load_cases(write(tmp_path, [case(1), case(2), case(3, paraphrase_of="c3")]))
    assert [p.line for p in loaded.problems] == [3]
