"""chunk_document: token limits, exact offsets, pages, overlap, split points and stable ids."""

from __future__ import annotations

import itertools
import re
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest.chunking import Tokenizer, chunk_document
from ingest.config import ChunkingConfig, IngestConfig
from ingest.discover import discover
from ingest.document import Chunk, Document, PageSpan, sha256_hex
from ingest.loaders import DocumentLoader
from tests.conftest import CORPUS
from tests.fixtures import pdfs


@pytest.fixture(params=["hash", pytest.param("real", marks=pytest.mark.slow)])
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    """The fake hash tokenizer, and the packaged MiniLM's WordPiece (slow)."""
    name = "hash_embedder" if request.param == "hash" else "real_embedder"
    embedder: Tokenizer = request.getfixturevalue(name)
    return embedder


@pytest.fixture(scope="module")
def corpus_docs() -> list[Document]:
    files, failures = discover([CORPUS], IngestConfig())
    assert not failures
    with DocumentLoader(IngestConfig()) as loader:
        return [loader.load(src.path, src.doc_id) for src in files]


@pytest.fixture(scope="module")
def pdf_loader() -> Iterator[DocumentLoader]:
    with DocumentLoader(IngestConfig()) as loader:
        yield loader


def text_doc(text: str, doc_id: str = "doc.md") -> Document:
    return Document(
        doc_id, f"/src/{doc_id}", text, sha256_hex(text), (PageSpan(None, 0, len(text)),)
    )


def limit_of(config: ChunkingConfig, tokenizer: Tokenizer) -> int:
    return min(config.chunk_tokens, tokenizer.max_tokens)


def assert_well_formed(doc: Document, chunks: list[Chunk], limit: int, tok: Tokenizer) -> None:
    """Offsets exact, each chunk under the limit alone, inside one page, and no text lost."""
    assert chunks
    covered = bytearray(len(doc.text))
    for ordinal, chunk in enumerate(chunks):
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert chunk.text and chunk.text == chunk.text.strip()
        assert len(tok.token_starts(chunk.text)) <= limit, chunk.text[:80]
        assert chunk.hash == sha256_hex(chunk.embed_text)
        assert len(tok.token_starts(chunk.embed_text)) <= tok.max_tokens  # context included
        assert (chunk.document_id, chunk.ordinal) == (doc.id, ordinal)
        (span,) = [s for s in doc.pages if s.start <= chunk.start and chunk.end <= s.end]
        assert chunk.page == span.page
        covered[chunk.start : chunk.end] = b"\x01" * (chunk.end - chunk.start)
    lost = [c for c, seen in zip(doc.text, covered, strict=True) if not seen and not c.isspace()]
    assert lost == []
    starts = [(c.page, c.start) for c in chunks]
    assert starts == sorted(starts, key=lambda p: p[1])  # chunks come in reading order


# --- limits and offsets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        ChunkingConfig(),
        ChunkingConfig(chunk_tokens=48, overlap_tokens=12),
        ChunkingConfig(chunk_tokens=4000, overlap_tokens=0),
    ],
    ids=["default", "small", "over-model-limit"],
)
def test_corpus_chunks_fit_and_map_back(
    corpus_docs: list[Document], tokenizer: Tokenizer, config: ChunkingConfig
) -> None:
    limit = limit_of(config, tokenizer)
    assert limit <= tokenizer.max_tokens
    for doc in corpus_docs:
        assert_well_formed(doc, chunk_document(doc, config, tokenizer), limit, tokenizer)


def test_chunks_use_the_room_they_have(corpus_docs: list[Document], tokenizer: Tokenizer) -> None:
    """Greedy packing: most chunks come close to the limit rather than one paragraph each."""
    config = ChunkingConfig(chunk_tokens=120, overlap_tokens=0)
    sizes = [
        len(tokenizer.token_starts(chunk.text))
        for doc in corpus_docs
        for chunk in chunk_document(doc, config, tokenizer)
    ]
    assert sum(sizes) / len(sizes) > 0.5 * 120


def test_pdf_chunks_never_span_pages(corpus_docs: list[Document], tokenizer: Tokenizer) -> None:
    config = ChunkingConfig(chunk_tokens=100, overlap_tokens=20)
    for doc in (d for d in corpus_docs if d.metadata["format"] == "pdf"):
        chunks = chunk_document(doc, config, tokenizer)
        assert {c.page for c in chunks} == {s.page for s in doc.pages}
        for chunk in chunks:
            (span,) = [s for s in doc.pages if s.page == chunk.page]
            assert span.start <= chunk.start and chunk.end <= span.end


def test_short_pdf_pages_stay_separate(
    tmp_path: Path, pdf_loader: DocumentLoader, hash_embedder: Tokenizer
) -> None:
    """Two tiny pages would fit one chunk together, but a chunk carries one page number."""
    path = tmp_path / "two.pdf"
    path.write_bytes(pdfs.make_pdf(["alpha page", "", "gamma page"]))
    doc = pdf_loader.load(path, "two.pdf")
    chunks = chunk_document(doc, ChunkingConfig(), hash_embedder)
    assert [(c.page, c.text) for c in chunks] == [(1, "alpha page"), (3, "gamma page")]


# --- overlap -----------------------------------------------------------------------------


def sentences(n: int) -> str:
    return " ".join(f"Sentence number {i} is short." for i in range(n))


def context_tokens(doc: Document, tok: Tokenizer, a: int, b: int) -> int:
    starts = tok.token_starts(doc.text)
    return bisect_left(starts, b) - bisect_left(starts, a)


def test_overlap_between_neighbours(tokenizer: Tokenizer) -> None:
    doc = text_doc(sentences(60))
    config = ChunkingConfig(chunk_tokens=40, overlap_tokens=14)
    chunks = chunk_document(doc, config, tokenizer)
    assert len(chunks) > 5
    assert_well_formed(doc, chunks, limit_of(config, tokenizer), tokenizer)
    for left, right in itertools.pairwise(chunks):
        assert left.start < right.start < left.end < right.end  # overlapping, still advancing
        shared = doc.text[right.start : left.end]
        assert shared.endswith(".")  # whole sentences repeated
        assert 0 < context_tokens(doc, tokenizer, right.start, left.end) <= 14


def test_no_overlap_when_zero(corpus_docs: list[Document], tokenizer: Tokenizer) -> None:
    config = ChunkingConfig(chunk_tokens=40, overlap_tokens=0)
    for doc in [text_doc(sentences(60)), *corpus_docs]:
        chunks = chunk_document(doc, config, tokenizer)
        for left, right in itertools.pairwise(chunks):
            assert left.end <= right.start


# --- hard inputs -----------------------------------------------------------------------------


def test_text_without_whitespace_is_split(tokenizer: Tokenizer) -> None:
    text = "alpha,beta;gamma/delta-" * 300  # thousands of tokens, not one space
    doc = text_doc(text, "dense.txt")
    config = ChunkingConfig(chunk_tokens=32, overlap_tokens=0)
    chunks = chunk_document(doc, config, tokenizer)
    assert len(chunks) > 20
    assert_well_formed(doc, chunks, 32, tokenizer)
    assert "".join(c.text for c in chunks) == text  # nothing to strip, nothing lost


def test_giant_word_among_sentences(tokenizer: Tokenizer) -> None:
    giant = "x" * 20_000 + "-y" * 2_000  # one unbroken 'word' of many tokens
    doc = text_doc(f"{sentences(10)} {giant} {sentences(10)}", "giant.txt")
    config = ChunkingConfig(chunk_tokens=50, overlap_tokens=10)
    chunks = chunk_document(doc, config, tokenizer)
    assert_well_formed(doc, chunks, 50, tokenizer)
    assert chunks[0].text.startswith("Sentence number 0")
    assert chunks[-1].text.endswith("Sentence number 9 is short.")


def test_tiny_limit_on_unicode(tokenizer: Tokenizer) -> None:
    text = "Ünïcödé wörds, 日本語のテキスト, emoji 🚲🚲🚲 and Ελληνικά. " * 40
    doc = text_doc(text.strip(), "uni.txt")
    config = ChunkingConfig(chunk_tokens=16, overlap_tokens=4)
    assert_well_formed(doc, chunk_document(doc, config, tokenizer), 16, tokenizer)


# --- split points ------------------------------------------------------------------------------


def markdown(sections: int, changed: int | None = None) -> str:
    parts = ["# Manual"]
    for s in range(sections):
        word = "changed" if s == changed else "steady"
        parts.append(f"## Section {s}")
        parts.extend(f"Paragraph {p} of section {s} is {word} text here." for p in range(3))
    return "\n\n".join(parts)


def test_markdown_headings_are_preferred_split_points(tokenizer: Tokenizer) -> None:
    doc = text_doc(markdown(6))
    per_section = len(tokenizer.token_starts(doc.text)) // 6
    # Room for one section and most of the next: a paragraph packer would cross headings.
    config = ChunkingConfig(chunk_tokens=int(per_section * 1.6), overlap_tokens=0)
    chunks = chunk_document(doc, config, tokenizer)
    assert_well_formed(doc, chunks, config.chunk_tokens, tokenizer)
    for chunk in chunks:
        assert chunk.text.startswith("#")
        assert chunk.text.count("## Section") == 1
    assert len(chunks) == 6


def test_paragraphs_before_sentences(tokenizer: Tokenizer) -> None:
    paragraph = "One sentence here. Another sentence there. A third one closes it."
    doc = text_doc("\n\n".join([paragraph] * 8))
    one = len(tokenizer.token_starts(paragraph))
    config = ChunkingConfig(chunk_tokens=one * 2 + one // 2, overlap_tokens=0)
    chunks = chunk_document(doc, config, tokenizer)
    assert [c.text for c in chunks] == [f"{paragraph}\n\n{paragraph}"] * 4


# --- ids -------------------------------------------------------------------------------------


def test_ids_stable_for_unchanged_text(tokenizer: Tokenizer) -> None:
    config = ChunkingConfig(chunk_tokens=48, overlap_tokens=0)
    before = chunk_document(text_doc(markdown(5)), config, tokenizer)
    again = chunk_document(text_doc(markdown(5)), config, tokenizer)
    assert [c.id for c in again] == [c.id for c in before]
    edited = chunk_document(text_doc(markdown(5, changed=3)), config, tokenizer)
    same = {c.id for c in before} & {c.id for c in edited}
    changed = [c for c in edited if c.id not in same]
    assert changed and all("changed" in c.text for c in changed)
    assert all("changed" not in c.text for c in edited if c.id in same)


def test_ids_unique_with_duplicate_paragraphs(tokenizer: Tokenizer) -> None:
    paragraph = "Charge the battery to eighty percent before storing the bike for winter."
    doc = text_doc("\n\n".join([paragraph] * 6), "dupes.md")
    limit = len(tokenizer.token_starts(paragraph)) + 2
    chunks = chunk_document(
        doc, ChunkingConfig(chunk_tokens=max(16, limit), overlap_tokens=0), tokenizer
    )
    assert len(chunks) == 6
    assert len({c.id for c in chunks}) == 6
    assert len({c.hash for c in chunks}) == 1
    assert all(c.id.startswith("dupes.md#") for c in chunks)
    other = chunk_document(text_doc(doc.text, "other.md"), ChunkingConfig(), tokenizer)
    assert not {c.id for c in other} & {c.id for c in chunks}


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "overlap"), [(64, 64), (64, 100), (16, 16)])
def test_config_rejects_overlap_not_below_size(size: int, overlap: int) -> None:
    with pytest.raises(ValidationError) as info:
        ChunkingConfig(chunk_tokens=size, overlap_tokens=overlap)
    assert f"overlap_tokens ({overlap}) must be smaller than chunk_tokens ({size})" in str(
        info.value
    )


def test_config_fingerprint_tracks_settings() -> None:
    base = ChunkingConfig()
    assert base.fingerprint() == ChunkingConfig().fingerprint()
    assert base.fingerprint() != ChunkingConfig(overlap_tokens=0).fingerprint()
    assert base.fingerprint() != ChunkingConfig(chunk_tokens=100).fingerprint()


class FirstWordTwice:
    """A tokenizer whose first word counts two tokens: a span tokenized alone counts one more
    than in context, as WordPiece can when a span starts inside a word."""

    max_tokens = 254

    def token_starts(self, text: str) -> list[int]:
        starts = [m.start() for m in re.finditer(r"\S+", text)]
        return [0, *starts] if starts and starts[0] == 0 and len(text) > 1 else starts


def test_spans_that_grow_alone_are_cut_again() -> None:
    tok = FirstWordTwice()
    doc = text_doc(" ".join(f"w{i}" for i in range(400)), "grow.txt")
    config = ChunkingConfig(chunk_tokens=20, overlap_tokens=5)
    chunks = chunk_document(doc, config, tok)
    assert_well_formed(doc, chunks, 20, tok)
