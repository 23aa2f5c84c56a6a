"""Evaluation cases: questions with references from JSONL, every bad line reported by number."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
SHOWN_PROBLEMS = 3  # problems quoted in a one-line error message


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
class LineProblem:
    line: int  # 1-based line number in the file
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class CaseSet:
    cases: tuple[EvalCase, ...]
    problems: tuple[LineProblem, ...]
    sha256: str  # of the file's bytes
    path: Path

    def with_tag(self, tag: str) -> tuple[EvalCase, ...]:
        return tuple(c for c in self.cases if tag in c.tags)


class CaseError(ValueError):
    """An evaluation file that cannot be used; `problems` lists its bad lines."""

    def __init__(self, message: str, problems: Sequence[LineProblem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class _LineError(ValueError):
    """One line's first problem (internal)."""


def _text(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if value is None:
        raise _LineError(f"'{field}' is missing")
    if not isinstance(value, str):
        raise _LineError(f"'{field}' is {type(value).__name__}, not a string")
    if not value.strip():
        raise _LineError(f"'{field}' is empty")
    return value.strip()


def _strings(obj: dict[str, Any], field: str, *, required: bool) -> tuple[str, ...]:
    value = obj.get(field)
    if value is None:
        if required:
            raise _LineError(f"'{field}' is missing (use [] when no document holds the answer)")
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _LineError(f"'{field}' is not a list of non-empty strings")
    return tuple(v.strip() for v in value)


def parse_case(text: str) -> EvalCase:
    """One JSONL line to an EvalCase; raises ValueError with the reason."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _LineError(f"bad JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise _LineError(f"not a JSON object but {type(obj).__name__}")
    paraphrase_of = obj.get("paraphrase_of")
    if paraphrase_of is not None and not (isinstance(paraphrase_of, str) and paraphrase_of):
        raise _LineError("'paraphrase_of' is not a case id (a non-empty string)")
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
    """((line, case) pairs, problems, non-blank line count); blank lines are skipped."""
    parsed: list[tuple[int, EvalCase]] = []
    problems: list[LineProblem] = []
    ids: dict[str, int] = {}
    questions: dict[str, int] = {}
    lines = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        lines += 1
        try:
            case = parse_case(raw.decode("utf-8"))
        except UnicodeDecodeError:
            problems.append(LineProblem(number, "not valid UTF-8"))
            continue
        except _LineError as bad:
            problems.append(LineProblem(number, str(bad)))
            continue
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


def _quote(problems: Sequence[LineProblem]) -> str:
    shown = "; ".join(str(p) for p in problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")


def load_cases(path: Path, *, max_bad_fraction: float = 0.5) -> CaseSet:
    """Read and validate a JSONL evaluation file; raise CaseError when it cannot be used."""
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be within [0, 1], not {max_bad_fraction}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CaseError(f"{path}: no such evaluation file") from None
    except IsADirectoryError:
        raise CaseError(f"{path}: is a directory, not a JSONL file") from None
    parsed, problems, lines = _parse_lines(data)
    cases, unknown = _check_paraphrases(parsed)
    problems = sorted([*problems, *unknown], key=lambda p: p.line)
    if lines == 0:
        raise CaseError(f"{path}: the evaluation file is empty")
    if len(problems) > max_bad_fraction * lines or not cases:
        raise CaseError(
            f"{path}: mostly broken, {len(problems)} of {lines} lines are bad "
            f"(more than {max_bad_fraction:.0%}): {_quote(problems)}",
            problems,
        )
    if problems:
        log.warning("%s: skipping %d bad line(s): %s", path, len(problems), _quote(problems))
    digest = hashlib.sha256(data).hexdigest()
    return CaseSet(tuple(cases), tuple(problems), digest, path)
