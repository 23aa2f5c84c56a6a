"""Merged adapter models: a failed merge names the adapter and leaves no file; (slow) merged and
run-time LoRA agree greedily, switching per request, the LRU of merged models, the merge cache."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.tuning.test_gguf_lora import PROMPTS, agreement, publish, toy_tensors, trained
from tests.tuning.test_llamacpp import RAINBOW, random_adapter
from tuning import gguf_merge
from tuning.adapters import Adapter, AdapterRegistry
from tuning.gguf_lora import AdapterExportError, read_base_model
from tuning.gguf_merge import merge_adapter

__all__ = ["trained"]  # the module fixture, shared with the export's agreement test
MAX_TOKENS = 24


def packaged_base() -> Any:
    from tuning.models import packaged_gguf

    return read_base_model(packaged_gguf())


def test_a_delta_that_does_not_fit_is_named_and_leaves_no_file(tmp_path: Path) -> None:
    down = {k: v for k, v in toy_tensors().items() if "down_proj" in k}  # 8x16 on 576x1536
    adapter = publish(tmp_path, {"r": 2, "lora_alpha": 4}, down)
    with pytest.raises(AdapterExportError, match=r"toy@v1: cannot merge .*does not fit"):
        merge_adapter(adapter, packaged_base(), tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    rope = publish(tmp_path / "q", {"r": 2, "lora_alpha": 4}, toy_tensors())  # q rows of 8
    with pytest.raises(AdapterExportError, match=r"toy@v1: merging .* failed \(ValueError"):
        merge_adapter(rope, packaged_base(), tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_write_that_fails_part_way_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = {k: v for k, v in toy_tensors().items() if "down_proj" in k}
    adapter = publish(tmp_path, {"r": 2, "lora_alpha": 4}, down)

    def disk_full(*args: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf_merge, "merged_weight", disk_full)
    with pytest.raises(AdapterExportError, match=r"toy@v1: merging .* No space left"):
        merge_adapter(adapter, packaged_base(), tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_merged_weight_adds_the_scaled_delta_in_the_same_type() -> None:
    from gguf import GGMLQuantizationType as T
    from gguf.quants import dequantize, quantize

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 64)).astype(np.float32)
    a, b = rng.standard_normal((2, 64), np.float32), rng.standard_normal((8, 2), np.float32)

    class Tensor:
        name, data, tensor_type = "w", quantize(weight, T.Q8_0), T.Q8_0

    data, qtype = gguf_merge.merged_weight(Tensor(), a, b, alpha=4.0)
    want = dequantize(Tensor.data, T.Q8_0) + 2.0 * (b @ a)
    assert qtype == T.Q8_0
    np.testing.assert_allclose(dequantize(data, qtype), want, atol=0.1)


# -- slow: the packaged GGUF ---------------------------------------------------------------------


def generator(cache: Path, mode: str, max_merged: int = 2) -> Any:
    pytest.importorskip("llama_cpp")
    from tuning.backends import build_generator
    from tuning.config import GeneratorConfig

    config = GeneratorConfig(backend="llamacpp", lora_mode=mode, max_merged=max_merged)  # type: ignore[arg-type]
    return build_generator(config, cache)


def greedy(gen: Any, adapter: Adapter | None) -> list[list[int]]:
    from tuning.generator import GenerationParams

    chats = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}]
             for p in PROMPTS]  # fmt: skip
    params = GenerationParams(max_new_tokens=MAX_TOKENS)
    return [list(gen._tokens(gen.encode(c), params, adapter, threading.Event())) for c in chats]


@pytest.mark.slow
def test_merged_model_gives_the_runtime_loras_greedy_tokens(
    trained: Adapter, model_cache_dir: Path
) -> None:
    """Measured 1.000 (and 1.000 against peft in test_gguf_lora): the merged projections are
    Q8_0, whose rounding is far below what moves a greedy choice here; Q4_1 gave 0.000."""
    runtime, merged = generator(model_cache_dir, "runtime"), generator(model_cache_dir, "merged")
    slow, fast = greedy(runtime, trained), greedy(merged, trained)
    base = greedy(merged, None)
    same = agreement(slow, fast)
    print(f"\ngreedy token agreement, merged vs runtime LoRA, {len(PROMPTS)} prompts x "
          f"{MAX_TOKENS} tokens: {same:.3f} (base vs adapter {agreement(base, slow):.3f})")  # fmt: skip
    assert same >= 0.95
    runtime.close()
    merged.close()


@pytest.mark.slow
def test_merged_models_switch_per_request_evict_and_reuse_the_cache(
    packaged_model_dir: Path, model_cache_dir: Path, tmp_path: Path
) -> None:
    from tuning.generator import GenerationParams

    registry = AdapterRegistry(tmp_path / "adapters")
    a = random_adapter(registry, "alpha", 1, packaged_model_dir)
    b = random_adapter(registry, "beta", 2, packaged_model_dir)
    gen = generator(model_cache_dir, "merged", max_merged=1)
    params = GenerationParams(max_new_tokens=12)
    merges = gguf_merge.MERGE_COUNT[0]
    alone = {ref: gen.generate(RAINBOW, params, adapter).text
             for ref, adapter in (("a", a), ("none", None), ("b", b))}  # fmt: skip
    assert len(set(alone.values())) == 3, alone
    assert gguf_merge.MERGE_COUNT[0] == merges + 2 and gen.loaded_adapters == ["beta@v1"]
    evicted = gen._merged[b.key][1]
    for ref, adapter in [("none", None), ("a", a), ("none", None), ("a", a), ("b", b)]:
        assert gen.generate(RAINBOW, params, adapter).text == alone[ref], ref
    assert evicted._ctx.ctx is None  # the evicted model's context was freed
    assert gguf_merge.MERGE_COUNT[0] == merges + 2  # reloaded from the cache, not merged again
    files = [p.name for p in Path(gen._lora_cache).glob("*-merged-*.gguf")]
    assert len([n for n in files if n.startswith(("alpha-v1-", "beta-v1-"))]) == 2, files
    gen.close()


@pytest.mark.slow
def test_the_packaged_model_is_relaid_as_q8_0_once_each_value_within_a_half_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gguf import GGMLQuantizationType as T
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from tuning.models import packaged_gguf

    source = packaged_gguf()
    relaid = gguf_merge.relaid_q8(source, tmp_path / "q8")
    assert relaid != source and relaid.parent == tmp_path / "q8"
    before, after = GGUFReader(source), GGUFReader(relaid)
    assert {t.tensor_type for t in before.tensors} >= {T.Q4_1}
    assert {t.tensor_type for t in after.tensors} <= {T.F32, T.F16, T.Q8_0}
    assert [t.name for t in after.tensors] == [t.name for t in before.tensors]
    assert set(after.fields) == set(before.fields)
    for old, new in zip(before.tensors[:12], after.tensors[:12], strict=True):
        a = dequantize(old.data, old.tensor_type).astype(np.float32)
        b = dequantize(new.data, new.tensor_type).astype(np.float32)
        assert a.shape == b.shape
        # Q8_0: 32-value blocks, step = the block's largest magnitude / 127, stored as float16
        # (so half a step, plus the float16 rounding of the step times up to 127).
        steps = np.abs(a.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
        assert (np.abs(a - b).reshape(-1, 32) <= 0.56 * steps + 1e-7).all()
    # Converted once: the next call reads nothing and writes nothing.
    monkeypatch.setattr(gguf_merge, "write_merged", None)
    monkeypatch.setattr("gguf.GGUFReader", None)
    assert gguf_merge.relaid_q8(source, tmp_path / "q8") == relaid


@pytest.mark.slow
def test_a_model_without_4_or_5_bit_tensors_is_served_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuning.models import packaged_gguf

    relaid = gguf_merge.relaid_q8(packaged_gguf(), tmp_path / "q8")
    # A Q8_0 file is left as it is, and that is remembered: the tensor table is read once.
    assert gguf_merge.relaid_q8(relaid, tmp_path / "again") == relaid
    monkeypatch.setattr("gguf.GGUFReader", None)
    assert gguf_merge.relaid_q8(relaid, tmp_path / "again") == relaid
    assert [p.suffix for p in (tmp_path / "again").iterdir()] == [".as-is"]


def test_a_relayout_that_fails_serves_the_file_as_given_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tuning.llamacpp_build import Q8_CACHE, finer_weights
    from tuning.models import packaged_gguf

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf_merge, "write_merged", disk_full)
    with caplog.at_level("WARNING", logger="tuning.llamacpp_build"):
        assert finer_weights(packaged_gguf(), tmp_path) == packaged_gguf()
    assert "cannot re-lay" in caplog.text and "No space left" in caplog.text
    assert not any((tmp_path / Q8_CACHE).glob("*.gguf"))


@pytest.mark.slow
def test_the_server_serves_the_relaid_weights_when_asked(model_cache_dir: Path) -> None:
    pytest.importorskip("llama_cpp")
    from tuning.backends import build_generator
    from tuning.config import GeneratorConfig
    from tuning.generator import GenerationParams
    from tuning.llamacpp_build import Q8_CACHE

    plain = build_generator(GeneratorConfig(), model_cache_dir)
    finer = build_generator(GeneratorConfig(weights="q8_0"), model_cache_dir)
    try:
        assert plain._base.path.parent.name != Q8_CACHE  # type: ignore[attr-defined]
        assert finer._base.path.parent == model_cache_dir / Q8_CACHE  # type: ignore[attr-defined]
        assert finer.model_id == plain.model_id  # the same model: adapters still verify
        question = [{"role": "user", "content": "What is the capital of France?"}]
        answer = finer.generate(question, GenerationParams(max_new_tokens=12))
        assert answer.completion_tokens == 12 and len(answer.text.split()) >= 3, answer
    finally:
        plain.close()
        finer.close()
