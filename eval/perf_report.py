"""Figures of a benchmark run: a printed table (with targets and PASS/MISS) and a JSON form."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Latency:
    """Percentiles of a list of milliseconds."""

    p50: float
    p95: float
    n: int

    @classmethod
    def of(cls, ms: list[float]) -> Latency:
        return cls(float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), len(ms))


@dataclass
class Figure:
    key: str  # stable name in the JSON, e.g. "generated.ingest.chunks_per_s"
    label: str
    value: float
    unit: str
    target: float | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        ok = self.value >= self.target if self.higher_is_better else self.value < self.target
        return "PASS" if ok else "MISS"

    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'>=' if self.higher_is_better else '<'} {_num(self.target)}"


def _num(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def add(
        self,
        key: str,
        label: str,
        value: float,
        unit: str,
        *,
        target: float | None = None,
        higher_is_better: bool = True,
        note: str = "",
    ) -> Figure:
        fig = Figure(key, label, float(value), unit, target, higher_is_better, note)
        self.figures.append(fig)
        self.log(f"{label}: {_num(fig.value)} {unit} {fig.verdict}".rstrip())
        return fig

    def add_latency(self, key: str, label: str, lat: Latency, note: str) -> None:
        """Two figures, `<key>.p50_ms` and `<key>.p95_ms`."""
        self.add(f"{key}.p50_ms", f"{label} p50", lat.p50, "ms", note=f"{note}, n={lat.n}")
        self.add(f"{key}.p95_ms", f"{label} p95", lat.p95, "ms", note=f"{note}, n={lat.n}")

    def log(self, message: str) -> None:
        """Progress on stderr, with the elapsed time and the machine's load."""
        load = os.getloadavg()[0]
        print(
            f"[{time.monotonic() - self.started:7.1f}s load {load:4.2f}] {message}", file=sys.stderr
        )
        sys.stderr.flush()

    def table(self) -> str:
        rows = [("figure", "value", "unit", "target", "", "note")]
        rows += [
            (f.label, _num(f.value), f.unit, f.target_text(), f.verdict, f.note)
            for f in self.figures
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:5])) + "  " + r[5]
            for r in rows
        ]
        lines.insert(1, "-" * (sum(widths) + 10))
        return "\n".join(line.rstrip() for line in lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "figures": {f.key: {**asdict(f), "verdict": f.verdict or None} for f in self.figures},
            "info": self.info,
            "seconds": round(time.monotonic() - self.started, 1),
        }
