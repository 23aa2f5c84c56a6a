"""Incremental indexing with the hash embedder: the diff, reuse of vectors, sync, config changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.config import ChunkingConfig, IngestConfig
from retrieval.config import IndexConfig
from retrieval.embedder import HashEmbedder
from retrieval.index import EmbedderMismatchError, Index
from retrieval.indexer import Indexer
from retrieval.read import Filters
from retrieval.retriever import Retriever
from tests.retrieval.helpers import CountingEmbedder, assert_consistent, paragraph, write_files


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    write_files(root, {
        "a.md": "# Alpha\n\n" + paragraph("alpha", 6),
        "sub/b.txt": paragraph("bravo", 4),
        "c.html": f"<html><body><p>{paragraph('charlie', 3)}</p><script>x()</script></body></html>",
    })  # fmt: skip
    return root


def small_chunks() -> IngestConfig:
    return IngestConfig(chunking=ChunkingConfig(chunk_tokens=40, overlap_tokens=8))


def test_first_ingest_adds_everything(make_indexer, corpus: Path) -> None:
    embedder = CountingEmbedder()
    report = make_indexer(embedder, small_chunks()).ingest([corpus])
    data = report.to_dict()
    assert data["documents"] == {
        "added": 3,
        "changed": 0,
        "removed": 0,
        "unchanged": 0,
        "failed": 0,
    }
    assert data["chunks"]["added"] > 3
    assert data["chunks"]["added"] == report.embedded == len(embedder.calls)
    assert data["index_version"] == 1
    assert set(data) == {"documents", "chunks", "failures", "index_version", "embedded", "seconds"}
    assert_consistent(corpus.parent / "index")


def test_reingest_unchanged_is_a_no_op(make_indexer, corpus: Path) -> None:
    embedder = CountingEmbedder()
    indexer = make_indexer(embedder, small_chunks())
    first = indexer.ingest([corpus])
    embedder.calls.clear()
    again = indexer.ingest([corpus])
    assert again.documents.unchanged == 3
    assert again.chunks.unchanged == first.chunks.added
    assert again.embedded == 0 and embedder.calls == []
    assert again.index_version == first.index_version


def test_changed_file_embeds_only_its_new_chunks(make_indexer, corpus: Path) -> None:
    embedder = CountingEmbedder()
    indexer = make_indexer(embedder, small_chunks())
    indexer.ingest([corpus])
    text = (corpus / "a.md").read_text()
    (corpus / "a.md").write_text(text + "\n\nA new closing paragraph about zebras and yaks.\n")
    embedder.calls.clear()
    report = indexer.ingest([corpus])
    assert report.documents.changed == 1 and report.documents.unchanged == 2
    assert report.embedded == len(embedder.calls) >= 1
    assert report.embedded < report.chunks.unchanged  # most of a.md's chunks were reused
    assert any("zebras" in t for t in embedder.calls)
    assert report.index_version == 2
    hits = Retriever(indexer.index, embedder).retrieve("zebras yaks", 1, mode="keyword")
    assert hits and "zebras" in hits[0].text


def test_sync_removes_vanished_files_only_when_asked(make_indexer, corpus: Path) -> None:
    indexer = make_indexer(HashEmbedder(64), small_chunks())
    indexer.ingest([corpus])
    (corpus / "sub" / "b.txt").unlink()
    kept = indexer.ingest([corpus])
    assert kept.documents.removed == 0 and indexer.index.info()["documents"] == 3
    synced = indexer.ingest([corpus], sync=True)
    assert synced.documents.removed == 1 and synced.chunks.removed > 0
    assert indexer.index.info()["documents"] == 2
    assert_consistent(corpus.parent / "index")


def test_failed_file_keeps_its_previous_version(make_indexer, corpus: Path) -> None:
    indexer = make_indexer(HashEmbedder(64), small_chunks())
    indexer.ingest([corpus])
    (corpus / "sub" / "b.txt").write_bytes(b"caf\xe9 is not utf-8")
    report = indexer.ingest([corpus], sync=True)
    assert [(f.code, Path(f.path).name) for f in report.failures] == [("invalid_utf8", "b.txt")]
    assert report.documents.failed == 1 and report.documents.removed == 0
    hits = Retriever(indexer.index, indexer.embedder).retrieve(
        "bravo warehouse", 3, Filters(document_ids=("sub/b.txt",)), mode="keyword"
    )
    assert hits and all(h.document_id == "sub/b.txt" for h in hits)


def test_chunking_change_rechunks_stored_documents_without_files(
    make_indexer, corpus: Path, tmp_path: Path
) -> None:
    embedder = CountingEmbedder()
    make_indexer(embedder, small_chunks()).ingest([corpus])
    for path in corpus.rglob("*.*"):
        path.unlink()  # the files are gone: re-chunking must use the stored text
    bigger = IngestConfig(chunking=ChunkingConfig(chunk_tokens=120, overlap_tokens=0))
    embedder.calls.clear()
    report = make_indexer(embedder, bigger).ingest([])
    assert report.documents.changed == 3
    assert report.chunks.removed > 0 and report.embedded == len(embedder.calls) > 0
    again = make_indexer(embedder, bigger).ingest([])
    assert again.documents.changed == 0 and again.embedded == 0
    manifest = assert_consistent(tmp_path / "index")
    assert manifest["chunking"] == bigger.chunking.model_dump()
    assert manifest["chunking"]["contextual"] is True


def test_other_embedder_is_refused_then_reembedded(index_dir: Path, corpus: Path) -> None:
    first = Index(index_dir, embedder_model_id="hash-64", dim=64)
    Indexer(first, HashEmbedder(64), small_chunks()).ingest([corpus])
    first.close()
    with pytest.raises(EmbedderMismatchError, match=r"built with embedder 'hash-64' \(dim 64\)"):
        Index(index_dir, embedder_model_id="hash-32", dim=32)
    other = HashEmbedder(32)
    index = Index(index_dir, embedder_model_id=other.model_id, dim=32, allow_embedder_change=True)
    report = Indexer(index, other, small_chunks()).ingest([], reembed=True)
    assert report.documents.changed == 3 and report.chunks.unchanged == 0
    assert report.embedded == report.chunks.changed + report.chunks.added
    index.close()
    manifest = assert_consistent(index_dir)
    assert (manifest["embedder_model_id"], manifest["embedder_dim"]) == ("hash-32", 32)


def test_long_ingest_commits_in_batches(make_indexer, tmp_path: Path) -> None:
    root = tmp_path / "many"
    write_files(root, {f"doc{i:03d}.txt": paragraph(f"topic{i}", 4) for i in range(40)})
    indexer = make_indexer(HashEmbedder(64), small_chunks(), IndexConfig(commit_every_chunks=30))
    report = indexer.ingest([root])
    assert report.documents.added == 40
    assert report.index_version > 2  # several commits, each a new version
    assert_consistent(tmp_path / "index")


def test_delete_by_id_reports_unknown_ids(make_indexer, corpus: Path) -> None:
    indexer = make_indexer(HashEmbedder(64), small_chunks())
    indexer.ingest([corpus])
    report = indexer.delete(["a.md", "nope.md"])
    assert report.documents.removed == 1
    assert [(f.path, f.code) for f in report.failures] == [("nope.md", "not_found")]
    assert indexer.index.info()["documents"] == 2


def test_hnsw_index_follows_deletes(make_indexer, corpus: Path) -> None:
    indexer = make_indexer(HashEmbedder(64), small_chunks(), IndexConfig(kind="hnsw"))
    indexer.ingest([corpus])
    indexer.delete(["a.md"])
    hits = Retriever(indexer.index, indexer.embedder).retrieve("alpha warehouse", 5, mode="dense")
    assert hits and all(h.document_id != "a.md" for h in hits)
    assert_consistent(corpus.parent / "index")


def test_symlinked_file_inside_the_folder_is_unchanged_on_reingest(
    make_indexer, corpus: Path
) -> None:
    (corpus / "link.md").symlink_to(corpus / "a.md")
    indexer = make_indexer(HashEmbedder(64), small_chunks())
    assert indexer.ingest([corpus]).documents.added == 4
    again = indexer.ingest([corpus])
    assert again.documents.unchanged == 4 and again.index_version == 1


def test_sync_never_empties_the_index_for_a_folder_that_shows_no_files(
    make_indexer, corpus: Path
) -> None:
    indexer = make_indexer(HashEmbedder(64), small_chunks())
    indexer.ingest([corpus])
    for path in [p for p in corpus.rglob("*") if p.is_file()]:
        path.unlink()
    report = indexer.ingest([corpus], sync=True)
    assert [f.code for f in report.failures] == [
        "no_files"
    ] and "nothing removed" in report.failures[0].reason
    assert report.documents.removed == 0 and indexer.index.info()["documents"] == 3
