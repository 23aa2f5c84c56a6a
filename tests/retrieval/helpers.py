"""Small helpers shared by the retrieval tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retrieval.embedder import HashEmbedder, Vectors
from retrieval.index import Index
from retrieval.store import read_manifest


def write_files(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


class CountingEmbedder(HashEmbedder):
    """The hash embedder, remembering every text it was asked to embed."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__(dim=dim)
        self.calls: list[str] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls.extend(texts)
        return super().embed(texts)


def paragraph(topic: str, n: int = 3) -> str:
    """Distinct, deterministic prose about `topic` (about 25 words a sentence)."""
    return " ".join(
        f"The {topic} record number {i} says that item {topic}-{i} ships in {i + 2} days "
        f"from the {topic} warehouse, and its code is {topic.upper()}{i * 7}."
        for i in range(n)
    )


def assert_consistent(directory: Path) -> dict[str, object]:
    """SQLite and the vector file agree on every chunk id; returns the manifest."""
    conn = sqlite3.connect(directory / "index.sqlite3")
    try:
        manifest = read_manifest(conn)
        pks = sorted(r[0] for r in conn.execute("SELECT pk FROM chunks"))
        orphans = conn.execute(
            "SELECT count(*) FROM chunks WHERE document_id NOT IN (SELECT id FROM documents)"
        ).fetchone()[0]
    finally:
        conn.close()
    assert orphans == 0
    index = Index(directory, embedder_model_id=str(manifest["embedder_model_id"]),
                  dim=int(str(manifest["embedder_dim"])))  # fmt: skip
    try:
        vectors = index.current.vectors
        stored = sorted(int(i) for i in _faiss_ids(vectors))
        assert stored == pks, f"FAISS has {len(stored)} ids, SQLite {len(pks)} chunks"
    finally:
        index.close()
    return manifest


def _faiss_ids(vectors: object) -> np.ndarray:
    import faiss

    return faiss.vector_to_array(vectors.id_map)  # type: ignore[attr-defined]
