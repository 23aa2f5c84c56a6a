"""The report: strict JSON, a self-contained HTML page that escapes model output, the summary."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from eval.cases import EvalCase
from eval.html import render_html, write_report
from eval.report import Report, format_summary
from eval.runner import ALL_ARMS, greedy_params, run_comparison
from eval.svg import bar_chart, forest_plot, latency_plot
from eval.tone_baseline import ToneSetup
from serve.services import Services
from tests.eval.compare_fixtures import CASES, fast_services, small_tone

INJECTED = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
EVIL = EvalCase("x1", f"Is the harbor festival safe? {INJECTED}", f"Yes. {INJECTED}",
                ("harbor.md",), ("new", "<b>tag</b>"), ("safe",))  # fmt: skip


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    yield from fast_services(tmp_path)


@pytest.fixture
def tone(tmp_path: Path) -> ToneSetup:
    return small_tone(tmp_path)


@pytest.fixture
def report(services: Services, tone: ToneSetup) -> Report:
    return run_comparison(services.pipeline(), [*CASES, EVIL], ALL_ARMS, "brand",
                          greedy_params(40), tone=tone)  # fmt: skip


class Tags(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parse(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


def test_json_is_strict_and_complete(report: Report, tmp_path: Path) -> None:
    paths = write_report(report, tmp_path / "out")
    text = paths["json"].read_text("utf-8")

    def no_nan(name: str) -> None:
        raise AssertionError(f"{name} in the JSON")

    data = json.loads(text, parse_constant=no_nan)
    assert data["object"] == "comparison" and data["schema"].startswith("ragtune.comparison/")
    assert data["arms"] == ["base", "rag", "tuned", "rag+tuned"]
    assert {m["name"] for m in data["metrics"]} >= {"token_f1", "recall@k", "tone_score"}
    s = data["settings"]
    for key in ("created_at", "ragtune_version", "generator", "adapter", "index", "decoding",
                "bootstrap", "cases", "prompt"):  # fmt: skip
        assert key in s
    assert [d["sha256"] for d in data["tone"]["data"]] and data["tone"]["heldout"]["n_heldout"]
    assert len(data["questions"]) == len(CASES) + 1
    row = data["questions"][-1]
    assert row["question"] == EVIL.question and set(row["answers"]) == set(data["arms"])
    assert row["answers"]["rag"]["metrics"]["key_fact_recall"] is not None
    assert data["summary"]["base"]["token_f1"]["mean"] is not None
    summary = report.summary_dict()
    assert "questions" not in summary and summary["differences"] == data["differences"]


def test_html_is_self_contained_and_escapes_model_output(report: Report, tmp_path: Path) -> None:
    html = write_report(report, tmp_path / "out")["html"].read_text("utf-8")
    tags = parse(html)
    names = {t for t, _ in tags}
    assert "script" not in names and "img" not in names and "link" not in names
    assert "iframe" not in names and "object" not in names
    for _, attrs in tags:
        assert not any(k.startswith("on") for k in attrs)  # no event handlers got through
        for key in ("src", "href", "xlink:href", "action"):
            assert not attrs.get(key), attrs
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", html, re.I)
    assert not re.search(r"url\(|@import|https?://", html.split("<body>")[0], re.I)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html  # shown, as text
    assert "&lt;b&gt;tag&lt;/b&gt;" in html
    csp = next(a for t, a in tags if t == "meta" and a.get("http-equiv"))
    assert "default-src 'none'" in (csp["content"] or "")


def test_html_has_the_tables_plots_and_answers(report: Report) -> None:
    data = report.to_dict()
    html = render_html(data)
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    plotted = [m["name"] for m in data["metrics"] if m["group"] != "cost"]
    assert len(svgs) == len(plotted) + 1 + 2  # bars per metric, tokens/s, latency, forest
    for svg in svgs:
        ET.fromstring(svg)  # well-formed XML, so any browser draws it
    for heading in ("Arms x metrics", "Plots", "Differences (paired)", "Per tag", "Tone classifier",
                    "Every question", "Settings", "Metrics"):  # fmt: skip
        assert f">{heading}<" in html
    for q in data["questions"][:-1]:
        for arm in data["arms"]:
            text = q["answers"][arm]["text"]
            assert escape(text, quote=True) in html


def test_terminal_summary(report: Report) -> None:
    text = format_summary(report.to_dict())
    lines = text.splitlines()
    assert lines[0].startswith(f"{len(CASES) + 1} questions")
    assert [ln.split()[0] for ln in lines[2:6]] == ["base", "rag", "tuned", "rag+tuned"]
    assert "token_f1" in lines[1] and "tone_score" in lines[1]
    assert "rag - base" in text.replace("  ", " ") or "rag - base" in text
    assert "tone classifier: held-out accuracy" in text


def test_plots_handle_missing_and_empty_values() -> None:
    svg = bar_chart("mrr", {"base": None, "rag": {"mean": 0.5, "lo": None, "hi": None}})
    ET.fromstring(svg)
    assert "n/a" in svg and "<rect" in svg
    ET.fromstring(forest_plot([{"a": "rag", "b": "base", "metric": "f1", "mean": None,
                                "lo": None, "hi": None}]))  # fmt: skip
    ET.fromstring(latency_plot({"base": [], "rag": [0.1]}))
    ET.fromstring(bar_chart("a<b & c", {"<arm>": {"mean": 2.5, "lo": 2.0, "hi": 3.0}}))
