"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self, queue_depth: Callable[[], float], active: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        labels = ("mode", "adapter")
        self.requests = Counter("ragtune_chat_requests", "Chat requests by outcome.",
                                (*labels, "status"), registry=r)  # fmt: skip
        self.latency = Histogram("ragtune_chat_latency_seconds", "Whole-request latency.",
                                 labels, buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.ttft = Histogram("ragtune_chat_time_to_first_token_seconds",
                              "Streaming: time to the first text piece.", labels,
                              buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.tokens = Counter("ragtune_tokens", "Tokens read and written.",
                              (*labels, "kind"), registry=r)  # fmt: skip
        self.rag_requests = Counter("ragtune_rag_requests", "Requests in a retrieval mode.",
                                    registry=r)  # fmt: skip
        self.rag_empty = Counter("ragtune_rag_empty_context",
                                 "Retrieval-mode requests answered with no source in the prompt.",
                                 registry=r)  # fmt: skip
        self.rag_unknown = Counter("ragtune_rag_unknown_terms",
                                   "Retrieval-mode requests answered without the model: a word "
                                   "of the question is in no document.", registry=r)  # fmt: skip
        self.rejected = Counter("ragtune_rejected", "Requests refused by admission control.",
                                ("reason",), registry=r)  # fmt: skip
        self.http = Counter("ragtune_http_requests", "Every HTTP request by route and status.",
                            ("route", "method", "status"), registry=r)  # fmt: skip
        Gauge("ragtune_queue_depth", "Requests waiting for a generation slot.",
              registry=r).set_function(queue_depth)  # fmt: skip
        Gauge("ragtune_generations_active", "Generations running now.",
              registry=r).set_function(active)  # fmt: skip
        Gauge("ragtune_rag_empty_context_ratio",
              "Share of retrieval-mode requests that found no usable source.",
              registry=r).set_function(self._empty_ratio)  # fmt: skip

    def _empty_ratio(self) -> float:
        total = self.rag_requests._value.get()
        return float(self.rag_empty._value.get() / total) if total else 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)
