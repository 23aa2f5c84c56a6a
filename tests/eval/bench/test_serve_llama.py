"""The serving benchmark's llama.cpp figures: adapter vs none, cold start, RAG TTFT targets (with
the echo generator, in seconds; no test asserts a speed)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from eval.bench.report import Report
from eval.bench.serve_llama import (
    BENCH_ADAPTER,
    bench_adapter,
    cold_start,
    publish_bench_adapter,
    ttft_targets,
)
from eval.bench.serve_load import Sizes
from serve.settings import Settings
from tests.eval.bench.test_serve import fake_settings, serving  # noqa: F401 (a fixture)
from tuning.adapters import WEIGHTS, AdapterRegistry

TINY = Sizes(questions=1, repeats=2, max_tokens=8, load_max_tokens=4, load=((1, 1),))


def test_adapter_cold_start_and_ttft_figures(fake_settings: Settings) -> None:  # noqa: F811
    started = time.perf_counter()
    report = Report()
    with serving(fake_settings) as url:
        cold_start(report, started, url, "What is the battery warranty period?")
        tuned = publish_bench_adapter(fake_settings, "echo", None)
        assert tuned == f"rag+tuned:{BENCH_ADAPTER}"
        bench_adapter(report, url, ["What is the warranty?"], TINY, tuned, lambda t: len(t.split()))
    figures = report.to_json()["figures"]
    for key in ("serve.cold_start_s", "stream.rag_tuned.decode_tokens_per_s",
                "ratio.adapter.decode", "ratio.adapter.ttft"):  # fmt: skip
        assert math.isfinite(figures[key]["value"]) and figures[key]["value"] > 0, key
    assert figures["serve.cold_start_s"]["target"] == 5.0
    assert figures["ratio.adapter.decode"]["target"] == 0.9
    assert "2 requests each" in figures["ratio.adapter.decode"]["note"]


def test_ttft_targets_compare_the_p50s() -> None:
    report = Report()
    report.add("stream.rag.ttft.p50_ms", "server", 1200, "ms")
    report.add("bare.rag.ttft.p50_ms", "bare", 1000, "ms")
    ttft_targets(report, "llama.cpp")
    figures = report.to_json()["figures"]
    assert figures["ratio.rag.ttft"]["value"] == pytest.approx(1.2)
    assert figures["ratio.rag.ttft"]["verdict"] == "MISS"  # above 1.1x
    assert figures["target.rag.ttft_p50_ms"]["verdict"] == "PASS"  # under 1.5 s


def test_bench_adapter_has_the_real_models_shapes(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "hidden_size": 12, "intermediate_size": 20, "num_hidden_layers": 2,
        "num_attention_heads": 6, "num_key_value_heads": 2}))  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data")
    publish_bench_adapter(settings, "some/model", model)
    [adapter] = AdapterRegistry(settings.adapters_dir).versions(BENCH_ADAPTER)
    from safetensors.numpy import load_file

    weights = load_file(str(adapter.path / WEIGHTS))
    assert len(weights) == 2 * 7 * 2 and adapter.base_model_id == "some/model"
    k_b = weights["base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"]
    down_a = weights["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"]
    assert k_b.shape == (4, 8) and down_a.shape == (8, 20)
