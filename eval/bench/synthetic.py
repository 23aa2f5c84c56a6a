"""Figures 4 and 5 of `eval.bench.ingest` at a large size: synthetic flat and HNSW indexes.

Both indexes hold the same chunks (recombined sample-corpus prose, for FTS5) and the same random
unit vectors, built through `IndexWriter` in one commit each. Latencies are of
`Retriever.retrieve` with the query embedding replaced by a precomputed vector (embedding a
query costs the same at any index size; the real cost is measured on the generated corpus),
and of the FAISS search alone (`ReadView.dense`). Recall@10 of HNSW is measured against exact
search, on these isotropic random vectors (a worst case: every point is almost equally far
from every other) and on vectors near a 32-dimensional subspace (structured like real
embeddings), the latter on FAISS objects built by the index's own builder.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from eval.bench.corpus import QUERIES, SentencePool, chunk_texts
from eval.bench.report import Latency, Report
from eval.bench.vectors import (
    build_index,
    commit_one_chunk_change,
    dense_search,
    faiss_recall,
    hnsw_ef_search,
    low_rank_unit_vectors,
    perturbed,
    pk_to_id,
    recall_at_k,
    retrieve_latency,
    unit_vectors,
)
from retrieval.config import IndexConfig, SearchMode
from retrieval.index import Index

K = 10
QUERY_COUNT = 200
NOISE_NORM = 0.5  # perturbed queries: cosine about 0.89 to the stored vector they come from


def bench_synthetic(
    report: Report, work: Path, pool: SentencePool, n: int, keyword_queries: int, dim: int
) -> None:
    rng = np.random.default_rng(2024)
    texts = chunk_texts(pool, n, random.Random(2024))
    vecs = unit_vectors(rng, n, dim)
    report.log(f"synthetic: {n:,} chunk texts and vectors generated")
    flat, t_flat = build_index(work / "synthetic-flat", texts, vecs, IndexConfig(kind="flat"))
    report.log(f"synthetic: flat index built in {t_flat:.1f} s")
    hnsw_config = IndexConfig(kind="hnsw")
    hnsw, t_hnsw = build_index(work / "synthetic-hnsw", texts, vecs, hnsw_config)
    report.log(f"synthetic: hnsw index built in {t_hnsw:.1f} s")
    if pk_to_id(flat) != pk_to_id(hnsw):
        raise RuntimeError("the flat and HNSW indexes numbered their chunks differently")
    size = f"@{n // 1000}k"
    ef = hnsw_ef_search(hnsw)
    report.info["synthetic"] = {
        "chunks": n,
        "hnsw": {"m": hnsw_config.hnsw_m, "ef_construction": hnsw_config.hnsw_ef_construction},
        "hnsw_ef_search": ef,
        "what_is_timed": {
            "retrieve": "Retriever.retrieve(query, k=10, mode) with the query vector precomputed",
            "vector search": "ReadView.dense(vector, 10) inside one read transaction",
        },
    }
    report.add("synthetic.build.flat_s", f"build flat index {size} (IndexWriter)", t_flat, "s")
    report.add("synthetic.build.hnsw_s", f"build hnsw index {size} (IndexWriter)", t_hnsw, "s")
    seconds, _ = commit_one_chunk_change(flat, rng, pool.paragraph(random.Random(1), 5, 9))
    report.add(
        "synthetic.flat.commit_one_chunk_s",
        f"commit a 1-chunk change {size} flat",
        seconds,
        "s",
        note="IndexWriter.put + commit: the whole vector file is rewritten",
    )

    qrand = unit_vectors(rng, QUERY_COUNT, dim)
    qnear = perturbed(rng, vecs[rng.choice(n, QUERY_COUNT, replace=False)], NOISE_NORM)
    latencies: dict[str, Latency] = {}
    for qname, qvecs in (("random", qrand), ("perturbed", qnear)):
        exact, latencies[f"flat-{qname}"] = dense_search(flat, qvecs, K)
        approx, latencies[f"hnsw-{qname}"] = dense_search(hnsw, qvecs, K)
        report.add(
            f"synthetic.hnsw_recall_at_10.isotropic.{qname}",
            f"hnsw recall@10 {size}, isotropic vectors, {qname} queries",
            recall_at_k(exact, approx, K),
            "",
            note=f"{QUERY_COUNT} queries, efSearch {ef}; worst case, see the structured lines",
        )

    basis = rng.standard_normal((32, dim), dtype=np.float32)
    structured = low_rank_unit_vectors(rng, n, dim, basis)
    queries_in = low_rank_unit_vectors(rng, QUERY_COUNT, dim, basis)
    queries_near = perturbed(rng, structured[rng.choice(n, QUERY_COUNT, replace=False)], NOISE_NORM)
    recalls, build_s = faiss_recall(
        structured, {"random": queries_in, "perturbed": queries_near}, K
    )
    for qname, recall in recalls.items():
        report.add(
            f"synthetic.hnsw_recall_at_10.structured.{qname}",
            f"hnsw recall@10 {size}, structured vectors, {qname} queries",
            recall,
            "",
            note=f"vectors near a 32-dim subspace, efSearch {ef}, FAISS build {build_s:.0f} s",
        )

    note = "ReadView.dense alone (FAISS search), random queries"
    for name in ("flat", "hnsw"):
        label = f"{name} vector search {size}"
        report.add_latency(
            f"synthetic.{name}.vector_search", label, latencies[f"{name}-random"], note
        )

    note = "Retriever.retrieve, query vector precomputed"
    queries = [QUERIES[i % len(QUERIES)] for i in range(max(QUERY_COUNT, keyword_queries))]
    plan: tuple[tuple[str, Index, tuple[SearchMode, ...]], ...] = (
        ("flat", flat, ("dense", "keyword", "hybrid")),
        ("hnsw", hnsw, ("dense", "hybrid")),
    )
    for name, index, modes in plan:
        for mode in modes:
            qv = qrand if mode == "dense" else qrand[:keyword_queries]
            lat = retrieve_latency(index, queries, qv, mode, k=K)
            label = f"retrieve {mode} {size} {name}"
            report.add_latency(f"synthetic.{name}.{mode}", label, lat, note)
    flat.close()
    hnsw.close()
