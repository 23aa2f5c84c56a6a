"""Two comparison reports, question by question: `python -m eval.paired A B [--arm rag]`.

Where two runs differ in one thing (the generator backend, a setting, an adapter version) and ran
the same cases, the per-question metrics of an arm pair up: this prints, per metric, the mean of
B - A with a paired bootstrap interval (the comparison's own method), and how many answers are
word for word the same. An interval that includes 0 or lies above it means B lost nothing
measurable against A on these cases.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.metrics import METRICS as REGISTRY
from eval.stats import paired_bootstrap

# The comparison's per-answer quality metrics (retrieval is the same in paired runs of one index,
# and cost is not a quality).
METRICS = tuple(m.name for m in REGISTRY if m.group in ("answer", "grounding", "tone"))


class PairingError(ValueError):
    """The two reports cannot be paired (unreadable, other cases, or no such arm)."""


@dataclass(frozen=True)
class Row:
    metric: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    lo: float
    hi: float


def load_report(path: Path) -> dict[str, Any]:
    file = path / "report.json" if path.is_dir() else path
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PairingError(f"cannot read a comparison report from {file}: {exc}") from exc
    if not isinstance(report, dict) or report.get("object") != "comparison":
        raise PairingError(f"{file} is not a comparison report (object != 'comparison')")
    return report


def _answers(
    report: dict[str, Any], arm: str, name: str, tag: str | None
) -> dict[str, dict[str, Any]]:
    if arm not in report.get("arms", []):
        raise PairingError(f"report {name} has no arm {arm!r} (it has {report.get('arms')})")
    return {
        q["id"]: q["answers"][arm]
        for q in report["questions"]
        if arm in q["answers"] and (tag is None or tag in q.get("tags", []))
    }


def _value(answer: dict[str, Any], metric: str) -> float:
    value = answer.get("metrics", {}).get(metric)
    return float("nan") if value is None else float(value)


def pair(
    a: dict[str, Any], b: dict[str, Any], arm: str, seed: int = 0, tag: str | None = None
) -> tuple[list[Row], int, int]:
    """(rows per metric, answers word for word the same, questions paired); only the questions
    tagged `tag`, if given."""
    first, second = _answers(a, arm, "A", tag), _answers(b, arm, "B", tag)
    if not first:
        raise PairingError(f"no question of arm {arm!r} is tagged {tag!r}")
    if set(first) != set(second):
        only = sorted(set(first) ^ set(second))[:5]
        raise PairingError(f"the reports ran different cases (e.g. {', '.join(only)})")
    ids = sorted(first)
    rows: list[Row] = []
    for metric in METRICS:
        xs = [_value(first[i], metric) for i in ids]
        ys = [_value(second[i], metric) for i in ids]
        both = [(x, y) for x, y in zip(xs, ys, strict=True) if not (math.isnan(x) or math.isnan(y))]
        if not both:
            continue
        interval = paired_bootstrap(ys, xs, seed=seed)
        rows.append(
            Row(
                metric,
                len(both),
                sum(x for x, _ in both) / len(both),
                sum(y for _, y in both) / len(both),
                interval.estimate,
                interval.lo,
                interval.hi,
            )
        )
    same = sum(first[i]["text"] == second[i]["text"] for i in ids)
    return rows, same, len(ids)


def describe(report: dict[str, Any]) -> str:
    settings = report.get("settings", {})
    generator = settings.get("generator", {})
    return f"{generator.get('backend')} {generator.get('model_id')}, {settings.get('created_at')}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="report folder or report.json (the baseline)")
    parser.add_argument("b", type=Path, help="report folder or report.json (the change)")
    parser.add_argument("--arm", action="append", help="arm to pair (repeatable; default: all)")
    parser.add_argument("--tag", help="only the cases with this tag (e.g. new, absent)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        a, b = load_report(args.a), load_report(args.b)
        arms = args.arm or [arm for arm in a.get("arms", []) if arm in b.get("arms", [])]
        if not arms:
            raise PairingError("the reports share no arm")
        print(f"A: {describe(a)}\nB: {describe(b)}")
        for arm in arms:
            rows, same, n = pair(a, b, arm, args.seed, args.tag)
            print(f"\n{arm}: {same} of {n} answers word for word the same")
            print(f"{'metric':22} {'n':>3} {'A':>7} {'B':>7}  B - A [95% paired interval]")
            for r in rows:
                print(
                    f"{r.metric:22} {r.n:>3} {r.mean_a:7.3f} {r.mean_b:7.3f}  "
                    f"{r.diff:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}]"
                )
    except PairingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
