"""`python -m eval.paired`: two comparison reports, paired question by question."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eval.paired import PairingError, main, pair


def report(
    scores: dict[str, tuple[str, float, float | None]], arms: tuple[str, ...] = ("rag",)
) -> dict[str, Any]:
    """A minimal report: question id -> (answer text, token F1, key-fact recall)."""
    return {
        "object": "comparison",
        "arms": list(arms),
        "settings": {"generator": {"backend": "X", "model_id": "m"}, "created_at": "t"},
        "questions": [
            {
                "id": qid,
                "tags": ["absent" if kf is None else "new"],
                "answers": {
                    arm: {"text": text, "metrics": {"token_f1": f1, "key_fact_recall": kf}}
                    for arm in arms
                },
            }
            for qid, (text, f1, kf) in scores.items()
        ],
    }


A = {f"q{i}": (f"answer {i}", 0.5, 1.0 if i % 2 else 0.0) for i in range(20)}


def rows_by_metric(a: dict[str, Any], b: dict[str, Any], **kw: Any) -> dict[str, Any]:
    rows, _, _ = pair(a, b, "rag", **kw)
    return {r.metric: r for r in rows}


def test_identical_runs_differ_by_exactly_nothing() -> None:
    rows, same, n = pair(report(A), report(A), "rag")
    assert (same, n) == (20, 20)
    assert all((r.diff, r.lo, r.hi) == (0.0, 0.0, 0.0) for r in rows)


def test_a_better_run_shows_a_positive_interval_and_the_texts_that_changed() -> None:
    b = {qid: (text + "!", f1 + 0.2, kf) for qid, (text, f1, kf) in A.items()}
    b["q3"] = ("answer 3", 0.5, 1.0)  # one answer unchanged
    rows = rows_by_metric(report(A), report(b))
    assert rows["token_f1"].diff == pytest.approx(0.19)
    assert rows["token_f1"].lo > 0
    assert rows["key_fact_recall"].diff == 0.0
    assert pair(report(A), report(b), "rag")[1] == 1


def test_questions_without_a_score_are_left_out_and_a_tag_selects() -> None:
    a = {**A, "x1": ("refused", 0.0, None)}
    rows = rows_by_metric(report(a), report(a))
    assert rows["key_fact_recall"].n == 20 and rows["token_f1"].n == 21
    assert pair(report(a), report(a), "rag", tag="absent")[2] == 1
    with pytest.raises(PairingError, match="tagged 'known'"):
        pair(report(a), report(a), "rag", tag="known")


def test_reports_that_cannot_be_paired_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(PairingError, match="different cases"):
        pair(report(A), report({**A, "extra": ("x", 0.0, 0.0)}), "rag")
    with pytest.raises(PairingError, match="no arm 'base'"):
        pair(report(A), report(A), "base")
    good, bad = tmp_path / "a.json", tmp_path / "b.json"
    good.write_text(json.dumps(report(A)))
    bad.write_text(json.dumps({"object": "something else"}))
    assert main([str(good), str(bad)]) == 2
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "report.json").write_text(json.dumps(report(A)))
    assert main([str(good), str(tmp_path / "dir"), "--arm", "rag"]) == 0
