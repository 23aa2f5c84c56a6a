"""Composition root: builds the embedder, index, indexer and retriever from `Settings`."""

from __future__ import annotations

from dataclasses import dataclass

from retrieval.embedder import Embedder, build_embedder
from retrieval.index import Index
from retrieval.indexer import Indexer, Progress
from retrieval.retriever import Retriever
from serve.settings import Settings


@dataclass
class Services:
    """The long-lived objects one process shares."""

    settings: Settings
    embedder: Embedder
    index: Index

    @classmethod
    def build(cls, settings: Settings, *, allow_embedder_change: bool = False) -> Services:
        embedder = build_embedder(settings.embedder)
        index = Index(
            settings.index_dir,
            embedder_model_id=embedder.model_id,
            dim=embedder.dim,
            config=settings.index,
            allow_embedder_change=allow_embedder_change,
        )
        return cls(settings, embedder, index)

    def indexer(self, progress: Progress | None = None) -> Indexer:
        return Indexer(self.index, self.embedder, self.settings.ingest, progress)

    def retriever(self) -> Retriever:
        return Retriever(self.index, self.embedder, self.settings.retrieval)
