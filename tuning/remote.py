"""The `openai` generator backend: a remote OpenAI-compatible server answers (vLLM, ragtune).

Prompts are still built and measured here, with the base model's own tokenizer and chat
template, so the token budget is exact; adapters are chosen by the remote model name.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tuning.adapters import Adapter, AdapterMismatchError
from tuning.config import GeneratorConfig
from tuning.generator import Completion, GenerationParams, GeneratorError, Message, StreamStats


class OpenAIGenerator:
    """Generation by a remote server; tokenizer and context window from the local model folder."""

    continues = False  # the chat API answers a conversation ending with the assistant anew

    def __init__(self, config: GeneratorConfig, model_dir: Path, model_id: str) -> None:
        import openai
        from transformers import AutoTokenizer

        self.config = config
        self._model_id = model_id
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model_config = json.loads((model_dir / "config.json").read_text("utf-8"))
        self._context = int(model_config.get("max_position_embeddings", 2048))
        key = config.api_key.get_secret_value() if config.api_key else "unused"
        self._errors = (openai.OpenAIError,)
        self.client = openai.OpenAI(
            base_url=config.base_url, api_key=key, timeout=config.timeout_s, max_retries=1
        )

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_window(self) -> int:
        return self._context

    @property
    def loaded_adapters(self) -> list[str]:
        return []  # the remote server holds them

    def count_tokens(self, messages: Sequence[Message]) -> int:
        ids = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)

    def count_text(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def remote_name(self, adapter: Adapter | None) -> str:
        if adapter is None:
            return self.config.remote_model
        if adapter.base_model_id != self.model_id:
            raise AdapterMismatchError(
                f"{adapter.ref} was trained for {adapter.base_model_id}, not {self.model_id}"
            )
        return self.config.remote_adapter_model.format(name=adapter.name, version=adapter.version)

    def _request(self, messages: Sequence[Message], params: GenerationParams) -> dict[str, Any]:
        request: dict[str, Any] = {
            "messages": list(messages),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            request["seed"] = params.seed
        return request

    def generate(
        self, messages: Sequence[Message], params: GenerationParams, adapter: Adapter | None = None
    ) -> Completion:
        model = self.remote_name(adapter)
        try:
            reply = self.client.chat.completions.create(
                model=model, **self._request(messages, params)
            )
        except self._errors as exc:
            raise GeneratorError(f"the remote generator failed: {exc}") from exc
        choice = reply.choices[0]
        usage = reply.usage
        return Completion(
            (choice.message.content or "").strip(),
            usage.prompt_tokens if usage else self.count_tokens(messages),
            usage.completion_tokens if usage else 0,
            "length" if choice.finish_reason == "length" else "stop",
        )

    def stream(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        adapter: Adapter | None = None,
        stop: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        model = self.remote_name(adapter)
        try:
            chunks = self.client.chat.completions.create(
                model=model,
                stream=True,
                stream_options={"include_usage": True},
                **self._request(messages, params),
            )
            with chunks:  # closing it drops the connection, which stops the remote generation
                for chunk in chunks:
                    if stop is not None and stop.is_set():
                        break
                    if stats is not None and chunk.usage is not None:
                        stats.completion_tokens = chunk.usage.completion_tokens
                    choice = chunk.choices[0] if chunk.choices else None
                    if stats is not None and choice is not None and choice.finish_reason:
                        stats.finish_reason = (
                            "length" if choice.finish_reason == "length" else "stop"
                        )
                    if choice is not None and choice.delta.content:
                        yield choice.delta.content
        except self._errors as exc:
            raise GeneratorError(f"the remote generator failed: {exc}") from exc
