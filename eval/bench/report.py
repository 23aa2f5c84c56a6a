"""What every benchmark shares: timing, its figures (table with targets, JSON), its command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serve.settings import CHECKOUT

MODEL_CACHE = CHECKOUT / ".ragtune" / "models"  # git-ignored; the conversion is reused


def command_line(
    module: str, doc: str | None, model_cache: bool = False
) -> argparse.ArgumentParser:
    """`python -m <module>`'s parser, described by its docstring's first line, with `--out`
    (and `--model-cache`)."""
    args = argparse.ArgumentParser(
        prog=f"python -m {module}", description=(doc or "").split("\n")[0]
    )
    args.add_argument("--out", type=Path, help="also write the figures as JSON to this file")
    if model_cache:
        args.add_argument(
            "--model-cache",
            type=Path,
            default=MODEL_CACHE,
            help=f"converted-model cache (default {MODEL_CACHE})",
        )
    return args


def machine() -> dict[str, Any]:
    """The CPUs, torch's threads (where torch is installed) and the load average now."""
    info: dict[str, Any] = {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()}
    with contextlib.suppress(ImportError):
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["torch"] = torch.__version__
    return info


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds
    cpu: float  # CPU seconds of this process and its waited-for children

    @staticmethod
    def best(runs: Sequence[Timing]) -> Timing:
        """The shortest wall-clock and the smallest CPU time over `runs`."""
        return Timing(min(t.wall for t in runs), min(t.cpu for t in runs))


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(fn: Callable[..., Any], *args: Any) -> tuple[Timing, Any]:
    wall, cpu = time.perf_counter(), _cpu()
    result = fn(*args)
    return Timing(time.perf_counter() - wall, _cpu() - cpu), result


def timed_ms(fn: Callable[[int], Any], n: int, warmup: int) -> list[float]:
    """Milliseconds of `fn(i)` for i in range(n), after `warmup` untimed calls."""
    for i in range(warmup):
        fn(i % n)
    out: list[float] = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


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

    def finish(self, out: Path | None, machine: dict[str, Any] | None = None) -> None:
        """Note the load average at the end (in `machine`, else in `info`); write the JSON to
        `out`, if given."""
        (self.info if machine is None else machine)["load_at_end"] = os.getloadavg()
        if out is not None:
            out.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    def machine_line(self, machine: Mapping[str, Any] | None = None) -> str:
        """CPUs, threads, load at start and end (`machine`, else `info`) and the time in all."""
        m = self.info if machine is None else machine
        return (
            f"machine: {m['cpus']} CPUs, torch threads {m.get('torch_threads')}, "
            f"load average {m['load_at_start'][0]:.2f} at start, "
            f"{m['load_at_end'][0]:.2f} at end; {self.to_json()['seconds']} s in all"
        )
