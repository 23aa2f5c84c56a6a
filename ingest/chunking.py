"""Token-aware recursive splitting: no chunk exceeds the embedder's input limit.

Lengths are measured with the embedder's own tokenizer through character offsets, so a
document is tokenized once per page and the splitter only does arithmetic on the offsets.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from typing import Protocol

from ingest.config import ChunkingConfig
from ingest.document import Chunk, Document, embed_input, sha256_hex
from ingest.headings import SectionContext

# Coarse to fine: Markdown headings, paragraphs, lines, sentences, words.
SEPARATORS = (
    re.compile(r"\n(?=#{1,6} )"),
    re.compile(r"\n[ \t]*\n"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?;:])\s+"),
    re.compile(r"\s+"),
)


class Tokenizer(Protocol):
    """What chunking needs of an embedder's tokenizer."""

    @property
    def max_tokens(self) -> int:
        """Most tokens one input may have, special tokens excluded."""
        ...

    def token_starts(self, text: str) -> list[int]:
        """Character offset at which each token of `text` starts, in order."""
        ...


class _Page:
    """One page's text with its token starts; `ntok(a, b)` counts tokens starting in [a, b)."""

    def __init__(self, text: str, tokenizer: Tokenizer) -> None:
        self.text = text
        self.starts = tokenizer.token_starts(text)

    def ntok(self, a: int, b: int) -> int:
        return bisect_left(self.starts, b) - bisect_left(self.starts, a)

    def split(self, a: int, b: int, limit: int, level: int = 0) -> list[tuple[int, int]]:
        """Pieces of [a, b) of at most `limit` tokens, cut at the coarsest separator possible."""
        if self.ntok(a, b) <= limit:
            return [(a, b)]
        if level == len(SEPARATORS):
            return self._split_tokens(a, b, limit)
        cuts = [m.end() for m in SEPARATORS[level].finditer(self.text, a, b) if a < m.end() < b]
        if not cuts:
            return self.split(a, b, limit, level + 1)
        pieces: list[tuple[int, int]] = []
        for lo, hi in zip([a, *cuts], [*cuts, b], strict=True):
            pieces.extend(self.split(lo, hi, limit, level + 1))
        return pieces

    def overlap_start(self, a: int, b: int, overlap: int) -> int | None:
        """Earliest sentence start (else word start) in [a, b) leaving at most `overlap`
        tokens before b; a sentence start must keep at least half of them."""
        if overlap <= 0:
            return None
        for pattern, least in ((SEPARATORS[3], overlap // 2), (SEPARATORS[4], 1)):
            for m in pattern.finditer(self.text, a, b):
                if a < m.end() < b and least <= self.ntok(m.end(), b) <= overlap:
                    return m.end()
        return None

    def _split_tokens(self, a: int, b: int, limit: int) -> list[tuple[int, int]]:
        first = bisect_left(self.starts, a)
        last = bisect_left(self.starts, b)
        bounds = [self.starts[i] for i in range(first, last, limit)][1:]
        return list(zip([a, *bounds], [*bounds, b], strict=True))


def _merge(
    page: _Page, pieces: list[tuple[int, int]], limit: int, overlap: int
) -> list[tuple[int, int]]:
    """Greedily join neighbouring pieces up to `limit` tokens; each chunk after the first
    starts with up to `overlap` tokens of the previous one, cut at a sentence or word start."""
    spans: list[tuple[int, int]] = []
    start: int | None = None
    end = 0
    for a, b in pieces:  # pieces tile the page: a == the previous b
        if start is None:
            start, end = a, b
        elif page.ntok(start, b) <= limit:
            end = b
        else:
            spans.append((start, end))
            tail = page.overlap_start(start, end, overlap)
            start = tail if tail is not None and page.ntok(tail, b) <= limit else a
            end = b
    if start is not None:
        spans.append((start, end))
    return spans


def _strip(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def chunk_document(doc: Document, config: ChunkingConfig, tokenizer: Tokenizer) -> list[Chunk]:
    """Chunks of `doc`, page by page (a chunk never spans two pages), with document offsets.

    With `config.contextual`, each chunk carries its title and heading path; room for it is
    kept below the embedder's limit, so the embedded context + text is never truncated.
    """
    sections = SectionContext(doc) if config.contextual else None
    # Context tokens + the line break; never more than a quarter of what the embedder reads.
    reserve = min(config.context_tokens + 1, tokenizer.max_tokens // 4) if sections else 0
    limit = min(config.chunk_tokens, tokenizer.max_tokens - reserve)
    chunks: list[Chunk] = []
    used: dict[str, int] = {}
    for span in doc.pages:
        page = _Page(doc.text[span.start : span.end], tokenizer)
        pieces = page.split(0, len(page.text), limit)
        for a, b in _merge(page, pieces, limit, config.overlap_tokens):
            for lo, hi in _enforce(page.text, *_strip(page.text, a, b), limit, tokenizer):
                text = page.text[lo:hi]
                context = ""
                if sections is not None:
                    where = sections.of_span(span.start + lo, span.start + hi)
                    context = _cut(where, reserve - 1, tokenizer)
                digest = sha256_hex(embed_input(context, text))
                n = used[digest] = used.get(digest, 0) + 1
                cid = f"{doc.id}#{digest[:12]}" + (f"-{n}" if n > 1 else "")
                start, end = span.start + lo, span.start + hi
                chunks.append(
                    Chunk(cid, doc.id, text, span.page, start, end, digest, len(chunks), context)
                )
    return chunks


def _cut(context: str, most: int, tokenizer: Tokenizer) -> str:
    """`context` cut to at most `most` tokens, at a token start."""
    starts = tokenizer.token_starts(context)
    return context if len(starts) <= most else context[: starts[most]].rstrip()


def _enforce(
    text: str, a: int, b: int, limit: int, tokenizer: Tokenizer
) -> Sequence[tuple[int, int]]:
    """Tokenized alone, a span can count a token more than in context: halve until it fits."""
    if a >= b:
        return []
    if len(tokenizer.token_starts(text[a:b])) <= limit:
        return [(a, b)]
    cut = text.rfind(" ", a, (a + b) // 2 + 1)
    cut = cut if cut > a else (a + b) // 2
    return [
        *_enforce(text, *_strip(text, a, cut), limit, tokenizer),
        *_enforce(text, *_strip(text, cut, b), limit, tokenizer),
    ]
