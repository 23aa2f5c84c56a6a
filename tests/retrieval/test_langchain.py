"""ragtune's index as a LangChain retriever: the langchain-tests standard suite, and a real chain."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.runnables import RunnableLambda
from langchain_tests.integration_tests import RetrieversIntegrationTests

from ingest.config import IngestConfig
from retrieval.embedder import Embedder
from retrieval.index import Index
from retrieval.indexer import Indexer
from retrieval.langchain_retriever import RagtuneRetriever
from retrieval.retriever import Retriever
from tests.conftest import CORPUS

_RETRIEVER: list[Retriever] = []


def corpus_retriever(tmp: Path, embedder: Embedder) -> Retriever:
    """The sample corpus indexed once with the real embedder (shared by the standard tests)."""
    if not _RETRIEVER:
        index = Index(tmp, embedder_model_id=embedder.model_id, dim=embedder.dim)
        Indexer(index, embedder, IngestConfig()).ingest([CORPUS])
        _RETRIEVER.append(Retriever(index, embedder))
    return _RETRIEVER[0]


@pytest.fixture(scope="module", autouse=True)
def _indexed(tmp_path_factory: pytest.TempPathFactory, real_embedder: Embedder) -> None:
    corpus_retriever(tmp_path_factory.mktemp("lc") / "index", real_embedder)


@pytest.mark.slow
class TestRagtuneRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[RagtuneRetriever]:
        return RagtuneRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"retriever": _RETRIEVER[0]}

    @property
    def retriever_query_example(self) -> str:
        return "How long is the warranty on the battery?"


@pytest.mark.slow
def test_metadata_and_filters_reach_langchain() -> None:
    lc = RagtuneRetriever(retriever=_RETRIEVER[0], k=3)
    docs = lc.invoke(
        "Aurora E3 brake lever clamp torque", document_ids=["manuals/aurora-e3-owners-manual.pdf"]
    )
    assert docs and all(
        d.metadata["document_id"] == "manuals/aurora-e3-owners-manual.pdf" for d in docs
    )
    assert all(isinstance(d.metadata["page"], int) for d in docs)
    assert docs[0].id == docs[0].metadata["chunk_id"]
    chain = lc | RunnableLambda(lambda ds: "\n\n".join(d.page_content for d in ds))
    assert "Nm" in chain.invoke("brake lever clamp torque")
