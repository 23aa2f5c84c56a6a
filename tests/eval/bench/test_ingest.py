"""The benchmark script runs end to end and reports every figure the ingest issue asks for.
(Figures are read by people from its output; no test asserts a speed.)"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

REQUIRED = [
    "sample.ingest.chunks_per_s", "sample.ingest_vs_encode", "sample.vs_langchain.chars_per_s",
    "generated.ingest_vs_encode", "generated.vs_langchain.chars_per_s",
    "generated.reingest_1pct.share_of_full", "retrieval.real.dense.p50_ms",
    "retrieval.real.hybrid.p95_ms", "synthetic.flat.hybrid.p50_ms",
    "synthetic.hnsw_recall_at_10.structured.random",
]  # fmt: skip


@pytest.mark.slow
def test_quick_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, "-m", "eval.bench.ingest", "--quick", "--out", str(out), "--tmp", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(out.read_text())["figures"]
    for key in REQUIRED:
        value = figures[key]["value"]
        assert math.isfinite(value) and value > 0, (key, value)
        assert figures[key]["label"] in proc.stdout
    recall = figures["synthetic.hnsw_recall_at_10.structured.random"]["value"]
    assert 0 < recall <= 1
