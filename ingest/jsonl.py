"""JSONL intake shared by training data and evaluation cases, every bad line named by number.

A file is refused as a whole only when it is empty or mostly broken.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

SHOWN_PROBLEMS = 3  # problems quoted in a one-line error message

T = TypeVar("T")


@dataclass(frozen=True)
class LineProblem:
    line: int  # 1-based line number in the file
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class LineError(ValueError):
    """One line's first problem, raised by a line parser."""


class FileProblemError(ValueError):
    """A JSONL file that cannot be used as a whole; `problems` lists its bad lines."""

    def __init__(self, message: str, problems: Sequence[LineProblem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


def quote(problems: Sequence[LineProblem]) -> str:
    shown = "; ".join(str(p) for p in problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")


def json_line(text: str) -> Any:
    """The line's JSON value; LineError with the column of the first fault."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"bad JSON: {exc.msg} at column {exc.colno}") from None


def read_bytes(path: Path, kind: str, error: type[FileProblemError]) -> bytes:
    """The file's bytes; `error` naming the path when it is missing or a folder."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such {kind} file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a JSONL file") from None


def parse_lines(
    data: bytes, parse: Callable[[str], T]
) -> tuple[list[tuple[int, T]], list[LineProblem], int]:
    """([(line number, parsed)], problems, non-blank line count); blank lines are skipped and
    a line that is not UTF-8 or that `parse` refuses with LineError becomes a problem."""
    parsed: list[tuple[int, T]] = []
    problems: list[LineProblem] = []
    lines = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        lines += 1
        try:
            parsed.append((number, parse(raw.decode("utf-8"))))
        except UnicodeDecodeError:
            problems.append(LineProblem(number, "not valid UTF-8"))
        except LineError as bad:
            problems.append(LineProblem(number, str(bad)))
    return parsed, problems, lines


def check_usable(
    path: Path,
    kind: str,
    problems: Sequence[LineProblem],
    lines: int,
    max_bad_fraction: float,
    error: type[FileProblemError],
) -> None:
    """Refuse an empty file, or one with more than `max_bad_fraction` of its lines bad."""
    if lines == 0:
        raise error(f"{path}: the {kind} file is empty")
    if len(problems) > max_bad_fraction * lines:
        raise error(
            f"{path}: mostly broken, {len(problems)} of {lines} lines are bad "
            f"(more than {max_bad_fraction:.0%}): {quote(problems)}",
            problems,
        )


def check_fraction(max_bad_fraction: float) -> None:
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be within [0, 1], not {max_bad_fraction}")
