"""Re-indexing without retraining: the shipped `brand` adapter (trained before this document
existed) answers from a document added afterwards, and attributes the answer to it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from eval.metrics import contains_fact, supports
from eval.text import citations, split_sentences
from retrieval.indexer import IngestRoot
from serve.pipeline import Route
from serve.services import Services
from serve.settings import Settings
from tests.conftest import CORPUS, ROOT
from tuning.adapter_io import import_adapter
from tuning.generator import GenerationParams

SHIPPED = ROOT / "data" / "adapters" / "brand"
NEW_ID = "policies/helmet-loan.md"
NEW_DOCUMENT = """# Helmet Loan Scheme

*Marlowe & Finch Cycles Ltd · Customer Support · from 1 March 2026*

Customers who collect a new bike from the Wrenmouth showroom can borrow a Marlowe & Finch
helmet while they choose their own. The loan lasts 21 days and the deposit is 35 GBP, refunded
in full when the helmet comes back undamaged. Ask at the showroom desk on extension 240.
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "fact"),
    [
        ("How long can I borrow a helmet under the Helmet Loan Scheme?", "21 days"),
        ("What deposit does the Helmet Loan Scheme ask for?", "35 GBP"),
    ],
)
def test_a_document_added_after_training_is_answered_from_that_document(
    tmp_path: Path, model_cache_dir: Path, question: str, fact: str
) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=model_cache_dir)
    services = Services.build(settings)
    services.indexer().ingest([IngestRoot(corpus)], sync=True)
    adapter, _ = import_adapter(services.registry, SHIPPED)
    trained_on = adapter.manifest.get("index_version") or 0  # the index it was trained beside
    # After training: the document arrives and the index follows; the adapter stays as it is.
    (corpus / "policies" / "helmet-loan.md").write_text(NEW_DOCUMENT, "utf-8")
    report = services.indexer().ingest([IngestRoot(corpus)], sync=True)
    assert report.documents.added == 1 and report.index_version > trained_on
    answer = services.pipeline().answer(
        [{"role": "user", "content": question}],
        Route.parse(f"rag+tuned:{adapter.ref}"),
        GenerationParams(max_new_tokens=96),
    )
    assert answer.adapter is not None and answer.adapter.ref == adapter.ref
    assert answer.index_version == report.index_version
    assert contains_fact(answer.text, fact), answer.text
    # The fact comes from the new document: the sentence stating it is supported by that
    # document's passage, and the answer cites it: its [n] name that document and no other.
    new = {n: h for n, h in enumerate(answer.hits, start=1) if h.document_id == NEW_ID}
    assert new, [h.document_id for h in answer.hits]
    stating = [s for s in split_sentences(answer.text) if contains_fact(s, fact)]
    assert stating and all(any(supports(h.text, s) for h in new.values()) for s in stating)
    cited = set(citations(answer.text))
    assert cited and cited <= set(new), (answer.text, sorted(new))
