"""Configuration of ingestion: which files to read, size and time limits, chunking."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ingest.document import sha256_hex

# Bump when ingest.headings finds other titles or headings, so stored chunks are re-chunked.
CONTEXT_RULES_VERSION = 1
DEFAULT_INCLUDE = ("*.pdf", "*.txt", "*.md", "*.markdown", "*.html", "*.htm")


class ChunkingConfig(BaseModel):
    """How documents are cut into chunks; lengths are counted in the embedder's own tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_tokens: int = Field(
        200,
        ge=16,
        le=8192,
        description="Largest chunk, in embedder tokens (special tokens excluded).",
    )
    overlap_tokens: int = Field(
        32, ge=0, description="Tokens repeated between neighbouring chunks of the same page."
    )
    contextual: bool = Field(
        True,
        description="Embed and keyword-index each chunk with its document title and section "
        "heading path (stored apart from the chunk text that is shown and cited).",
    )
    context_tokens: int = Field(
        48,
        ge=8,
        le=128,
        description="Most embedder tokens a chunk's context line may take (it is cut beyond).",
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingConfig:
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError(
                f"overlap_tokens ({self.overlap_tokens}) must be smaller than "
                f"chunk_tokens ({self.chunk_tokens})"
            )
        return self

    def fingerprint(self) -> str:
        """A short hash that changes whenever a setting that shapes chunks changes."""
        shape: dict[str, object] = self.model_dump()
        if self.contextual:  # better heading rules change the context: re-chunk then too
            shape["context_rules"] = CONTEXT_RULES_VERSION
        return sha256_hex(json.dumps(shape, sort_keys=True))[:16]


class IngestConfig(BaseModel):
    """Which files are read and the limits each file must respect."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    include: tuple[str, ...] = Field(
        DEFAULT_INCLUDE,
        description="Glob patterns a file must match (case-insensitive). A pattern without '/' "
        "matches the file name; with '/', the path relative to the folder given ('**' spans "
        "folders).",
    )
    exclude: tuple[str, ...] = Field(
        (".*",),
        description="Glob patterns that skip a file; a pattern without '/' is tested against "
        "every folder and file name on the way (so '.*' skips hidden folders too).",
    )
    max_file_bytes: int = Field(50 * 1024 * 1024, gt=0, description="Larger files are refused.")
    pdf_timeout_s: float = Field(
        30.0, gt=0, description="Wall-clock limit for parsing one PDF (in a child process)."
    )
    pdf_memory_mb: int = Field(
        1024, ge=128, description="Address-space limit of the PDF parsing child process."
    )
    pdf_max_pages: int = Field(5000, gt=0, description="PDFs with more pages are refused.")
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
