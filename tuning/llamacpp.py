"""The llama.cpp generator: a GGUF model through llama-cpp-python, LoRA adapters per request."""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import random
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tuning.adapters import Adapter, verify_adapter
from tuning.generator import (
    Completion,
    GenerationParams,
    GeneratorError,
    Message,
    StreamStats,
    template_options,
)
from tuning.gguf_lora import BaseModel, base_model_of, export_adapter
from tuning.gguf_merge import merge_adapter
from tuning.llamacpp_prefix import PrefixCache

_DONE = object()  # ends a stream's queue


class LlamaCppUnavailableError(GeneratorError):
    """llama-cpp-python is not installed, or its compiled library does not load."""


def import_llama_cpp() -> Any:
    """The `llama_cpp` module, or a one-line reason why it cannot be used."""
    try:
        import llama_cpp
    except Exception as exc:  # ImportError; OSError or RuntimeError from a broken library
        raise LlamaCppUnavailableError(
            f"llama-cpp-python is not usable ({type(exc).__name__}: {exc})"
        ) from exc
    return llama_cpp


def available_threads() -> int:
    """CPU cores this process may run on (a container's limit, not the machine's count)."""
    return len(os.sched_getaffinity(0)) or os.cpu_count() or 1


class TextPieces:
    """Generated token ids in, new text out, never splitting a multi-byte character. Decodes
    with the transformers tokenizer, so the joined pieces are the hf backend's text."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = 0

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = str(self.tokenizer.decode(self.ids, skip_special_tokens=True))
        if text.endswith("\ufffd"):
            return ""  # part of a multi-byte character: wait for the rest
        piece, self.sent = text[self.sent :], len(text)
        return piece


class LlamaCppGenerator:
    """One llama.cpp model and context for the base model; per request, an adapter's merged model
    copy (lora_mode 'merged', an LRU of max_merged) or the adapter exported to GGUF LoRA and set
    on the base model's context ('runtime').

    One generation runs at a time: the lock covers choosing the adapter and the whole decode.
    Each context keeps the previous prompt's keys and values, and a next prompt that starts the
    same way evaluates only its new part, by a rule that never changes an answer
    (`tuning.llamacpp_prefix`); switching the adapter clears that cache, as keys and values
    depend on the adapter.
    """

    backend = "llamacpp"
    continues = True

    def __init__(self, gguf: Path, tokenizer: Any, model_id: str, lora_cache: Path,
                 *, max_adapters: int = 8, n_threads: int | None = None,
                 lora_mode: str = "merged", max_merged: int = 2,
                 flash_attention: bool = True) -> None:  # fmt: skip
        self._lib = import_llama_cpp()
        threads = n_threads or available_threads()
        self.threads = threads
        self.flash_attention = flash_attention
        self._llama: Any = self._load(gguf)
        self.tokenizer = tokenizer
        self._model_id = model_id
        self._base: BaseModel = base_model_of(gguf, self._llama.metadata)  # for LoRA export
        self._lora_cache = lora_cache
        self.max_adapters = max_adapters
        self.lora_mode = lora_mode  # 'merged': a merged model copy per adapter; 'runtime': LoRA
        self.max_merged = max_merged
        self._merged: OrderedDict[str, tuple[Adapter, Any]] = OrderedDict()  # LRU first
        eos = getattr(tokenizer, "eos_token_id", None)
        self._eos = {int(eos)} if eos is not None else {int(self._llama.token_eos())}
        self._adapters: OrderedDict[str, tuple[Adapter, Any]] = OrderedDict()  # LRU first
        self._active: str | None = None  # the adapter set on the context now
        self._prefix = PrefixCache(self._lib)
        self._lock = threading.Lock()

    def _load(self, gguf: Path) -> Any:
        try:
            return self._lib.Llama(
                model_path=str(gguf), n_ctx=0, n_batch=512, n_threads=self.threads,
                n_threads_batch=self.threads, flash_attn=self.flash_attention, verbose=False,
            )  # fmt: skip
        except Exception as exc:  # a GGUF llama.cpp cannot read
            raise GeneratorError(f"llama.cpp cannot load {gguf}: {exc}") from exc

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_window(self) -> int:
        return int(self._llama.n_ctx())

    @property
    def loaded_adapters(self) -> list[str]:
        return [a.ref for a, _ in (*self._adapters.values(), *self._merged.values())]

    def encode(self, messages: Sequence[Message]) -> list[int]:
        """The prompt's token ids: the transformers chat template and tokenizer, as hf uses."""
        encoded = self.tokenizer.apply_chat_template(
            list(messages), tokenize=True, return_dict=True, **template_options(messages)
        )
        return [int(t) for t in encoded["input_ids"]]

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.encode(messages))

    def count_text(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def load_adapter(self, adapter: Adapter) -> None:
        """Verify, export and load `adapter` now (it is otherwise loaded on first use)."""
        with self._lock:
            self._handle(adapter)

    def _handle(self, adapter: Adapter) -> Any:
        """The loaded llama.cpp adapter (or merged model); the caller holds the lock."""
        if self.lora_mode == "merged":
            return self._merged_model(adapter)
        if adapter.key in self._adapters:
            self._adapters.move_to_end(adapter.key)
            return self._adapters[adapter.key][1]
        verify_adapter(adapter, self.model_id)
        path = export_adapter(adapter, self._base, self._lora_cache)
        handle = self._lib.llama_adapter_lora_init(self._llama.model, str(path).encode())
        if not handle:
            raise GeneratorError(f"llama.cpp refused the exported adapter {adapter.ref} ({path})")
        self._adapters[adapter.key] = (adapter, handle)
        return handle

    def _merged_model(self, adapter: Adapter) -> Any:
        """The adapter's merged model copy, its own context (and KV cache); LRU beyond
        max_merged, the evicted ones closed. The caller holds the lock."""
        if adapter.key in self._merged:
            self._merged.move_to_end(adapter.key)
            return self._merged[adapter.key][1]
        verify_adapter(adapter, self.model_id)
        llm = self._load(merge_adapter(adapter, self._base, self._lora_cache))
        self._merged[adapter.key] = (adapter, llm)
        while len(self._merged) > self.max_merged:
            _, (_, old) = self._merged.popitem(last=False)
            self._prefix.forget(old)
            old.close()
        return llm

    def _evict(self) -> None:
        while len(self._adapters) > self.max_adapters:
            key, (_, handle) = next(iter(self._adapters.items()))
            if key == self._active:
                break  # never free the adapter the context uses (max_adapters >= 1)
            del self._adapters[key]
            self._lib.llama_adapter_lora_free(handle)

    def _select(self, adapter: Adapter | None) -> Any:
        """The Llama to decode `adapter`'s request with: a merged copy, or the base model with
        the adapter (or none) set on its context. The caller holds the lock."""
        if self.lora_mode == "merged":
            return self._llama if adapter is None else self._merged_model(adapter)
        key = adapter.key if adapter is not None else None
        if adapter is not None:
            handle = self._handle(adapter)
        if key == self._active:
            return self._llama
        ctx = self._llama.ctx
        if adapter is None:
            self._lib.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            handles = (self._lib.llama_adapter_lora_p_ctypes * 1)(handle)
            scales = (ctypes.c_float * 1)(1.0)
            self._lib.llama_set_adapters_lora(ctx, handles, 1, scales)
        self._llama.reset()  # the cached keys and values came from other weights: drop them
        self._active = key
        self._evict()
        return self._llama

    def _tokens(
        self, prompt: list[int], params: GenerationParams, adapter: Adapter | None,
        halt: threading.Event,
    ) -> Iterator[int]:  # fmt: skip
        """Generated token ids (EOS included), under the lock until the iterator ends."""
        budget = min(params.max_new_tokens, self.context_window - len(prompt))
        if budget <= 0:
            raise GeneratorError(
                f"the prompt has {len(prompt)} tokens: no room to answer in the model's "
                f"context window of {self.context_window}"
            )
        greedy = params.temperature <= 0
        with self._lock:
            llm = self._select(adapter)
            seed = params.seed if params.seed is not None else random.getrandbits(31)
            llm.set_seed(seed)
            try:
                last = self._prefix.prefill(llm, prompt)
            except BaseException:
                llm.reset()
                raise
            steps = llm.generate(
                last, temp=0.0 if greedy else params.temperature, top_k=0,
                top_p=1.0 if greedy else params.top_p, min_p=0.0, typical_p=1.0,
                repeat_penalty=1.0, reset=False,
            )  # fmt: skip
            try:
                for n, token in enumerate(steps, start=1):
                    if n == 1:
                        self._prefix.evaluated(llm, prompt)
                    yield int(token)
                    if token in self._eos or n >= budget or halt.is_set():
                        break
            except BaseException:
                llm.reset()  # a decode that failed part way leaves no trusted cache
                raise
            finally:
                steps.close()

    def generate(
        self, messages: Sequence[Message], params: GenerationParams, adapter: Adapter | None = None
    ) -> Completion:
        prompt = self.encode(messages)
        new = list(self._tokens(prompt, params, adapter, threading.Event()))
        stopped = len(new) < params.max_new_tokens or (bool(new) and new[-1] in self._eos)
        text = str(self.tokenizer.decode(new, skip_special_tokens=True)).strip()
        return Completion(text, len(prompt), len(new), "stop" if stopped else "length")

    def stream(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        adapter: Adapter | None = None,
        stop: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        """Decoding runs in its own thread, ahead of the reader; setting `stop` or closing the
        iterator ends it at the next token and frees the model."""
        halt = stop if stop is not None else threading.Event()
        prompt = self.encode(messages)
        if adapter is not None:
            self.load_adapter(adapter)  # fail before the first piece, not inside
        pieces: queue.SimpleQueue[Any] = queue.SimpleQueue()
        counted = StreamStats()

        def run() -> None:
            text = TextPieces(self.tokenizer)
            try:
                for token in self._tokens(prompt, params, adapter, halt):
                    counted.completion_tokens += 1
                    full = counted.completion_tokens >= params.max_new_tokens
                    counted.finish_reason = "length" if full and token not in self._eos else "stop"
                    piece = text.add(token)
                    if piece:
                        pieces.put(piece)
            except BaseException as exc:  # surfaced to the reader below
                pieces.put(exc)
            pieces.put(_DONE)

        thread = threading.Thread(target=run, daemon=True, name="llamacpp-stream")
        thread.start()
        try:
            while (item := pieces.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                if halt.is_set():
                    break
                yield item
        finally:
            halt.set()  # the reader left (finished, or a client hung up): free the model
            thread.join()
        if stats is not None:
            stats.completion_tokens, stats.finish_reason = (
                counted.completion_tokens,
                counted.finish_reason,
            )

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            for _, llm in self._merged.values():
                llm.close()
            self._merged.clear()
            self._llama.close()
