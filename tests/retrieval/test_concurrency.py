"""Searches from many threads while a writer keeps committing: no crash, one version per answer,
and a document acknowledged as committed is found by the next query."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ingest.config import ChunkingConfig, IngestConfig
from retrieval.config import IndexConfig
from retrieval.embedder import HashEmbedder
from retrieval.index import Index
from retrieval.indexer import Indexer
from retrieval.retriever import Retriever
from tests.retrieval.helpers import assert_consistent, paragraph, write_files


@pytest.mark.promise(3)
def test_readers_during_continuous_ingest(tmp_path: Path) -> None:
    embedder = HashEmbedder(64)
    index = Index(tmp_path / "index", embedder_model_id=embedder.model_id, dim=64,
                  config=IndexConfig(commit_every_chunks=20))  # fmt: skip
    config = IngestConfig(chunking=ChunkingConfig(chunk_tokens=40, overlap_tokens=8))
    indexer = Indexer(index, embedder, config)
    write_files(tmp_path / "docs", {f"base{i}.txt": paragraph(f"base{i}", 4) for i in range(20)})
    indexer.ingest([tmp_path / "docs"])
    retriever = Retriever(index, embedder)
    stop = threading.Event()
    errors: list[BaseException] = []
    answers = [0]

    def reader(seed: int) -> None:
        try:
            while not stop.is_set():
                for mode in ("dense", "keyword", "hybrid"):
                    hits = retriever.retrieve(f"base{seed % 20} warehouse record", 5, mode=mode)
                    assert len({h.index_version for h in hits}) <= 1
                    answers[0] += 1
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        for round_ in range(15):
            marker = f"marker{round_}q"
            write_files(
                tmp_path / "docs", {f"round{round_}.txt": f"{marker} " + paragraph(f"r{round_}", 3)}
            )
            if round_ % 3 == 2:
                (tmp_path / "docs" / f"round{round_ - 1}.txt").unlink()
            report = indexer.ingest([tmp_path / "docs"], sync=True)
            hits = retriever.retrieve(marker, 3, mode="keyword")
            assert hits and hits[0].document_id == f"round{round_}.txt"
            assert hits[0].index_version == report.index_version
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[0]
    assert answers[0] > 30
    index.close()
    assert_consistent(tmp_path / "index")
