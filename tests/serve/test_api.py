"""Chat over HTTP: modes, adapters (resolution, promote/rollback live), streaming, stop, retrieval."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.serve.conftest import Server, ServerFactory, sse_events

QUESTION = "When does the Zephyrine festival open?"


def content(res: Any) -> str:
    assert res.status_code == 200, res.text
    return res.json()["choices"][0]["message"]["content"]


def stream(server: Server, **body: Any) -> list[tuple[str | None, str]]:
    payload = {"model": "rag", "stream": True, **body}
    res = server.client.post("/v1/chat/completions", json=payload)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/event-stream")
    return sse_events(res.text)


def streamed_text(events: list[tuple[str | None, str]]) -> str:
    chunks = [json.loads(d) for name, d in events if name is None and d != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


# -- plain answers -------------------------------------------------------------------------------


def test_rag_answer_cites_the_matching_document(server: Server) -> None:
    res = server.chat(QUESTION)
    body = res.json()
    assert res.status_code == 200, res.text
    assert body["object"] == "chat.completion" and body["model"] == "rag"
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    sources = body["sources"]
    assert sources[0]["document_id"] == "harbor.md" and sources[0]["rank"] == 1
    assert "Zephyrine harbor festival" in sources[0]["text"]
    assert [s["rank"] for s in sources] == list(range(1, len(sources) + 1))
    assert {"chunk_id", "score", "source", "page", "start", "end", "index_version"} <= set(
        sources[0]
    )
    # The echo generator repeats the user turn: the sources were numbered into the prompt.
    assert "[1] harbor.md" in choice["message"]["content"]
    assert body["ragtune"]["mode"] == "rag" and body["ragtune"]["adapter"] is None
    assert body["ragtune"]["index_version"] == server.index_version == sources[0]["index_version"]
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_base_answer_has_no_sources(server: Server) -> None:
    body = server.chat("Zephyrine festival?", model="base").json()
    assert body["model"] == "base" and body["sources"] == []
    assert body["choices"][0]["message"]["content"] == "Zephyrine festival?"
    assert body["ragtune"] == {**body["ragtune"], "mode": "base", "index_version": None}


def test_default_model_follows_the_configuration(make_server: ServerFactory) -> None:
    rag = make_server()
    body = rag.chat(QUESTION, model="default").json()
    assert body["model"] == "rag" and body["sources"]
    base = make_server(chat={"default_model": "base"})
    body = base.chat(QUESTION, model="default").json()
    assert body["model"] == "base" and body["sources"] == []


def test_max_tokens_cuts_the_answer_with_finish_reason_length(server: Server) -> None:
    body = server.chat("one two three four five", model="base", max_tokens=3).json()
    assert body["choices"][0]["message"]["content"] == "one two three"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_history_and_content_parts_are_accepted(server: Server) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "second "}, {"type": "text", "text": "part"}],
        },
    ]
    assert content(server.chat(model="base", messages=messages)) == "second part"


# -- adapters ------------------------------------------------------------------------------------


@pytest.fixture
def brand(server: Server) -> Server:
    server.publish("brand", system_prompt="Speak like a pirate.")
    server.publish("brand")
    return server


@pytest.mark.parametrize(
    ("model", "answered_by"),
    [
        ("tuned:brand", "brand@v2"),  # no prod alias: the newest version
        ("tuned:brand@v1", "brand@v1"),
        ("tuned:brand@1", "brand@v1"),
        ("rag+tuned:brand@v2", "brand@v2"),
    ],
)
def test_tuned_models_answer_through_the_named_adapter(
    brand: Server, model: str, answered_by: str
) -> None:
    body = brand.chat("Zephyrine?", model=model).json()
    text = body["choices"][0]["message"]["content"]
    assert text.startswith(f"[{answered_by}] ")
    mode = model.split(":")[0]
    assert body["model"] == f"{mode}:{answered_by}"
    assert body["ragtune"]["adapter"] == answered_by
    assert bool(body["sources"]) == (mode == "rag+tuned")


def test_promote_and_rollback_take_effect_on_the_next_request(brand: Server) -> None:
    c = brand.client

    def answered_by(model: str) -> str:
        return content(brand.chat("hello", model=model)).split()[0]

    res = c.post("/v1/adapters/brand/promote", json={"version": "1"})
    assert res.status_code == 200, res.text
    assert res.json()["ref"] == "brand@v1" and res.json()["alias"] == "prod"
    assert answered_by("tuned:brand") == "[brand@v1]"  # the bare name follows prod
    assert answered_by("tuned:brand@prod") == "[brand@v1]"
    assert c.post("/v1/adapters/brand/promote", json={"version": "v2"}).status_code == 200
    assert answered_by("tuned:brand@prod") == "[brand@v2]"
    res = c.post("/v1/adapters/brand/rollback", json={})
    assert res.status_code == 200 and res.json()["version"] == 1
    assert answered_by("tuned:brand") == "[brand@v1]"
    res = c.post("/v1/adapters/brand/rollback", json={})
    assert res.status_code == 400 and res.json()["error"]["code"] == "invalid_adapter"
    brand.publish("brand")  # v3 appears at once; prod still decides the bare name
    assert answered_by("tuned:brand@v3") == "[brand@v3]"
    assert answered_by("tuned:brand") == "[brand@v1]"


def test_adapter_routes_list_show_and_delete(brand: Server) -> None:
    c = brand.client
    c.post("/v1/adapters/brand/promote", json={"version": "2", "alias": "candidate"})
    rows = c.get("/v1/adapters").json()["data"]
    assert [(r["ref"], r["aliases"]) for r in rows] == [
        ("brand@v1", []),
        ("brand@v2", ["candidate"]),
    ]
    shown = c.get("/v1/adapters/brand").json()
    assert shown["aliases"] == {"candidate": 2}
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert shown["versions"][0]["system_prompt"] == "Speak like a pirate."
    res = c.delete("/v1/adapters/brand", params={"version": 2})
    assert res.status_code == 400 and "candidate" in res.json()["error"]["message"]
    res = c.delete("/v1/adapters/brand", params={"version": 1})
    assert res.status_code == 200 and res.json()["versions"] == [1]
    res = brand.chat("hi", model="tuned:brand@v1")
    assert res.status_code == 404 and res.json()["error"]["code"] == "adapter_not_found"
    assert c.get("/v1/adapters/nobody").status_code == 404
    assert c.get("/v1/adapters/Bad%20Name").status_code == 400
    assert c.get("/health").json()["adapters"] == 1
    c.post("/v1/adapters/brand/rollback", json={"alias": "candidate"})  # nothing earlier: 400
    assert c.delete("/v1/adapters/brand", params={"version": 2}).status_code == 400
    res = c.delete("/v1/adapters/brand")  # every version, aliases or not
    assert res.status_code == 200 and res.json()["versions"] == [2]
    assert c.get("/v1/adapters").json()["data"] == []
    assert c.get("/v1/adapters/brand").status_code == 404
    assert c.get("/health").json()["adapters"] == 0
    assert not [m for m in c.get("/v1/models").json()["data"] if "brand" in m["id"]]
    assert brand.publish("brand").version == 3  # numbers are never reused


def test_models_lists_every_mode_and_adapter_reference(brand: Server) -> None:
    brand.client.post("/v1/adapters/brand/promote", json={"version": "1"})
    body = brand.client.get("/v1/models").json()
    ids = [m["id"] for m in body["data"]]
    assert ids[:3] == ["default", "base", "rag"]
    for mode in ("tuned", "rag+tuned"):
        for ref in ("brand", "brand@prod", "brand@v1", "brand@v2"):
            assert f"{mode}:{ref}" in ids
    row = next(m for m in body["data"] if m["id"] == "rag+tuned:brand@v2")
    assert row["object"] == "model" and row["ragtune"] == {
        "mode": "rag+tuned",
        "adapter": "brand@v2",
    }
    # Every listed id is servable.
    for model in ids:
        assert brand.chat("hi", model=model).status_code == 200, model


def test_adapters_for_another_base_model_are_not_listed(server: Server) -> None:
    smol = "HuggingFaceTB/SmolLM2-135M-Instruct"
    server.publish("other", base_model_id=smol)
    server.publish("mixed")
    server.publish("mixed", base_model_id=smol)  # v2, the newest, is not for this model
    server.services.registry.promote("mixed@v2", "candidate")
    ids = {m["id"] for m in server.client.get("/v1/models").json()["data"]}
    tuned = sorted(i for i in ids if i.startswith("tuned:"))
    assert tuned == ["tuned:mixed@v1"]  # not `mixed` (resolves to v2), not @candidate, not other


# -- streaming -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["rag", "base", "rag+tuned:brand@v1"])
def test_stream_matches_the_plain_answer(brand: Server, model: str) -> None:
    plain = brand.chat(QUESTION, model=model).json()
    events = stream(brand, model=model, messages=[{"role": "user", "content": QUESTION}])
    name, data = events[0]
    first = json.loads(data)
    assert name == "sources" and first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [s["chunk_id"] for s in first["sources"]] == [s["chunk_id"] for s in plain["sources"]]
    assert streamed_text(events) == plain["choices"][0]["message"]["content"]
    chunks = [json.loads(d) for n, d in events[1:-1]]
    assert all(c["model"] == plain["model"] and c["id"] == first["id"] for c in chunks)
    finish = chunks[-1]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    assert all(c["choices"] and "usage" not in c for c in chunks)  # no usage unless asked
    assert events[-1] == (None, "[DONE]")


def test_stream_usage_chunk_only_when_asked(server: Server) -> None:
    plain = server.chat(QUESTION).json()
    events = stream(server, messages=[{"role": "user", "content": QUESTION}],
                    stream_options={"include_usage": True})  # fmt: skip
    usage_chunk = json.loads(events[-2][1])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == plain["usage"]
    assert events[-1] == (None, "[DONE]")


def test_stream_finish_reason_length(server: Server) -> None:
    events = stream(server, model="base", max_tokens=2,
                    messages=[{"role": "user", "content": "a b c d"}])  # fmt: skip
    assert streamed_text(events) == "a b"
    assert json.loads(events[-2][1])["choices"][0]["finish_reason"] == "length"


# -- stop sequences ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("gamma", "alpha beta "),
        (["delta", "beta"], "alpha "),  # the earliest match wins
        ("ta gam", "alpha be"),  # spans two streamed pieces
        ("zulu", "alpha beta gamma delta"),  # never matches
    ],
)
def test_stop_sequences_cut_plain_and_streamed_alike(
    server: Server, stop: Any, expected: str
) -> None:
    messages = [{"role": "user", "content": "alpha beta gamma delta"}]
    plain = server.chat(model="base", messages=messages, stop=stop).json()
    assert plain["choices"][0]["message"]["content"] == expected
    assert plain["choices"][0]["finish_reason"] == "stop"
    events = stream(server, model="base", messages=messages, stop=stop)
    assert streamed_text(events) == expected
    assert json.loads(events[-2][1])["choices"][0]["finish_reason"] == "stop"


# -- retrieval arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_top_k_limits_the_sources(server: Server, top_k: int) -> None:
    body = server.chat(QUESTION, top_k=top_k).json()
    retrieved = body["ragtune"]["retrieved"]
    assert [r["rank"] for r in retrieved] == list(range(1, top_k + 1))
    # The prompt shows chat.evidence_passages (1) of them: the one that bears most on it.
    assert len(body["sources"]) == 1 and body["sources"][0]["document_id"] == "harbor.md"
    assert [r["chunk_id"] for r in retrieved if r["shown"]] == [body["sources"][0]["chunk_id"]]


@pytest.mark.parametrize(
    ("filters", "allowed"),
    [
        ({"source": "*/guides/*"}, {"guides/bikes.md", "guides/policy.txt"}),
        ({"document_ids": ["tea.txt"]}, {"tea.txt"}),
        ({"document_ids": ["tea.txt", "harbor.md"]}, {"tea.txt", "harbor.md"}),
    ],
)
def test_filters_restrict_the_sources(server: Server, filters: dict, allowed: set[str]) -> None:
    body = server.chat(QUESTION, filters=filters, top_k=4).json()
    found = {r["document_id"] for r in body["ragtune"]["retrieved"]}
    assert found == allowed and {s["document_id"] for s in body["sources"]} <= allowed


def test_a_filter_matching_nothing_answers_without_sources(server: Server) -> None:
    body = server.chat(QUESTION, filters={"document_ids": ["missing.md"]}).json()
    assert body["sources"] == []
    assert body["choices"][0]["message"]["content"] == QUESTION  # no source block at all
    assert body["ragtune"]["index_version"] == server.index_version
