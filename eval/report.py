"""The comparison `Report`: its data (JSON for machines) and a terminal summary table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eval import aggregate
from eval.arms import QuestionResult
from eval.metrics import METRIC_BY_NAME, METRICS
from serve.pipeline import Mode

SCHEMA = "ragtune.comparison/1"
JSON_NAME, HTML_NAME = "report.json", "report.html"
# The columns of the terminal summary, in order (cost columns come from `cost`); exact match
# is almost always 0 for free-text answers, so it stays in the JSON and HTML only.
SUMMARY_METRICS = (
    "token_f1",
    "key_fact_recall",
    "grounded_share",
    "citation_accuracy",
    "tone_score",
    "recall@k",
)


def finite(value: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN); floats are rounded to 6 places."""
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


@dataclass
class Report:
    """Arms x metrics over the same questions, with intervals, differences and every answer."""

    settings: dict[str, Any]
    arms: tuple[Mode, ...]
    questions: list[QuestionResult]
    tone: dict[str, Any] | None  # the classifier's held-out check and training data
    seed: int = 0
    summary: dict[str, dict[str, Any]] = field(init=False)
    cost: dict[str, dict[str, Any]] = field(init=False)
    by_tag: dict[str, dict[str, Any]] = field(init=False)
    differences: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.summary = aggregate.summary(self.questions, self.arms, self.seed)
        self.cost = aggregate.cost(self.questions, self.arms)
        self.by_tag = aggregate.by_tag(self.questions, self.arms, self.seed)
        self.differences = aggregate.differences(self.questions, self.arms, self.seed)

    def metric_rows(self) -> list[dict[str, Any]]:
        """The registry rows of the metrics this report holds, in registry order."""
        held = {name for arm in self.summary.values() for name in arm}
        return [
            {
                "name": m.name,
                "group": m.group,
                "higher_is_better": m.higher_is_better,
                "description": m.description,
            }
            for m in METRICS
            if m.name in held
        ]

    def summary_dict(self) -> dict[str, Any]:
        """Everything but the per-question rows (a job's result)."""
        data: dict[str, Any] = finite(
            {
                "object": "comparison.summary",
                "schema": SCHEMA,
                "settings": self.settings,
                "arms": [str(a) for a in self.arms],
                "metrics": self.metric_rows(),
                "summary": self.summary,
                "cost": self.cost,
                "by_tag": self.by_tag,
                "differences": self.differences,
                "tone": self.tone,
            }
        )
        return data

    def to_dict(self) -> dict[str, Any]:
        full = self.summary_dict()
        full["object"] = "comparison"
        full["questions"] = finite([q.to_dict() for q in self.questions])
        return full


def fmt_ci(cell: dict[str, Any] | None, digits: int = 2) -> str:
    if not cell or cell.get("mean") is None:
        return "-"
    mean = f"{cell['mean']:.{digits}f}"
    if cell.get("lo") is None or cell.get("hi") is None:
        return mean
    return f"{mean} [{cell['lo']:.{digits}f}, {cell['hi']:.{digits}f}]"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def format_summary(data: dict[str, Any]) -> str:
    """A terminal table (arms x key metrics, mean [95% CI]) and the paired differences."""
    summary, cost = data["summary"], data["cost"]
    names = [n for n in SUMMARY_METRICS if any(n in summary[a] for a in data["arms"])]
    rows = [["arm", *names, "p50 s", "p95 s", "tok/s"]]
    for arm in data["arms"]:
        c = cost[arm]
        rows.append(
            [
                arm,
                *(fmt_ci(summary[arm].get(n)) for n in names),
                *(
                    f"{c[k]:.2f}" if c[k] is not None else "-"
                    for k in ("latency_p50_s", "latency_p95_s", "tokens_per_s")
                ),
            ]
        )
    lines = [
        f"{data['settings']['cases']['count']} questions; mean [95% bootstrap CI]",
        *_table(rows),
        "",
        "differences (a - b, paired):",
    ]
    for d in data["differences"]:
        if d["tag"] is None:
            sign = _verdict(d)
            lines.append(f"  {d['a']:>9} - {d['b']:<9} {d['metric']:<16} {fmt_ci(d, 3):<28} {sign}")
    tone = data.get("tone")
    if tone and tone.get("heldout"):
        h = tone["heldout"]
        lines.append(
            f"tone classifier: held-out accuracy {fmt_ci({'mean': h['accuracy']})} "
            f"on {h['n_heldout']} texts"
        )
    return "\n".join(lines)


def _verdict(diff: dict[str, Any]) -> str:
    """'better' / 'worse' when the interval excludes 0 (direction from the registry)."""
    lo, hi = diff.get("lo"), diff.get("hi")
    if lo is None or hi is None or lo <= 0 <= hi:
        return "(no clear difference)"
    higher = METRIC_BY_NAME[diff["metric"]].higher_is_better
    up = lo > 0
    return f"{diff['a']} {'better' if up == bool(higher) else 'worse'}"
