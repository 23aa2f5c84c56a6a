"""Typed ingestion errors with stable codes, so callers can report and count them."""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    "not_found",
    "no_files",
    "read_error",
    "empty_file",
    "too_large",
    "unsupported_type",
    "binary_content",
    "invalid_utf8",
    "no_text",
    "pdf_encrypted",
    "pdf_unreadable",
    "pdf_timeout",
    "pdf_resources",
    "pdf_too_many_pages",
    "duplicate_id",
    "symlink_outside_root",
]


class IngestError(Exception):
    """A file could not be turned into a `Document`; `code` is stable, `message` is for people."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
