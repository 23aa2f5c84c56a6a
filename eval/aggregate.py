"""Per-question results to arm summaries: means with bootstrap CIs, per tag, costs, differences."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from eval.arms import QuestionResult
from eval.metrics import METRICS, Metric
from eval.stats import N_RESAMPLES, Interval, mean_ci, paired_bootstrap, ratio_ci
from serve.pipeline import Mode

# (a, b): "a - b" is reported. RAG's effect, tuning's effect, and what each adds to the other.
PAIRS: tuple[tuple[Mode, Mode], ...] = (
    (Mode.RAG, Mode.BASE),
    (Mode.TUNED, Mode.BASE),
    (Mode.RAG_TUNED, Mode.RAG),
    (Mode.RAG_TUNED, Mode.TUNED),
)
DIFF_METRICS = ("token_f1", "key_fact_recall", "tone_score", "grounded_share")
QUALITY_GROUPS = ("retrieval", "answer", "grounding", "tone")


def ci_dict(interval: Interval, n: int) -> dict[str, Any]:
    return {"mean": interval.estimate, "lo": interval.lo, "hi": interval.hi, "n": n}


def metrics_for(mode: Mode, results: Sequence[QuestionResult]) -> list[Metric]:
    """The registry's metrics that apply to the arm and that some answer carries."""
    present = {name for r in results if mode in r.answers for name in r.answers[mode].metrics}
    return [m for m in METRICS if m.applies_to(mode) and m.name in present]


def column(results: Sequence[QuestionResult], mode: Mode, name: str) -> list[float]:
    return [r.answers[mode].metrics.get(name, math.nan) for r in results]


def metric_ci(
    results: Sequence[QuestionResult], mode: Mode, name: str, seed: int
) -> dict[str, Any]:
    """Mean and 95% CI over questions; citation accuracy pools all citations (a ratio)."""
    if name == "citation_accuracy":
        correct = [float(r.answers[mode].citations_correct) for r in results]
        total = [float(r.answers[mode].citations_total) for r in results]
        return ci_dict(ratio_ci(correct, total, seed=seed), int(sum(total)))
    values = column(results, mode, name)
    n = sum(not math.isnan(v) for v in values)
    return ci_dict(mean_ci(values, seed=seed), n)


def arm_summary(
    results: Sequence[QuestionResult], mode: Mode, seed: int, groups: Sequence[str]
) -> dict[str, Any]:
    return {
        m.name: metric_ci(results, mode, m.name, seed)
        for m in metrics_for(mode, results)
        if m.group in groups
    }


def summary(
    results: Sequence[QuestionResult], arms: Sequence[Mode], seed: int
) -> dict[str, dict[str, Any]]:
    groups = (*QUALITY_GROUPS, "cost")
    return {str(mode): arm_summary(results, mode, seed, groups) for mode in arms}


def cost(results: Sequence[QuestionResult], arms: Sequence[Mode]) -> dict[str, dict[str, Any]]:
    """Latency percentiles, token totals and overall throughput per arm."""
    out: dict[str, dict[str, Any]] = {}
    for mode in arms:
        answers = [r.answers[mode] for r in results]
        latency = np.asarray([a.latency_s for a in answers], dtype=np.float64)
        completion = sum(a.completion_tokens for a in answers)
        generate_s = sum(
            a.completion_tokens / a.tokens_per_s
            for a in answers
            if a.tokens_per_s > 0 and not math.isnan(a.tokens_per_s)
        )
        out[str(mode)] = {
            "latency_p50_s": float(np.percentile(latency, 50)) if answers else math.nan,
            "latency_p95_s": float(np.percentile(latency, 95)) if answers else math.nan,
            "latency_total_s": float(latency.sum()),
            "prompt_tokens": sum(a.prompt_tokens for a in answers),
            "completion_tokens": completion,
            "tokens_per_s": completion / generate_s if generate_s > 0 else math.nan,
        }
    return out


def tags_of(results: Sequence[QuestionResult]) -> list[str]:
    return sorted({tag for r in results for tag in r.case.tags})


def by_tag(
    results: Sequence[QuestionResult], arms: Sequence[Mode], seed: int
) -> dict[str, dict[str, Any]]:
    """The quality metrics per tag (new / known / paraphrase ...), each with its own CI."""
    out: dict[str, dict[str, Any]] = {}
    for tag in tags_of(results):
        subset = [r for r in results if tag in r.case.tags]
        out[tag] = {
            "n": len(subset),
            "arms": {str(m): arm_summary(subset, m, seed, QUALITY_GROUPS) for m in arms},
        }
    return out


def differences(
    results: Sequence[QuestionResult], arms: Sequence[Mode], seed: int
) -> list[dict[str, Any]]:
    """Paired bootstrap of a - b per question for PAIRS x DIFF_METRICS, overall and per tag,
    wherever both arms were run and the metric applies to both."""
    rows: list[dict[str, Any]] = []
    scopes: list[tuple[str | None, Sequence[QuestionResult]]] = [(None, results)]
    scopes += [(t, [r for r in results if t in r.case.tags]) for t in tags_of(results)]
    for a, b in PAIRS:
        if a not in arms or b not in arms:
            continue
        names = {m.name for m in metrics_for(a, results)} & {
            m.name for m in metrics_for(b, results)
        }
        for name in (n for n in DIFF_METRICS if n in names):
            for tag, subset in scopes:
                x, y = column(subset, a, name), column(subset, b, name)
                n = sum(not (math.isnan(p) or math.isnan(q)) for p, q in zip(x, y, strict=True))
                diff = paired_bootstrap(x, y, seed=seed)  # NaN when no question has both
                rows.append(
                    {"a": str(a), "b": str(b), "metric": name, "tag": tag, **ci_dict(diff, n)}
                )
    return rows


def bootstrap_settings(seed: int) -> dict[str, Any]:
    return {
        "resamples": N_RESAMPLES,
        "confidence": 0.95,
        "seed": seed,
        "method": "percentile bootstrap over questions (paired for differences)",
    }
