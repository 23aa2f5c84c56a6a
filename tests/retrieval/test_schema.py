"""An index written by schema 1 (no chunk context) opens under schema 2 and stays searchable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ingest.config import ChunkingConfig, IngestConfig
from retrieval import store
from retrieval.embedder import HashEmbedder
from retrieval.index import Index
from retrieval.indexer import Indexer
from retrieval.retriever import Retriever
from tests.retrieval.helpers import assert_consistent, paragraph, write_files

SCHEMA_1_FTS = (
    "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='pk', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN "
    "INSERT INTO chunks_fts(rowid, text) VALUES (new.pk, new.text); END",
    "CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN "
    "INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.pk, old.text); END",
    "INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')",
)


def downgrade_to_schema_1(db: Path) -> None:
    conn = sqlite3.connect(db)
    for statement in (
        "DROP TRIGGER chunks_fts_insert",
        "DROP TRIGGER chunks_fts_delete",
        "DROP TABLE chunks_fts",
        "ALTER TABLE chunks DROP COLUMN context",
        *SCHEMA_1_FTS,
        "UPDATE manifest SET value = '1' WHERE key = 'schema_version'",
    ):
        conn.execute(statement)
    conn.commit()
    conn.close()


def test_schema_1_index_is_migrated_and_rechunked(tmp_path: Path) -> None:
    write_files(tmp_path / "docs", {"guide.md": "# Quokka Guide\n\n" + paragraph("alpha", 3)})
    embedder = HashEmbedder(64)
    # Schema 1 chunks had no context, and their ids hashed the text alone.
    plain = ChunkingConfig(chunk_tokens=40, overlap_tokens=0, contextual=False)
    config = IngestConfig(chunking=plain)
    first = Index(tmp_path / "index", embedder_model_id=embedder.model_id, dim=64)
    Indexer(first, embedder, config).ingest([tmp_path / "docs"])
    first.close()
    downgrade_to_schema_1(tmp_path / "index" / "index.sqlite3")

    index = Index(tmp_path / "index", embedder_model_id=embedder.model_id, dim=64)
    conn = store.connect(tmp_path / "index" / "index.sqlite3")
    assert {"context", "text"} <= {r[1] for r in conn.execute("PRAGMA table_info(chunks_fts)")}
    assert store.read_manifest(conn)["schema_version"] == store.SCHEMA_VERSION == 2
    conn.close()
    retriever = Retriever(index, embedder)
    assert retriever.retrieve("alpha", 2, mode="keyword")  # rows kept, keyword index rebuilt
    # Contextual chunking is a chunking change: the stored documents are re-chunked.
    other = IngestConfig(chunking=ChunkingConfig(chunk_tokens=40, overlap_tokens=0))
    report = Indexer(index, embedder, other).ingest([tmp_path / "docs"])
    assert report.documents.changed == 1
    hits = retriever.retrieve("quokka", 5, mode="keyword")
    assert hits and all(h.chunk.context == "Quokka Guide" for h in hits)
    assert_consistent(tmp_path / "index")
