"""run_comparison on the fast stack: shared retrieval, metrics per arm, exact adapter, determinism."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eval.report import Report
from eval.runner import (
    ALL_ARMS,
    ComparisonCancelled,
    ComparisonError,
    greedy_params,
    parse_arms,
    run_comparison,
)
from eval.tone_baseline import ToneSetup
from retrieval.read import list_documents
from serve.pipeline import Mode, Pipeline
from serve.services import Services
from tests.eval.compare_fixtures import CASES, TOPICS, fast_services, small_tone
from tests.serve.conftest import publish_adapter

# What a rerun may change: clocks, and whether the tone negatives came from the cache.
TIMING_KEYS = {"created_at", "seconds", "latency_s", "tokens_per_s", "latency_p50_s",
               "latency_p95_s", "latency_total_s", "hit"}  # fmt: skip


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    yield from fast_services(tmp_path)


@pytest.fixture
def tone(tmp_path: Path) -> ToneSetup:
    return small_tone(tmp_path)


def run(pipeline: Pipeline, tone: ToneSetup | None = None, **kwargs: Any) -> Report:
    arms = kwargs.pop("arms", ALL_ARMS)
    adapter = kwargs.pop("adapter", "brand")
    return run_comparison(pipeline, CASES, arms, adapter, greedy_params(48), tone=tone, **kwargs)


def strip_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [strip_timings(v) for v in value]
    return value


def test_rag_arms_share_one_retrieval_per_question(services: Services) -> None:
    pipeline = services.pipeline()
    calls: list[str] = []
    given: dict[tuple[str, Mode], Any] = {}
    retrieve, answer = pipeline.retrieve, pipeline.answer

    def spy_retrieve(question: str, top_k: int, filters: Any) -> Any:
        calls.append(question)
        return retrieve(question, top_k, filters)

    def spy_answer(messages: Any, route: Any, params: Any, **kwargs: Any) -> Any:
        given[(messages[-1]["content"], route.mode)] = kwargs.get("hits")
        return answer(messages, route, params, **kwargs)

    pipeline.retrieve = spy_retrieve  # type: ignore[method-assign]
    pipeline.answer = spy_answer  # type: ignore[method-assign]
    report = run(pipeline)
    assert calls == [c.question for c in CASES]  # once per case, none for the tone negatives
    for case in CASES:
        rag, both = given[(case.question, Mode.RAG)], given[(case.question, Mode.RAG_TUNED)]
        assert rag is both and rag  # the very same hits
        assert given[(case.question, Mode.BASE)] is None
    for q in report.to_dict()["questions"]:
        assert q["answers"]["rag"]["sources"] == q["answers"]["rag+tuned"]["sources"]
        # The prompt shows chat.evidence_passages (1) of what was retrieved; none where the
        # question has a word no document holds (then the answer says so).
        shown = len(q["answers"]["rag"]["sources"])
        said = q["answers"]["rag"]["text"].startswith("The sources do not say anything about")
        assert len(q["retrieved"]) > shown == (0 if said else 1), q["id"]


def test_metrics_per_arm_with_intervals(services: Services, tone: ToneSetup) -> None:
    data = run(services.pipeline(), tone).to_dict()
    rag_only = {"recall@k", "mrr", "ndcg@k", "grounded_share", "citation_accuracy"}
    for arm in ("base", "rag", "tuned", "rag+tuned"):
        cells = data["summary"][arm]
        for name in ("token_f1", "key_fact_recall", "exact_match", "tone_score", "latency_s"):
            assert set(cells[name]) == {"mean", "lo", "hi", "n"}
            assert cells[name]["lo"] <= cells[name]["mean"] <= cells[name]["hi"]
        retrieves = Mode(arm).retrieves
        assert (rag_only <= set(cells)) is retrieves
        if not retrieves:
            assert rag_only.isdisjoint(cells)
            assert all(rag_only.isdisjoint(q["answers"][arm]["metrics"]) for q in data["questions"])
    assert data["summary"]["rag"]["recall@k"]["n"] == 4  # the control has no documents: NaN
    assert set(data["by_tag"]) == {"new", "known", "paraphrase"}
    assert data["by_tag"]["known"]["n"] == 1
    assert set(data["cost"]["rag"]) >= {"latency_p50_s", "latency_p95_s", "prompt_tokens",
                                        "completion_tokens", "tokens_per_s"}  # fmt: skip


def test_differences_cover_the_pairs_that_matter(services: Services, tone: ToneSetup) -> None:
    rows = run(services.pipeline(), tone).to_dict()["differences"]
    overall = {(r["a"], r["b"], r["metric"]) for r in rows if r["tag"] is None}
    for a, b in [("rag", "base"), ("tuned", "base"), ("rag+tuned", "rag"), ("rag+tuned", "tuned")]:
        assert {(a, b, m) for m in ("token_f1", "key_fact_recall", "tone_score")} <= overall
    # grounding only where both arms retrieved
    assert {(a, b) for a, b, m in overall if m == "grounded_share"} == {("rag+tuned", "rag")}
    assert {r["tag"] for r in rows} == {None, "new", "known", "paraphrase"}
    f1 = next(r for r in rows if (r["a"], r["b"], r["metric"], r["tag"]) ==
              ("rag", "base", "key_fact_recall", None))  # fmt: skip
    assert f1["n"] == len(CASES) and f1["mean"] > 0  # the echoed sources hold the facts


def test_tuned_arms_use_the_exact_version_resolved_once(services: Services) -> None:
    services.registry.promote("brand@v1", "prod")
    publish_adapter(services.registry, "brand")  # v2 exists, prod still points at v1
    data = run(services.pipeline(), adapter="brand@prod").to_dict()
    adapter = data["settings"]["adapter"]
    assert adapter["ref"] == "brand@v1" and adapter["requested"] == "brand@prod"
    for q in data["questions"]:
        assert q["answers"]["tuned"]["text"].startswith("[brand@v1]")
        assert not q["answers"]["base"]["text"].startswith("[")


def test_two_runs_give_the_same_numbers(services: Services, tone: ToneSetup) -> None:
    first = run(services.pipeline(), tone).to_dict()
    second = run(services.pipeline(), tone).to_dict()
    assert first["tone"]["cache"]["hit"] is False and second["tone"]["cache"]["hit"] is True
    assert strip_timings(first) == strip_timings(second)
    assert first["settings"]["cases"]["sha256"] == second["settings"]["cases"]["sha256"]


def test_tone_negatives_come_from_the_cache_on_a_rerun(services: Services, tone: ToneSetup) -> None:
    pipeline = services.pipeline()
    base_calls = []
    answer = pipeline.answer

    def spy(messages: Any, route: Any, params: Any, **kwargs: Any) -> Any:
        if route.mode is Mode.BASE:
            base_calls.append(messages[-1]["content"])
        return answer(messages, route, params, **kwargs)

    pipeline.answer = spy  # type: ignore[method-assign]
    run(pipeline, tone)
    assert len(base_calls) == tone.questions + len(CASES)
    base_calls.clear()
    data = run(pipeline, tone).to_dict()
    assert len(base_calls) == len(CASES)
    assert data["tone"]["negatives"] == 6 and data["tone"]["positives"] == len(TOPICS)
    assert 0.0 <= data["tone"]["heldout"]["accuracy"] <= 1.0
    assert len(list(tone.cache_dir.glob("tone-negatives-*.json"))) == 1  # type: ignore[union-attr]
    longer = greedy_params(49)  # other decoding: other base answers, another cache file
    run_comparison(pipeline, CASES[:1], [Mode.BASE], None, longer, tone=tone)
    assert len(list(tone.cache_dir.glob("tone-negatives-*.json"))) == 2  # type: ignore[union-attr]


def test_progress_and_cancel_between_questions(services: Services) -> None:
    seen: list[tuple[str, int, int]] = []
    report = run(services.pipeline(), progress=lambda *a: seen.append(a))
    assert seen == [("questions", i, len(CASES)) for i in range(1, len(CASES) + 1)]
    assert len(report.questions) == len(CASES)
    seen.clear()
    with pytest.raises(ComparisonCancelled):
        run(services.pipeline(), progress=lambda *a: seen.append(a),
            should_stop=lambda: len(seen) >= 2)  # fmt: skip
    assert len(seen) == 2


def test_arms_and_adapters_are_checked(services: Services) -> None:
    assert parse_arms("rag+tuned, base") == (Mode.BASE, Mode.RAG_TUNED)
    with pytest.raises(ComparisonError, match="unknown arm"):
        parse_arms("base,fancy")
    with pytest.raises(ComparisonError, match="need an adapter"):
        run(services.pipeline(), adapter=None)
    data = run(services.pipeline(), arms=[Mode.BASE, Mode.RAG], adapter=None).to_dict()
    assert data["arms"] == ["base", "rag"] and data["settings"]["adapter"] is None
    assert data["tone"] is None and "tone_score" not in data["summary"]["base"]
    assert (data["differences"][0]["a"], data["differences"][0]["b"]) == ("rag", "base")


def test_settings_record_what_the_numbers_depend_on(services: Services, tone: ToneSetup) -> None:
    s = run(services.pipeline(), tone).to_dict()["settings"]
    assert s["generator"]["model_id"] == "echo"
    assert s["index"]["version"] == 1 and s["index"]["versions_seen"] == [1]
    assert s["decoding"] == {"max_new_tokens": 48, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    assert s["bootstrap"]["resamples"] > 100 and s["bootstrap"]["seed"] == 0
    assert len(s["cases"]["sha256"]) == 64 and s["cases"]["count"] == len(CASES)
    assert s["adapter"]["weights_sha256"] and s["ragtune_version"]


def test_rag_arms_refuse_an_empty_index(services: Services) -> None:
    """Without this, every RAG arm would answer without context and report recall 0."""
    with services.index.read() as view:
        ids = [row["id"] for row in list_documents(view, 1000, 0)]
    assert ids and services.indexer().delete(ids).documents.removed == len(ids)
    with pytest.raises(ComparisonError, match="index is empty"):
        run(services.pipeline(), arms=[Mode.BASE, Mode.RAG], adapter=None)
    # Arms that do not retrieve still run on an empty index.
    data = run(services.pipeline(), arms=[Mode.BASE], adapter=None).to_dict()
    assert data["arms"] == ["base"]
