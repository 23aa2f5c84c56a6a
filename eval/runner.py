"""`run_comparison`: the same questions through base, RAG, tuned and RAG+tuned, one `Pipeline`."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from eval.aggregate import bootstrap_settings
from eval.arms import QuestionResult, run_case
from eval.cases import EvalCase
from eval.report import Report
from eval.tone_baseline import Progress, Stopped, ToneModel, ToneSetup, train_tone
from serve.pipeline import Mode, Pipeline, Route
from tuning.adapters import Adapter
from tuning.generator import GenerationParams

ALL_ARMS: tuple[Mode, ...] = (Mode.BASE, Mode.RAG, Mode.TUNED, Mode.RAG_TUNED)
DEFAULT_MAX_TOKENS = 128


class ComparisonError(ValueError):
    """A comparison that cannot run as asked (unknown arm, tuned arm without an adapter)."""


class ComparisonCancelled(Exception):  # noqa: N818 (a signal, not an error)
    """should_stop() said yes; raised between two questions (or two tone generations)."""


def parse_arms(names: str | Iterable[str]) -> tuple[Mode, ...]:
    """'base,rag+tuned' -> arms in the canonical order, each once; unknown names are an error."""
    given = names.split(",") if isinstance(names, str) else list(names)
    wanted = {n.strip() for n in given if n.strip()}
    unknown = sorted(wanted - {str(m) for m in ALL_ARMS})
    if unknown or not wanted:
        raise ComparisonError(
            f"unknown arm(s) {', '.join(unknown) or '(none given)'}: "
            f"use {', '.join(map(str, ALL_ARMS))}"
        )
    return tuple(m for m in ALL_ARMS if str(m) in wanted)


def check_arms(arms: Sequence[Mode], adapter_ref: str | None) -> None:
    tuned = [str(m) for m in arms if m.tuned]
    if tuned and not adapter_ref:
        raise ComparisonError(
            f"the arm(s) {', '.join(tuned)} need an adapter; without one only base and rag can run"
        )


def greedy_params(max_tokens: int = DEFAULT_MAX_TOKENS, seed: int = 0) -> GenerationParams:
    """The decoding every arm shares: greedy, a fixed token budget, a fixed seed."""
    return GenerationParams(max_new_tokens=max_tokens, temperature=0.0, top_p=1.0, seed=seed)


def cases_sha256(cases: Sequence[EvalCase]) -> str:
    """Of the cases actually run (after any limit), in order: same hash, same questions."""
    rows = [asdict(c) for c in cases]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode("utf-8")).hexdigest()


def _version() -> str:
    try:
        return importlib.metadata.version("ragtune")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _adapter_info(adapter: Adapter | None, requested: str | None) -> dict[str, Any] | None:
    if adapter is None:
        return None
    m = adapter.manifest
    return {
        "requested": requested,
        "ref": adapter.ref,
        "name": adapter.name,
        "version": adapter.version,
        "weights_sha256": m.get("weights_sha256"),
        "base_model_id": adapter.base_model_id,
        "dataset_sha256": (m.get("dataset") or {}).get("sha256"),
    }


def _index_info(pipeline: Pipeline, results: Sequence[QuestionResult]) -> dict[str, Any] | None:
    if pipeline.retriever is None:
        return None
    seen = sorted({h["index_version"] for r in results for h in r.retrieved})
    return {
        "version": pipeline.retriever.index.current.version,
        "versions_seen": seen,
        "embedder_model_id": pipeline.retriever.embedder.model_id,
    }


@dataclass(frozen=True)
class _Run:
    """What one comparison holds fixed for every question and arm."""

    arms: tuple[Mode, ...]
    adapter: Adapter | None  # resolved once: its exact version answers every tuned question
    adapter_ref: str | None  # as asked (may be an alias)
    params: GenerationParams
    top_k: int
    base_weights: str | None
    cases_meta: dict[str, Any]
    started: float

    @property
    def seed(self) -> int:
        return self.params.seed or 0

    def routes(self) -> dict[Mode, Route]:
        ref = self.adapter.ref if self.adapter else None
        return {m: Route(m, ref if m.tuned else None) for m in self.arms}


def _settings(pipeline: Pipeline, run: _Run, results: Sequence[QuestionResult]) -> dict[str, Any]:
    params = run.params
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "ragtune_version": _version(),
        "arms": [str(a) for a in run.arms],
        "generator": {
            "backend": type(pipeline.generator).__name__,
            "model_id": pipeline.generator.model_id,
            "base_weights_sha256": run.base_weights,
        },
        "adapter": _adapter_info(run.adapter, run.adapter_ref),
        "index": _index_info(pipeline, results),
        "retrieval": {"top_k": run.top_k, "retrieved_once_per_question": True},
        "decoding": {
            "max_new_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        },
        "prompt": {
            "system_prompt": pipeline.config.system_prompt,
            "rag_instructions": pipeline.config.rag_instructions,
        },
        "bootstrap": bootstrap_settings(run.seed),
        "cases": {
            "count": len(results),
            "sha256": cases_sha256([r.case for r in results]),
            **run.cases_meta,
        },
        "seconds": round(time.perf_counter() - run.started, 3),
    }


def _score_tone(model: ToneModel, results: Sequence[QuestionResult], arms: Sequence[Mode]) -> None:
    for mode in arms:
        scores = model.classifier.score([r.answers[mode].text for r in results])
        for result, score in zip(results, scores, strict=True):
            result.answers[mode].metrics["tone_score"] = score


def _answer_all(
    pipeline: Pipeline,
    run: _Run,
    cases: Sequence[EvalCase],
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> list[QuestionResult]:
    routes, results = run.routes(), []
    for done, case in enumerate(cases):
        if should_stop is not None and should_stop():
            raise ComparisonCancelled
        results.append(run_case(pipeline, case, routes, run.params, run.top_k))
        if progress is not None:
            progress("questions", done + 1, len(cases))
    return results


def run_comparison(
    pipeline: Pipeline,
    cases: Sequence[EvalCase],
    arms: Sequence[Mode],
    adapter_ref: str | None,
    params: GenerationParams,
    *,
    top_k: int | None = None,
    tone: ToneSetup | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    cases_meta: Mapping[str, Any] | None = None,
) -> Report:
    """Every case through every arm (retrieval once per case, shared by the RAG arms), then
    the tone score, per-arm summaries with CIs and the paired differences.

    The adapter is resolved once, and its exact version (`name@vN`) serves every tuned answer
    even if an alias moves meanwhile. `progress(stage, done, total)` is called after each
    tone generation ("tone") and each question ("questions"); `should_stop()` is checked
    between them and ends the run with ComparisonCancelled.
    """
    started, chosen = time.perf_counter(), tuple(m for m in ALL_ARMS if m in arms)
    check_arms(chosen, adapter_ref)
    if any(m.retrieves for m in chosen):
        if pipeline.retriever is None:
            raise ComparisonError("the rag arms need an index, and this pipeline has none")
        if not pipeline.retriever.index.info().get("chunks"):
            # Else every RAG arm would run without context and report recall 0 as a result.
            raise ComparisonError("the index is empty: ingest documents before comparing rag arms")
    tuned = adapter_ref and any(m.tuned for m in chosen)
    adapter = pipeline.resolve(adapter_ref) if adapter_ref and tuned else None
    run = _Run(chosen, adapter, adapter_ref, params, top_k or pipeline.default_top_k,
               tone.base_weights if tone else None, dict(cases_meta or {}), started)  # fmt: skip
    model = None
    if tone is not None:
        try:
            model = train_tone(pipeline, tone, params, progress, should_stop)
        except Stopped:
            raise ComparisonCancelled from None
    results = _answer_all(pipeline, run, cases, progress, should_stop)
    if model is not None:
        _score_tone(model, results, chosen)
    tone_part = {"heldout": model.heldout.to_dict(), **model.info} if model else None
    return Report(_settings(pipeline, run, results), chosen, results, tone_part, run.seed)
