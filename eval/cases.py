"""Evaluation cases: questions with references from JSONL, every bad line reported by number."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.jsonl import (
    FileProblemError,
    LineError,
    LineProblem,
    check_fraction,
    check_usable,
    json_line,
    parse_lines,
    quote,
    read_bytes,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalCase:
    """One question, its reference answer, and the documents that hold the answer."""

    id: str
    question: str
    reference: str
    document_ids: tuple[str, ...] = ()  # empty for general-knowledge controls
    tags: tuple[str, ...] = ()  # e.g. "new", "known", "paraphrase"
    key_facts: tuple[str, ...] = ()  # short strings a correct answer must contain
    paraphrase_of: str | None = None  # id of the case this one asks again in other words


@dataclass(frozen=True)
class CaseSet:
    cases: tuple[EvalCase, ...]
    problems: tuple[LineProblem, ...]
    sha256: str  # of the file's bytes
    path: Path

    def with_tag(self, tag: str) -> tuple[EvalCase, ...]:
        return tuple(c for c in self.cases if tag in c.tags)


class CaseError(FileProblemError):
    """An evaluation file that cannot be used; `problems` lists its bad lines."""


def _text(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if value is None:
        raise LineError(f"'{field}' is missing")
    if not isinstance(value, str):
        raise LineError(f"'{field}' is {type(value).__name__}, not a string")
    if not value.strip():
        raise LineError(f"'{field}' is empty")
    return value.strip()


def _strings(obj: dict[str, Any], field: str, *, required: bool) -> tuple[str, ...]:
    value = obj.get(field)
    if value is None:
        if required:
            raise LineError(f"'{field}' is missing (use [] when no document holds the answer)")
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise LineError(f"'{field}' is not a list of non-empty strings")
    return tuple(v.strip() for v in value)


def parse_case(text: str) -> EvalCase:
    """One JSONL line to an EvalCase; raises ValueError with the reason."""
    obj = json_line(text)
    if not isinstance(obj, dict):
        raise LineError(f"not a JSON object but {type(obj).__name__}")
    paraphrase_of = obj.get("paraphrase_of")
    if paraphrase_of is not None and not (isinstance(paraphrase_of, str) and paraphrase_of):
        raise LineError("'paraphrase_of' is not a case id (a non-empty string)")
    return EvalCase(
        id=_text(obj, "id"),
        question=_text(obj, "question"),
        reference=_text(obj, "reference"),
        document_ids=_strings(obj, "document_ids", required=True),
        tags=_strings(obj, "tags", required=False),
        key_facts=_strings(obj, "key_facts", required=False),
        paraphrase_of=paraphrase_of,
    )


def _question_key(question: str) -> str:
    return " ".join(question.casefold().split())


def _parse_lines(data: bytes) -> tuple[list[tuple[int, EvalCase]], list[LineProblem], int]:
    """((line, case) pairs, problems, non-blank line count); a repeated id or question is a
    problem."""
    cases, problems, lines = parse_lines(data, parse_case)
    parsed: list[tuple[int, EvalCase]] = []
    ids: dict[str, int] = {}
    questions: dict[str, int] = {}
    for number, case in cases:
        key = _question_key(case.question)
        if case.id in ids:
            problems.append(LineProblem(number, f"duplicate id {case.id!r} (line {ids[case.id]})"))
        elif key in questions:
            problems.append(LineProblem(number, f"duplicate question (line {questions[key]})"))
        else:
            ids[case.id], questions[key] = number, number
            parsed.append((number, case))
    return parsed, problems, lines


def _check_paraphrases(
    parsed: list[tuple[int, EvalCase]],
) -> tuple[list[EvalCase], list[LineProblem]]:
    """Second pass: `paraphrase_of` may point forward, but must name another valid case."""
    ids = {case.id for _, case in parsed}
    cases: list[EvalCase] = []
    problems: list[LineProblem] = []
    for number, case in parsed:
        target = case.paraphrase_of
        if target is not None and (target not in ids or target == case.id):
            problems.append(LineProblem(number, f"'paraphrase_of' names unknown case {target!r}"))
        else:
            cases.append(case)
    return cases, problems


def load_cases(path: Path, *, max_bad_fraction: float = 0.5) -> CaseSet:
    """Read and validate a JSONL evaluation file; raise CaseError when it cannot be used."""
    check_fraction(max_bad_fraction)
    data = read_bytes(path, "evaluation", CaseError)
    parsed, problems, lines = _parse_lines(data)
    cases, unknown = _check_paraphrases(parsed)
    problems = sorted([*problems, *unknown], key=lambda p: p.line)
    check_usable(path, "evaluation", problems, lines, max_bad_fraction, CaseError)
    if not cases:
        raise CaseError(f"{path}: no valid case: {quote(problems)}", problems)
    if problems:
        log.warning("%s: skipping %d bad line(s): %s", path, len(problems), quote(problems))
    digest = hashlib.sha256(data).hexdigest()
    return CaseSet(tuple(cases), tuple(problems), digest, path)
