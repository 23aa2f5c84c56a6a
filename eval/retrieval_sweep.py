"""Retrieval quality of chunking and ranking choices on the evaluation cases, side by side.

`python -m eval.retrieval_sweep` ingests the corpus twice (plain and contextual chunks) into a
temporary folder and prints, per choice, over the cases that a document answers:
document recall@4 and MRR (`eval.metrics`, over the documents of the first 30 chunks), the
share of questions where one of the first 4 chunks holds every key fact ("answer in top 4",
what the prompt needs), the README question's first document, and p50 latency; then the p50 of
the default ranking against the fusion before issue 13, timed interleaved in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.cases import EvalCase, load_cases
from eval.metrics import document_ranking, mrr, recall_at_k
from ingest.config import ChunkingConfig, IngestConfig
from retrieval.config import EmbedderConfig, RetrievalConfig
from retrieval.embedder import Embedder, build_embedder
from retrieval.index import Index
from retrieval.indexer import Indexer
from retrieval.retriever import Retriever

ROOT = Path(__file__).resolve().parent.parent
README_QUESTION = "How long is the battery warranty?"
DEPTH = 30
BEFORE = {"rrf_k": 60, "keyword_weight": 1.0, "rerank_depth": 0}  # fusion before issue 13
# (name, contextual chunks, retrieval settings): today's default last.
CHOICES: tuple[tuple[str, bool, dict[str, Any]], ...] = (
    ("plain chunks, dense", False, {"mode": "dense"}),
    ("plain chunks, keyword", False, {"mode": "keyword"}),
    ("plain chunks, RRF k=60 1:1 (before)", False, BEFORE),
    ("contextual, dense", True, {"mode": "dense"}),
    ("contextual, keyword", True, {"mode": "keyword"}),
    ("contextual, RRF k=60 1:1", True, BEFORE),
    ("contextual, RRF k=10 1:1.5", True, {"rerank_depth": 0}),
    ("contextual, RRF k=10 1:1.5 + re-score (default)", True, {}),
)  # fmt: skip


def build(embedder: Embedder, corpus: Path, folder: Path, contextual: bool) -> Index:
    index = Index(folder, embedder_model_id=embedder.model_id, dim=embedder.dim)
    config = IngestConfig(chunking=ChunkingConfig(contextual=contextual))
    Indexer(index, embedder, config).ingest([corpus])
    return index


def score(retriever: Retriever, cases: Sequence[EvalCase]) -> dict[str, Any]:
    recall, rr, held, ms = [], [], [], []
    for case in cases:
        started = time.perf_counter()
        hits = retriever.retrieve(case.question, DEPTH)
        ms.append(1000 * (time.perf_counter() - started))
        ranking, relevant = document_ranking(hits), set(case.document_ids)
        recall.append(recall_at_k(ranking, relevant, 4))
        rr.append(mrr(ranking, relevant))
        texts = [h.text.lower() for h in hits[:4]]
        held.append(any(all(f.lower() in t for f in case.key_facts) for t in texts))
    first = retriever.retrieve(README_QUESTION, 4)[0].document_id
    return {
        "recall@4": statistics.mean(recall),
        "mrr": statistics.mean(rr),
        "answer_in_top4": statistics.mean(held),
        "readme_question_first": first,
        "p50_ms": statistics.median(ms),
    }


def latency_ratio(index: Index, embedder: Embedder, questions: Sequence[str]) -> dict[str, float]:
    """p50 ms of today's default and of the fusion before issue 13 on the same index, timed
    interleaved (question by question, 3 rounds), so a loaded machine slows both alike."""
    arms = {"default": RetrievalConfig(), "before": RetrievalConfig(**BEFORE)}
    retrievers = {
        name: Retriever(index, embedder, cfg, kept_vectors=0) for name, cfg in arms.items()
    }
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(3):
        for question in questions:
            for name, retriever in retrievers.items():
                started = time.perf_counter()
                retriever.retrieve(question, 4)
                times[name].append(1000 * (time.perf_counter() - started))
    p50 = {name: statistics.median(ms) for name, ms in times.items()}
    return {"default_p50_ms": p50["default"], "before_p50_ms": p50["before"],
            "ratio": p50["default"] / p50["before"]}  # fmt: skip


def sweep(corpus: Path, cases_path: Path, folder: Path) -> list[dict[str, Any]]:
    embedder = build_embedder(EmbedderConfig())
    cases = [c for c in load_cases(cases_path).cases if c.document_ids]
    indexes = {flag: build(embedder, corpus, folder / str(flag), flag) for flag in (False, True)}
    rows = []
    for name, contextual, settings in CHOICES:
        retriever = Retriever(
            indexes[contextual], embedder, RetrievalConfig(**settings), kept_vectors=0
        )
        score(retriever, cases[:5])  # warm up
        rows.append({"choice": name, **score(retriever, cases)})
    rows.append({"latency": latency_ratio(indexes[True], embedder, [c.question for c in cases])})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    parser.add_argument("--cases", type=Path, default=ROOT / "data" / "eval" / "cases.jsonl")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ragtune-sweep-") as tmp:
        rows = sweep(args.corpus, args.cases, Path(tmp))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'choice':<50} {'recall@4':>8} {'MRR':>6} {'ans@4':>6} {'p50 ms':>7}  README q. first")
    for r in rows[:-1]:
        print(
            f"{r['choice']:<50} {r['recall@4']:8.3f} {r['mrr']:6.3f} {r['answer_in_top4']:6.3f} "
            f"{r['p50_ms']:7.1f}  {r['readme_question_first']}"
        )
    lat = rows[-1]["latency"]
    print(
        f"latency, interleaved on the contextual index: default p50 {lat['default_p50_ms']:.1f} "
        f"ms, before {lat['before_p50_ms']:.1f} ms, ratio {lat['ratio']:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
