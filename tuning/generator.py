"""The `Generator` protocol and its value types, and the echo fake; no backend is imported here."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from tuning.adapters import Adapter

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


@dataclass
class StreamStats:
    """Filled by `stream` when it ends: what the model itself counted."""

    completion_tokens: int = 0
    finish_reason: Literal["stop", "length"] = "stop"


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


def template_options(messages: Sequence[Message]) -> dict[str, bool]:
    """How a chat template renders `messages`: opening the assistant's turn, or, when the last
    message is the assistant's, leaving it open for the model to continue."""
    if messages and messages[-1]["role"] == "assistant":
        return {"add_generation_prompt": False, "continue_final_message": True}
    return {"add_generation_prompt": True}


class Generator(Protocol):
    # Whether `stream` continues a last message from the assistant (the number check resumes
    # an answer after the source's words); a remote API opens a new turn instead.
    continues: bool

    @property
    def model_id(self) -> str: ...

    @property
    def context_window(self) -> int: ...

    def count_tokens(self, messages: Sequence[Message]) -> int: ...

    def count_text(self, text: str) -> int:
        """Tokens in a piece of generated text (no chat template)."""
        ...

    @property
    def loaded_adapters(self) -> list[str]: ...

    def generate(
        self, messages: Sequence[Message], params: GenerationParams, adapter: Adapter | None = None
    ) -> Completion: ...

    def stream(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        adapter: Adapter | None = None,
        stop: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        """Text pieces as they are generated; setting `stop` (or closing the iterator) ends the
        generation at the next token. `stats`, if given, gets the token count at the end."""
        ...


class EchoGenerator:
    """Answers with the last user message, word by word. Tests only: it understands nothing."""

    model_id = "echo"
    context_window = 8192
    continues = True
    loaded_adapters: list[str] = []  # noqa: RUF012 (never mutated)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return sum(len(m["content"].split()) + 4 for m in messages)

    def count_text(self, text: str) -> int:
        return len(text.split())

    def _words(
        self, messages: Sequence[Message], params: GenerationParams, adapter: Adapter | None
    ) -> list[str]:
        last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        prefix = [f"[{adapter.ref}]"] if adapter else []  # shows which adapter answered
        return [*prefix, *last.split()][: params.max_new_tokens]

    def generate(
        self, messages: Sequence[Message], params: GenerationParams, adapter: Adapter | None = None
    ) -> Completion:
        words = self._words(messages, params, adapter)
        full = len(words) == params.max_new_tokens
        return Completion(" ".join(words), self.count_tokens(messages), len(words),
                          "length" if full else "stop")  # fmt: skip

    def stream(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        adapter: Adapter | None = None,
        stop: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        words = self._words(messages, params, adapter)
        for i, word in enumerate(words):
            if stop is not None and stop.is_set():
                return
            if stats is not None:
                stats.completion_tokens = i + 1
                stats.finish_reason = "length" if i + 1 == params.max_new_tokens else "stop"
            yield word if i == 0 else f" {word}"
