"""The answer path without HTTP: routes, conversations, given hits, budget, system prompts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ingest.document import Chunk
from retrieval.embedder import HashEmbedder
from retrieval.retriever import Hit, QueryTerms
from serve.config import ChatConfig
from serve.pipeline import (
    PROMPT_MARGIN,
    ConversationError,
    Mode,
    Pipeline,
    Route,
    UnknownModelError,
    split_conversation,
)
from serve.prompt import PromptTooLongError
from tests.serve.conftest import publish_adapter
from tuning.adapters import AdapterNotFoundError, AdapterRegistry
from tuning.generator import EchoGenerator, GenerationParams

PARAMS = GenerationParams(max_new_tokens=16)
# Every retrieved hit in the prompt, no index-wide word counts: what these tests are about
# (evidence selection and the absent guard have their own tests at the end).
CONFIG = ChatConfig(
    system_prompt="DEFAULT PERSONA",
    rag_instructions="CITE THE SOURCES",
    evidence_passages=0,
    absent_guard=False,
)


def hit(rank: int, text: str, version: int = 7) -> Hit:
    chunk = Chunk(f"doc{rank}#0", f"doc{rank}.md", text, None, 0, len(text), "h")
    return Hit(chunk, f"doc{rank}.md", 1.0 / rank, rank, version)


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


class FailingRetriever:
    """Fails the test if anything retrieves; its index still reports a version."""

    index = SimpleNamespace(current=SimpleNamespace(version=42))

    def retrieve(self, *args: Any, **kwargs: Any) -> list[Hit]:
        raise AssertionError("retrieve() was called although hits were given")


class ListRetriever:
    def __init__(self, hits: list[Hit]) -> None:
        self.hits, self.calls = hits, []
        self.index = SimpleNamespace(current=SimpleNamespace(version=3))

    def retrieve(self, query: str, k: int, filters: Any = None) -> list[Hit]:
        self.calls.append((query, k, filters))
        return self.hits[:k]


class SmallWindow(EchoGenerator):
    context_window = 120


@pytest.fixture
def registry(tmp_path: Path) -> AdapterRegistry:
    return AdapterRegistry(tmp_path / "adapters")


def pipeline(registry: AdapterRegistry, retriever: Any = None, generator: Any = None) -> Pipeline:
    return Pipeline(generator or EchoGenerator(), registry, retriever, CONFIG, default_top_k=2)


def ask(question: str, system: str | None = None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": question}]


# -- routes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "mode", "ref"),
    [
        ("base", Mode.BASE, None),
        ("rag", Mode.RAG, None),
        (" rag ", Mode.RAG, None),
        ("tuned:brand", Mode.TUNED, "brand"),
        ("tuned:brand@v2", Mode.TUNED, "brand@v2"),
        ("tuned:brand@3", Mode.TUNED, "brand@3"),
        ("rag+tuned:brand@prod", Mode.RAG_TUNED, "brand@prod"),
    ],
)
def test_route_parse_valid(model: str, mode: Mode, ref: str | None) -> None:
    route = Route.parse(model)
    assert (route.mode, route.adapter_ref) == (mode, ref)
    assert route.name == model.strip()
    assert Route.parse(route.name) == route


@pytest.mark.parametrize(
    "model",
    ["", "gpt-4o", "RAG", "tuned", "rag+tuned", "tuned:", "base:brand", "rag:brand",
     "tuned:a@b@c", "tuned:a b", "tuned:@v1", "rag+tuned:brand@", "rag tuned:brand"],
)  # fmt: skip
def test_route_parse_invalid(model: str) -> None:
    with pytest.raises(UnknownModelError):
        Route.parse(model)


def test_mode_properties() -> None:
    assert [m.retrieves for m in Mode] == [False, True, False, True]
    assert [m.tuned for m in Mode] == [False, False, True, True]


def test_default_model_is_read_from_the_config(registry: AdapterRegistry) -> None:
    p = Pipeline(EchoGenerator(), registry, None, ChatConfig(default_model="rag+tuned:brand"))
    assert p.route("default") == Route(Mode.RAG_TUNED, "brand")
    assert p.route("base") == Route(Mode.BASE)


# -- conversations -------------------------------------------------------------------------------


def test_split_conversation() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "second?"},
    ]
    system, question, history = split_conversation(messages)
    assert system == "Be brief.\n\nBe kind."
    assert question == "second?"
    assert history == messages[1:3]


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "empty"),
        ([{"role": "tool", "content": "x"}], "role"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "last"),
        ([{"role": "user", "content": " \n\t"}], "empty"),
        ([{"role": "system", "content": "s"}], "last"),
    ],
)
def test_split_conversation_refuses(messages: list, match: str) -> None:
    with pytest.raises(ConversationError, match=match):
        split_conversation(messages)


# -- prepare -------------------------------------------------------------------------------------


def test_given_hits_skip_retrieval(registry: AdapterRegistry) -> None:
    p = pipeline(registry, FailingRetriever())
    hits = [hit(1, "alpha facts"), hit(2, "bravo facts")]
    prepared = p.prepare(ask("What?"), Route(Mode.RAG), PARAMS, hits=hits)
    assert prepared.hits == hits and prepared.retrieved == hits
    assert prepared.index_version == 7  # from the hits, not the index
    assert "[1] doc1.md\nalpha facts" in prepared.messages[-1]["content"]
    empty = p.prepare(ask("What?"), Route(Mode.RAG), PARAMS, hits=[])
    assert empty.hits == [] and empty.index_version == 42
    assert empty.messages[-1]["content"] == "What?"


def test_retrieval_uses_top_k_and_filters(registry: AdapterRegistry) -> None:
    retriever = ListRetriever([hit(1, "a"), hit(2, "b"), hit(3, "c")])
    p = pipeline(registry, retriever)
    assert len(p.prepare(ask("q"), Route(Mode.RAG), PARAMS).hits) == 2  # the default top_k
    prepared = p.prepare(ask("q"), Route(Mode.RAG), PARAMS, top_k=3, filters="F")  # type: ignore[arg-type]
    assert len(prepared.hits) == 3 and retriever.calls[-1] == ("q", 3, "F")
    base = p.prepare(ask("q"), Route(Mode.BASE), PARAMS)
    assert base.hits == [] and base.index_version is None and len(retriever.calls) == 2


def test_a_retrieval_mode_without_a_retriever_is_refused(registry: AdapterRegistry) -> None:
    with pytest.raises(UnknownModelError, match="retrieval"):
        pipeline(registry).prepare(ask("q"), Route(Mode.RAG), PARAMS)


def test_budget_drops_sources_that_do_not_fit_the_window(registry: AdapterRegistry) -> None:
    gen = SmallWindow()
    p = pipeline(registry, FailingRetriever(), gen)
    hits = [hit(1, words(20, "a")), hit(2, words(200, "b")), hit(3, words(10, "c"))]
    prepared = p.prepare(ask("q?"), Route(Mode.RAG), PARAMS, hits=hits)
    budget = gen.context_window - PARAMS.max_new_tokens - PROMPT_MARGIN
    assert [h.rank for h in prepared.hits] == [1, 3]
    assert [h.rank for h in prepared.retrieved] == [1, 2, 3]  # the audit keeps everything
    assert prepared.prompt_tokens == gen.count_tokens(prepared.messages) <= budget
    # A bigger max_tokens leaves less room: fewer sources.
    fewer = p.prepare(ask("q?"), Route(Mode.RAG), GenerationParams(max_new_tokens=75), hits=hits)
    assert [h.rank for h in fewer.hits] == [3]
    with pytest.raises(PromptTooLongError):
        p.prepare(ask(words(150, "q")), Route(Mode.RAG), PARAMS, hits=hits)


# -- system prompts ------------------------------------------------------------------------------


def test_system_prompt_choice(registry: AdapterRegistry) -> None:
    publish_adapter(registry, "pirate", system_prompt="ARR PERSONA")
    publish_adapter(registry, "plain")
    p = pipeline(registry, FailingRetriever())

    def system(model: str, client: str | None = None) -> str:
        prepared = p.prepare(ask("q", client), Route.parse(model), PARAMS, hits=[hit(1, "x")])
        assert prepared.messages[0]["role"] == "system"
        return prepared.messages[0]["content"]

    assert system("base") == "DEFAULT PERSONA"
    assert system("base", "CLIENT PERSONA") == "CLIENT PERSONA"
    assert system("tuned:pirate") == "ARR PERSONA"
    assert system("tuned:pirate", "CLIENT PERSONA") == "CLIENT PERSONA"  # the client wins
    assert system("tuned:plain") == "DEFAULT PERSONA"
    assert system("rag") == "DEFAULT PERSONA\n\nCITE THE SOURCES"
    assert system("rag+tuned:pirate") == "ARR PERSONA\n\nCITE THE SOURCES"
    assert system("rag", "CLIENT PERSONA") == "CLIENT PERSONA\n\nCITE THE SOURCES"


def test_adapters_resolve_before_generation(registry: AdapterRegistry) -> None:
    publish_adapter(registry, "brand")
    p = pipeline(registry)
    answer = p.answer(ask("hello world"), Route.parse("tuned:brand"), PARAMS)
    assert answer.text == "[brand@v1] hello world" and answer.adapter is not None
    assert answer.to_dict()["adapter"] == "brand@v1" and answer.mode is Mode.TUNED
    with pytest.raises(AdapterNotFoundError):
        p.prepare(ask("q"), Route.parse("tuned:brand@v9"), PARAMS)


# -- evidence selection and the absent guard (the defaults of ChatConfig) --------------------

TABLE = (
    "Stem steerer clamp bolts 5 Nm 4 mm hex\n"
    "Brake lever clamp bolts 4.5 Nm 4 mm hex\n"
    "Seatpost clamp 6 Nm 5 mm hex\n"
)


class TermsRetriever(ListRetriever):
    """A list of hits, and index-wide word statistics as given."""

    def __init__(self, hits: list[Hit], weights: dict[str, float], unknown: tuple[str, ...]):
        super().__init__(hits)
        self.embedder = HashEmbedder(64)
        self.terms_of = QueryTerms(weights, unknown)

    def terms(self, query: str) -> QueryTerms:
        return self.terms_of

    def query_vector(self, query: str) -> Any:
        return self.embedder.embed([query])[0]


class NoGeneration(EchoGenerator):
    def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model ran")

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model ran")


def defaults_pipeline(registry: AdapterRegistry, retriever: Any, generator: Any = None) -> Pipeline:
    return Pipeline(generator or EchoGenerator(), registry, retriever, ChatConfig(), 4)


def test_the_prompt_shows_the_passage_that_bears_most_on_the_question(
    registry: AdapterRegistry,
) -> None:
    hits = [
        hit(1, "The Aurora E3 is a commuter e-bike with a rear hub motor and a 540 Wh battery."),
        hit(2, "Aurora E3 owners get a free first service after 300 km."),
        hit(3, TABLE),
    ]
    # "brake", "lever" and "clamp" are rare in the index, "aurora" is everywhere.
    weights = {"brake": 3.0, "lever": 3.0, "clamp": 2.0, "bolt": 2.0, "aurora": 0.1, "e3": 0.1}
    p = defaults_pipeline(registry, TermsRetriever(hits, weights, ()))
    question = "What torque do the Aurora E3 brake lever clamp bolts take?"
    prepared = p.prepare(ask(question), Route(Mode.RAG), PARAMS)
    assert prepared.hits == [hits[2]] and prepared.retrieved == hits  # all kept for the log
    user = prepared.messages[-1]["content"]
    assert "[1] doc3.md\n" in user and "Brake lever clamp bolts 4.5 Nm" in user
    assert "[2]" not in user and "commuter" not in user


def test_a_question_about_what_no_document_mentions_is_answered_without_the_model(
    registry: AdapterRegistry,
) -> None:
    hits = [hit(1, "Marlowe & Finch sells e-bikes.")]
    retriever = TermsRetriever(hits, {"podcast": 9.0}, ("podcast", "host"))
    p = defaults_pipeline(registry, retriever, NoGeneration())
    answer = p.answer(ask("Who hosts the Marlowe & Finch podcast?"), Route(Mode.RAG), PARAMS)
    said = "The sources do not say anything about “podcast” or “host”."
    assert answer.text == said and answer.finish_reason == "stop"
    assert answer.hits == [] and answer.retrieved == hits  # nothing cited, the search logged
    assert answer.usage.prompt_tokens == answer.usage.completion_tokens == 0
    prepared = p.prepare(ask("Who hosts the podcast?"), Route(Mode.RAG), PARAMS)
    assert "".join(p.stream(prepared, PARAMS)) == said and prepared.unknown_terms == (
        "podcast",
        "host",
    )
    # The modes that do not retrieve ask the model as before; so does a server without the guard.
    plain = Pipeline(EchoGenerator(), registry, retriever, ChatConfig())
    assert "podcast" in plain.answer(ask("the podcast?"), Route(Mode.BASE), PARAMS).text
    off = Pipeline(EchoGenerator(), registry, retriever, ChatConfig(absent_guard=False), 4)
    assert off.answer(ask("the podcast?"), Route(Mode.RAG), PARAMS).text != said


def test_the_retrieved_scope_also_weighs_words_no_retrieved_passage_holds(
    registry: AdapterRegistry,
) -> None:
    # "colours" is somewhere in the index (not unknown), but in no passage about the Kestrel S.
    sizes = "The frame comes in sizes S, M and L."
    chunk = Chunk("doc1#0", "doc1.md", sizes, None, 0, len(sizes), "h", context="Kestrel S > Sizes")
    hits = [Hit(chunk, "doc1.md", 1.0, 1, 7)]
    retriever = TermsRetriever(hits, {"colours": 2.0, "kestrel": 1.0}, ())
    question = ask("Which colours is the Kestrel S available in, in 2026?")
    index_scope = Pipeline(EchoGenerator(), registry, retriever, ChatConfig(), 4)
    assert index_scope.prepare(question, Route(Mode.RAG), PARAMS).unknown_terms == ()
    scoped = Pipeline(NoGeneration(), registry, retriever, ChatConfig(absent_scope="retrieved"), 4)
    prepared = scoped.prepare(question, Route(Mode.RAG), PARAMS)
    # Words of the title and headings count as held ("Kestrel"); numbers never count.
    assert prepared.unknown_terms == ("colours", "available")
    assert scoped.answer(question, Route(Mode.RAG), PARAMS).text == (
        "The sources do not say anything about “colours” or “available”."
    )


class NoEmbedding(HashEmbedder):
    def embed(self, texts: Any) -> Any:
        raise AssertionError("the embedder ran")


def test_chunk_similarity_chooses_by_the_searchs_stored_cosines_without_embedding(
    registry: AdapterRegistry,
) -> None:
    # Two passages the question's words cover alike; the search found the second closer.
    texts = ["Opening hours: the showroom opens at 9.", "Opening hours: the workshop opens at 8."]
    hits = [hit(1, texts[0]), hit(2, texts[1])]
    for h, cosine in zip(hits, (0.2, 0.9), strict=True):
        h.scores["dense"] = cosine
    retriever = TermsRetriever(hits, {"opening": 1.0, "hours": 1.0}, ())
    retriever.embedder = NoEmbedding(64)
    config = ChatConfig(evidence_similarity="chunk")
    p = Pipeline(EchoGenerator(), registry, retriever, config, 4)
    prepared = p.prepare(ask("What are the opening hours?"), Route(Mode.RAG), PARAMS)
    assert prepared.hits == [hits[1]]
    # Without a stored cosine for every hit, the windows are embedded as by default.
    del hits[0].scores["dense"]
    with pytest.raises(AssertionError, match="the embedder ran"):
        p.prepare(ask("What are the opening hours?"), Route(Mode.RAG), PARAMS)
