"""What the server records: one audit line per answered chat, and Prometheus metrics."""

from __future__ import annotations

from datetime import datetime

from prometheus_client.parser import text_string_to_metric_families

from tests.serve.conftest import Server, ServerFactory, bearer

QUESTION = "When does the Zephyrine festival open?"


def sample(server: Server, name: str, **labels: str) -> float:
    """The value of one sample (0.0 when it was never set)."""
    text = server.client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def audit(server: Server, **params: str) -> list[dict]:
    res = server.client.get("/v1/admin/audit", params=params, headers=server.auth(None))
    assert res.status_code == 200, res.text
    return res.json()["data"]


def test_one_audit_record_per_answered_request(make_server: ServerFactory) -> None:
    server = make_server(keys=True)
    server.publish("brand")
    rag = server.chat(QUESTION, role="reader", top_k=2).json()
    tuned = server.chat("hello", model="tuned:brand@v1", role="editor").json()
    assert server.chat("", role="reader").status_code == 400  # refused: not answered
    streamed = server.chat("a b c", model="base", stream=True, role="reader")
    assert streamed.status_code == 200
    server.headers = bearer("admin")
    records = audit(server)
    assert len(records) == 3
    newest, second, first = records
    assert [r["key_id"] for r in records] == ["reader-key", "editor-key", "reader-key"]

    assert first["request_id"] == rag["id"] and first["status"] == "ok"
    assert first["mode"] == "rag" and first["adapter"] is None and first["adapter_version"] is None
    assert first["index_version"] == server.index_version
    found = rag["ragtune"]["retrieved"]
    assert [(r["chunk_id"], r["score"]) for r in first["retrieved"]] == [
        (r["chunk_id"], r["score"]) for r in found
    ]
    # "cited": in the prompt, as a numbered source (chat.evidence_passages of the 2 found).
    assert [r["cited"] for r in first["retrieved"]] == [r["shown"] for r in found]
    assert len(found) == 2 and sum(r["cited"] for r in first["retrieved"]) == 1
    assert first["prompt_tokens"] == rag["usage"]["prompt_tokens"]
    assert first["completion_tokens"] == rag["usage"]["completion_tokens"]
    assert first["latency_s"] >= 0 and first["stream"] is False
    assert datetime.fromisoformat(first["time"]).tzinfo is not None

    assert second["request_id"] == tuned["id"]
    assert (second["mode"], second["adapter"], second["adapter_version"]) == ("tuned", "brand", 1)
    assert second["retrieved"] == [] and second["index_version"] is None

    assert newest["stream"] is True and newest["mode"] == "base"
    assert newest["completion_tokens"] == 3
    assert "key" not in newest and all("secret" not in str(v) for v in newest.values())


def test_audit_can_be_turned_off(make_server: ServerFactory) -> None:
    server = make_server(server={"audit": False})
    assert server.chat(QUESTION).status_code == 200
    assert audit(server) == []
    assert not server.settings.audit_path.exists()


def test_metrics_count_requests_tokens_and_empty_context(server: Server) -> None:
    server.publish("brand")
    rag = server.chat(QUESTION).json()
    server.chat(QUESTION).json()
    base = server.chat("one two three", model="base").json()
    server.chat("hi", model="rag+tuned:brand@v1")
    empty = server.chat(QUESTION, filters={"document_ids": ["missing.md"]}).json()
    assert empty["sources"] == []
    server.chat("", model="base")  # a refused request is not counted as answered

    total = "ragtune_chat_requests_total"
    assert sample(server, total, mode="rag", adapter="none", status="ok") == 3
    assert sample(server, total, mode="base", adapter="none", status="ok") == 1
    assert sample(server, total, mode="rag+tuned", adapter="brand@v1", status="ok") == 1
    tokens = "ragtune_tokens_total"
    assert (
        sample(server, tokens, mode="base", adapter="none", kind="prompt")
        == (base["usage"]["prompt_tokens"])
    )
    assert sample(server, tokens, mode="base", adapter="none", kind="completion") == 3
    assert sample(server, tokens, mode="rag", adapter="none", kind="completion") == (
        2 * rag["usage"]["completion_tokens"] + empty["usage"]["completion_tokens"]
    )
    assert sample(server, "ragtune_chat_latency_seconds_count", mode="rag", adapter="none") == 3
    assert sample(server, "ragtune_rag_requests_total") == 4  # rag x3, rag+tuned x1
    # "hi" is in no document: answered without the model, not an empty context.
    assert sample(server, "ragtune_rag_unknown_terms_total") == 1
    assert sample(server, "ragtune_rag_empty_context_total") == 1
    assert sample(server, "ragtune_rag_empty_context_ratio") == 0.25
    assert sample(server, "ragtune_queue_depth") == 0
    assert sample(server, "ragtune_generations_active") == 0


def test_streaming_records_time_to_first_token(server: Server) -> None:
    body = {"model": "base", "stream": True, "messages": [{"role": "user", "content": "a b"}]}
    assert server.client.post("/v1/chat/completions", json=body).status_code == 200
    name = "ragtune_chat_time_to_first_token_seconds_count"
    assert sample(server, name, mode="base", adapter="none") == 1
    assert sample(server, "ragtune_chat_requests_total", mode="base", status="ok") == 1
    assert sample(server, "ragtune_tokens_total", mode="base", kind="completion") == 2
