"""One evaluation case through every arm: retrieve once, answer per arm, score each answer."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval.cases import EvalCase
from eval.metrics import (
    ABSENT_TAG,
    NAN,
    abstention_metrics,
    citation_accuracy,
    document_ranking,
    exact_match,
    grounded_share,
    key_fact_recall,
    mrr,
    ndcg_at_k,
    numbered_passages,
    recall_at_k,
    token_f1,
)
from eval.text import citations, split_sentences
from retrieval.retriever import Hit
from serve.pipeline import Answer, Mode, Pipeline, Route
from tuning.generator import GenerationParams


@dataclass
class ArmAnswer:
    """One arm's answer to one question, what it cost, and its per-question metrics."""

    text: str
    latency_s: float  # retrieval (shared by the RAG arms) + prompt + generation
    prompt_tokens: int
    completion_tokens: int
    tokens_per_s: float  # completion tokens / generation seconds; NaN when not measurable
    finish_reason: str
    sources: list[dict[str, Any]]  # the prompt's sources, numbered [1], [2], ... as in it
    cited: list[int]  # the source numbers the answer cites, in order of first use
    citations_correct: int
    citations_total: int
    metrics: dict[str, float] = field(default_factory=dict)  # only the metrics that apply

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "latency_s": self.latency_s,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_per_s": self.tokens_per_s,
            "finish_reason": self.finish_reason,
            "sources": self.sources,
            "cited": self.cited,
            "citations": {"correct": self.citations_correct, "total": self.citations_total},
            "metrics": dict(self.metrics),
        }


@dataclass
class QuestionResult:
    """A case, what retrieval returned for it (once, shared by the RAG arms), and each answer."""

    case: EvalCase
    retrieved: list[dict[str, Any]]  # rank, document_id, chunk_id, score; [] without RAG arms
    answers: dict[Mode, ArmAnswer]

    def to_dict(self) -> dict[str, Any]:
        c = self.case
        return {
            "id": c.id,
            "question": c.question,
            "reference": c.reference,
            "tags": list(c.tags),
            "document_ids": list(c.document_ids),
            "key_facts": list(c.key_facts),
            "paraphrase_of": c.paraphrase_of,
            "retrieved": self.retrieved,
            "answers": {str(mode): a.to_dict() for mode, a in self.answers.items()},
        }


def hit_row(hit: Hit) -> dict[str, Any]:
    return {
        "rank": hit.rank,
        "document_id": hit.document_id,
        "chunk_id": hit.chunk.id,
        "score": round(hit.score, 6),
        "page": hit.page,
        "index_version": hit.index_version,
    }


def source_row(number: int, hit: Hit) -> dict[str, Any]:
    return {
        "number": number,
        "document_id": hit.document_id,
        "chunk_id": hit.chunk.id,
        "page": hit.page,
    }


def cited_numbers(text: str) -> list[int]:
    found: list[int] = []
    for sentence in split_sentences(text):
        found.extend(citations(sentence))
    return list(dict.fromkeys(found))


def answer_metrics(case: EvalCase, text: str) -> dict[str, float]:
    """The metrics every arm gets: exact match, token F1, key-fact recall (NaN: no key facts),
    and abstention. An absent case has no answer to match: only its abstention counts."""
    absent = ABSENT_TAG in case.tags
    return {
        "exact_match": NAN if absent else exact_match(text, case.reference),
        "token_f1": NAN if absent else token_f1(text, case.reference),
        "key_fact_recall": key_fact_recall(text, case.key_facts),
        **abstention_metrics(text, case.tags, answerable=bool(case.document_ids)),
    }


def retrieval_metrics(case: EvalCase, retrieved: Sequence[Hit], k: int) -> dict[str, float]:
    """Document-level retrieval metrics; NaN for cases no document answers (controls)."""
    ranking, relevant = document_ranking(retrieved), set(case.document_ids)
    return {
        "recall@k": recall_at_k(ranking, relevant, k),
        "mrr": mrr(ranking, relevant),
        "ndcg@k": ndcg_at_k(ranking, relevant, k),
    }


def score_answer(case: EvalCase, mode: Mode, answer: Answer, latency_s: float, k: int) -> ArmAnswer:
    text = answer.text
    metrics = answer_metrics(case, text)
    correct = total = 0
    if mode.retrieves:
        metrics |= retrieval_metrics(case, answer.retrieved, k)
        metrics["grounded_share"] = grounded_share(text, [h.text for h in answer.hits])
        correct, total = citation_accuracy(text, numbered_passages(answer.hits))
        metrics["citation_accuracy"] = correct / total if total else NAN
    generate_s = answer.timings.get("generate_s", 0.0)
    completion = answer.usage.completion_tokens
    metrics |= {
        "latency_s": latency_s,
        "prompt_tokens": float(answer.usage.prompt_tokens),
        "completion_tokens": float(completion),
        "tokens_per_s": completion / generate_s if generate_s > 0 else NAN,
    }
    return ArmAnswer(
        text=text,
        latency_s=latency_s,
        prompt_tokens=answer.usage.prompt_tokens,
        completion_tokens=completion,
        tokens_per_s=metrics["tokens_per_s"],
        finish_reason=answer.finish_reason,
        sources=[source_row(n, h) for n, h in enumerate(answer.hits, start=1)],
        cited=cited_numbers(text),
        citations_correct=correct,
        citations_total=total,
        metrics=metrics,
    )


def run_case(
    pipeline: Pipeline,
    case: EvalCase,
    routes: Mapping[Mode, Route],
    params: GenerationParams,
    top_k: int,
) -> QuestionResult:
    """Retrieve once (when an arm retrieves) and hand the same hits to every RAG arm, so their
    differences come from the arm, not from retrieval; then answer with each arm in turn."""
    messages = [{"role": "user", "content": case.question}]
    hits: list[Hit] = []
    retrieve_s = 0.0
    if any(mode.retrieves for mode in routes):
        started = time.perf_counter()
        hits = pipeline.retrieve(case.question, top_k, None)
        retrieve_s = time.perf_counter() - started
    answers: dict[Mode, ArmAnswer] = {}
    for mode, route in routes.items():
        started = time.perf_counter()
        given = hits if mode.retrieves else None
        answer = pipeline.answer(messages, route, params, top_k=top_k, hits=given)
        latency = time.perf_counter() - started + (retrieve_s if mode.retrieves else 0.0)
        answers[mode] = score_answer(case, mode, answer, latency, top_k)
    return QuestionResult(case, [hit_row(h) for h in hits], answers)
