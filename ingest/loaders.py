"""One file to a `Document`: size checks, then a reader per format (PDF, text, Markdown, HTML)."""

from __future__ import annotations

import os
from pathlib import Path

from ingest.config import IngestConfig
from ingest.document import Document, PageSpan, sha256_hex
from ingest.errors import IngestError
from ingest.pdf import PdfParser
from ingest.text import decode_text, html_to_text, normalise_whitespace

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
PDF_SUFFIXES = {".pdf"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES


def read_checked(path: Path, config: IngestConfig) -> bytes:
    """The file's bytes, refusing missing, empty and oversized files before reading them."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise IngestError("not_found", f"{path} does not exist") from None
    except OSError as exc:
        raise IngestError("read_error", f"cannot read {path}: {exc.strerror}") from None
    if size == 0:
        raise IngestError("empty_file", "the file is empty (0 bytes)")
    if size > config.max_file_bytes:
        raise IngestError(
            "too_large", f"{size} bytes is over the limit of {config.max_file_bytes} bytes"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IngestError("read_error", f"cannot read {path}: {exc.strerror}") from None


class DocumentLoader:
    """Loads files of every supported format; owns the PDF child process (close it when done)."""

    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        self._pdf = PdfParser(config.pdf_timeout_s, config.pdf_memory_mb, config.pdf_max_pages)

    def load(self, path: Path, doc_id: str, data: bytes | None = None) -> Document:
        """Parse `path` into a Document with id `doc_id`; raises `IngestError` with a reason."""
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            raise IngestError(
                "unsupported_type", f"files of type '{suffix or path.name}' are not read"
            )
        if data is None:
            data = read_checked(path, self.config)
        if suffix in PDF_SUFFIXES:
            if not data.startswith(b"%PDF-") and b"%PDF-" not in data[:1024]:
                raise IngestError("pdf_unreadable", "the file has no PDF header: not a PDF")
            pages = [normalise_whitespace(p) for p in self._pdf.pages(path)]
            # The child parsed the file at `path`, not `data`: both must be the same bytes, or
            # the stored hash would not describe the stored text.
            if read_checked(path, self.config) != data:
                raise IngestError("read_error", "the file changed while it was read; ingest again")
        else:
            text = decode_text(data, path.name)
            pages = [html_to_text(text) if suffix in HTML_SUFFIXES else text]
        return _assemble(doc_id, os.fspath(path.resolve()), data, pages, suffix)

    def close(self) -> None:
        self._pdf.close()

    def __enter__(self) -> DocumentLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _assemble(doc_id: str, source: str, data: bytes, pages: list[str], suffix: str) -> Document:
    """Join page texts with blank lines, remembering where each page lies."""
    paged = suffix in PDF_SUFFIXES
    spans: list[PageSpan] = []
    parts: list[str] = []
    offset = 0
    for number, page_text in enumerate(pages, start=1):
        if not page_text.strip():
            continue  # image-only page: nothing to index, but later pages keep their numbers
        if parts:
            parts.append("\n\n")
            offset += 2
        spans.append(PageSpan(number if paged else None, offset, offset + len(page_text)))
        parts.append(page_text)
        offset += len(page_text)
    text = "".join(parts)
    if not text.strip():
        hint = " (a scanned or image-only PDF?)" if paged else ""
        raise IngestError("no_text", f"no extractable text{hint}")
    metadata = {"format": suffix.lstrip("."), "bytes": len(data)}
    if paged:
        metadata["pages"] = len(pages)
    return Document(doc_id, source, text, sha256_hex(data), tuple(spans), metadata)
