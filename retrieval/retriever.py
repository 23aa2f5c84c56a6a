"""The `Retriever`: dense (FAISS), keyword (FTS5 BM25) or hybrid (reciprocal rank fusion)."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ingest.document import Chunk
from retrieval.config import RetrievalConfig, SearchMode
from retrieval.embedder import Embedder
from retrieval.index import Index
from retrieval.read import Filters, ReadView, StoredChunk, query_words
from retrieval.rerank import cosines_of, fuse, rescore, stems

MAX_QUERY_CHARS = 4000


class QueryError(ValueError):
    """The query or its parameters are unusable."""


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its score (mode-specific, higher is better) and 1-based rank."""

    chunk: Chunk
    source: str
    score: float
    rank: int
    index_version: int
    scores: dict[str, float] = field(default_factory=dict)  # per ranker, e.g. {"dense": 0.61}

    @property
    def document_id(self) -> str:
        return self.chunk.document_id

    @property
    def page(self) -> int | None:
        return self.chunk.page

    @property
    def text(self) -> str:
        return self.chunk.text

    def to_dict(self) -> dict[str, Any]:
        c = self.chunk
        return {
            "rank": self.rank,
            "score": round(self.score, 6),
            "chunk_id": c.id,
            "document_id": c.document_id,
            "source": self.source,
            "page": c.page,
            "start": c.start,
            "end": c.end,
            "text": c.text,
            "index_version": self.index_version,
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
        }


@dataclass(frozen=True)
class QueryTerms:
    """The topical words of a query as the index sees them: `weights` maps each word's stem
    to its inverse document frequency (rare words weigh more); `unknown` are the words no
    chunk of the index holds (a question about something the documents never mention)."""

    weights: dict[str, float]
    unknown: tuple[str, ...]


class Retriever:
    """Searches one committed index version per call."""

    def __init__(
        self,
        index: Index,
        embedder: Embedder,
        config: RetrievalConfig | None = None,
        *,
        kept_vectors: int | None = None,
    ):
        self.index = index
        self.embedder = embedder
        self.config = config or RetrievalConfig()
        # 0: every query is embedded (benchmarks time that); None: the config's setting.
        self.kept_vectors = self.config.query_vectors_kept if kept_vectors is None else kept_vectors
        self._vectors: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._vectors_lock = threading.Lock()

    def query_vector(self, query: str) -> Any:
        """The embedder's (read-only) vector of `query`, as `retrieve` searches with; the last
        `kept_vectors` are kept, so comparing the question again costs no forward pass."""
        key = (self.embedder.model_id, query[:MAX_QUERY_CHARS])
        with self._vectors_lock:
            if (kept := self._vectors.get(key)) is not None:
                self._vectors.move_to_end(key)
                return kept
        vector = self.embedder.embed([key[1]])[0]
        vector.setflags(write=False)
        with self._vectors_lock:
            self._vectors[key] = vector
            while len(self._vectors) > self.kept_vectors:
                self._vectors.popitem(last=False)
        return vector

    def retrieve(
        self,
        query: str,
        k: int | None = None,
        filters: Filters | None = None,
        mode: SearchMode | None = None,
    ) -> list[Hit]:
        """The `k` best chunks for `query`, best first."""
        k = self.config.top_k if k is None else k
        mode = mode or self.config.mode
        if not isinstance(k, int) or not 1 <= k <= 1000:
            raise QueryError(f"k must be an integer from 1 to 1000, not {k!r}")
        if mode not in ("dense", "keyword", "hybrid"):
            raise QueryError(f"mode must be dense, keyword or hybrid, not {mode!r}")
        if not query.strip():
            raise QueryError("the query is empty")
        query = query[:MAX_QUERY_CHARS]
        filters = filters or Filters()
        wide = max(k, self.config.candidates) if mode == "hybrid" else k
        vector = self.query_vector(query) if mode != "keyword" else None
        with self.index.read() as view:
            rows: dict[int, StoredChunk] = {}  # filled by the re-score; the rest read once here
            ranked = self._rank(view, query, vector, wide, filters, mode, rows)[:k]
            rows.update(view.chunks([pk for pk, _, _ in ranked if pk not in rows]))
            return [
                Hit(rows[pk].chunk, rows[pk].source, score, rank, view.version, parts)
                for rank, (pk, score, parts) in enumerate(ranked, start=1)
                if pk in rows
            ]

    def terms(self, query: str) -> QueryTerms:
        """`QueryTerms` of `query`, counted over the whole current index version."""
        words = query_words(query[:MAX_QUERY_CHARS])
        with self.index.read() as view:
            total = view.chunk_count()
            counts = view.term_counts(words) if total else {}
        weights: dict[str, float] = {}
        for word, count in counts.items():
            for stem in stems(word):
                weights[stem] = max(weights.get(stem, 0.0), math.log(1 + total / (1 + count)))
        # Numbers are left out: "2024" may be written "2,024" or not at all where it is meant.
        unknown = tuple(w for w, count in counts.items() if count == 0 and not w.isdigit())
        return QueryTerms(weights, unknown)

    def _rank(
        self,
        view: ReadView,
        query: str,
        vector: Any,
        k: int,
        filters: Filters,
        mode: SearchMode,
        rows: dict[int, StoredChunk],
    ) -> list[tuple[int, float, dict[str, float]]]:
        lists: dict[str, list[tuple[int, float]]] = {}
        if mode in ("dense", "hybrid"):
            lists["dense"] = view.dense(vector, k, filters)
        if mode in ("keyword", "hybrid"):
            lists["keyword"] = view.keyword(query, k, filters)
        if mode != "hybrid":
            ((name, hits),) = lists.items()
            return [(pk, s, {name: s}) for pk, s in hits]
        cfg = self.config
        weights = {"dense": cfg.dense_weight, "keyword": cfg.keyword_weight}
        fused = fuse(lists, weights, cfg.rrf_k)
        parts: dict[int, dict[str, float]] = {pk: {"fused": f} for pk, f in fused.items()}
        for name, hits in lists.items():
            for pk, s in hits:
                parts[pk][name] = s
        order = sorted(fused, key=lambda pk: (-fused[pk], pk))
        head, tail = order[: cfg.rerank_depth], order[cfg.rerank_depth :]
        if not head:
            return [(pk, fused[pk], parts[pk]) for pk in order]
        rows.update(view.chunks(head))
        texts = {pk: f"{rows[pk].chunk.context} {rows[pk].chunk.text}" for pk in head if pk in rows}
        scores = rescore(
            head,
            fused,
            dict(lists["keyword"]),
            cosines_of(vector, view.embeddings(head)),
            texts,
            stems(" ".join(query_words(query))),
        )
        head.sort(key=lambda pk: (-scores[pk], pk))
        for pk in head:
            parts[pk]["rerank"] = scores[pk]
        # Below the re-scored head, the fused order goes on; its scores are on another scale,
        # so they are shifted under the head's lowest.
        floor = min(scores.values()) - 1.0
        return [(pk, scores[pk], parts[pk]) for pk in head] + [
            (pk, floor - (1 - fused[pk]), parts[pk]) for pk in tail
        ]
