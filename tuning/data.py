"""Training data: chat examples from JSONL, every bad line reported, and a seeded split."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Sequence
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
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    """One conversation: optional system, then user/assistant turns ending with the assistant."""

    messages: tuple[dict[str, str], ...]

    def key(self) -> str:
        """Canonical JSON of the messages: equal keys are duplicates."""
        return json.dumps(self.messages, ensure_ascii=False, sort_keys=True)

    def __hash__(self) -> int:  # the dicts inside are unhashable; their JSON is not
        return hash(self.key())


@dataclass(frozen=True)
class TrainingData:
    examples: tuple[Example, ...]
    problems: tuple[LineProblem, ...]
    sha256: str  # of the file's bytes
    path: Path


class DataError(FileProblemError):
    """A training file that cannot be trained on; `problems` lists its bad lines."""


def _messages_of(obj: Any) -> list[Any]:
    if not isinstance(obj, dict):
        raise LineError(f"not a JSON object but {type(obj).__name__}")
    if "messages" in obj:
        if not isinstance(obj["messages"], list) or not obj["messages"]:
            raise LineError("'messages' is not a non-empty list")
        return list(obj["messages"])
    if "prompt" in obj or "response" in obj:
        for field in ("prompt", "response"):
            if field not in obj:
                raise LineError(f"'{field}' is missing (a prompt/response line needs both)")
        return [
            {"role": "user", "content": obj["prompt"]},
            {"role": "assistant", "content": obj["response"]},
        ]
    raise LineError("neither 'messages' nor 'prompt'/'response'")


def _message(position: int, raw: Any) -> dict[str, str]:
    where = f"message {position}"
    if not isinstance(raw, dict):
        raise LineError(f"{where} is not an object")
    role, content = raw.get("role"), raw.get("content")
    if role is None:
        raise LineError(f"{where} has no role")
    if role not in ROLES:
        raise LineError(f"{where} has unknown role {role!r} (expected one of {', '.join(ROLES)})")
    if content is None:
        raise LineError(f"{where} ({role}) has no content")
    if not isinstance(content, str):
        raise LineError(f"{where} ({role}) content is {type(content).__name__}, not a string")
    if not content.strip():
        raise LineError(f"{where} ({role}) has empty text")
    return {"role": role, "content": content}


def _check_order(roles: Sequence[str]) -> None:
    turns = roles[1:] if roles[0] == "system" else roles
    if not turns:
        raise LineError("only a system message: no user/assistant turns")
    for i, role in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            offset = len(roles) - len(turns)
            raise LineError(
                f"wrong role order: message {i + offset + 1} is {role}, expected {expected} "
                "(optional system first, then user/assistant alternating)"
            )
    if turns[-1] != "assistant":
        raise LineError("wrong role order: the last message must be the assistant's")


def parse_line(text: str) -> Example:
    """One JSONL line to an Example; raises ValueError with the reason."""
    obj = json_line(text)
    messages = tuple(_message(i + 1, m) for i, m in enumerate(_messages_of(obj)))
    _check_order([m["role"] for m in messages])
    return Example(messages)


def _parse_lines(data: bytes) -> tuple[list[Example], list[LineProblem], int]:
    """(examples, problems, non-blank line count); a repeated example is a problem."""
    parsed, problems, lines = parse_lines(data, parse_line)
    examples: list[Example] = []
    first_seen: dict[str, int] = {}
    for number, example in parsed:
        key = example.key()
        if key in first_seen:
            problems.append(LineProblem(number, f"duplicate of line {first_seen[key]}"))
            continue
        first_seen[key] = number
        examples.append(example)
    return examples, sorted(problems, key=lambda p: p.line), lines


def load_examples(path: Path, *, max_bad_fraction: float = 0.5) -> TrainingData:
    """Read and validate a JSONL training file; raise DataError when it cannot be trained on."""
    check_fraction(max_bad_fraction)
    data = read_bytes(path, "training", DataError)
    examples, problems, lines = _parse_lines(data)
    check_usable(path, "training", problems, lines, max_bad_fraction, DataError)
    if len(examples) < 2:
        raise DataError(
            f"{path}: {len(examples)} valid example(s); training needs at least 2 "
            "(one to train on, one to validate)"
            + (f"; bad lines: {quote(problems)}" if problems else ""),
            problems,
        )
    if problems:
        log.warning("%s: skipping %d bad line(s): %s", path, len(problems), quote(problems))
    digest = hashlib.sha256(data).hexdigest()
    return TrainingData(tuple(examples), tuple(problems), digest, path)


def split_examples(
    examples: Sequence[Example], val_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Seeded (train, val) split, both non-empty; each keeps the file's order."""
    if len(examples) < 2:
        raise DataError(f"{len(examples)} example(s) cannot be split into train and validation")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be within (0, 1), not {val_fraction}")
    n_val = min(len(examples) - 1, max(1, round(len(examples) * val_fraction)))
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held_out = set(order[:n_val])
    train = [e for i, e in enumerate(examples) if i not in held_out]
    val = [e for i, e in enumerate(examples) if i in held_out]
    return train, val
