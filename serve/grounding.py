"""The number check: a RAG answer states no number that its prompt does not hold.

The packaged 135M model sometimes answers with a number it made up: "the first service is
scheduled for 2023-01-01" above a passage that says "after 300 km or 6 weeks", "extension 12"
above "extension 499". A number is the part of an answer a reader trusts most and checks least,
so when the answer is about to state one that neither the shown sources nor the question hold,
the generation stops there and the answer gives the source's own words instead: what it had
said so far, then `— the source says: "<the window of source [1]>" [1]`.

Streaming gives the same text as a whole answer: a number is held back until it is complete
(the next character cannot continue it), a few tokens at most, and everything before it goes
out as it comes. Codes (E07, MF-BAT-540) and citations are not quantities and are never held.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass

from retrieval.rerank import stems
from serve.focus import units
from serve.loops import loops_after
from serve.numbers import CITATION, QUANTITY, canonical_number, held
from tuning.generator import Message

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

log = logging.getLogger(__name__)
_RULE = frozenset("|-: ")  # a Markdown table's rule line, "|---|---|"
WRAPPED_LINE = 70  # characters: a line this long that ends mid-sentence goes on in the next


def one_line(text: str) -> str:
    """A passage as one quotable line: Markdown heading marks, bold and table rules dropped,
    table cells joined by " | ", lines joined by "; " (rows, headings) or, where the line
    before ends a sentence or wraps (PDF text wraps long lines), by a space."""
    out, wraps = "", False
    for raw in text.splitlines():
        line = raw.strip().lstrip("#").strip().replace("**", "")
        if not line or set(line) <= _RULE:
            continue
        if line.startswith("|"):
            line = " | ".join(cell.strip() for cell in line.strip("|").split("|"))
        if not out:
            out = line
        elif wraps or out[-1] in ".!?:;," or line[0].islower():
            out = f"{out} {line}"
        else:
            out = f"{out}; {line}"
        wraps = len(line) >= WRAPPED_LINE
    return out.replace('"', "'")


@dataclass(frozen=True)
class NumberCheck:
    """The numbers an answer may state (`allowed`, canonical), those its first number may not
    be (`off_topic`), and the words to give instead."""

    allowed: frozenset[str]
    quote: str  # source [1]'s shown text, on one line
    off_topic: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, messages: Sequence[Message], shown: Sequence[str], topic: Set[str] = frozenset()
    ) -> NumberCheck:
        """For a prompt of `messages` (system, history, the sources and the question: a number
        anywhere in them is not made up; citation marks `[n]` are no numbers) whose sources
        show `shown` ([1] first). `topic`: the question's topical stems; a number the sources
        hold only in lines (rows, sentences) without any of them, and the rest of the prompt
        not at all, belongs to another row: the answer's first number may not be one."""
        allowed: set[str] = set()
        elsewhere: set[str] = set()
        for message in messages:
            text = CITATION.sub(" ", message["content"])
            allowed |= held(text)
            for window in shown:
                text = text.replace(window, " ")
            elsewhere |= held(text)
        on: set[str] = set()
        off: set[str] = set()
        for window in shown:
            for line in units(window):
                (on if stems(line) & topic else off).update(held(line))
        off_topic = off - on - elsewhere if topic else set()
        return cls(frozenset(allowed), one_line(shown[0]) if shown else "", frozenset(off_topic))

    def scan(self, text: str, complete: bool) -> tuple[int | None, int]:
        """(where the first number `text` states that is not allowed (or, the first of all, is
        off the topic) starts, or None; how much of `text` may go out now). `complete`: nothing
        follows, so a trailing number is whole."""
        masked = CITATION.sub(lambda m: " " * len(m.group()), text)
        for i, match in enumerate(QUANTITY.finditer(masked)):
            rest = masked[match.end() :]
            if not complete and rest in ("", ".", ","):  # "4" may become "4.5" or "4,500"
                return None, match.start()
            number = canonical_number(match.group())
            if number not in self.allowed or (i == 0 and number in self.off_topic):
                return match.start(), match.start()
        if not complete and masked.endswith("["):  # perhaps a citation: wait for it
            return None, len(text) - 1
        return None, len(text)

    def instead(self, said: str) -> str:
        """The whole answer when it had said `said` and was about to state a number no source
        holds: `said`, then the source's words."""
        if not self.quote:
            return said.rstrip()
        says = f'the source says: "{self.quote}" [1]'
        if not said.strip():
            return said + says[0].upper() + says[1:]
        space = "" if said[-1].isspace() else " "
        if said.rstrip()[-1] in ".!?":
            return f"{said}{space}{says[0].upper()}{says[1:]}"
        return f"{said}{space}— {says}"


class Linked(threading.Event):
    """An event that also reads as set when `parent` is: a part of an answer can be ended
    alone, and the caller's stop (a client that hung up) still ends every part."""

    def __init__(self, parent: threading.Event) -> None:
        super().__init__()
        self.parent = parent

    def is_set(self) -> bool:
        return super().is_set() or self.parent.is_set()


def _sentence_start(text: str, at: int) -> int:
    """Where the sentence holding position `at` starts (after the last end before it)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, at)]
    return ends[-1] if ends else 0


def _sentences_end(text: str) -> int:
    """Where the last whole sentence of `text` ends (its punctuation, not the space after)."""
    ends = [m.start() for m in _SENTENCE_END.finditer(text)]
    return ends[-1] if ends else 0


def checked(
    pieces: Iterator[str],
    stop: threading.Event,
    check: NumberCheck,
    *,
    quote: bool = True,
    refused: list[str] | None = None,
    before: str = "",
    words: int = 0,
) -> Iterator[str]:
    """`pieces` with each number held back until it is complete. At the first number `check`
    does not allow, `stop` is set and the text ends: with `quote`, after what was said, with the
    source's words (`NumberCheck.instead`); without, before the sentence holding the number,
    whole sentences being held back until they are checked, and so does a sentence that
    repeats `words` words of `before` + the text in order (the repetition guard's rule; 0:
    never). The refused number goes to `refused`."""
    text, sent, repeated = "", 0, False
    try:
        for piece in pieces:
            text += piece
            bad, safe = check.scan(text, complete=False)
            if bad is not None:
                break
            if not quote:
                if loops_after(before + text, piece, words):
                    bad, repeated = len(text), True
                    break
                safe = min(safe, _sentences_end(text))
            if safe > sent:
                yield text[sent:safe]
                sent = safe
        else:
            bad, safe = check.scan(text, complete=True)
            if bad is None:
                if safe > sent:
                    yield text[sent:]
                return
        stop.set()
        for _ in pieces:  # the generator ends at its next token and fills its stats
            pass
        match = None if repeated else QUANTITY.match(text, bad)
        done = "answered with the source's words" if quote else "the sentence left out"
        if match is None:
            log.info("number check: %r repeats what was said; %s", text[-40:], done)
        else:
            number = match.group().rstrip(",")
            on_file = canonical_number(number) in check.allowed
            why = "is from a row the question is not about" if on_file else "is in no source"
            log.info("number check: %r %s; %s", number, why, done)
            if refused is not None:
                refused.append(number)
        ending = check.instead(text[:bad]) if quote else text[: _sentence_start(text, bad)].rstrip()
        if len(ending) > sent:
            yield ending[sent:]
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
