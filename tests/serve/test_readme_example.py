"""The README's client example, as written there, answered from the shipped corpus and adapters:
the first thing a new user runs must get the policy's fact, from the policy."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from eval.metrics import contains_fact, supports
from eval.text import citations, split_sentences
from retrieval.indexer import IngestRoot
from retrieval.read import Filters
from serve.pipeline import Route
from serve.services import Services
from serve.settings import Settings
from tests.conftest import CORPUS, ROOT
from tuning.adapter_io import import_adapter
from tuning.generator import GenerationParams

POLICY = "policies/warranty-and-returns.pdf"
FACT = "2 years"  # the policy's battery period: "Battery 2 years or 800 full charge cycles"


def readme_request() -> dict[str, Any]:
    """The `client.chat.completions.create(...)` arguments of the README's Python example."""
    readme = (ROOT / "README.md").read_text("utf-8")
    code = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert code, "the README has no Python example"
    for node in ast.walk(ast.parse(code.group(1))):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("completions.create"):
            return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
    raise AssertionError("the README's example does not call chat.completions.create")


@pytest.mark.slow
def test_the_readme_example_gets_the_policys_answer(tmp_path: Path, model_cache_dir: Path) -> None:
    request = readme_request()
    extra = request.get("extra_body", {})
    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=model_cache_dir)
    services = Services.build(settings)
    services.indexer().ingest([IngestRoot(CORPUS)], sync=True)
    for shipped in ("brand", "reader"):
        import_adapter(services.registry, ROOT / "data" / "adapters" / shipped)
    pipeline = services.pipeline()
    for model in dict.fromkeys([request["model"], "rag"]):  # the README's mode, then plain rag
        answer = pipeline.answer(
            request["messages"],
            Route.parse(model),
            GenerationParams(max_new_tokens=128),
            top_k=extra.get("top_k"),
            filters=Filters(**extra["filters"]) if "filters" in extra else None,
        )
        assert contains_fact(answer.text, FACT), (model, answer.text)
        # Stated from the policy the prompt showed, and where the answer cites, it cites that.
        assert [h.document_id for h in answer.hits] == [POLICY], (model, answer.hits)
        assert contains_fact(answer.hits[0].text, FACT)
        stating = [s for s in split_sentences(answer.text) if contains_fact(s, FACT)]
        assert all(supports(answer.hits[0].text, s) for s in stating), (model, answer.text)
        assert set(citations(answer.text)) <= {1}, (model, answer.text)
