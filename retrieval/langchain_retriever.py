"""ragtune's index as a LangChain `BaseRetriever`, so existing chains can use it unchanged."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from retrieval.config import SearchMode
from retrieval.read import Filters
from retrieval.retriever import Retriever


class RagtuneRetriever(BaseRetriever):
    """`RagtuneRetriever(retriever=services.retriever(), k=4).invoke("question")`.

    `k`, `mode`, `document_ids` and `source` can also be passed per call to `invoke`.
    Each LangChain Document carries the hit's chunk id, document id, source, page, score, rank
    and index version in its metadata.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Retriever
    k: int = Field(4, ge=1, le=1000)
    mode: SearchMode | None = None
    document_ids: tuple[str, ...] = ()
    source: str | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[LCDocument]:
        filters = Filters(
            tuple(kwargs.get("document_ids", self.document_ids)), kwargs.get("source", self.source)
        )
        hits = self.retriever.retrieve(
            query, int(kwargs.get("k", self.k)), filters, kwargs.get("mode", self.mode)
        )
        out = []
        for hit in hits:
            meta = hit.to_dict()
            text = meta.pop("text")
            out.append(LCDocument(page_content=text, metadata=meta, id=hit.chunk.id))
        return out
