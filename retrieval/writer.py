"""Staged changes to an `Index`, committed as one new version (SQLite rows + a new vector file)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ingest.document import Chunk, Document, PageSpan
from retrieval import store, vectors
from retrieval.index import Index, Snapshot

log = logging.getLogger(__name__)
FaultHook = Callable[[str], None]  # called at named points of a commit; tests kill there


@dataclass(frozen=True)
class StoredDocument:
    id: str
    source: str
    content_hash: str
    config_hash: str
    chunks: int


@dataclass
class _Put:
    document: Document
    config_hash: str
    chunks: list[Chunk]
    vectors: dict[str, np.ndarray]  # chunk hash -> (dim,) float32, for chunks not stored yet


@dataclass
class _Staged:
    puts: dict[str, _Put] = field(default_factory=dict)
    removes: set[str] = field(default_factory=set)
    manifest: dict[str, object] = field(default_factory=dict)
    rebuild: bool = False  # every vector changes (re-embedding): build the file from scratch


class IndexWriter:
    """Holds the index's write lock; reads the committed state and stages changes."""

    def __init__(self, index: Index, fault_hook: FaultHook | None = None) -> None:
        self.index = index
        self.conn = index.connection()
        self._staged = _Staged()
        self._fault = fault_hook or (lambda point: None)

    @classmethod
    @contextmanager
    def open(cls, index: Index, fault_hook: FaultHook | None = None) -> Iterator[IndexWriter]:
        with index.write_lock():
            yield cls(index, fault_hook)

    # -- reading the committed state -----------------------------------------------------------

    def documents(self) -> dict[str, StoredDocument]:
        rows = self.conn.execute(
            "SELECT id, source, content_hash, config_hash, "
            "(SELECT count(*) FROM chunks c WHERE c.document_id = documents.id) FROM documents"
        )
        return {r["id"]: StoredDocument(*r) for r in rows}

    def stored_document(self, doc_id: str) -> Document:
        r = self.conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
        pages = tuple(PageSpan(*p) for p in json.loads(r["pages"]))
        return Document(
            r["id"], r["source"], r["text"], r["content_hash"], pages, json.loads(r["metadata"])
        )

    def chunk_hashes(self, doc_id: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT hash FROM chunks WHERE document_id = ? ORDER BY ordinal", (doc_id,)
        )
        return [r[0] for r in rows]

    def stored_vectors(self, hashes: set[str]) -> dict[str, np.ndarray]:
        """Vectors already computed for these chunk texts, anywhere in the index."""
        out: dict[str, np.ndarray] = {}
        pending = list(hashes)
        for i in range(0, len(pending), 500):
            part = pending[i : i + 500]
            rows = self.conn.execute(
                f"SELECT hash, embedding FROM chunks WHERE hash IN ({','.join('?' * len(part))})",  # noqa: S608
                part,
            )
            for r in rows:
                out[r[0]] = np.frombuffer(r[1], dtype=np.float32)
        return out

    # -- staging ---------------------------------------------------------------------------------

    def put(
        self, doc: Document, config_hash: str, chunks: list[Chunk], vecs: dict[str, np.ndarray]
    ) -> None:
        """Insert or replace a document; `vecs` must hold a vector for every chunk hash."""
        missing = {c.hash for c in chunks} - vecs.keys()
        if missing:
            raise ValueError(f"{len(missing)} chunks of {doc.id} have no vector")
        self._staged.removes.discard(doc.id)
        self._staged.puts[doc.id] = _Put(doc, config_hash, chunks, vecs)

    def remove(self, doc_id: str) -> None:
        self._staged.puts.pop(doc_id, None)
        self._staged.removes.add(doc_id)

    def set_manifest(self, **values: object) -> None:
        self._staged.manifest.update(values)

    def rebuild_vectors(self) -> None:
        self._staged.rebuild = True

    @property
    def staged_chunks(self) -> int:
        return sum(len(p.chunks) for p in self._staged.puts.values())

    @property
    def dirty(self) -> bool:
        s = self._staged
        return bool(s.puts or s.removes or s.manifest or s.rebuild)

    # -- commit ----------------------------------------------------------------------------------

    def commit(self) -> int:
        """Apply everything staged as one new version; returns it (unchanged when nothing is)."""
        if not self.dirty:
            return self.index.current.version
        staged, self._staged = self._staged, _Staged()
        base = self.index.current
        conn = self.conn
        written: Path | None = None
        version = base.version + 1
        conn.execute("BEGIN IMMEDIATE")
        try:
            removed: list[int] = []
            added: list[tuple[int, np.ndarray]] = []
            for doc_id in staged.removes:
                removed.extend(self._delete_document(doc_id))
            for put in staged.puts.values():
                gone, new = self._write_document(put, version, replace_all=staged.rebuild)
                removed.extend(gone)
                added.extend(new)
            self._fault("rows_written")
            new_vectors = self._next_vectors(base, removed, added, staged.rebuild)
            written = self.index.directory / vectors.vector_file_name(version)
            sha = vectors.write_vectors(new_vectors, written)
            self._fault("vectors_written")
            count = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
            if count != new_vectors.ntotal:
                raise RuntimeError(f"bug: {count} chunk rows but {new_vectors.ntotal} vectors")
            store.write_manifest(
                conn,
                {
                    **staged.manifest,
                    "version": version,
                    "vectors_file": written.name,
                    "vectors_sha256": sha,
                    "vectors_count": count,
                    "index_kind": self.index.config.kind,
                    "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            )
            self._fault("before_commit")
            conn.execute("COMMIT")
        except BaseException as exc:
            # SQLite has already rolled back after some errors (a full disk, an I/O error):
            # a second ROLLBACK would raise and hide the real error and the file to remove.
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            finally:
                if written is not None:
                    written.unlink(missing_ok=True)
            full = store.storage_error(exc, self.index.directory)
            if full is not None:
                raise full from exc
            raise
        self._fault("committed")
        self.index.publish(Snapshot(version, new_vectors))
        self._collect_garbage(keep={written.name, vectors.vector_file_name(base.version)})
        return version

    def _delete_document(self, doc_id: str) -> list[int]:
        pks = [
            r[0]
            for r in self.conn.execute("SELECT pk FROM chunks WHERE document_id = ?", (doc_id,))
        ]
        self.conn.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
        self.conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        return pks

    def _write_document(
        self, put: _Put, version: int, *, replace_all: bool
    ) -> tuple[list[int], list[tuple[int, np.ndarray]]]:
        """Upsert the document row; keep rows of unchanged chunks (and their vectors) unless
        `replace_all` (re-embedding: every vector is new)."""
        doc, conn = put.document, self.conn
        now = datetime.now(UTC).isoformat(timespec="seconds")
        pages = json.dumps([[p.page, p.start, p.end] for p in doc.pages])
        conn.execute(
            "INSERT INTO documents(id, source, content_hash, config_hash, text, pages, metadata, "
            "version, updated_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
            "source=excluded.source, content_hash=excluded.content_hash, "
            "config_hash=excluded.config_hash, text=excluded.text, pages=excluded.pages, "
            "metadata=excluded.metadata, version=excluded.version, updated_at=excluded.updated_at",
            (
                doc.id,
                doc.source,
                doc.content_hash,
                put.config_hash,
                doc.text,
                pages,
                json.dumps(doc.metadata),
                version,
                now,
            ),
        )
        old = {
            r["id"]: r["pk"]
            for r in conn.execute("SELECT id, pk FROM chunks WHERE document_id = ?", (doc.id,))
        }
        keep = set() if replace_all else {c.id for c in put.chunks} & old.keys()
        gone = [pk for cid, pk in old.items() if cid not in keep]
        conn.executemany("DELETE FROM chunks WHERE pk = ?", [(pk,) for pk in gone])
        added: list[tuple[int, np.ndarray]] = []
        for c in put.chunks:
            if c.id in keep:
                conn.execute(
                    'UPDATE chunks SET ordinal=?, page=?, start=?, "end"=? WHERE pk=?',
                    (c.ordinal, c.page, c.start, c.end, old[c.id]),
                )
                continue
            vec = np.ascontiguousarray(put.vectors[c.hash], dtype=np.float32)
            cur = conn.execute(
                'INSERT INTO chunks(id, document_id, ordinal, text, page, start, "end", hash, '
                "embedding, context) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    *(c.id, doc.id, c.ordinal, c.text, c.page, c.start, c.end, c.hash),
                    *(vec.tobytes(), c.context),
                ),
            )
            added.append((int(cur.lastrowid or 0), vec))
        return gone, added

    def _next_vectors(
        self, base: Snapshot, removed: list[int], added: list[tuple[int, np.ndarray]], rebuild: bool
    ) -> Any:
        dim = self.index.dim
        kind = vectors.kind_of(base.vectors)
        if rebuild or kind != self.index.config.kind or (removed and kind == "hnsw"):
            # HNSW cannot delete, and a re-embed changes every vector: build from the rows.
            ids, mat = store.all_vectors(self.conn, dim)
            return vectors.vectors_from(ids, mat, dim, self.index.config)
        new = vectors.clone(base.vectors)
        if removed:
            new.remove_ids(np.array(removed, dtype=np.int64))
        if added:
            ids = np.array([pk for pk, _ in added], dtype=np.int64)
            new.add_with_ids(np.stack([v for _, v in added]).astype(np.float32), ids)
        return new

    def _collect_garbage(self, keep: set[str]) -> None:
        """Remove vector files older than the previous version (readers elsewhere may hold it)."""
        for path in self.index.directory.glob(f"*{vectors.VECTOR_SUFFIX}"):
            if path.name not in keep and not path.name.startswith(".tmp-"):
                path.unlink(missing_ok=True)
