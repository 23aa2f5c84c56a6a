"""Ingest benchmark: `python -m eval.bench.ingest [--quick] [--out FILE]`.

A benchmark, never a test: it prints figures, and every ratio is taken against a baseline run in
the same process, on the same machine, at the same time. It measures, on the sample corpus
(data/corpus) and on a generated corpus of at least 2,000 chunks:

1. ingest throughput (fresh index) and its ratio to the embedder's raw `encode` throughput on the
   same chunk texts (target >= 0.9);
2. its ratio to the LangChain way of doing the same job (loaders, RecursiveCharacterTextSplitter,
   HuggingFaceEmbeddings, FAISS.from_documents + save_local), in chunks/s and in characters of
   corpus text per second; the chunkings differ, so chars/s is the fair one (target >= 1.0);
3. re-ingest time after changing 1% of the generated files, as a share of a full ingest
   (target < 5%), and a re-ingest with nothing changed;
4. retrieval latency p50/p95 (dense, keyword, hybrid) on the generated index (real query
   embeddings) and on a synthetic index of 100,000 chunks (random unit vectors, query vectors
   precomputed: embedding a query costs the same at any size);
5. recall@10 of the HNSW index against exact search at 100,000 vectors, and both latencies.

Each ingest measurement is run several times, rounds interleaving ragtune, raw encode and
LangChain, and the best (shortest) time is reported; both models are warmed up first. CPU-time
ratios (this process and its children) are printed beside the wall-clock ones: they hold when
other work shares the machine. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.bench.corpus import (
    QUERIES,
    SAMPLE_CORPUS,
    SentencePool,
    write_corpus,
)
from eval.bench.report import Latency, Report, command_line, machine, timed_ms
from eval.bench.synthetic import bench_synthetic
from eval.bench.throughput import bench_ingest, bench_reindex
from eval.bench.vectors import retrieve_latency
from retrieval.config import EmbedderConfig, RetrievalConfig, SearchMode
from retrieval.embedder import Embedder, build_embedder
from retrieval.index import Index
from retrieval.retriever import Retriever

MODES: tuple[SearchMode, ...] = ("dense", "keyword", "hybrid")
SEARCH_ONLY_MODES: tuple[SearchMode, ...] = ("dense", "hybrid")  # keyword never embeds
K = 10  # hits per query in every latency and recall figure
CHARS_PER_CHUNK = 640  # generated text per chunk of the default chunking, measured


@dataclass(frozen=True)
class Sizes:
    files: int  # generated files
    chunks: int  # the generated corpus has at least this many chunks
    vectors: int  # synthetic index size
    repeats: int  # runs of each ingest measurement on the sample corpus (best reported)
    big_repeats: int  # runs of ragtune ingest and raw encode on the generated corpus
    big_lc_repeats: int  # runs of the LangChain baseline on the generated corpus
    keyword_queries: int  # timed keyword and hybrid queries on the synthetic index


FULL = Sizes(
    files=200,
    chunks=2000,
    vectors=100_000,
    repeats=3,
    big_repeats=2,
    big_lc_repeats=1,
    keyword_queries=60,
)
QUICK = Sizes(
    files=40,
    chunks=300,
    vectors=10_000,
    repeats=1,
    big_repeats=1,
    big_lc_repeats=1,
    keyword_queries=50,
)


def _retrieve_ms(retriever: Retriever, queries: list[str], mode: SearchMode) -> list[float]:
    def one(i: int) -> None:
        retriever.retrieve(queries[i], k=K, mode=mode)

    return timed_ms(one, len(queries), 10)


def bench_retrieval_real(report: Report, index: Index, embedder: Embedder, chunks: int) -> None:
    """Figure 4 at the generated corpus's size, with the real embedder."""
    retriever = Retriever(index, embedder, RetrievalConfig(), kept_vectors=0)
    queries = [*QUERIES, *QUERIES]
    embed_ms = timed_ms(lambda i: embedder.embed([queries[i]]), len(QUERIES), 10)
    report.add_latency(
        "retrieval.real.embed_query", "query embedding", Latency.of(embed_ms), "1 query"
    )
    for mode in MODES:
        ms = _retrieve_ms(retriever, queries, mode)
        report.add_latency(
            f"retrieval.real.{mode}",
            f"retrieve {mode} @{chunks:,} chunks",
            Latency.of(ms),
            "Retriever.retrieve end to end"
            + (", query embedding included" if mode != "keyword" else ""),
        )
    # The same hybrid search without its re-scoring stage, in the same run: what it costs.
    fusion_only = Retriever(index, embedder, RetrievalConfig(rerank_depth=0), kept_vectors=0)
    report.add_latency(
        "retrieval.real.hybrid.fusion_only",
        f"retrieve hybrid @{chunks:,} chunks, fusion only (no re-score)",
        Latency.of(_retrieve_ms(fusion_only, queries, "hybrid")),
        "Retriever.retrieve end to end, query embedding included",
    )
    qvecs = embedder.embed(queries)
    for mode in SEARCH_ONLY_MODES:
        lat = retrieve_latency(index, queries, qvecs, mode, k=K)
        report.add_latency(
            f"retrieval.real.{mode}.search",
            f"retrieve {mode} @{chunks:,} chunks, no embedding",
            lat,
            "query vectors precomputed",
        )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for dist in (
        "torch",
        "sentence-transformers",
        "faiss-cpu",
        "langchain-community",
        "langchain-huggingface",
        "langchain-text-splitters",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "missing"
    return out


def run_ingest(sizes: Sizes, out: Path | None, keep: Path | None) -> Report:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from eval.bench.langchain_baseline import LangChainBaseline, html_loader_name, quiet_langchain

    quiet_langchain()
    report = Report()
    report.info.update(
        sizes=sizes.__dict__,
        **machine(),
        versions=_versions(),
        langchain_html_loader=html_loader_name(),
    )
    pool = SentencePool.from_corpus()
    with tempfile.TemporaryDirectory(prefix="ragtune-perf-", dir=keep) as tmp:
        work = Path(tmp)
        embedder = build_embedder(EmbedderConfig())
        baseline = LangChainBaseline()
        warm = [pool.paragraph(random.Random(i)) for i in range(256)]
        report.log("warming up both models (256 texts each)")
        embedder.embed(warm)
        baseline.warm_up(warm)

        sample = bench_ingest(
            report, "sample", SAMPLE_CORPUS, work, embedder, baseline, sizes.repeats, sizes.repeats
        )
        sample.index.close()

        corpus = work / "generated-corpus"
        files = write_corpus(
            corpus, files=sizes.files, total_chars=sizes.chunks * CHARS_PER_CHUNK, pool=pool
        )
        gen = bench_ingest(
            report,
            "generated",
            corpus,
            work,
            embedder,
            baseline,
            sizes.big_repeats,
            sizes.big_lc_repeats,
        )
        if gen.chunks < sizes.chunks:
            report.log(f"WARNING: the generated corpus has {gen.chunks} chunks, < {sizes.chunks}")
        del baseline
        bench_reindex(report, gen, embedder, corpus, files, pool)
        bench_retrieval_real(report, gen.index, embedder, gen.chunks)
        gen.index.close()
        bench_synthetic(report, work, pool, sizes.vectors, sizes.keyword_queries, embedder.dim)
    report.finish(out)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_line("eval.bench.ingest", __doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeats", type=int, help="runs per ingest measurement (best kept)")
    parser.add_argument("--vectors", type=int, help="size of the synthetic index")
    parser.add_argument("--tmp", type=Path, help="folder for the temporary indexes and corpus")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repeats:
        sizes = Sizes(
            **{
                **sizes.__dict__,
                "repeats": args.repeats,
                "big_repeats": args.repeats,
                "big_lc_repeats": args.repeats,
            }
        )
    if args.vectors:
        sizes = Sizes(**{**sizes.__dict__, "vectors": args.vectors})
    report = run_ingest(sizes, args.out, args.tmp)
    print(report.table())
    print(f"\n{report.machine_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
