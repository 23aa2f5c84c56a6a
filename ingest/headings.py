"""A document's title and the heading path above each offset: the context a chunk carries.

Formats mark headings differently, so they are recognised from the text: Markdown `#` lines,
underlined lines (`===`, `---`), numbered section lines (`2.`, `3.1`, `A4.`), short ALL-CAPS
lines, and short title-like lines that open a paragraph (HTML headings and PDF section names,
which reach us as plain lines).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import PurePosixPath

from ingest.document import Document

MAX_HEADING_CHARS = 100
_ATX = re.compile(r"#{1,6}[ \t]+(.+?)[ \t#]*")
_RULE = re.compile(r"[=\-~_*]{3,}")
# "2.", "3.1", "3.1.2", "A4." (a FAQ entry), but not "1 Breeze about 110 km" (a table row)
_NUMBERED = re.compile(r"(?:\d{1,2}((?:\.\d{1,2}){1,3})\.?|\d{1,2}[.)]|[A-Z]\d{0,2}[.)])[ \t]+\S.*")
_TERMINAL = (".", ",", ";", ":", "!")
LEAF = 9  # a title-like line without numbering: below every numbered or marked heading


@dataclass(frozen=True)
class Heading:
    offset: int  # where its line starts in the document text
    level: int
    text: str


def _clean(line: str) -> str:
    return " ".join(line.replace("*", "").replace("`", "").split())


def _caps(line: str) -> bool:
    letters = [c for c in line if c.isalpha()]
    return len(letters) >= 4 and all(c.isupper() for c in letters) and len(line.split()) >= 2


def _title_like(line: str) -> bool:
    words = line.split()
    return (
        0 < len(words) <= 10
        and len(line) <= 70
        and line[0].isupper()
        and not line.endswith(_TERMINAL)
        and not line.startswith(("-", "|", ">", "("))
    )


def _level(line: str, prev: str, nxt: str) -> int | None:
    """The heading level of `line` (stripped) between its neighbours, or None for body text."""
    if not line or len(line) > MAX_HEADING_CHARS or _RULE.fullmatch(line):
        return None
    if _ATX.fullmatch(line):
        return len(line) - len(line.lstrip("#"))
    if _RULE.fullmatch(nxt) and not line.endswith(_TERMINAL):
        return 1 if nxt.startswith("=") else 2
    if _caps(line):
        return 1
    numbered = _NUMBERED.fullmatch(line)
    if numbered and not line.endswith(_TERMINAL) and len(line.split()) <= 12:
        text = line.split(None, 1)[1]
        continues = nxt[:1].islower()  # a wrapped list item, not a heading
        if text[:1].isupper() and not continues:
            return 2 + (numbered.group(1) or "").count(".") if line[0].isdigit() else 3
    opens_paragraph = len(nxt) >= 60 and nxt[:1].isupper()
    if _title_like(line) and opens_paragraph and (not prev or prev.endswith((".", ":", "?"))):
        return LEAF
    return None


def find_headings(text: str) -> list[Heading]:
    """Headings of a text in order (an ATX heading's `#`s are left out of `text`)."""
    lines = text.split("\n")
    offsets, at = [], 0
    for line in lines:
        offsets.append(at)
        at += len(line) + 1
    found: list[Heading] = []
    stripped = [line.strip() for line in lines]
    for i, line in enumerate(stripped):
        # Neighbours: the adjacent line, or across one blank line the next block (HTML
        # blocks are separated by blank lines); a blank line before counts as a break.
        prev = stripped[i - 1] if i else ""
        nxt = stripped[i + 1] if i + 1 < len(lines) else ""
        if not nxt and i + 2 < len(lines):
            nxt = stripped[i + 2]
        level = _level(line, prev, nxt)
        if level is not None:
            m = _ATX.fullmatch(line)
            found.append(Heading(offsets[i], level, _clean(m.group(1) if m else line)))
    return found


def document_title(doc: Document, headings: list[Heading]) -> str:
    """The first line when it reads as a title (or a heading opens the text), else the
    file name in words."""
    first = doc.text.lstrip().split("\n", 1)[0].strip()
    if headings and doc.text[: headings[0].offset].strip() == "":
        return headings[0].text
    if first and len(first) <= MAX_HEADING_CHARS and not first.endswith(_TERMINAL):
        return _clean(first.lstrip("#"))
    stem = PurePosixPath(doc.id).stem
    return " ".join(re.split(r"[-_\s.]+", stem)).strip() or doc.id


class SectionContext:
    """`at(offset)`: "title > heading > subheading" for the section holding `offset`."""

    def __init__(self, doc: Document) -> None:
        self.headings = find_headings(doc.text)
        self.title = document_title(doc, self.headings)
        self._offsets = [h.offset for h in self.headings]

    def path(self, offset: int) -> list[str]:
        """Headings enclosing `offset`, outermost first (each level once, the title apart)."""
        stack: list[Heading] = []
        for heading in self.headings[: bisect_right(self._offsets, offset)]:
            while stack and stack[-1].level >= heading.level:
                stack.pop()
            stack.append(heading)
        return [h.text for h in stack if h.text != self.title]

    def at(self, offset: int) -> str:
        return " > ".join([self.title, *self.path(offset)])

    def of_span(self, start: int, end: int) -> str:
        """The context of a chunk [start, end): its section at `start`, or the section of the
        first heading in its opening third (a chunk that starts with the tail of a section,
        its overlap or a running page header, and then opens the next belongs to the next)."""
        first = bisect_right(self._offsets, start)
        head = start + (end - start) // 3
        opens = first > 0 and self._offsets[first - 1] == start  # it starts with a heading
        if not opens and first < len(self._offsets) and self._offsets[first] <= head:
            return self.at(self._offsets[first])
        return self.at(start)
