"""Read side of one index version: dense (FAISS) and keyword (FTS5) candidates, filters, rows."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingest.document import Chunk
from retrieval.vectors import faiss_module

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 64
TERM_COUNT_CAP = 10_000


@dataclass(frozen=True)
class Filters:
    """Restrict retrieval to some documents: exact ids and/or a glob on the source path."""

    document_ids: tuple[str, ...] = ()
    source: str | None = None  # SQLite GLOB: '*' spans folders, case-sensitive

    def where(self) -> tuple[str, list[str]]:
        """SQL condition on `documents d`, and its parameters."""
        clauses: list[str] = []
        params: list[str] = []
        if self.document_ids:
            clauses.append(f"d.id IN ({','.join('?' * len(self.document_ids))})")
            params.extend(self.document_ids)
        if self.source:
            clauses.append("d.source GLOB ?")
            params.append(self.source)
        return (" AND ".join(clauses) or "1"), params

    def __bool__(self) -> bool:
        return bool(self.document_ids or self.source)


# Words that match most chunks: scoring them costs time (BM25 ranks every matching row) and
# adds almost nothing to the ranking. Dropped unless the query has nothing else.
_STOPWORDS = (
    "a about above after again all am an and any are as at be because been before being below "
    "between both but by can could did do does doing down during each few for from further had "
    "has have having he her here hers him his how i if in into is it its itself just me more "
    "most my no nor not now of off on once only or other our ours out over own same she should "
    "so some such than that the their theirs them then there these they this those through to "
    "too under until up very was we were what when where which while who whom why will with "
    "would you your yours"
)
STOPWORDS = frozenset(_STOPWORDS.split())
# "How long", "how much", ...: the second word asks for a kind of answer (a duration, an amount)
# that passages state as "2 years" or "25 GBP", rarely with the word itself.
_QUESTION_PAIRS = re.compile(r"\bhow\s+(?:long|much|many|often|far|old|big|soon)\b", re.IGNORECASE)


def query_words(text: str) -> list[str]:
    """The distinct lower-case words of a query that carry its topic: no stopwords and no
    question phrases (all of them if nothing else is left)."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    topical = list(dict.fromkeys(w.lower() for w in _WORD.findall(_QUESTION_PAIRS.sub(" ", text))))
    return [w for w in topical if w not in STOPWORDS] or words


def fts_query(text: str) -> str | None:
    """Words of free text as an FTS5 OR-query of quoted terms (no FTS syntax reaches SQLite)."""
    terms = query_words(text)
    return " OR ".join(f'"{t}"' for t in terms[:MAX_QUERY_TERMS]) if terms else None


@dataclass(frozen=True)
class StoredChunk:
    chunk: Chunk
    source: str


class ReadView:
    """Everything a search reads, inside one SQLite read transaction of one version."""

    def __init__(self, conn: sqlite3.Connection, version: int, vectors: Any) -> None:
        self.conn = conn
        self.version = version
        self.vectors = vectors

    def allowed(self, filters: Filters) -> np.ndarray:
        where, params = filters.where()
        rows = self.conn.execute(
            f"SELECT c.pk FROM chunks c JOIN documents d ON d.id = c.document_id WHERE {where}",  # noqa: S608 - placeholders only
            params,
        ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def dense(self, query: np.ndarray, k: int, filters: Filters) -> list[tuple[int, float]]:
        """Nearest chunks by inner product (cosine on unit vectors): (pk, score)."""
        if self.vectors.ntotal == 0:
            return []
        params = None
        if filters:
            allowed = self.allowed(filters)
            if not len(allowed):
                return []
            faiss = faiss_module()
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
        k = min(k, self.vectors.ntotal)
        scores, ids = self.vectors.search(query.reshape(1, -1), k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def keyword(self, text: str, k: int, filters: Filters) -> list[tuple[int, float]]:
        """BM25 over FTS5: (pk, score) with higher = better."""
        query = fts_query(text)
        if query is None:
            return []
        if not filters:  # the FTS table alone: no join per matching row
            rows = self.conn.execute(
                "SELECT rowid AS pk, -bm25(chunks_fts) AS score FROM chunks_fts "
                "WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT ?",
                [query, k],
            ).fetchall()
            return [(int(r["pk"]), float(r["score"])) for r in rows]
        where, params = filters.where()
        rows = self.conn.execute(
            "SELECT f.rowid AS pk, -bm25(chunks_fts) AS score FROM chunks_fts f "  # noqa: S608
            "JOIN chunks c ON c.pk = f.rowid JOIN documents d ON d.id = c.document_id "
            f"WHERE chunks_fts MATCH ? AND {where} ORDER BY bm25(chunks_fts) LIMIT ?",
            [query, *params, k],
        ).fetchall()
        return [(int(r["pk"]), float(r["score"])) for r in rows]

    def term_counts(self, words: list[str], cap: int = TERM_COUNT_CAP) -> dict[str, int]:
        """How many chunks hold each word (with the keyword index's own stemming), counted up
        to `cap` so a common word costs no more than a rare one."""
        counts: dict[str, int] = {}
        for word in words[:MAX_QUERY_TERMS]:
            row = self.conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?)",
                [f'"{word}"', cap],
            ).fetchone()
            counts[word] = int(row[0])
        return counts

    def chunk_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def embeddings(self, pks: list[int]) -> dict[int, bytes]:
        """The stored vectors (float32 bytes) of some chunks."""
        if not pks:
            return {}
        rows = self.conn.execute(
            f"SELECT pk, embedding FROM chunks WHERE pk IN ({','.join('?' * len(pks))})",  # noqa: S608
            pks,
        ).fetchall()
        return {int(r["pk"]): bytes(r["embedding"]) for r in rows}

    def chunks(self, pks: list[int]) -> dict[int, StoredChunk]:
        if not pks:
            return {}
        rows = self.conn.execute(
            'SELECT c.pk, c.id, c.document_id, c.text, c.page, c.start, c."end", c.hash, '  # noqa: S608
            "c.ordinal, c.context, d.source FROM chunks c JOIN documents d ON d.id = c.document_id "
            f"WHERE c.pk IN ({','.join('?' * len(pks))})",
            pks,
        ).fetchall()
        return {
            r["pk"]: StoredChunk(
                Chunk(
                    r["id"],
                    r["document_id"],
                    r["text"],
                    r["page"],
                    r["start"],
                    r["end"],
                    r["hash"],
                    r["ordinal"],
                    r["context"],
                ),
                r["source"],
            )
            for r in rows
        }


_DOC_COLUMNS = (
    "d.id, d.source, d.content_hash, d.metadata, d.version, d.updated_at, "
    "(SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS chunks"
)


def _document_row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["metadata"] = json.loads(out["metadata"])
    return out


def list_documents(
    view: ReadView, limit: int, offset: int, prefix: str = ""
) -> list[dict[str, Any]]:
    """Documents by id, a page at a time (with their chunk counts, without their text)."""
    like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = view.conn.execute(
        f"SELECT {_DOC_COLUMNS} FROM documents d WHERE d.id LIKE ? ESCAPE '\\' "  # noqa: S608
        "ORDER BY d.id LIMIT ? OFFSET ?",
        (like, limit, offset),
    ).fetchall()
    return [_document_row(r) for r in rows]


def get_document(view: ReadView, doc_id: str) -> dict[str, Any] | None:
    """One document's record and its chunks (id, page, offsets, text), in order."""
    row = view.conn.execute(
        f"SELECT {_DOC_COLUMNS} FROM documents d WHERE d.id = ?",  # noqa: S608
        (doc_id,),
    ).fetchone()
    if row is None:
        return None
    out = _document_row(row)
    chunks = view.conn.execute(
        'SELECT id, page, start, "end", text FROM chunks WHERE document_id = ? ORDER BY ordinal',
        (doc_id,),
    ).fetchall()
    out["chunk_list"] = [dict(c) for c in chunks]
    return out
