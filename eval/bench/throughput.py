"""Figures 1 to 3 of `eval.bench.ingest`: ingest throughput (vs raw encode, LangChain), re-ingest.

The re-ingest figures follow small changes to the corpus.

Every measurement records wall-clock time (the figure) and CPU time of this process and its
waited-for children (the PDF parser): on a machine shared with other work, the CPU-time ratio
shows what the wall-clock ratio would be without the interference.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from eval.bench.corpus import SentencePool, modify_files
from eval.bench.langchain_baseline import LangChainBaseline, LangChainRun
from eval.bench.report import Report, Timing, measure
from ingest.config import IngestConfig
from retrieval.embedder import Embedder
from retrieval.index import Index
from retrieval.indexer import Indexer, IngestReport


@dataclass
class IngestFigures:
    index: Index  # of the last ragtune run, left open
    chunks: int
    full_ingest_s: float


def fresh_ingest(embedder: Embedder, corpus: Path, directory: Path) -> tuple[Index, IngestReport]:
    """A fresh index in `directory` with everything under `corpus` (Index() included)."""
    index = Index(directory, embedder_model_id=embedder.model_id, dim=embedder.dim)
    report = Indexer(index, embedder, IngestConfig()).ingest([corpus], sync=True)
    if report.failures:
        raise RuntimeError(f"ingest of {corpus} failed: {report.failures[:3]}")
    return index, report


def index_texts(index: Index) -> tuple[list[str], int, int]:
    """(distinct chunk texts, chunk rows, characters of document text) of an index."""
    with index.read() as view:
        rows = [str(r[0]) for r in view.conn.execute("SELECT text FROM chunks ORDER BY pk")]
        chars = int(view.conn.execute("SELECT sum(length(text)) FROM documents").fetchone()[0])
    return list(dict.fromkeys(rows)), len(rows), chars


def bench_ingest(
    report: Report,
    label: str,
    corpus: Path,
    work: Path,
    embedder: Embedder,
    baseline: LangChainBaseline,
    repeats: int,
    lc_repeats: int,
) -> IngestFigures:
    """Figures 1 and 2 for one corpus; rounds interleave ragtune, raw encode and LangChain."""
    ingest_t: list[Timing] = []
    encode_t: list[Timing] = []
    lc_t: list[Timing] = []
    lc_runs: list[LangChainRun] = []
    index: Index | None = None
    texts: list[str] = []
    chunks = chars = 0
    for r in range(repeats):
        if index is not None:
            index.close()
        timing, (index, result) = measure(
            fresh_ingest, embedder, corpus, work / f"{label}-ragtune-{r}"
        )
        ingest_t.append(timing)
        if r == 0:
            texts, chunks, chars = index_texts(index)
            report.info[f"{label}.ingest_report"] = result.to_dict()
        report.log(f"{label}: ragtune ingest {chunks} chunks in {timing.wall:.1f} s")
        encode_t.append(measure(embedder.embed, texts)[0])
        report.log(f"{label}: raw encode of {len(texts)} texts in {encode_t[-1].wall:.1f} s")
        if r < lc_repeats:
            timing, run = measure(baseline.run, corpus, work / f"{label}-langchain-{r}")
            lc_t.append(timing)
            lc_runs.append(run)
            report.log(f"{label}: LangChain {run.chunks} chunks in {timing.wall:.1f} s")
    assert index is not None
    ing, enc, lc = Timing.best(ingest_t), Timing.best(encode_t), Timing.best(lc_t)
    lc_chunks = lc_runs[0].chunks
    best = f"best of {repeats}" if repeats > 1 else "1 run"
    lc_best = f"best of {lc_repeats}" if lc_repeats > 1 else "1 run"
    name = f"{label} ({chunks} chunks)"
    report.add(f"{label}.chunks", f"{label}: chunks (ragtune chunking)", chunks, "chunks")
    report.add(
        f"{label}.ingest.chunks_per_s",
        f"{name}: ingest throughput",
        chunks / ing.wall,
        "chunks/s",
        note=f"{ing.wall:.1f} s, fresh index, {best}",
    )
    report.add(
        f"{label}.encode.chunks_per_s",
        f"{name}: raw encode throughput",
        chunks / enc.wall,
        "chunks/s",
        note=f"{enc.wall:.1f} s, embedder.embed on the {len(texts)} distinct chunk texts, {best}",
    )
    report.add(
        f"{label}.ingest_vs_encode",
        f"{name}: ingest / raw encode",
        enc.wall / ing.wall,
        "x",
        target=0.9,
        note="throughput ratio = encode time / ingest time",
    )
    report.add(
        f"{label}.ingest_vs_encode.cpu",
        f"{name}: ingest / raw encode, CPU time",
        enc.cpu / ing.cpu,
        "x",
        note=f"CPU s {enc.cpu:.1f} / {ing.cpu:.1f}: less sensitive to other load",
    )
    report.add(
        f"{label}.langchain.chunks_per_s",
        f"{label}: LangChain throughput ({lc_chunks} chunks)",
        lc_chunks / lc.wall,
        "chunks/s",
        note=f"{lc.wall:.1f} s, {lc_best}",
    )
    report.add(
        f"{label}.vs_langchain.chunks_per_s",
        f"{label}: ragtune / LangChain, chunks/s",
        (chunks / ing.wall) / (lc_chunks / lc.wall),
        "x",
        note="chunkings differ (200 tokens vs 1000 chars): see chars/s",
    )
    report.add(
        f"{label}.vs_langchain.chars_per_s",
        f"{label}: ragtune / LangChain, corpus chars/s",
        lc.wall / ing.wall,
        "x",
        target=1.0,
        note=f"{chars:,} chars of extracted corpus text, both sides",
    )
    report.add(
        f"{label}.vs_langchain.chars_per_s.cpu",
        f"{label}: ragtune / LangChain, chars/s, CPU time",
        lc.cpu / ing.cpu,
        "x",
        note=f"CPU s {lc.cpu:.1f} / {ing.cpu:.1f}",
    )
    report.info[f"{label}.runs"] = {
        "ragtune_ingest": [t.__dict__ for t in ingest_t],
        "raw_encode": [t.__dict__ for t in encode_t],
        "langchain": [t.__dict__ for t in lc_t],
        "langchain_chunks": lc_chunks,
        "langchain_loaded_chars": lc_runs[0].loaded_chars,
        "langchain_documents": lc_runs[0].pages,
        "corpus_chars": chars,
        "chunks": chunks,
        "distinct_chunk_texts": len(texts),
    }
    return IngestFigures(index, chunks, ing.wall)


def bench_reindex(
    report: Report,
    figs: IngestFigures,
    embedder: Embedder,
    corpus: Path,
    files: list[Path],
    pool: SentencePool,
) -> None:
    """Figure 3: re-ingest with nothing changed, then after changing 1% of the files."""
    indexer = Indexer(figs.index, embedder, IngestConfig())
    same: list[float] = []
    for _ in range(2):
        started = time.perf_counter()
        result = indexer.ingest([corpus], sync=True)
        same.append(time.perf_counter() - started)
        if result.embedded or result.documents.changed:
            raise RuntimeError(f"a no-change re-ingest changed something: {result.to_dict()}")
    n = max(1, round(len(files) * 0.01))
    rng = random.Random(99)
    picked = rng.sample(files, 2 * n)
    changed: list[float] = []
    for r in range(2):
        modify_files(picked[r * n : (r + 1) * n], pool, rng)
        started = time.perf_counter()
        result = indexer.ingest([corpus], sync=True)
        changed.append(time.perf_counter() - started)
        if result.documents.changed != n:
            raise RuntimeError(f"expected {n} changed documents: {result.to_dict()}")
        report.info[f"generated.reindex_1pct.report_{r}"] = result.to_dict()
    report.add(
        "generated.reingest_unchanged.seconds",
        "generated: re-ingest, nothing changed",
        min(same),
        "s",
        note=f"{min(same) / figs.full_ingest_s:.2%} of a full ingest, best of 2",
    )
    report.add(
        "generated.reingest_1pct.seconds",
        f"generated: re-ingest after changing {n} of {len(files)} files",
        min(changed),
        "s",
        note="one sentence changed in each, best of 2 rounds (other files each round)",
    )
    report.add(
        "generated.reingest_1pct.share_of_full",
        "generated: 1% re-ingest / full ingest",
        100 * min(changed) / figs.full_ingest_s,
        "%",
        target=5.0,
        higher_is_better=False,
        note=f"full ingest {figs.full_ingest_s:.1f} s",
    )
