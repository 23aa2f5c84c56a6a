"""Large synthetic indexes for the ingest benchmark: built with `IndexWriter`, searched as served.

Chunks are real-looking prose (recombined sample-corpus sentences, so FTS5 has realistic
content) with random unit vectors; the query embedding is replaced by a precomputed vector
(`QueryVectors`), because embedding a query costs the same at any index size.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from eval.bench.report import Latency, timed_ms
from ingest.document import Chunk, Document, PageSpan, sha256_hex
from retrieval.config import IndexConfig, RetrievalConfig, SearchMode
from retrieval.embedder import HashEmbedder, Vectors
from retrieval.index import Index
from retrieval.read import Filters
from retrieval.retriever import Retriever
from retrieval.writer import IndexWriter

SYNTHETIC_MODEL_ID = "synthetic-random-unit-vectors"
CHUNKS_PER_DOCUMENT = 100


class QueryVectors(HashEmbedder):
    """An `Embedder` whose `embed` returns whatever vector was set last: no model runs."""

    def __init__(self, dim: int, model_id: str = SYNTHETIC_MODEL_ID) -> None:
        super().__init__(dim)
        self._model_id = model_id
        self.next: npt.NDArray[np.float32] = np.zeros(dim, dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> Vectors:
        return np.tile(self.next, (len(texts), 1))


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> npt.NDArray[np.float32]:
    vecs = rng.standard_normal((n, dim), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs


def low_rank_unit_vectors(
    rng: np.random.Generator,
    n: int,
    dim: int,
    basis: npt.NDArray[np.float32],
    noise: float = 0.1,
) -> npt.NDArray[np.float32]:
    """Unit vectors near the subspace spanned by `basis` (rank x dim): structured like real
    sentence embeddings, whose intrinsic dimension is far below their size."""
    rank = basis.shape[0]
    z = rng.standard_normal((n, rank), dtype=np.float32)
    out: npt.NDArray[np.float32] = z @ basis / rank**0.5
    out += rng.standard_normal((n, dim), dtype=np.float32) * (noise / dim**0.5)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def perturbed(
    rng: np.random.Generator, base: npt.NDArray[np.float32], noise_norm: float
) -> npt.NDArray[np.float32]:
    """`base` rows plus Gaussian noise of about `noise_norm` length, re-normalised."""
    noise = rng.standard_normal(base.shape, dtype=np.float32) * (noise_norm / base.shape[1] ** 0.5)
    out: npt.NDArray[np.float32] = base + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def build_index(
    directory: Path,
    texts: list[str],
    vecs: npt.NDArray[np.float32],
    config: IndexConfig,
) -> tuple[Index, float]:
    """A fresh index holding `texts` with `vecs`, committed as one version; (index, seconds)."""
    started = time.perf_counter()
    index = Index(directory, embedder_model_id=SYNTHETIC_MODEL_ID, dim=vecs.shape[1], config=config)
    with IndexWriter.open(index) as writer:
        for d, first in enumerate(range(0, len(texts), CHUNKS_PER_DOCUMENT)):
            part = texts[first : first + CHUNKS_PER_DOCUMENT]
            doc_id = f"synthetic/doc-{d:05d}.txt"
            text = "\n\n".join(part)
            chunks: list[Chunk] = []
            vectors: dict[str, np.ndarray] = {}
            offset = 0
            for i, chunk_text in enumerate(part):
                digest = sha256_hex(chunk_text)
                cid = f"{doc_id}#{digest[:12]}-{i}"
                chunks.append(
                    Chunk(
                        cid, doc_id, chunk_text, None, offset, offset + len(chunk_text), digest, i
                    )
                )
                vectors[digest] = vecs[first + i]
                offset += len(chunk_text) + 2
            doc = Document(
                doc_id,
                f"/synthetic/{doc_id}",
                text,
                sha256_hex(text),
                (PageSpan(None, 0, len(text)),),
            )
            writer.put(doc, "synthetic", chunks, vectors)
        writer.commit()
    return index, time.perf_counter() - started


def commit_one_chunk_change(index: Index, rng: np.random.Generator, text: str) -> tuple[float, int]:
    """Replace one chunk of the first synthetic document (new text, new vector) and commit:
    what an ingest does after a one-sentence edit, less the file reading and embedding.
    Returns (seconds, new version)."""
    doc_id = "synthetic/doc-00000.txt"
    with IndexWriter.open(index) as writer:
        doc = writer.stored_document(doc_id)
        rows = writer.conn.execute(
            'SELECT id, text, page, start, "end", hash, ordinal FROM chunks '
            "WHERE document_id = ? ORDER BY ordinal",
            (doc_id,),
        ).fetchall()
        chunks = [Chunk(r[0], doc_id, r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]
        digest = sha256_hex(text)
        old = chunks[0]
        chunks[0] = Chunk(
            f"{doc_id}#{digest[:12]}-new", doc_id, text, None, old.start, old.end, digest, 0
        )
        vecs = writer.stored_vectors({c.hash for c in chunks[1:]})
        vecs[digest] = unit_vectors(rng, 1, index.dim)[0]
        started = time.perf_counter()
        writer.put(doc, "synthetic", chunks, vecs)
        version = writer.commit()
        return time.perf_counter() - started, version


def pk_to_id(index: Index) -> list[tuple[int, str]]:
    with index.read() as view:
        return [(int(r[0]), str(r[1])) for r in view.conn.execute("SELECT pk, id FROM chunks")]


def retrieve_latency(
    index: Index,
    queries: Sequence[str],
    qvecs: npt.NDArray[np.float32],
    mode: SearchMode,
    k: int = 10,
    warmup: int = 10,
) -> Latency:
    """`Retriever.retrieve` end to end (read transaction, search, fusion, chunk rows), with
    the query embedding replaced by the precomputed `qvecs[i]`."""
    embedder = QueryVectors(index.dim)
    retriever = Retriever(index, embedder, RetrievalConfig(), kept_vectors=0)

    def one(i: int) -> None:
        embedder.next = qvecs[i % len(qvecs)]
        retriever.retrieve(queries[i % len(queries)], k=k, mode=mode)

    return Latency.of(timed_ms(one, len(qvecs), warmup))


def dense_search(
    index: Index, qvecs: npt.NDArray[np.float32], k: int = 10
) -> tuple[list[list[int]], Latency]:
    """Vector search alone (`ReadView.dense`, one query at a time): hits and latency."""
    hits: list[list[int]] = []
    with index.read() as view:
        for i in range(min(10, len(qvecs))):
            view.dense(qvecs[i], k, Filters())

        def one(i: int) -> None:
            hits.append([pk for pk, _ in view.dense(qvecs[i], k, Filters())])

        ms = timed_ms(one, len(qvecs), 0)
    return hits, Latency.of(ms)


def faiss_recall(
    vecs: npt.NDArray[np.float32], queries: dict[str, npt.NDArray[np.float32]], k: int = 10
) -> tuple[dict[str, float], float]:
    """Recall@k of HNSW against exact search for each query set, and the HNSW build seconds,
    on FAISS objects built by the index's own builder (`retrieval.vectors.vectors_from`)."""
    from retrieval.vectors import vectors_from

    ids = np.arange(len(vecs), dtype=np.int64)
    exact = vectors_from(ids, vecs, vecs.shape[1], IndexConfig(kind="flat"))
    started = time.perf_counter()
    approx = vectors_from(ids, vecs, vecs.shape[1], IndexConfig(kind="hnsw"))
    seconds = time.perf_counter() - started
    out: dict[str, float] = {}
    for name, q in queries.items():
        _, want = exact.search(q, k)
        _, got = approx.search(q, k)
        out[name] = recall_at_k(want.tolist(), got.tolist(), k)
    return out, seconds


def recall_at_k(exact: list[list[int]], approx: list[list[int]], k: int = 10) -> float:
    found = sum(len(set(e[:k]) & set(a[:k])) for e, a in zip(exact, approx, strict=True))
    return found / sum(min(k, len(e)) for e in exact)


def hnsw_ef_search(index: Index) -> int:
    from retrieval.vectors import faiss_module

    inner = faiss_module().downcast_index(index.current.vectors.index)
    return int(inner.hnsw.efSearch)
