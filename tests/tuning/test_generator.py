"""Generators: the echo fake, and the packaged SmolLM2 converted once and cached."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tuning.backends import build_generator
from tuning.config import GeneratorConfig
from tuning.generator import EchoGenerator, GenerationParams, GeneratorError, StreamStats
from tuning.hf import HFGenerator, _CountingStreamer
from tuning.models import READY, resolve_model_dir

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_echo_generates_and_streams_the_same_text() -> None:
    gen = EchoGenerator()
    msgs = [{"role": "user", "content": "one two three four"}]
    done = gen.generate(msgs, GenerationParams(max_new_tokens=3))
    assert done.text == "one two three" and done.finish_reason == "length"
    assert "".join(gen.stream(msgs, GenerationParams(max_new_tokens=3))) == done.text
    assert gen.generate(msgs, GenerationParams()).finish_reason == "stop"


def test_a_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match=r"config\.json missing"):
        build_generator(GeneratorConfig(model=str(tmp_path)), tmp_path / "cache")


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory) -> tuple[HFGenerator, Path, float]:
    cache = tmp_path_factory.mktemp("models")
    started = time.monotonic()
    gen = build_generator(GeneratorConfig(backend="hf"), cache)
    assert isinstance(gen, HFGenerator)
    return gen, cache, time.monotonic() - started


@pytest.mark.slow
def test_packaged_model_is_converted_once_and_reloaded_from_the_cache(smol) -> None:
    _, cache, first = smol
    folder, model_id = resolve_model_dir("SmolLM2-135M-Instruct", cache)
    assert (folder / READY).is_file() and list(folder.glob("*.safetensors"))
    assert not list(folder.glob("*.bin")) and model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    started = time.monotonic()
    again = build_generator(GeneratorConfig(backend="hf"), cache)
    reload = time.monotonic() - started
    assert again.count_tokens(QUESTION) > 10
    assert reload < first  # the conversion is not repeated (measured here: ~20 s vs ~1 s)


@pytest.mark.slow
def test_greedy_answer_is_reproducible_and_streams_identically(smol) -> None:
    gen, _, _ = smol
    params = GenerationParams(max_new_tokens=24)
    first = gen.generate(QUESTION, params)
    assert "paris" in first.text.lower()
    assert first.prompt_tokens == gen.count_tokens(QUESTION) and 0 < first.completion_tokens <= 24
    assert gen.generate(QUESTION, params).text == first.text
    stats = StreamStats()
    pieces = list(gen.stream(QUESTION, params, stats=stats))
    assert "".join(pieces).strip() == first.text
    # The model's own count and finish reason, the same as a plain generate reports.
    assert (stats.completion_tokens, stats.finish_reason) == (
        first.completion_tokens,
        first.finish_reason,
    )
    cut = gen.generate(QUESTION, GenerationParams(max_new_tokens=2))
    assert cut.finish_reason == "length" and cut.completion_tokens == 2
    cut_stats = StreamStats()
    list(gen.stream(QUESTION, GenerationParams(max_new_tokens=2), stats=cut_stats))
    assert (cut_stats.completion_tokens, cut_stats.finish_reason) == (2, "length")


@pytest.mark.slow
def test_streamer_passes_text_on_per_token_and_never_splits_a_character(smol) -> None:
    import torch

    gen, _, _ = smol
    text = "Hey there, rider! Ride 🚲 bright, café crew."
    ids = gen.tokenizer.encode(text, add_special_tokens=False)
    streamer = _CountingStreamer(gen.tokenizer, skip_prompt=True, skip_special_tokens=True)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: skipped, not counted
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    pieces = list(streamer)
    assert "".join(pieces) == text and streamer.generated == len(ids)
    assert not any("\ufffd" in piece for piece in pieces)
    # Per token, not per word: the first word arrives before the second begins.
    assert pieces[0] == "Hey" and len([p for p in pieces if p]) > len(text.split())
