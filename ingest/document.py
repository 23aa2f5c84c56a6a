"""The two records ingestion produces: `Document` (one source) and `Chunk` (a span of it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


def sha256_hex(data: bytes | str) -> str:
    """Hex SHA-256 of bytes, or of a string's UTF-8 encoding."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class PageSpan:
    """Where one page lies in `Document.text`; `page` is 1-based, or None for unpaged formats."""

    page: int | None
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    """One source file, as text. `id` is stable: the path relative to the corpus root."""

    id: str
    source: str
    text: str
    content_hash: str  # sha256 of the file's bytes: unchanged bytes are never re-parsed
    pages: tuple[PageSpan, ...]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """A span of a Document, small enough for the embedder with its context.

    `text` is what is shown and cited; `context` ("title > heading > subheading") is embedded
    and keyword-indexed with it but never shown as the passage. `hash` is sha256 of
    `embed_text`, the embedder's input, so a vector is reused exactly when its input is equal.
    """

    id: str
    document_id: str
    text: str
    page: int | None
    start: int
    end: int
    hash: str
    ordinal: int = 0
    context: str = ""

    @property
    def embed_text(self) -> str:
        return embed_input(self.context, self.text)


def embed_input(context: str, text: str) -> str:
    """What the embedder reads for a chunk: its context line, then its text."""
    return f"{context}\n{text}" if context else text
