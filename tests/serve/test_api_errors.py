"""Bad input gets a clear 4xx in the OpenAI error shape, never a traceback or a server path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.serve.conftest import Server, ServerFactory, sse_events
from tuning.generator import EchoGenerator

OK = {"model": "rag", "messages": [{"role": "user", "content": "Zephyrine?"}]}


def assert_error(server: Server, res: Any, status: int, code: str, *words: str) -> dict:
    """The OpenAI error shape, the status and code, a message naming `words`, and no leak."""
    assert res.status_code == status, res.text
    err = res.json()["error"]
    assert set(err) == {"message", "type", "code", "param"}
    assert err["code"] == code and err["type"] in ("invalid_request_error", "server_error")
    for word in words:
        assert word in err["message"], err["message"]
    text = res.text
    assert "Traceback" not in text and 'File "' not in text
    assert str(server.settings.data_dir.parent) not in text
    assert str(server.corpus) not in text and "/site-packages/" not in text
    return err


def post(server: Server, body: Any) -> Any:
    return server.client.post("/v1/chat/completions", json=body)


@pytest.mark.promise(6)
def test_malformed_json(server: Server) -> None:
    res = server.client.post(
        "/v1/chat/completions", content=b'{"model": "rag", "messages": [',
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert_error(server, res, 400, "invalid_request", "not valid JSON")


def test_a_body_that_is_not_an_object(server: Server) -> None:
    assert_error(server, post(server, ["rag"]), 400, "invalid_request")


@pytest.mark.parametrize(
    ("messages", "code", "words"),
    [
        ([], "invalid_messages", ("empty",)),
        ([{"role": "tool", "content": "x"}], "invalid_request", ("messages.0.role",)),
        (
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "invalid_messages",
            ("last message",),
        ),
        ([{"role": "user", "content": "   "}], "invalid_messages", ("empty",)),
        ([{"role": "user"}], "invalid_messages", ("empty",)),
        ([{"role": "system", "content": "only a system prompt"}], "invalid_messages", ("user",)),
        ([{"content": "no role"}], "invalid_request", ("role",)),
        ("not a list", "invalid_request", ("messages",)),
    ],
)
def test_bad_messages(server: Server, messages: Any, code: str, words: tuple[str, ...]) -> None:
    assert_error(server, post(server, {**OK, "messages": messages}), 400, code, *words)


def test_missing_messages_and_model(server: Server) -> None:
    assert_error(server, post(server, {"model": "rag"}), 400, "invalid_request", "messages")
    assert_error(
        server, post(server, {"messages": OK["messages"]}), 400, "invalid_request", "model"
    )


@pytest.mark.promise(6)
@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"max_tokens": 0}, "max_tokens", ("greater than or equal to 1",)),
        ({"max_tokens": -5}, "max_tokens", ()),
        ({"max_tokens": 10**9}, "max_tokens", ("at most 1024",)),
        ({"max_completion_tokens": 5000}, "max_tokens", ("5000",)),
        ({"top_k": 21}, "top_k", ("at most 20",)),
        ({"top_k": 0}, "top_k", ()),
        ({"n": 2}, "n", ()),
        ({"temperature": 3}, "temperature", ()),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", ("at most 4",)),
        ({"filters": {"colour": "red"}}, "filters.colour", ()),
    ],
)
def test_bad_parameters(server: Server, extra: dict, param: str, words: tuple[str, ...]) -> None:
    err = assert_error(server, post(server, {**OK, **extra}), 400, "invalid_request", *words)
    assert err["param"] == param


@pytest.mark.parametrize(
    ("model", "status", "code", "words"),
    [
        ("gpt-4o", 404, "model_not_found", ("gpt-4o", "rag+tuned:<adapter>")),
        ("tuned", 404, "model_not_found", ("names no adapter",)),
        ("rag:brand", 404, "model_not_found", ("only tuned modes",)),
        ("tuned:nobody", 404, "adapter_not_found", ("nobody",)),
        ("tuned:brand@v7", 404, "adapter_not_found", ("v7",)),
        ("tuned:brand@staging", 404, "adapter_not_found", ("staging",)),
        ("tuned:../../etc", 400, "invalid_adapter", ("bad adapter name",)),
        ("", 404, "model_not_found", ()),
    ],
)
def test_unknown_models_and_adapters(
    server: Server, model: str, status: int, code: str, words: tuple[str, ...]
) -> None:
    server.publish("brand")
    assert_error(server, post(server, {**OK, "model": model}), status, code, *words)


@pytest.mark.promise(6)
@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ('"\\ud800 lone surrogate"', ()),
        ('"nul \\u0000 byte"', ("U+0000",)),
        ('"bidi \\u202e override"', ("U+202E",)),
        ('"escape \\u001b[31m"', ("U+001B",)),
    ],
)
@pytest.mark.parametrize("field", ["content", "model", "stop"])
def test_unsafe_text_is_refused(
    server: Server, raw: str, words: tuple[str, ...], field: str
) -> None:
    message = f'{{"role": "user", "content": {raw if field == "content" else json.dumps("hi")}}}'
    model = raw if field == "model" else '"rag"'
    stop = f', "stop": {raw}' if field == "stop" else ""
    body = f'{{"model": {model}, "messages": [{message}]{stop}}}'.encode()
    res = server.client.post("/v1/chat/completions", content=body,
                             headers={"content-type": "application/json"})  # fmt: skip
    assert_error(server, res, 400, "invalid_request", *words)


@pytest.mark.parametrize("model", ["base", "rag"])
def test_a_prompt_longer_than_the_context_window(server: Server, model: str) -> None:
    long = " ".join(["word"] * 8000)  # the echo generator reads 8192 tokens, one per word
    res = post(server, {"model": model, "messages": [{"role": "user", "content": long}]})
    assert_error(server, res, 400, "context_length_exceeded", "tokens")
    res = post(server, {**OK, "model": model, "max_tokens": 1024})  # a short one still fits
    assert res.status_code == 200


def test_tabs_and_newlines_are_fine(server: Server) -> None:
    res = post(server, {**OK, "messages": [{"role": "user", "content": "a\tb\r\nc"}]})
    assert res.status_code == 200, res.text


def test_body_over_the_limit_is_413(make_server: ServerFactory) -> None:
    server = make_server(server={"max_body_bytes": 2048})
    big = {**OK, "messages": [{"role": "user", "content": "x" * 4000}]}
    assert_error(server, post(server, big), 413, "body_too_large", "2048")
    # Without a Content-Length (chunked), the body is counted as it arrives.
    data = json.dumps(big).encode()
    res = server.client.post(
        "/v1/chat/completions", content=iter([data[:1500], data[1500:]]),
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert "content-length" not in {k.lower() for k in res.request.headers}
    assert_error(server, res, 413, "body_too_large")
    assert post(server, OK).status_code == 200  # a small body still passes


def test_unknown_routes_and_methods(server: Server) -> None:
    assert_error(server, server.client.get("/v1/nowhere"), 404, "not_found")
    assert_error(server, server.client.get("/v1/chat/completions"), 405, "method_not_allowed")


class BrokenGenerator(EchoGenerator):
    """Fails the way a bug would: with a message that names a server path."""

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom in /opt/secret/model.py")

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[str]:
        yield "partial"
        raise RuntimeError("boom in /opt/secret/model.py")


@pytest.mark.promise(11)
def test_an_internal_error_says_nothing_about_the_server(make_server: ServerFactory) -> None:
    server = make_server(generator=BrokenGenerator())
    res = post(server, OK)
    assert_error(server, res, 500, "internal_error")
    assert "/opt/secret" not in res.text and "boom" not in res.text
    res = post(server, {**OK, "stream": True})
    assert res.status_code == 200  # headers were sent before the failure
    events = sse_events(res.text)
    assert events[0][0] == "sources"
    error = json.loads(events[-1][1])["error"]
    assert error["code"] == "internal_error" and "/opt/secret" not in res.text
    audit = server.client.get("/v1/admin/audit").json()["data"]
    assert [r["status"] for r in audit] == ["error"]  # the failed plain request is not audited
    gate = server.app.state.ctx.gate
    assert (gate.active, gate.waiting) == (0, 0)  # both failures gave their slot back
