"""The llama.cpp generator: choosing it (and falling back to hf, with a log line, when it is
missing or broken); (slow) streaming, stop, usage, the prefix cache and adapters per request."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tuning.adapters import Adapter, AdapterRegistry
from tuning.backends import build_generator
from tuning.config import PACKAGED_GENERATOR, GeneratorConfig
from tuning.generator import GenerationParams, GeneratorError, StreamStats
from tuning.llamacpp import LlamaCppUnavailableError, TextPieces, import_llama_cpp
from tuning.llamacpp_build import build_llamacpp
from tuning.llamacpp_prefix import TILE, reusable

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_config_defaults_to_auto_and_refuses_what_llamacpp_cannot_run() -> None:
    assert GeneratorConfig().backend == "auto" and GeneratorConfig().uses_llamacpp
    assert GeneratorConfig(model="/models/x.Q4_K_M.gguf").uses_llamacpp
    assert not GeneratorConfig(model="/models/hf-folder").uses_llamacpp  # auto: hf serves it
    assert not GeneratorConfig(device="cuda").uses_llamacpp
    assert not GeneratorConfig(backend="hf").uses_llamacpp
    with pytest.raises(ValidationError, match="runs on the CPU, not 'cuda'"):
        GeneratorConfig(backend="llamacpp", device="cuda")
    with pytest.raises(ValidationError, match=r"needs a GGUF model .*'/models/hf-folder'"):
        GeneratorConfig(backend="llamacpp", model="/models/hf-folder")
    with pytest.raises(ValidationError, match="threads"):
        GeneratorConfig(threads=0)


@pytest.fixture(params=["absent", "broken"])
def no_llama_cpp(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                 tmp_path: Path) -> str:  # fmt: skip
    """llama_cpp not installed (the import finds nothing), or installed with a library that
    does not load (the import raises OSError, as ctypes does for a bad libllama.so)."""
    monkeypatch.delitem(sys.modules, "llama_cpp", raising=False)
    if request.param == "absent":
        monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` -> ImportError
        return "ModuleNotFoundError"
    (tmp_path / "llama_cpp.py").write_text(
        "raise OSError('libllama.so: cannot open shared object file')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "OSError: libllama.so"


def test_missing_or_broken_llama_cpp_falls_back_to_hf_with_one_line(
    no_llama_cpp: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(LlamaCppUnavailableError, match=no_llama_cpp):
        import_llama_cpp()
    with caplog.at_level(logging.WARNING, logger="tuning.llamacpp_build"):
        assert build_llamacpp(GeneratorConfig(), tmp_path) is None
    [line] = [r.getMessage() for r in caplog.records]
    assert no_llama_cpp in line and "using the transformers backend instead" in line
    # build_generator goes on to hf: here a folder without a model, so hf's own clear error.
    with pytest.raises(GeneratorError, match=r"config\.json missing"):
        build_generator(GeneratorConfig(model=str(tmp_path / "x.gguf")), tmp_path)
    with pytest.raises(LlamaCppUnavailableError):  # asked for by name: an error, not hf
        build_llamacpp(GeneratorConfig(backend="llamacpp"), tmp_path)


def test_a_missing_gguf_file_is_named(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    config = GeneratorConfig(backend="llamacpp", model=str(tmp_path / "nope.gguf"))
    with pytest.raises(GeneratorError, match=r"no GGUF file at .*nope\.gguf"):
        build_generator(config, tmp_path)


class _Tokenizer:
    """Decodes ids as bytes of UTF-8 (one byte per id), like byte-level BPE pieces."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


RAINBOW = [QUESTION[0], {"role": "user", "content": "Name three colours of the rainbow."}]


def test_text_pieces_never_split_a_character() -> None:
    pieces = TextPieces(_Tokenizer())
    out = [pieces.add(b) for b in "a é🚲".encode()]
    assert "".join(out) == "a é🚲" and not any("\ufffd" in p for p in out)
    assert out[:2] == ["a", " "] and out[2] == ""  # é's first byte waits for its second


# -- slow: the packaged GGUF ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama(model_cache_dir: Path) -> Any:
    pytest.importorskip("llama_cpp")
    # auto: llama.cpp is installed; run-time LoRA (merged models: tests/tuning/test_gguf_merge.py)
    gen = build_generator(GeneratorConfig(lora_mode="runtime"), model_cache_dir)
    assert type(gen).__name__ == "LlamaCppGenerator" and gen.model_id.endswith("135M-Instruct")
    return gen


@pytest.mark.slow
def test_prompt_tokens_are_the_hf_tokenizers(llama: Any, packaged_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    # The server loads the fast tokenizer class directly (no model config, 2 s sooner): the
    # same ids and text as AutoTokenizer, which the hf backend and training use.
    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir)
    turns = [
        *QUESTION,
        {"role": "assistant", "content": "Paris [1]. Ünïcödé, 日本語 🚲"},
        {"role": "user", "content": "  And\tthe one   of Spain?\n"},
    ]
    for messages in (QUESTION, turns):
        hf = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        assert llama.encode(messages) == list(hf["input_ids"])
        assert llama.count_tokens(messages) == len(hf["input_ids"])
        ids = list(hf["input_ids"])
        assert llama.tokenizer.decode(ids, skip_special_tokens=True) == tokenizer.decode(
            ids, skip_special_tokens=True
        )
    assert llama.tokenizer.eos_token_id == tokenizer.eos_token_id
    assert llama.context_window == 8192


@pytest.mark.slow
def test_greedy_answer_streams_identically_with_usage_counts(llama: Any) -> None:
    params = GenerationParams(max_new_tokens=24)
    first = llama.generate(QUESTION, params)
    assert "paris" in first.text.lower() and first.finish_reason == "stop"
    assert first.prompt_tokens == llama.count_tokens(QUESTION) and 0 < first.completion_tokens < 24
    assert llama.generate(QUESTION, params) == first
    stats = StreamStats()
    pieces = list(llama.stream(QUESTION, params, stats=stats))
    assert "".join(pieces).strip() == first.text and len(pieces) > 3  # per token, not at the end
    assert (stats.completion_tokens, stats.finish_reason) == (first.completion_tokens, "stop")
    cut = llama.generate(QUESTION, GenerationParams(max_new_tokens=2))
    assert (cut.completion_tokens, cut.finish_reason) == (2, "length")
    cut_stats = StreamStats()
    list(llama.stream(QUESTION, GenerationParams(max_new_tokens=2), stats=cut_stats))
    assert (cut_stats.completion_tokens, cut_stats.finish_reason) == (2, "length")
    sampled = GenerationParams(max_new_tokens=12, temperature=0.9, seed=7)
    assert llama.generate(QUESTION, sampled) == llama.generate(QUESTION, sampled)


@pytest.mark.slow
def test_flash_attention_is_on_by_default_and_can_be_turned_off(
    llama: Any, model_cache_dir: Path
) -> None:
    import llama_cpp

    # llama-cpp-python leaves it off; the server turns it on (faster on the CPU, the same
    # answers up to rounding: docs/figures.md) unless the setting says otherwise.
    assert llama._llama.context_params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    off = build_generator(GeneratorConfig(flash_attention=False), model_cache_dir)
    try:
        flash = off._llama.context_params.flash_attn_type  # type: ignore[attr-defined]
        assert flash == llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params = GenerationParams(max_new_tokens=24)
        assert "paris" in off.generate(QUESTION, params).text.lower()
    finally:
        off.close()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_last_assistant_message_is_continued_not_answered_anew(llama: Any) -> None:
    # The number check resumes an answer after the source's words: the model goes on from the
    # assistant's open turn (no end-of-turn after it), as it would have from its own tokens.
    params = GenerationParams(max_new_tokens=12)
    begun = "The capital of France is"
    prompt = llama.encode([*QUESTION, {"role": "assistant", "content": begun}])
    opened = llama.encode(QUESTION)
    assert prompt[: len(opened)] == opened
    assert llama.tokenizer.decode(prompt[len(opened) :]) == begun  # and nothing after it
    went_on = "".join(llama.stream([*QUESTION, {"role": "assistant", "content": begun}], params))
    assert "paris" in went_on.lower() and not went_on.strip().startswith(begun)


@pytest.mark.slow
def test_stop_ends_the_stream_and_frees_the_model(llama: Any) -> None:
    story = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
    stop, stats = threading.Event(), StreamStats()
    got = []
    for piece in llama.stream(story, GenerationParams(max_new_tokens=200), stop=stop, stats=stats):
        got.append(piece)
        if len(got) == 3:
            stop.set()
    assert 3 <= len(got) <= 5
    closed = llama.stream(story, GenerationParams(max_new_tokens=200))
    next(closed)
    closed.close()  # a client that hung up
    assert llama.generate(QUESTION, GenerationParams(max_new_tokens=8)).completion_tokens > 0


class _Evals:
    """Counts the tokens llama.cpp evaluates for each prompt (the first eval of a generate)."""

    def __init__(self, llm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[int] = []
        real = llm.eval

        def counted(tokens: Any) -> None:
            self.calls.append(len(tokens))
            real(tokens)

        monkeypatch.setattr(llm, "eval", counted)


def random_adapter(registry: AdapterRegistry, name: str, seed: int, model_dir: Path) -> Adapter:
    """A LoRA with random B (peft, saved as the trainer saves), published as name@v1."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"])  # fmt: skip
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for key, param in peft_model.named_parameters():
            if "lora_B" in key:
                param.copy_(torch.randn(param.shape) * 0.15)
    staging = registry.staging_dir(name)
    peft_model.save_pretrained(staging / "tmp", safe_serialization=True)
    for item in (staging / "tmp").iterdir():
        item.replace(staging / item.name)
    (staging / "tmp").rmdir()
    return registry.publish(name, staging, {"base_model_id": "HuggingFaceTB/SmolLM2-135M-Instruct"})


@pytest.mark.slow
def test_adapters_switch_per_request_and_never_share_the_kv_cache(
    llama: Any, packaged_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    a = random_adapter(registry, "alpha", 1, packaged_model_dir)
    b = random_adapter(registry, "beta", 2, packaged_model_dir)
    params = GenerationParams(max_new_tokens=12)
    alone = {ref: llama.generate(RAINBOW, params, adapter).text
             for ref, adapter in (("a", a), ("b", b), ("none", None))}  # fmt: skip
    assert len(set(alone.values())) == 3, alone
    evals = _Evals(llama._llama, monkeypatch)
    n_prompt = llama.count_tokens(RAINBOW)
    plan = [("a", a), ("a", a), ("b", b), ("none", None), ("a", a)]
    for ref, adapter in plan:
        assert llama.generate(RAINBOW, params, adapter).text == alone[ref], ref
    prefills = [calls for calls in evals.calls if calls > 1]
    # A prompt this short (under llamacpp_prefix.TILE tokens) is evaluated whole every time,
    # on whichever context (the adapter's) answers it.
    assert n_prompt < TILE and prefills == [n_prompt] * len(plan), evals.calls
    assert sorted(llama.loaded_adapters) == ["alpha@v1", "beta@v1"]
    # One export per adapter (the cache is the session's: other tests' exports may be there).
    exported = [p.name for p in Path(llama._lora_cache).glob("*.gguf") if "-merged-" not in p.name]
    assert len([n for n in exported if n.startswith(("alpha-v1-", "beta-v1-"))]) == 2, exported


@pytest.mark.slow
def test_an_answer_does_not_depend_on_the_question_asked_before_it(
    llama: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prompts sharing a long start (the system prompt and the same sources): the next one
    # evaluates only its new part, but never fewer than TILE tokens, so that every token goes
    # through the same kernel as in a prompt evaluated from scratch (tuning/llamacpp_prefix.py).
    rows = "; ".join(f"part {i} every {500 * i} km" for i in range(1, 25))
    sources = f"Sources:\n[1] Service intervals: {rows}."
    asks = [f"{sources}\n\nQuestion: {q}" for q in (
        "When is part 3 serviced?", "When is part 7 serviced?", "Which part is serviced "
        "every 4000 km?")]  # fmt: skip
    prompts = [[QUESTION[0], {"role": "user", "content": a}] for a in asks]
    ids = [llama.encode(p) for p in prompts]
    params = GenerationParams(max_new_tokens=12)
    evals = _Evals(llama._llama, monkeypatch)
    fresh = []
    for p in prompts:  # after a short, unrelated prompt: nothing to reuse
        llama.generate(RAINBOW, params)
        evals.calls.clear()
        fresh.append(llama.generate(p, params).text)
        assert evals.calls[0] == len(ids[len(fresh) - 1])
    # One after another, and in other orders: the same answers, with the shared start reused.
    for order in ([0, 1, 2], [2, 1, 0], [1, 1, 0, 0]):
        llama.generate(RAINBOW, params)
        for before, now in zip([None, *order], order, strict=False):
            evals.calls.clear()
            assert llama.generate(prompts[now], params).text == fresh[now], (order, now)
            if before is not None:
                keep = reusable(ids[before], ids[now])
                assert keep > 100 and evals.calls[0] == len(ids[now]) - keep >= TILE


def test_packaged_generator_name_is_what_auto_picks() -> None:
    assert GeneratorConfig(model=PACKAGED_GENERATOR).uses_llamacpp
