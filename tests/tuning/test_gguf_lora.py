"""GGUF LoRA export: tensor names, shapes, rope row order, scaling, caching; and (slow) llama.cpp
with an exported, really trained adapter gives the same greedy tokens as peft."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from tuning.adapters import CONFIG, WEIGHTS, Adapter, AdapterRegistry
from tuning.gguf_lora import (
    AdapterExportError,
    BaseModel,
    export_adapter,
    lora_tensors,
    read_base_model,
    rope_order,
)

PREFIX = "base_model.model.model.layers.{}.{}.lora_{}.weight"


def llama_cpp_rope_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """The GGUF row order spelt out row by row: head h's pair i is (x_i, y_i) at 2i, 2i+1."""
    out, dim = np.empty_like(rows), rows.shape[0] // n_head
    for h in range(n_head):
        for i in range(dim // 2):
            out[h * dim + 2 * i] = rows[h * dim + i]
            out[h * dim + 2 * i + 1] = rows[h * dim + dim // 2 + i]
    return out


def test_rope_order_interleaves_the_halves_of_each_head() -> None:
    rows = np.arange(3 * 8 * 2, dtype=np.float32).reshape(24, 2)  # 3 heads of dim 8, rank 2
    assert np.array_equal(rope_order(rows, 3), llama_cpp_rope_rows(rows, 3))
    assert not np.array_equal(rope_order(rows, 3), rows)


def fake_base(tmp_path: Path, n_head: int = 2, n_head_kv: int = 1) -> BaseModel:
    path = tmp_path / "base.gguf"
    path.write_bytes(b"not read: the export needs only the head counts")
    return BaseModel(path, "llama", n_head, n_head_kv, n_layer=2)


def publish(tmp_path: Path, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> Adapter:
    registry = AdapterRegistry(tmp_path / "adapters")
    staging = registry.staging_dir("toy")
    save_file(tensors, str(staging / WEIGHTS))
    (staging / CONFIG).write_text(json.dumps({"peft_type": "LORA", **config}), "utf-8")
    return registry.publish("toy", staging, {"base_model_id": "toy"})


def toy_tensors(rank: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {"self_attn.q_proj": (8, 8), "self_attn.k_proj": (4, 8), "mlp.down_proj": (8, 16)}
    tensors = {}
    for module, (out, inp) in shapes.items():
        tensors[PREFIX.format(1, module, "A")] = rng.standard_normal((rank, inp), np.float32)
        tensors[PREFIX.format(1, module, "B")] = rng.standard_normal((out, rank), np.float32)
    return tensors


def test_export_names_shapes_order_and_scale(tmp_path: Path) -> None:
    tensors = toy_tensors()
    adapter = publish(tmp_path, {"r": 2, "lora_alpha": 4}, tensors)
    base = fake_base(tmp_path)
    out, alpha = lora_tensors(adapter, base)
    assert alpha == 4.0 and sorted(out) == sorted(
        f"blk.1.{name}.weight.lora_{side}"
        for name in ("attn_q", "attn_k", "ffn_down")
        for side in "ab"
    )
    q_b = tensors[PREFIX.format(1, "self_attn.q_proj", "B")]
    k_b = tensors[PREFIX.format(1, "self_attn.k_proj", "B")]
    assert np.array_equal(out["blk.1.attn_q.weight.lora_b"], llama_cpp_rope_rows(q_b, 2))
    assert np.array_equal(out["blk.1.attn_k.weight.lora_b"], llama_cpp_rope_rows(k_b, 1))
    down_b = tensors[PREFIX.format(1, "mlp.down_proj", "B")]
    assert np.array_equal(out["blk.1.ffn_down.weight.lora_b"], down_b)  # not a rope projection
    assert np.array_equal(out["blk.1.ffn_down.weight.lora_a"],
                          tensors[PREFIX.format(1, "mlp.down_proj", "A")])  # fmt: skip
    # rsLoRA scales by alpha / sqrt(r); llama.cpp by alpha / r: the difference goes into B.
    rs = publish(tmp_path / "rs", {"r": 2, "lora_alpha": 4, "use_rslora": True}, tensors)
    rs_out, _ = lora_tensors(rs, base)
    np.testing.assert_allclose(rs_out["blk.1.ffn_down.weight.lora_b"], down_b * np.sqrt(2))


def test_exported_file_is_a_llama_cpp_lora_and_is_cached(tmp_path: Path) -> None:
    from gguf import GGUFReader

    adapter = publish(tmp_path, {"r": 2, "lora_alpha": 4}, toy_tensors())
    path = export_adapter(adapter, fake_base(tmp_path), tmp_path / "cache")
    reader = GGUFReader(path)

    def value(key: str) -> Any:
        field = reader.get_field(key)
        assert field is not None, key
        return field.contents()

    assert (value("general.type"), value("adapter.type")) == ("adapter", "lora")
    assert value("general.architecture") == "llama" and value("adapter.lora.alpha") == 4.0
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}  # ggml order
    assert shapes["blk.1.attn_q.weight.lora_a"] == (8, 2)  # ne = [in, r], as llama.cpp checks
    assert shapes["blk.1.attn_k.weight.lora_b"] == (2, 4)  # ne = [r, out]
    stamp = path.stat().st_mtime_ns
    assert export_adapter(adapter, fake_base(tmp_path), tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == stamp and len(list(path.parent.iterdir())) == 1


@pytest.mark.parametrize(
    ("config", "tensors", "match"),
    [
        ({"r": 2, "lora_alpha": 4, "use_dora": True}, None, "use_dora"),
        ({"r": 2, "lora_alpha": 4, "alpha_pattern": {"q_proj": 8}}, None, "alpha_pattern"),
        ({"r": 2, "lora_alpha": 4},
         {"base_model.model.lm_head.lora_A.weight": np.zeros((2, 8), np.float32)}, "lm_head"),
        ({"r": 2, "lora_alpha": 4}, {PREFIX.format(7, "self_attn.q_proj", "A"):
                                     np.zeros((2, 8), np.float32)}, "layer 7"),
        ({"r": 2, "lora_alpha": 4}, {PREFIX.format(1, "self_attn.q_proj", "A"):
                                     np.zeros((2, 8), np.float32)}, "do not pair up"),
    ],
)  # fmt: skip
def test_what_a_gguf_lora_cannot_carry_is_refused_by_name(
    tmp_path: Path, config: dict[str, Any], tensors: dict[str, np.ndarray] | None, match: str
) -> None:
    adapter = publish(tmp_path, config, tensors or toy_tensors())
    with pytest.raises(AdapterExportError, match=match):
        export_adapter(adapter, fake_base(tmp_path), tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_the_packaged_gguf_header_gives_the_head_counts() -> None:
    from tuning.models import packaged_gguf

    base = read_base_model(packaged_gguf())
    assert (base.architecture, base.n_head, base.n_head_kv, base.n_layer) == ("llama", 9, 3, 30)


# -- slow: the exported adapter in llama.cpp against peft, greedy, on fixed prompts -------------

PROMPTS = ["Tips on tyres?", "Tips on saddles?", "How do I fix a flat tyre?",
           "What should I wear when it rains?", "Is it safe to ride at night?",
           "What is the capital of France?"]  # fmt: skip
MAX_TOKENS = 24


def agreement(first: list[list[int]], second: list[list[int]]) -> float:
    """Tokens up to the first difference, over all tokens (the longer answer counts)."""
    same = total = 0
    for a, b in zip(first, second, strict=True):
        prefix = next(
            (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
        )
        same, total = same + prefix, total + max(len(a), len(b))
    return same / total


def peft_tokens(model: Any, tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    import torch

    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)  # fmt: skip
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False, top_p=None,
                             top_k=None, temperature=None, pad_token_id=tokenizer.eos_token_id)  # fmt: skip
    return [int(t) for t in out[0, inputs["input_ids"].shape[1] :]]


@pytest.fixture(scope="module")
def trained(packaged_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Adapter:
    """A real adapter: the training recipe, a few steps on the rider examples."""
    from tests.tuning.test_train import EXAMPLES, TINY
    from tuning.train import train_lora
    from tuning.train_config import TrainConfig

    root = tmp_path_factory.mktemp("trained")
    config = TrainConfig(learning_rate=2e-3, max_steps=6, eval_every_steps=6, **TINY)
    train_lora(packaged_model_dir, EXAMPLES, EXAMPLES, config, root / "out", root / "work")
    registry = AdapterRegistry(root / "adapters")
    staging = registry.staging_dir("rider")
    for item in (root / "out").iterdir():
        (staging / item.name).write_bytes(item.read_bytes())
    return registry.publish(
        "rider", staging, {"base_model_id": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    )


def forced_agreement(
    lora: Path | None, prompts: list[list[int]], answers: list[list[int]]
) -> float:
    """llama.cpp's own greedy choice at every position of transformers' answers (teacher
    forcing: one early difference does not count against every token after it)."""
    import llama_cpp

    from tuning.models import packaged_gguf

    llm = llama_cpp.Llama(model_path=str(packaged_gguf()), n_ctx=512, logits_all=True,
                          lora_path=str(lora) if lora else None, verbose=False)  # fmt: skip
    same = total = 0
    for prompt, answer in zip(prompts, answers, strict=True):
        llm.reset()
        llm.eval(prompt + answer)
        chosen = np.argmax(llm.scores[len(prompt) - 1 : len(prompt) + len(answer) - 1], axis=1)
        same, total = same + int(np.sum(chosen == np.array(answer))), total + len(answer)
    llm.close()
    return same / total


@pytest.mark.slow
def test_exported_adapter_gives_peft_greedy_tokens(
    trained: Adapter, packaged_model_dir: Path, model_cache_dir: Path
) -> None:
    """Measured: the adapter's greedy answers are peft's, token for token (1.000); the base
    model's agree on 0.773 of tokens up to the first difference (0.633 without flash
    attention), 0.953 position by position:
    llama.cpp quantises activations to 8 bits for its Q4_1 dot products, where transformers
    multiplies the de-quantised weights in float32, so a near tie can go the other way once,
    and the answers part from there."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuning.backends import build_generator
    from tuning.config import GeneratorConfig
    from tuning.generator import GenerationParams
    from tuning.gguf_lora import export_adapter
    from tuning.lora import attach
    from tuning.models import packaged_gguf

    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir)
    model = AutoModelForCausalLM.from_pretrained(packaged_model_dir).eval()
    chats = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}]
             for p in PROMPTS]  # fmt: skip
    hf_base = [peft_tokens(model, tokenizer, c) for c in chats]
    tuned = attach(model, trained.key, trained)
    hf_tuned = [peft_tokens(tuned, tokenizer, c) for c in chats]
    fast: Any = build_generator(GeneratorConfig(backend="llamacpp"), model_cache_dir)
    prompts = [fast.encode(c) for c in chats]
    params = GenerationParams(max_new_tokens=MAX_TOKENS)

    def llama(adapter: Adapter | None) -> list[list[int]]:
        return [list(fast._tokens(p, params, adapter, threading.Event())) for p in prompts]

    base_seq, tuned_seq = agreement(hf_base, llama(None)), agreement(hf_tuned, llama(trained))
    lora = export_adapter(trained, read_base_model(packaged_gguf()), model_cache_dir / "gguf-lora")
    base_forced = forced_agreement(None, prompts, hf_base)
    tuned_forced = forced_agreement(lora, prompts, hf_tuned)
    print(f"\ngreedy token agreement, llama.cpp vs transformers, {len(PROMPTS)} prompts x "
          f"{MAX_TOKENS} tokens: up to the first difference: base {base_seq:.3f}, adapter "
          f"{tuned_seq:.3f}; position by position: base {base_forced:.3f}, adapter "
          f"{tuned_forced:.3f}; peft base vs adapter {agreement(hf_base, hf_tuned):.3f}")  # fmt: skip
    assert agreement(hf_base, hf_tuned) < 0.9  # the adapter changes the answers
    assert tuned_forced >= 0.95 and tuned_seq >= 0.95
    assert base_forced >= 0.9  # the quantisation drift alone (measured 0.953)
