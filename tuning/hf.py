"""The transformers backend: a causal LM on CPU (or CUDA), with peft adapters loaded beside it."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tuning.adapters import Adapter, verify_adapter
from tuning.generator import (
    Completion,
    GenerationParams,
    Message,
    StreamStats,
    template_options,
)


def torch_device(name: str) -> Any:
    import torch

    return torch.device(name)


class HFGenerator:
    """A transformers causal LM on CPU (or CUDA), with peft adapters loaded beside it.

    One generation runs at a time per loaded model: the lock covers choosing the adapter and
    the whole `generate` call, so a request never runs with another request's adapter.
    """

    backend = "hf"
    continues = True

    def __init__(
        self, model_dir: Path, model_id: str, device: str = "cpu", max_adapters: int = 8
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._model_id = model_id
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model: Any = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
        self.model.to(torch_device(device)).eval()
        self.device = device
        self.max_adapters = max_adapters
        self._adapters: OrderedDict[str, Adapter] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @property
    def loaded_adapters(self) -> list[str]:
        return [a.ref for a in self._adapters.values()]

    def _encode(self, messages: Sequence[Message]) -> Any:
        return self.tokenizer.apply_chat_template(
            list(messages), return_tensors="pt", return_dict=True, **template_options(messages)
        ).to(self.device)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return int(self._encode(messages)["input_ids"].shape[1])

    def count_text(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def load_adapter(self, adapter: Adapter) -> None:
        """Verify and attach `adapter` now (it is otherwise attached on first use)."""
        with self._lock:
            self._activate(adapter)

    def _activate(self, adapter: Adapter | None) -> contextlib.AbstractContextManager[Any]:
        """Select the adapter for the next generate; the caller holds the lock."""
        if adapter is None:
            if self._adapters:  # the model is a PeftModel: run the bare base model
                return self.model.disable_adapter()  # type: ignore[no-any-return]
            return contextlib.nullcontext()
        if adapter.key not in self._adapters:
            from tuning.lora import attach

            verify_adapter(adapter, self.model_id)
            self.model = attach(self.model, adapter.key, adapter)
            self._adapters[adapter.key] = adapter
            if len(self._adapters) > self.max_adapters:
                evicted, _ = self._adapters.popitem(last=False)
                self.model.delete_adapter(evicted)
        self._adapters.move_to_end(adapter.key)
        self.model.set_adapter(adapter.key)
        return contextlib.nullcontext()

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

    def _run(self, kwargs: dict[str, Any], adapter: Adapter | None) -> Any:
        import torch

        with self._lock, torch.inference_mode(), self._activate(adapter):
            return self.model.generate(**kwargs)

    def generate(
        self, messages: Sequence[Message], params: GenerationParams, adapter: Adapter | None = None
    ) -> Completion:
        inputs = self._encode(messages)
        prompt_len = int(inputs["input_ids"].shape[1])
        out = self._run(self._kwargs(inputs, params), adapter)
        new = out[0, prompt_len:]
        eos = self.tokenizer.eos_token_id
        stopped = len(new) < params.max_new_tokens or (len(new) and int(new[-1]) == eos)
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return Completion(text, prompt_len, len(new), "stop" if stopped else "length")

    def stream(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        adapter: Adapter | None = None,
        stop: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        from transformers import StoppingCriteria, StoppingCriteriaList

        halt = stop if stop is not None else threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return halt.is_set()

        if adapter is not None and adapter.key not in self._adapters:
            verify_adapter(adapter, self.model_id)  # fail before the first piece, not inside
        inputs = self._encode(messages)
        streamer = _CountingStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = {
            **self._kwargs(inputs, params),
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_Stop()]),
        }
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self._run(kwargs, adapter)
            except BaseException as exc:  # surfaced to the reader below
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if halt.is_set():
                    break
                if piece:
                    yield piece
        finally:
            halt.set()  # the reader left (finished, or a client hung up): free the model
            thread.join()
        if failure:
            raise failure[0]
        if stats is not None:
            stats.completion_tokens = streamer.generated
            eos = self.tokenizer.eos_token_id
            full = streamer.generated >= params.max_new_tokens and streamer.last != eos
            stats.finish_reason = "length" if full else "stop"


@functools.cache
def _counting_streamer_class() -> Any:
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        """Counts the generated token ids (the prompt excluded) as they pass through, and
        passes text on after every token rather than at word ends (one token less to the first
        byte), holding back only an unfinished UTF-8 sequence. Tokenizers that clean up spaces
        (their decoded prefixes can change afterwards) keep the word-end behaviour."""

        generated = 0
        last: int | None = None

        def put(self, value: Any) -> None:
            if self.skip_prompt and self.next_tokens_are_prompt:
                super().put(value)  # type: ignore[no-untyped-call]
                return
            self.generated += int(value.numel())
            self.last = int(value.reshape(-1)[-1])
            if getattr(self.tokenizer, "clean_up_tokenization_spaces", False):
                super().put(value)  # type: ignore[no-untyped-call]
                return
            self.token_cache.extend(value.reshape(-1).tolist())
            text = str(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
            if text.endswith("\ufffd"):
                return  # part of a multi-byte character: wait for the rest
            printable = text[self.print_len :]
            self.print_len += len(printable)
            self.on_finalized_text(printable)

    return CountingStreamer


def _CountingStreamer(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 (a lazy class)
    return _counting_streamer_class()(*args, **kwargs)
