"""The one answer path, shared by the server and the comparisons: route, retrieve, prompt, generate.

A route names a `Mode` and, for the tuned modes, an adapter reference:
`base`, `rag`, `tuned:<adapter>[@version|@alias]`, `rag+tuned:<adapter>[@version|@alias]`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from retrieval.read import Filters, query_words
from retrieval.rerank import stems
from retrieval.retriever import Hit, Retriever
from serve.absent import absent_terms
from serve.config import ChatConfig
from serve.focus import Similarity, evidence, focus, wanted_terms
from serve.grounding import Linked, NumberCheck, checked
from serve.loops import guarded
from serve.prompt import build_messages, source_label
from tuning.adapters import WEIGHTS, Adapter, AdapterRegistry, verify_adapter
from tuning.generator import Completion, GenerationParams, Generator, Message, StreamStats

PROMPT_MARGIN = 8  # tokens kept free of the budget: chat templates add a few around the reply


class Mode(StrEnum):
    BASE = "base"
    RAG = "rag"
    TUNED = "tuned"
    RAG_TUNED = "rag+tuned"

    @property
    def retrieves(self) -> bool:
        return self in (Mode.RAG, Mode.RAG_TUNED)

    @property
    def tuned(self) -> bool:
        return self in (Mode.TUNED, Mode.RAG_TUNED)


class UnknownModelError(ValueError):
    """A `model` the server cannot serve."""


class ConversationError(ValueError):
    """Messages the pipeline cannot answer: empty, wrong roles, no question."""


_ROUTE = re.compile(r"(base|rag|tuned|rag\+tuned)(?::([^\s@]+(?:@[^\s@]+)?))?")


@dataclass(frozen=True)
class Route:
    mode: Mode
    adapter_ref: str | None = None

    @classmethod
    def parse(cls, model: str) -> Route:
        match = _ROUTE.fullmatch(model.strip())
        if not match:
            raise UnknownModelError(
                f"unknown model {model!r}: use base, rag, tuned:<adapter>[@version] or "
                "rag+tuned:<adapter>[@version]"
            )
        mode, ref = Mode(match.group(1)), match.group(2)
        if mode.tuned and not ref:
            raise UnknownModelError(f"model {model!r} names no adapter: use {mode}:<adapter>")
        if ref and not mode.tuned:
            raise UnknownModelError(f"model {model!r}: only tuned modes take an adapter")
        return cls(mode, ref)

    @property
    def name(self) -> str:
        return f"{self.mode}:{self.adapter_ref}" if self.adapter_ref else str(self.mode)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Prepared:
    """Everything decided before generation: the prompt, its sources and the adapter."""

    route: Route
    adapter: Adapter | None
    messages: list[Message]
    hits: list[Hit]  # the sources in the prompt, numbered [1], [2], ... in this order
    retrieved: list[Hit]  # everything retrieval returned (the audit log keeps it)
    index_version: int | None
    prompt_tokens: int
    timings: dict[str, float] = field(default_factory=dict)
    # Words of the question no document holds: the answer says so, and no model runs.
    unknown_terms: tuple[str, ...] = ()
    # What the answer may state as numbers, and what it says instead (`chat.number_check`).
    numbers: NumberCheck | None = None

    @property
    def canned(self) -> str | None:
        """The answer given without generating, if any."""
        return absent_answer(self.unknown_terms) if self.unknown_terms else None


def absent_answer(terms: Sequence[str]) -> str:
    """'The sources do not say anything about "a", "b" or "c".'"""
    quoted = [f"“{t}”" for t in terms]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f"The sources do not say anything about {listed}."


@dataclass
class Answer:
    text: str
    mode: Mode
    adapter: Adapter | None
    hits: list[Hit]
    usage: Usage
    timings: dict[str, float]
    finish_reason: str
    index_version: int | None
    retrieved: list[Hit] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "mode": str(self.mode),
            "adapter": self.adapter.ref if self.adapter else None,
            "sources": [h.to_dict() for h in self.hits],
            "usage": {"prompt_tokens": self.usage.prompt_tokens,
                      "completion_tokens": self.usage.completion_tokens},
            "timings": self.timings,
            "finish_reason": self.finish_reason,
            "index_version": self.index_version,
        }  # fmt: skip


def split_conversation(messages: Sequence[Message]) -> tuple[str, str, list[Message]]:
    """(client system text, question, history) from an OpenAI-style message list."""
    if not messages:
        raise ConversationError("messages is empty: send at least one user message")
    for i, m in enumerate(messages):
        if m.get("role") not in ("system", "user", "assistant"):
            raise ConversationError(
                f"messages[{i}].role is {m.get('role')!r}: use system, user or assistant"
            )
    if messages[-1]["role"] != "user":
        raise ConversationError("the last message must come from the user")
    question = messages[-1]["content"]
    if not question.strip():
        raise ConversationError("the last user message is empty")
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system").strip()
    history = [m for m in messages[:-1] if m["role"] != "system"]
    return system, question, history


class Pipeline:
    """answer(messages, route) -> Answer: retrieve if the mode asks, build the prompt, generate."""

    def __init__(
        self,
        generator: Generator,
        registry: AdapterRegistry,
        retriever: Retriever | None,
        config: ChatConfig,
        default_top_k: int = 4,
    ) -> None:
        self.generator = generator
        self.registry = registry
        self.retriever = retriever
        self.config = config
        self.default_top_k = default_top_k
        self._verified: dict[str, tuple[int, int, int]] = {}  # adapter key -> weights file stamp

    def route(self, model: str) -> Route:
        return Route.parse(self.config.default_model if model == "default" else model)

    def system_prompt(self, route: Route, adapter: Adapter | None, client: str) -> str:
        persona = client or (adapter and adapter.manifest.get("system_prompt")) or ""
        persona = persona or self.config.system_prompt
        return f"{persona}\n\n{self.config.rag_instructions}" if route.mode.retrieves else persona

    def _show(
        self, question: str, hits: list[Hit], weights: dict[str, float]
    ) -> tuple[list[Hit], Callable[[Hit], str] | None]:
        """The hits the prompt shows (`chat.evidence_passages` of them) and what of each."""
        chars, keep = self.config.focus_chars, self.config.evidence_passages
        if not keep or len(hits) <= keep:
            if not chars:
                return hits, None
            return hits, lambda hit: focus(hit.text, question, chars, weights, source_label(hit))
        chosen = evidence(
            hits,
            lambda hit: hit.text,
            question,
            chars or max(len(h.text) for h in hits),
            keep,
            weights,
            self._similarity(question, hits),
            label_of=source_label,
        )
        windows = {id(hit): text for hit, text in chosen}
        return [hit for hit, _ in chosen], lambda hit: windows[id(hit)]

    def _similarity(self, question: str, hits: Sequence[Hit]) -> Similarity | None:
        if self.retriever is None:
            return None
        if self.config.evidence_similarity == "chunk" and all("dense" in h.scores for h in hits):
            return lambda rows, _texts: [hits[i].scores["dense"] for i in rows]
        retriever = self.retriever

        def similarity(_rows: list[int], texts: list[str]) -> list[float]:
            query = retriever.query_vector(question)  # the search's own, usually kept
            return [float(v @ query) for v in retriever.embedder.embed_for_ranking(texts)]

        return similarity

    def retrieve(self, question: str, top_k: int, filters: Filters | None) -> list[Hit]:
        if self.retriever is None:
            raise UnknownModelError("retrieval is not available on this server")
        return self.retriever.retrieve(question, k=top_k, filters=filters)

    def prepare(
        self,
        messages: Sequence[Message],
        route: Route,
        params: GenerationParams,
        *,
        top_k: int | None = None,
        filters: Filters | None = None,
        hits: Sequence[Hit] | None = None,
    ) -> Prepared:
        """Resolve the adapter, retrieve (unless `hits` are given), fit the prompt to the window."""
        started = time.perf_counter()
        client_system, question, history = split_conversation(messages)
        adapter = self.resolve(route.adapter_ref) if route.adapter_ref else None
        retrieved: list[Hit] = []
        shown: list[Hit] = []
        excerpt: Callable[[Hit], str] | None = None
        unknown: tuple[str, ...] = ()
        if route.mode.retrieves:
            retrieved = list(hits) if hits is not None else self.retrieve(
                question, top_k or self.default_top_k, filters
            )  # fmt: skip
            shown = retrieved
            if retrieved and self.retriever is not None and self._weighs_terms():
                terms = self.retriever.terms(question)
                candidates = (
                    self._absent_candidates(question, retrieved, terms.unknown)
                    if self.config.absent_guard
                    else []
                )
                if candidates:
                    unknown = absent_terms(
                        candidates,
                        [h.text for h in retrieved],
                        self.retriever.embedder.embed,
                        self.config.absent_similarity,
                    )
                shown, excerpt = self._show(question, retrieved, terms.weights)
            elif self.config.focus_chars:
                shown, excerpt = self._show(question, retrieved, {})
        retrieved_at = time.perf_counter()
        budget = self.generator.context_window - params.max_new_tokens - PROMPT_MARGIN
        prompt, used = build_messages(
            question,
            [] if unknown else shown,
            system=self.system_prompt(route, adapter, client_system),
            count_tokens=self.generator.count_tokens,
            budget=budget,
            history=history,
            excerpt=excerpt,
        )
        version = retrieved[0].index_version if retrieved else None
        if version is None and self.retriever is not None and route.mode.retrieves:
            version = self.retriever.index.current.version
        timings = {
            "retrieve_s": retrieved_at - started,
            "prompt_s": time.perf_counter() - retrieved_at,
        }
        tokens = 0 if unknown else self.generator.count_tokens(prompt)
        numbers = None
        if used and not unknown and self.config.number_check:
            shown_texts = [excerpt(hit) if excerpt else hit.text for hit in used]
            topic = set(wanted_terms(question))
            numbers = NumberCheck.of(prompt, shown_texts, topic)
        return Prepared(
            route, adapter, prompt, used, retrieved, version, tokens, timings, unknown, numbers
        )

    def _absent_candidates(
        self, question: str, retrieved: Sequence[Hit], unknown: Sequence[str]
    ) -> list[str]:
        """The words the absent guard weighs: those no document holds, and with `absent_scope`
        'retrieved' also those no retrieved passage holds (numbers never: "2024" may be written
        otherwise)."""
        words = list(unknown)
        if self.config.absent_scope == "retrieved":
            held: set[str] = set()
            for hit in retrieved:
                held |= stems(f"{hit.chunk.context} {hit.text}")
            for word in query_words(question):
                numeric = any(c.isdigit() for c in word)
                if word not in words and not numeric and not stems(word) & held:
                    words.append(word)
        return words

    def _weighs_terms(self) -> bool:
        """Whether answers need the question's words counted in the index."""
        return self.config.absent_guard or bool(self.config.evidence_passages)

    def generate(self, prepared: Prepared, params: GenerationParams) -> Answer:
        started = time.perf_counter()
        if prepared.canned is not None:
            done = Completion(prepared.canned, 0, 0, "stop")
        elif self.config.loop_guard_words or prepared.numbers is not None:  # guards: stream
            stats = StreamStats()
            text = "".join(self.stream(prepared, params, None, stats))
            done = Completion(
                text, prepared.prompt_tokens, stats.completion_tokens, stats.finish_reason
            )
        else:
            done = self.generator.generate(prepared.messages, params, prepared.adapter)
        timings = {**prepared.timings, "generate_s": time.perf_counter() - started}
        return Answer(
            done.text,
            prepared.route.mode,
            prepared.adapter,
            prepared.hits,
            Usage(done.prompt_tokens, done.completion_tokens),
            timings,
            done.finish_reason,
            prepared.index_version,
            prepared.retrieved,
        )

    def answer(
        self,
        messages: Sequence[Message],
        route: Route,
        params: GenerationParams,
        **kwargs: Any,
    ) -> Answer:
        return self.generate(self.prepare(messages, route, params, **kwargs), params)

    def stream(
        self,
        prepared: Prepared,
        params: GenerationParams,
        stop: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        """Text pieces; setting `stop` ends the generation at the next token; `stats` gets the
        model's own token count when the stream ends. A generation that starts to loop is
        ended by the repetition guard (`chat.loop_guard_words`), one about to state a number
        its prompt does not hold by the number check (`chat.number_check`)."""
        if prepared.canned is not None:
            return iter([prepared.canned])
        stop = stop or threading.Event()
        if prepared.numbers is None:
            return self._generated(prepared.messages, prepared, params, stop, stats)
        return self._checked(prepared, prepared.numbers, params, stop, stats)

    def _generated(
        self,
        messages: list[Message],
        prepared: Prepared,
        params: GenerationParams,
        stop: threading.Event,
        stats: StreamStats | None,
        guard: bool = True,
    ) -> Iterator[str]:
        words = self.config.loop_guard_words if guard else 0
        pieces = self.generator.stream(messages, params, prepared.adapter, stop, stats)
        return guarded(pieces, stop, words) if words else pieces

    def _checked(
        self,
        prepared: Prepared,
        check: NumberCheck,
        params: GenerationParams,
        stop: threading.Event,
        stats: StreamStats | None,
    ) -> Iterator[str]:
        """The answer under the number check. When it refuses a number, the answer gives the
        source's words. With an adapter, the model then goes on after them, as the assistant's
        own text, so the adapter's voice closes the answer (its sign-off); a number refused
        there, or a repetition of what was said, ends the answer before its sentence. Both
        parts share `max_new_tokens`. Without an adapter the source's words end the answer:
        the plain model only adds another try at the answer."""
        text, used = "", 0
        messages = prepared.messages
        for first in (True, False):
            part_stop, part_stats, refused = Linked(stop), StreamStats(), list[str]()
            budget = replace(params, max_new_tokens=params.max_new_tokens - used)
            # The first part has the repetition guard; the second, checked by whole sentences,
            # leaves out a sentence that repeats what the first said.
            pieces = self._generated(messages, prepared, budget, part_stop, part_stats, first)
            words = 0 if first else self.config.loop_guard_words
            for piece in checked(pieces, part_stop, check, quote=first, refused=refused,
                                 before=text, words=words):  # fmt: skip
                text += piece
                yield piece
            used += part_stats.completion_tokens
            if not refused or stop.is_set() or used >= params.max_new_tokens:
                break
            if prepared.adapter is None or not self.generator.continues:
                break
            messages = [*prepared.messages, {"role": "assistant", "content": text}]
        if stats is not None:  # the finish is the last part's
            stats.completion_tokens, stats.finish_reason = used, part_stats.finish_reason

    def resolve(self, ref: str) -> Adapter:
        """The adapter `ref` names, verified for this base model (safetensors only, checksum)
        before any answer starts, so even a stream fails with a proper status; a verified
        weights file is not hashed again until it changes."""
        adapter = self.registry.resolve(ref)
        weights = (adapter.path / WEIGHTS).stat()
        stamp = (weights.st_mtime_ns, weights.st_size, weights.st_ino)
        if self._verified.get(adapter.key) != stamp:
            verify_adapter(adapter, self.generator.model_id)
            self._verified[adapter.key] = stamp
        return adapter
