"""The reliability table: which of issue 6's promises the tests tried, how often, and what they saw.

Tests carry `@pytest.mark.promise(N)` (1-11, several allowed). A test that tries many cases in
one function (a crasher loop, a fuzzer, a batch of hostile files) says so through the `figures`
fixture, and reports the worst latency and memory it measured:

    def test_x(figures):
        figures.cases(tried=30, passed=30)
        figures.latency_ms(12.5)        # keeps the worst
        figures.memory_mb(410.0)        # keeps the worst

A test without `figures.cases` counts as one case. A failed test counts none of its cases as
passed. `pytest -m promise --reliability-table FILE` prints the table at the end of the run and
writes it as JSON to FILE (`make reliability`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PROMISES = {
    1: "crash safety: kills at random and at named points",
    2: "disk full: 507, previous version served, no temp files",
    3: "concurrency: queries during ingest and re-index",
    4: "overload: 429/503 + Retry-After, slots freed, slow bodies",
    5: "hostile files: stable codes, valid files kept",
    6: "hostile requests: fuzzed schema, no 5xx",
    7: "auth: default deny over every route",
    8: "containment: nothing outside the data directory",
    9: "weights: safetensors only, configs cannot redirect",
    10: "prompt: documents only inside the context block",
    11: "error bodies: no traceback, path, key or other text",
}


@dataclass
class Figures:
    """What one test reports; collected by the plugin after the test ends."""

    tried: int | None = None
    passed: int | None = None
    worst_latency_ms: float = math.nan
    worst_memory_mb: float = math.nan

    def cases(self, tried: int, passed: int) -> None:
        self.tried, self.passed = tried, passed

    def latency_ms(self, value: float) -> None:
        self.worst_latency_ms = _worst(self.worst_latency_ms, value)

    def memory_mb(self, value: float) -> None:
        self.worst_memory_mb = _worst(self.worst_memory_mb, value)


def _worst(current: float, value: float) -> float:
    return value if math.isnan(current) else max(current, value)


@dataclass
class Row:
    tests: int = 0
    tried: int = 0
    passed: int = 0
    worst_latency_ms: float = math.nan
    worst_memory_mb: float = math.nan
    failed: list[str] = field(default_factory=list)

    def add(self, nodeid: str, ok: bool, figures: Figures) -> None:
        tried = figures.tried if figures.tried is not None else 1
        passed = figures.passed if figures.passed is not None else tried
        self.tests += 1
        self.tried += tried
        self.passed += passed if ok else 0
        if not ok:
            self.failed.append(nodeid)
        self.worst_latency_ms = _worst(self.worst_latency_ms, figures.worst_latency_ms)
        self.worst_memory_mb = _worst(self.worst_memory_mb, figures.worst_memory_mb)


_KEY = pytest.StashKey[Figures]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-table",
        metavar="FILE",
        default=None,
        help="print the table of issue 6's promises at the end and write it as JSON to FILE",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "promise(n): the test shows reliability promise n (1-11)")
    config.stash[_ROWS] = {}


_ROWS = pytest.StashKey[dict[int, Row]]()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    found = Figures()
    request.node.stash[_KEY] = found
    return found


def promises_of(item: pytest.Item) -> list[int]:
    numbers: list[int] = []
    for mark in item.iter_markers("promise"):
        for n in mark.args:
            if n not in PROMISES:
                raise pytest.UsageError(f"{item.nodeid}: unknown promise {n!r}")
            numbers.append(n)
    return sorted(set(numbers))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    numbers = promises_of(item)
    # One entry per test: its call phase, or the setup phase when setup failed or skipped it.
    final = report.when == "call" or (report.when == "setup" and not report.passed)
    if not numbers or not final or report.skipped:
        return
    rows = item.config.stash[_ROWS]
    figures = item.stash.get(_KEY, Figures())
    for n in numbers:
        rows.setdefault(n, Row()).add(item.nodeid, report.passed, figures)


def table(rows: dict[int, Row]) -> list[dict[str, Any]]:
    out = []
    for n, what in PROMISES.items():
        row = rows.get(n, Row())
        out.append(
            {
                "promise": n,
                "what": what,
                "tests": row.tests,
                "cases_tried": row.tried,
                "cases_passed": row.passed,
                "worst_latency_ms": None
                if math.isnan(row.worst_latency_ms)
                else row.worst_latency_ms,
                "worst_memory_mb": None if math.isnan(row.worst_memory_mb) else row.worst_memory_mb,
                "failed": row.failed,
            }
        )
    return out


def render(rows: list[dict[str, Any]]) -> list[str]:
    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    head = f"{'#':>2}  {'promise':<58} {'tests':>5} {'tried':>6} {'passed':>6} {'worst ms':>9} {'worst MB':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['promise']:>2}  {r['what']:<58} {r['tests']:>5} {r['cases_tried']:>6} "
            f"{r['cases_passed']:>6} {num(r['worst_latency_ms']):>9} {num(r['worst_memory_mb']):>9}"
        )
    return lines


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    target = config.getoption("--reliability-table")
    if not target:
        return
    rows = table(config.stash[_ROWS])
    terminalreporter.section("reliability promises")
    for line in render(rows):
        terminalreporter.write_line(line)
    untested = [r["promise"] for r in rows if r["tests"] == 0]
    if untested:
        terminalreporter.write_line(f"promises with no test run: {untested}")
    Path(target).write_text(json.dumps({"promises": rows}, indent=2) + "\n", encoding="utf-8")
