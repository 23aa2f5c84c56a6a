"""The index on disk: recovery from orphans, torn or corrupt vector files, and the writer lock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ingest.config import ChunkingConfig, IngestConfig
from retrieval.config import IndexConfig
from retrieval.embedder import HashEmbedder
from retrieval.index import Index, IndexBusyError, IndexStoreError
from retrieval.indexer import Indexer
from retrieval.retriever import Retriever
from tests.retrieval.helpers import assert_consistent, paragraph, write_files

CONFIG = IngestConfig(chunking=ChunkingConfig(chunk_tokens=40, overlap_tokens=8))


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """An index of 5 documents, closed; returns its directory."""
    write_files(tmp_path / "docs", {f"d{i}.txt": paragraph(f"kind{i}", 3) for i in range(5)})
    index = Index(tmp_path / "index", embedder_model_id="hash-64", dim=64)
    Indexer(index, HashEmbedder(64), CONFIG).ingest([tmp_path / "docs"])
    index.close()
    return tmp_path / "index"


def reopen(directory: Path) -> Index:
    return Index(directory, embedder_model_id="hash-64", dim=64)


def search(index: Index, text: str) -> list[str]:
    return [
        h.document_id for h in Retriever(index, HashEmbedder(64)).retrieve(text, 3, mode="dense")
    ]


def test_orphan_vector_files_are_removed_on_open(built: Path) -> None:
    (built / "vectors-00000099.faiss").write_bytes(b"left by a killed commit")
    (built / ".tmp-abc.faiss").write_bytes(b"torn temp file")
    index = reopen(built)
    names = sorted(p.name for p in built.glob("*.faiss"))
    assert names == [index.info()["vectors_file"]]
    index.close()


@pytest.mark.parametrize("damage", ["missing", "flipped", "truncated"])
def test_damaged_vector_file_is_rebuilt_from_sqlite(built: Path, damage: str) -> None:
    before = assert_consistent(built)
    path = built / str(before["vectors_file"])
    if damage == "missing":
        path.unlink()
    elif damage == "flipped":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # inside the vector data: faiss would load it silently
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(path.read_bytes()[:100])
    index = reopen(built)
    assert search(index, "kind3 warehouse")[0] == "d3.txt"
    index.close()
    after = assert_consistent(built)
    assert after["version"] == before["version"]


def test_second_writer_waits_then_gets_busy(built: Path) -> None:
    index = reopen(built)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with index.write_lock():
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait(5)
    other = Index(
        built, embedder_model_id="hash-64", dim=64, config=IndexConfig(lock_timeout_s=0.2)
    )
    assert search(other, "kind1 warehouse")[0] == "d1.txt"  # reading needs no lock
    with pytest.raises(IndexBusyError, match="another ingest is writing"), other.write_lock():
        pass
    release.set()
    thread.join()
    with other.write_lock(timeout_s=1):
        pass
    index.close()
    other.close()


def test_search_sees_a_commit_made_by_another_handle(built: Path, tmp_path: Path) -> None:
    reader = reopen(built)
    assert "new.txt" not in search(reader, "zulu warehouse")
    writer = reopen(built)
    write_files(tmp_path / "more", {"new.txt": paragraph("zulu", 3)})
    Indexer(writer, HashEmbedder(64), CONFIG).ingest([tmp_path / "more"])
    assert search(reader, "zulu warehouse")[0] == "new.txt"
    assert reader.version == writer.version
    reader.close()
    writer.close()


@pytest.mark.parametrize(("first", "then"), [("flat", "hnsw"), ("hnsw", "flat")])
def test_changing_the_index_kind_rebuilds_the_vectors(
    tmp_path: Path, first: str, then: str
) -> None:
    write_files(tmp_path / "docs", {f"d{i}.txt": paragraph(f"kind{i}", 3) for i in range(5)})
    index = Index(
        tmp_path / "index", embedder_model_id="hash-64", dim=64, config=IndexConfig(kind=first)
    )
    Indexer(index, HashEmbedder(64), CONFIG).ingest([tmp_path / "docs"])
    index.close()
    index = Index(
        tmp_path / "index", embedder_model_id="hash-64", dim=64, config=IndexConfig(kind=then)
    )
    assert index.info()["index_kind"] == then
    assert search(index, "kind2 warehouse")[0] == "d2.txt"
    report = Indexer(index, HashEmbedder(64), CONFIG).delete(["d2.txt"])  # a removal must work too
    assert report.documents.removed == 1 and "d2.txt" not in search(index, "kind2 warehouse")
    index.close()
    assert_consistent(tmp_path / "index")


def test_open_existing_reads_the_embedder_from_the_manifest(built: Path, tmp_path: Path) -> None:
    index = Index.open_existing(built)
    assert (index.embedder_model_id, index.dim) == ("hash-64", 64)
    assert index.info()["documents"] == 5
    index.close()
    with pytest.raises(IndexStoreError, match="no index in"):
        Index.open_existing(tmp_path / "nowhere")
