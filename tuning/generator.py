"""Generators: `generate(messages, params) -> Completion` and `stream(...) -> Iterator[str]`."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from tuning.config import GeneratorConfig

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


class GeneratorError(Exception):
    """The model cannot be found, loaded or asked."""


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings; temperature 0 is greedy (reproducible)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


class Generator(Protocol):
    @property
    def model_id(self) -> str: ...

    @property
    def context_window(self) -> int: ...

    def count_tokens(self, messages: Sequence[Message]) -> int: ...

    def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion: ...

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[str]: ...


class EchoGenerator:
    """Answers with the last user message, word by word. Tests only: it understands nothing."""

    model_id = "echo"
    context_window = 8192

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return sum(len(m["content"].split()) + 4 for m in messages)

    def _words(self, messages: Sequence[Message], params: GenerationParams) -> list[str]:
        last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return last.split()[: params.max_new_tokens]

    def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        words = self._words(messages, params)
        full = len(words) == params.max_new_tokens
        return Completion(" ".join(words), self.count_tokens(messages), len(words),
                          "length" if full else "stop")  # fmt: skip

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[str]:
        for i, word in enumerate(self._words(messages, params)):
            yield word if i == 0 else f" {word}"


def torch_device(name: str) -> Any:
    import torch

    return torch.device(name)


class HFGenerator:
    """A transformers causal LM on CPU (or CUDA); one generation at a time per loaded model."""

    def __init__(self, model_dir: Path, model_id: str, device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._model_id = model_id
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model: Any = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
        self.model.to(torch_device(device)).eval()
        self.device = device
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def _encode(self, messages: Sequence[Message]) -> Any:
        return self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return int(self._encode(messages)["input_ids"].shape[1])

    def _kwargs(self, inputs: Any, params: GenerationParams) -> dict[str, Any]:
        import torch

        if params.seed is not None:
            torch.manual_seed(params.seed)
        sample = params.temperature > 0
        return {
            **inputs,
            "max_new_tokens": params.max_new_tokens,
            "do_sample": sample,
            "temperature": params.temperature if sample else None,
            "top_p": params.top_p if sample else None,
            "top_k": None,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }

    def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        import torch

        inputs = self._encode(messages)
        prompt_len = int(inputs["input_ids"].shape[1])
        with self._lock, torch.inference_mode():
            out = self.model.generate(**self._kwargs(inputs, params))
        new = out[0, prompt_len:]
        eos = self.tokenizer.eos_token_id
        stopped = len(new) < params.max_new_tokens or (len(new) and int(new[-1]) == eos)
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return Completion(text, prompt_len, len(new), "stop" if stopped else "length")

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        inputs = self._encode(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = {**self._kwargs(inputs, params), "streamer": streamer}

        def run() -> None:
            with self._lock, torch.inference_mode():
                self.model.generate(**kwargs)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield from (piece for piece in streamer if piece)
        thread.join()


def build_generator(config: GeneratorConfig, cache_dir: Path) -> Generator:
    """The generator `config` names; the packaged GGUF is converted once into `cache_dir`."""
    if config.backend == "echo":
        return EchoGenerator()
    from tuning.models import resolve_model_dir

    model_dir, model_id = resolve_model_dir(config.model, cache_dir)
    return HFGenerator(model_dir, model_id, config.device)
