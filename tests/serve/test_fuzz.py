"""Hostile requests and error bodies (issue 6, promises 6 and 11).

schemathesis fuzzes every operation of the served OpenAPI schema with a key of each role, on the
real app with the fast fakes, and checks each answer against the schema (no 5xx, documented
status, content type, headers and body, invalid input refused); then hand-written hostile text
and numbers, and error bodies that must say nothing about the server or other requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

import pytest
import requests
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from serve.app import create_app
from serve.services import Services
from tests.reliability_table import Figures
from tests.serve.conftest import (
    API_KEYS,
    CORPUS_FILES,
    KEYS,
    Server,
    bearer,
    make_settings,
    publish_adapter,
    write_corpus,
)

ROLES = ("reader", "editor", "admin")
Reply = Any  # what TestClient answers: an httpx2 (or httpx) Response
# Another client's question: no answer to anyone else may ever quote it.
OTHER_TEXT = "Zephyrine festival? private-note-7c1e"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
]
# Seeded and derandomized: the same cases on every run. The coverage phase adds boundary and
# negative cases per operation beyond max-examples (about 3 000 requests in all). Every request
# carries the role's key: schemathesis generates no Authorization of its own (a mutated one
# would be replaced by the key, and the case then judged as if it had been sent); missing and
# bad keys are tested below and in test_auth.py.
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 6,
        "generation": {
            "max-examples": 25,
            "deterministic": True,
            "database": "none",
            "with-security-parameters": False,
        },
        "suppress-health-check": ["all"],
    }
)


def served_schema() -> dict[str, Any]:
    """The OpenAPI document of an app configured like the fuzzed one (nothing is started)."""
    folder = Path(tempfile.gettempdir()) / "ragtune-fuzz-schema"  # never created
    return create_app(make_settings(folder, server={"api_keys": API_KEYS})).openapi()


SCHEMA = schemathesis.openapi.from_dict(served_schema(), config=CONFIG)


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Server]:
    """One server with keys for the whole module (on tmpfs), an adapter to find, and one
    question from another client already answered."""
    shm = Path("/dev/shm")
    parent = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="ragtune-fuzz-", dir=parent))
    settings = make_settings(root, server={"api_keys": API_KEYS})
    services = Services.build(settings)
    try:
        services.indexer().ingest([write_corpus(root / "corpus", CORPUS_FILES)], sync=True)
        publish_adapter(services.registry, "brand")
        app = create_app(settings, services)
        with TestClient(app, raise_server_exceptions=False) as client:
            server = Server(client, app, settings, services, root / "corpus", keys=True)
            assert server.chat(OTHER_TEXT, role="reader").status_code == 200
            yield server
    finally:
        services.index.close()
        shutil.rmtree(root, ignore_errors=True)


def send(client: TestClient, case: Any, role: str) -> tuple[Reply, dict[str, Any]]:
    """The case serialised as schemathesis sends it (with requests), its bytes sent in-process
    through the app's own test client, so the lifespan and event loop are the fixture's."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=bearer(role))
    names = ("method", "url", "headers", "params", "cookies", "json", "data", "files")
    prepared = requests.Request(**{k: kwargs[k] for k in names if k in kwargs}).prepare()
    headers = {k: v if isinstance(v, str) else v.decode("latin-1")
               for k, v in prepared.headers.items()}  # fmt: skip
    body = cast("bytes | str | None", prepared.body)
    return client.request(prepared.method or "GET", prepared.url or "/", headers=headers,
                          content=body), kwargs  # fmt: skip


def request_text(response: Reply) -> str:
    """What the client itself sent (URL and body, decoded): an answer may quote it back."""
    sent = response.request
    raw: str = sent.read().decode("utf-8", "replace")
    with contextlib.suppress(ValueError):
        raw += json.dumps(json.loads(raw), ensure_ascii=False)
    return unquote(str(sent.url)) + raw


def leaks(server: Server, response: Reply) -> list[str]:
    """What an answer must never hold: a traceback, a server path, a key, another's text."""
    text, mine = response.text, request_text(response)
    found = [key for key in (*KEYS.values(), OTHER_TEXT) if key in text]
    found += [str(p) for p in (server.settings.data_dir, server.corpus) if str(p) in text]
    found += [w for w in ("Traceback", 'File "', "/work/", ".py") if w in text and w not in mine]
    return found


def error_problems(server: Server, response: Reply) -> list[str]:
    """An error answer: the OpenAI shape with a code and a message, and nothing it must not hold."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return [f"not an error body: {response.text[:200]}"]
    problems = [f"no {field}" for field in ("code", "message") if not error.get(field)]
    return problems + [f"leaks {word!r}" for word in leaks(server, response)]


@pytest.mark.promise(6, 11)
@pytest.mark.parametrize("role", ROLES)
@SCHEMA.parametrize()
def test_fuzz_every_operation(case: Any, role: str, fuzzed: Server, figures: Figures) -> None:
    started = time.perf_counter()
    response, kwargs = send(fuzzed.client, case, role)
    figures.latency_ms((time.perf_counter() - started) * 1000)
    tried, passed = (figures.tried or 0) + 1, figures.passed or 0
    figures.cases(tried=tried, passed=passed)
    case.validate_response(response, checks=CHECKS, headers=kwargs["headers"],
                           transport_kwargs=kwargs)  # fmt: skip
    assert not leaks(fuzzed, response), (case.operation.label, response.text[:300])
    if response.status_code >= 400:
        assert not error_problems(fuzzed, response), response.text[:300]
    figures.cases(tried=tried, passed=passed + 1)


@pytest.mark.promise(6)
def test_the_fuzzed_schema_is_the_served_one_and_documents_every_error(fuzzed: Server) -> None:
    served = fuzzed.client.get("/openapi.json").json()
    assert served == served_schema()
    assert "HTTPValidationError" not in json.dumps(served)  # validation errors are 400s
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in served["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            statuses = {int(s) for s in operation["responses"]}
            assert 500 in statuses, where
            if path != "/health":
                assert operation["security"] == [{"ApiKey": []}] and 401 in statuses, where
            for status, answer in operation["responses"].items():
                if int(status) >= 400:
                    assert answer["content"] == {"application/json": {"schema": error_ref}}, where
    chat = served["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}


# Hostile text as a client writes it in a raw JSON body: escapes that json.loads turns into a
# lone surrogate, NUL, bidi controls, a C1 control (U+009B is a terminal's CSI).
UNSAFE = {
    "lone-high-surrogate": "\\ud800",
    "lone-low-surrogate": "\\udfff",
    "nul": "\\u0000",
    "bidi-override": "\\u202e",
    "bidi-isolate": "\\u2066",
    "c1-csi": "\\u009b",
}
UNSAFE_CHARS = ("\x00", "\u202e", "\u2066", "\x9b")
MARK = "HOSTILE"
USER = [{"role": "user", "content": "Zephyrine?"}]
CHAT = {"model": "rag", "messages": USER}
COMPARE = {"use_shipped": True, "modes": ["base"], "limit": 1, "tone_questions": 0}
CASE = {"id": "c1", "question": "Zephyrine?", "reference": "June", "document_ids": ["harbor.md"]}
# Where hostile text goes (MARK is replaced by it): message content, model names, stops,
# filters, JSON keys, comparison cases and adapters, alias and version names.
TEXT_PLACES: dict[str, tuple[str, dict[str, Any]]] = {
    "content": ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": MARK}]}),
    "content-part": ("/v1/chat/completions", {**CHAT, "messages": [
        {"role": "user", "content": [{"type": "text", "text": MARK}]}]}),
    "system": ("/v1/chat/completions", {**CHAT, "messages": [
        {"role": "system", "content": MARK}, *USER]}),
    "model": ("/v1/chat/completions", {**CHAT, "model": MARK}),
    "tuned-model": ("/v1/chat/completions", {**CHAT, "model": f"rag+tuned:brand{MARK}"}),
    "stop": ("/v1/chat/completions", {**CHAT, "stop": ["\n", MARK]}),
    "filter-source": ("/v1/chat/completions", {**CHAT, "filters": {"source": MARK}}),
    "filter-ids": ("/v1/chat/completions", {**CHAT, "filters": {"document_ids": [MARK]}}),
    "json-key": ("/v1/chat/completions", {**CHAT, "filters": {MARK: "x"}}),
    "compare-adapter": ("/v1/compare", {**COMPARE, "modes": ["tuned"], "adapter": MARK}),
    "compare-case": ("/v1/compare", {"cases": [{**CASE, "question": MARK}], "modes": ["base"]}),
    "compare-case-key": ("/v1/compare", {"cases": [{**CASE, MARK: 1}], "modes": ["base"]}),
    "promote-version": ("/v1/adapters/brand/promote", {"version": MARK}),
    "promote-alias": ("/v1/adapters/brand/promote", {"version": "1", "alias": MARK}),
    "rollback-alias": ("/v1/adapters/brand/rollback", {"alias": MARK}),
}  # fmt: skip


def post_raw(server: Server, path: str, raw: str) -> Reply:
    headers = {**bearer("admin"), "content-type": "application/json"}
    return server.client.post(path, content=raw.encode(), headers=headers)


def assert_refused(server: Server, response: Reply, status: int | None = 400) -> None:
    """A 4xx (this one when given) in the error shape, saying nothing it must not, and not
    echoing hostile characters back."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert status is None or response.status_code == status, response.text[:300]
    assert not error_problems(server, response), response.text[:300]
    assert not any(c in response.text for c in UNSAFE_CHARS), response.text[:300]


@pytest.mark.promise(6)
@pytest.mark.parametrize("kind", UNSAFE)
@pytest.mark.parametrize("place", TEXT_PLACES)
def test_hostile_text_in_bodies_is_refused(fuzzed: Server, place: str, kind: str) -> None:
    path, body = TEXT_PLACES[place]
    raw = json.dumps(body).replace(MARK, f"a{UNSAFE[kind]}b")
    assert_refused(fuzzed, post_raw(fuzzed, path, raw))


# The same characters in paths and queries, percent-encoded (a lone surrogate can only come
# as its invalid UTF-8 bytes there); and a path that tries to climb out.
URL_UNSAFE = {
    "nul": "%00",
    "bidi-override": "%E2%80%AE",
    "bidi-isolate": "%E2%81%A6",
    "c1-csi": "%C2%9B",
    "surrogate-bytes": "%ED%A0%80",
    "invalid-utf8": "%FF%FE",
    "dot-dot": "..%2F..%2Fetc%2Fpasswd",
}
URLS = [
    ("GET", "/v1/documents/{}"),
    ("DELETE", "/v1/documents/{}"),
    ("GET", "/v1/adapters/{}"),
    ("DELETE", "/v1/adapters/{}"),
    ("POST", "/v1/adapters/{}/rollback"),
    ("GET", "/v1/jobs/{}"),
    ("POST", "/v1/jobs/{}/cancel"),
    ("GET", "/v1/compare/{}/report.json"),
    ("GET", "/v1/documents?prefix={}"),
    ("GET", "/v1/jobs?kind={}"),
    ("GET", "/v1/admin/audit?key_id={}"),
]


@pytest.mark.promise(6)
@pytest.mark.parametrize(
    ("method", "url", "kind"),
    # `..` is no attack on a filter (a prefix, a job kind, a key id): it just matches nothing.
    [(m, u, k) for m, u in URLS for k in URL_UNSAFE if "?" not in u or k != "dot-dot"],
)
def test_hostile_text_in_paths_and_queries_is_refused(
    fuzzed: Server, method: str, url: str, kind: str
) -> None:
    body = {"alias": "prod"} if method == "POST" else None
    target = url.format(f"brand{URL_UNSAFE[kind]}x")
    response = fuzzed.client.request(method, target, json=body, headers=bearer("admin"))
    assert_refused(fuzzed, response, status=None)  # 400, or 404 for what cannot exist


def multipart(filename: bytes, fields: dict[bytes, bytes] | None = None) -> bytes:
    """A multipart body written by hand: clients can put any bytes in a file name."""
    parts = [b'Content-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % item
             for item in (fields or {}).items()]  # fmt: skip
    field = b"data" if fields is not None else b"files"
    parts.append(b'Content-Disposition: form-data; name="%s"; filename="%s"\r\n'
                 b"Content-Type: text/plain\r\n\r\nhello\r\n" % (field, filename))  # fmt: skip
    return b"".join(b"--BOUNDARY\r\n" + p for p in parts) + b"--BOUNDARY--\r\n"


UPLOAD_NAMES = {
    "nul": b"a\x00.txt",
    "bidi-override": b"invoice\xe2\x80\xaetxt.exe.txt",
    "surrogate-bytes": b"a\xed\xa0\x80.txt",
    "c1-csi": b"a\xc2\x9b.txt",
    "dot-dot": b"../../etc/passwd.txt",
    "absolute": b"/etc/hosts.txt",
    "hidden": b".env.txt",
}


@pytest.mark.promise(6)
@pytest.mark.parametrize("kind", UPLOAD_NAMES)
def test_hostile_upload_names_are_refused(fuzzed: Server, kind: str) -> None:
    headers = {**bearer("editor"), "content-type": "multipart/form-data; boundary=BOUNDARY"}
    response = fuzzed.client.post("/v1/documents", content=multipart(UPLOAD_NAMES[kind]),
                                  headers=headers)  # fmt: skip
    assert_refused(fuzzed, response)


TRAIN_FIELDS = {
    "promote-nul": {b"promote": b"prod\x00"},
    "promote-bidi": {b"promote": b"\xe2\x80\xaeprod"},
    "config-surrogate": {b"config": b'{"target_modules": ["q_proj\\ud800"]}'},
    "config-nul": {b"config": b'{"target_modules": ["q_proj\\u0000"]}'},
    "config-huge-steps": {b"config": b'{"max_steps": 1000000000000000000000000000000}'},
    "config-huge-seed": {b"config": b'{"seed": 1000000000000000000000000000000}'},
    "config-negative-rate": {b"config": b'{"learning_rate": -1}'},
    "config-nan-rate": {b"config": b'{"learning_rate": NaN}'},
    "config-infinite-alpha": {b"config": b'{"alpha": Infinity}'},
    "config-deep": {b"config": b'{"a": ' * 50 + b"1" + b"}" * 50},
}


@pytest.mark.promise(6)
@pytest.mark.parametrize("kind", TRAIN_FIELDS)
def test_hostile_training_forms_are_refused(fuzzed: Server, kind: str) -> None:
    headers = {**bearer("admin"), "content-type": "multipart/form-data; boundary=BOUNDARY"}
    body = multipart(b"data.jsonl", TRAIN_FIELDS[kind])
    response = fuzzed.client.post("/v1/adapters/brand/train", content=body, headers=headers)
    assert_refused(fuzzed, response)


# Numbers no request should get through with: huge, negative, not finite (json.loads reads
# NaN and Infinity), or beyond a float.
NUMBERS = {
    "huge": "1" + "0" * 30,
    "negative": "-1",
    "huge-negative": "-1" + "0" * 30,
    "nan": "NaN",
    "infinity": "Infinity",
    "minus-infinity": "-Infinity",
    "float-overflow": "1e400",
}
NUMBER_FIELDS = [
    *(("/v1/chat/completions", CHAT, f) for f in
      ("max_tokens", "max_completion_tokens", "top_k", "temperature", "top_p", "seed", "n")),
    *(("/v1/compare", COMPARE, f) for f in ("max_tokens", "top_k", "limit", "tone_questions")),
]  # fmt: skip


@pytest.mark.promise(6)
@pytest.mark.parametrize("number", NUMBERS)
@pytest.mark.parametrize(("path", "body", "field"), NUMBER_FIELDS, ids=lambda v: str(v)[:24])
def test_hostile_numbers_in_bodies_are_refused(
    fuzzed: Server, path: str, body: dict[str, Any], field: str, number: str
) -> None:
    raw = json.dumps({**body, field: MARK}).replace(f'"{MARK}"', NUMBERS[number])
    assert_refused(fuzzed, post_raw(fuzzed, path, raw))


QUERY_NUMBERS = [
    ("GET", "/v1/documents?limit={}"),
    ("GET", "/v1/documents?offset={}"),
    ("GET", "/v1/admin/audit?limit={}"),
    ("DELETE", "/v1/adapters/brand?version={}"),
]


@pytest.mark.promise(6)
@pytest.mark.parametrize("number", NUMBERS)
@pytest.mark.parametrize(("method", "url"), QUERY_NUMBERS)
def test_hostile_numbers_in_queries_are_refused(
    fuzzed: Server, method: str, url: str, number: str
) -> None:
    response = fuzzed.client.request(method, url.format(NUMBERS[number]), headers=bearer("admin"))
    assert_refused(fuzzed, response)


JSON = {"content-type": "application/json"}
# Requests that fail, each its own way, sent after another client's question was answered.
FAILING: dict[str, tuple[int, str, dict[str, Any]]] = {
    "unknown-route": (404, "not_found", {"method": "GET", "url": "/v1/nowhere"}),
    "wrong-method": (405, "method_not_allowed", {"method": "GET", "url": "/v1/chat/completions"}),
    "malformed-json": (400, "invalid_request", {"method": "POST", "url": "/v1/chat/completions",
                       "content": b'{"model": "rag", "messages": [', "headers": JSON}),
    "not-utf8": (400, "invalid_request", {"method": "POST", "url": "/v1/chat/completions",
                 "content": b'{"model": "rag\xff\xfe"}', "headers": JSON}),
    "validation": (400, "invalid_request", {"method": "POST", "url": "/v1/chat/completions",
                   "json": {"model": "rag"}}),
    "no-key": (401, "unauthorized", {"method": "GET", "url": "/v1/models", "role": None}),
    "wrong-key": (401, "invalid_api_key", {"method": "GET", "url": "/v1/models", "role": None,
                  "headers": {"Authorization": f"Bearer {KEYS['admin']}-guess"}}),
    "low-role": (403, "forbidden", {"method": "GET", "url": "/v1/admin/audit", "role": "reader"}),
    "unknown-model": (404, "model_not_found", {"method": "POST", "url": "/v1/chat/completions",
                      "json": {**CHAT, "model": "gpt-4o"}}),
    "unknown-adapter": (404, "adapter_not_found", {"method": "POST",
                        "url": "/v1/chat/completions", "json": {**CHAT, "model": "tuned:nobody"}}),
    "too-large": (413, "body_too_large", {"method": "POST", "url": "/v1/chat/completions",
                  "content": b"x" * (2 << 20), "headers": JSON}),
    "unsupported-upload": (415, "unsupported_type", {"method": "POST", "url": "/v1/documents",
                           "files": {"files": ("run.exe", b"MZ", "application/octet-stream")}}),
    "bad-adapter-name": (400, "invalid_adapter", {"method": "GET", "url": "/v1/adapters/..x"}),
    "missing-job": (404, "job_not_found", {"method": "GET", "url": "/v1/jobs/0123abcd"}),
}  # fmt: skip


@pytest.mark.promise(11)
@pytest.mark.parametrize("name", FAILING)
def test_error_bodies_say_nothing_about_the_server_or_other_clients(
    fuzzed: Server, name: str
) -> None:
    status, code, spec = FAILING[name]
    spec = dict(spec)
    role = spec.pop("role", "admin")
    headers = {**(bearer(role) if role else {}), **spec.pop("headers", {})}
    response = fuzzed.client.request(spec.pop("method"), spec.pop("url"), headers=headers, **spec)
    assert response.status_code == status, response.text[:300]
    assert response.json()["error"]["code"] == code
    assert not error_problems(fuzzed, response), response.text[:300]


class Boom(RuntimeError):
    """A bug whose message names everything an answer must not: a server file, a key, and
    another client's question."""


def explode(server: Server) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        data = server.settings.data_dir
        raise Boom(f"boom in {data}/index/store.py with {KEYS['admin']} after {OTHER_TEXT!r}")

    return fail


# (what breaks, the request that reaches it)
BREAKS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "index-info": ("services.index", "info", "/health", {}),
    "index-read": ("services.index", "read", "/v1/documents", {}),
    "registry": ("services.registry", "all", "/v1/adapters", {}),
    "registry-names": ("services.registry", "names", "/v1/models", {}),
    # A whole answer is generated through the stream (the repetition guard watches it).
    "generator": ("services.generator", "stream", "/v1/chat/completions", {"json": CHAT}),
    "jobs": ("app.state.ctx.jobs", "list", "/v1/jobs", {}),
}


@pytest.mark.promise(11)
@pytest.mark.parametrize("where", BREAKS)
def test_an_internal_error_says_nothing_but_its_code(
    make_server: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    server: Server = make_server(keys=True)
    server.chat(OTHER_TEXT, role="reader")
    owner, attribute, url, extra = BREAKS[where]
    target: Any = server
    for part in owner.split("."):
        target = getattr(target, part)
    monkeypatch.setattr(target, attribute, explode(server))
    method = "POST" if "json" in extra else "GET"
    response = server.client.request(method, url, headers=bearer("admin"), **extra)
    assert response.status_code == 500, response.text[:300]
    assert response.json()["error"]["code"] == "internal_error"
    assert not error_problems(server, response) and "boom" not in response.text


@pytest.mark.promise(11)
def test_a_library_message_loses_the_server_folders(fuzzed: Server) -> None:
    aliases = fuzzed.settings.adapters_dir / "brand" / "aliases.json"
    saved = aliases.read_bytes() if aliases.is_file() else None
    aliases.write_text("{not json", "utf-8")
    try:
        response = fuzzed.client.get("/v1/adapters/brand", headers=bearer("reader"))
    finally:
        if saved is None:
            aliases.unlink()
        else:
            aliases.write_bytes(saved)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_adapter"
    assert "aliases.json is unreadable" in response.json()["error"]["message"]
    assert not error_problems(fuzzed, response), response.text[:300]


@pytest.mark.promise(11)
def test_documents_and_ingest_failures_are_named_as_clients_know_them(
    make_server: Any,
) -> None:
    server: Server = make_server(keys=True, corpus={**CORPUS_FILES, "guides/empty.md": ""})
    files = [("files", ("empty.txt", b"", "text/plain")),
             ("files", ("blob.txt", b"\x00\x01binary", "text/plain"))]  # fmt: skip
    res = server.client.post("/v1/documents", files=files, headers=bearer("editor"))
    upload = server.wait_job(res.json()["id"], role="editor")
    reindex = server.reindex(role="editor")
    failures = upload["result"]["failures"] + reindex["result"]["failures"]
    assert {f["path"] for f in failures} >= {"uploads/empty.txt", "uploads/blob.txt"}
    assert "guides/empty.md" in {f["path"] for f in reindex["result"]["failures"]}
    listed = server.client.get("/v1/documents", headers=bearer("editor")).json()["data"]
    assert {d["source"] for d in listed} >= {"harbor.md", "guides/bikes.md"}
    one = server.client.get("/v1/documents/guides/bikes.md", headers=bearer("editor")).json()
    assert one["source"] == "guides/bikes.md"
    for text in (json.dumps(upload), json.dumps(reindex), json.dumps(listed), json.dumps(one)):
        assert str(server.settings.data_dir.parent) not in text
