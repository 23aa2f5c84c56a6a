"""The serving benchmark measures every figure the server issue asks for (with the echo generator
and hash embedder, so in seconds; no test asserts a speed)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from eval.bench.report import Report
from eval.bench.serve import prepare_prompts
from eval.bench.serve_bare import EchoBare, bench_requests
from eval.bench.serve_load import Sizes, bench_load
from serve.app import create_app
from serve.services import Services
from serve.settings import Settings
from tests.conftest import CORPUS, ROOT
from tests.procs import free_port

TINY = Sizes(questions=2, repeats=2, max_tokens=8, load_max_tokens=4,
             load=((1, 2), (4, 2), (16, 1)))  # fmt: skip
MODES = ("rag", "base")
RATES = [f"{side}.{m}.{k}" for side in ("stream", "bare") for m in MODES
         for k in ("tokens_per_s", "decode_tokens_per_s", "ttft.p50_ms", "ttft.p95_ms")]  # fmt: skip
RATIOS = [f"ratio.{m}.{k}" for m in MODES for k in ("end_to_end", "decode")]
# The bare engine with the server's own settings, beside the baseline with its defaults.
TWIN = [f"{k}.{m}.{f}" for m in MODES
        for k, f in (("twin", "decode_tokens_per_s"), ("twin", "ttft.p50_ms"),
                     ("ratio", "decode_same_settings"))]  # fmt: skip
LOAD = [f"load.c{c}.{k}" for c in (1, 4, 16)
        for k in ("requests_per_s", "completion_tokens_per_s", "latency.p50_ms",
                  "latency.p95_ms")]  # fmt: skip


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The app on a real socket, in a thread of this process."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def fake_settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", embedder={"backend": "hash"},
                        generator={"backend": "echo"}, server={"max_queue": 2})  # fmt: skip
    services = Services.build(settings)
    services.indexer().ingest([CORPUS], sync=True)
    services.index.close()
    return settings


def test_core_reports_every_figure(fake_settings: Settings) -> None:
    questions = ["What is the battery warranty period?", "How do I reset the display unit?"]
    prompts = prepare_prompts(fake_settings, questions, TINY.max_tokens)
    assert [p.mode for p in prompts] == ["rag", "rag", "base", "base"]
    assert all(p.hit_ids for p in prompts if p.mode == "rag")
    report = Report()
    with serving(fake_settings) as url:
        bench_requests(report, url, EchoBare(), prompts, TINY, server_pid=None, twin=EchoBare())
        bench_load(report, url, questions, TINY)
    figures = report.to_json()["figures"]
    for key in [*RATES, *RATIOS, *LOAD, *TWIN]:
        value = figures[key]["value"]
        assert math.isfinite(value) and value > 0, (key, value)
        assert figures[key]["label"] in report.table()
    for c in (1, 4, 16):
        assert figures[f"load.c{c}.errors"]["value"] == 0, report.info.get("errors")
        assert figures[f"load.c{c}.errors"]["verdict"] == "PASS"
        assert figures[f"load.c{c}.latency.p95_ms"]["value"] >= figures[
            f"load.c{c}.latency.p50_ms"]["value"]  # fmt: skip
    assert figures["load.c1.rejected_429"]["value"] == 0
    assert figures["ratio.rag.end_to_end"]["target"] == 0.9
    # Greedy (here: echo) answers are the same through the server and bare: the same prompts.
    assert report.info["texts_match"] == "4/4 prompts"
    assert report.info["sources_match"] == "4/4 prompts"


@pytest.mark.slow
def test_script_runs_a_real_server_process(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, "-m", "eval.bench.serve", "--quick", "--fake", "--out", str(out),
         "--tmp", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    for key in [*RATES, *RATIOS, *LOAD, "ratio.rag.cpu"]:
        assert math.isfinite(data["figures"][key]["value"]), key
        assert data["figures"][key]["label"] in proc.stdout
    assert data["figures"]["load.c16.errors"]["value"] == 0
    info = data["info"]
    assert info["command"].startswith("python -m eval.bench.serve --quick --fake")
    assert info["machine"]["cpus"] >= 1 and info["model"]["model_id"] == "echo"
    assert info["server_env"]["RAGTUNE_SERVER__MAX_QUEUE"] == "8"
    assert list(tmp_path.glob("ragtune-perf-serve-*")) == []  # the temporary data dir is gone
