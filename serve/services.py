"""Composition root: the embedder, index, generator, registry and pipeline, from `Settings`."""

from __future__ import annotations

from dataclasses import dataclass, field

from retrieval.embedder import Embedder, build_embedder
from retrieval.index import Index
from retrieval.indexer import Indexer, Progress
from retrieval.retriever import Retriever
from serve.pipeline import Pipeline
from serve.settings import Settings
from tuning.adapters import AdapterRegistry
from tuning.backends import build_generator
from tuning.generator import Generator


@dataclass
class Services:
    """The long-lived objects one process shares."""

    settings: Settings
    embedder: Embedder
    index: Index
    registry: AdapterRegistry = field(init=False)
    _generator: Generator | None = None

    def __post_init__(self) -> None:
        self.registry = AdapterRegistry(self.settings.adapters_dir)

    @classmethod
    def build(
        cls, settings: Settings, *, allow_embedder_change: bool = False, generator: bool = False
    ) -> Services:
        embedder = build_embedder(settings.embedder)
        index = Index(
            settings.index_dir,
            embedder_model_id=embedder.model_id,
            dim=embedder.dim,
            config=settings.index,
            allow_embedder_change=allow_embedder_change,
        )
        services = cls(settings, embedder, index)
        if generator:
            services.generator  # noqa: B018 (load it now, not on the first request)
        return services

    @property
    def generator(self) -> Generator:
        """Loaded on first use: ingest and search never pay for the language model."""
        if self._generator is None:
            self._generator = build_generator(self.settings.generator, self.settings.models_dir)
        return self._generator

    def indexer(self, progress: Progress | None = None) -> Indexer:
        return Indexer(self.index, self.embedder, self.settings.ingest, progress)

    def retriever(self) -> Retriever:
        return Retriever(self.index, self.embedder, self.settings.retrieval)

    def pipeline(self) -> Pipeline:
        return Pipeline(
            self.generator,
            self.registry,
            self.retriever(),
            self.settings.chat,
            self.settings.retrieval.top_k,
        )
