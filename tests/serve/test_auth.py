"""API keys and roles: default deny over every route, role checks, keys never shown anywhere."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from serve.auth import PUBLIC_PATHS
from serve.config import ROLE_RANK
from tests.serve.conftest import KEYS, Server, ServerFactory, bearer

ROLES = ("reader", "editor", "admin")
CHAT = {"model": "rag", "messages": [{"role": "user", "content": "Zephyrine festival?"}]}

pytestmark = pytest.mark.promise(7)


@pytest.fixture
def secured(make_server: ServerFactory) -> Server:
    server = make_server(keys=True)
    server.publish("brand")
    return server


def calls(app: FastAPI) -> list[tuple[str, str, APIRoute]]:
    """(method, concrete path, route) for every API route, path parameters filled with dummies.

    FastAPI keeps included routers as nodes in `app.routes`; `iter_route_contexts` flattens them
    the way the OpenAPI schema does, with the prefixes applied.
    """
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            path = re.sub(r"\{[^}]+\}", "dummy", context.path_format)
            found += [(method, path, route) for method in sorted(context.methods)]
    return found


def public(path: str) -> bool:
    return re.sub(r"\{[^}]+\}", "dummy", path) in PUBLIC_PATHS


def unprotected(app: FastAPI, client: TestClient) -> list[str]:
    """Every non-public route that does not answer 401 to a request without a key."""
    return [
        f"{method} {path}: {res.status_code}"
        for method, path, route in calls(app)
        if not public(path) and (res := client.request(method, path)).status_code != 401
    ]


def declared_role(route: APIRoute) -> str | None:
    roles = [getattr(d.call, "ragtune_role", None) for d in route.dependant.dependencies]
    return next((r for r in roles if r), None)


def least_role(method: str, path: str) -> str:
    """The policy: admin for /v1/admin and adapter changes, editor for documents and jobs."""
    if path.startswith("/v1/admin") or (path.startswith("/v1/adapters") and method != "GET"):
        return "admin"
    if path.startswith(("/v1/documents", "/v1/jobs")):
        return "editor"
    return "reader"


def test_every_non_public_route_refuses_a_request_without_a_key(secured: Server) -> None:
    assert len(calls(secured.app)) >= 15
    assert unprotected(secured.app, secured.client) == []
    # Routes that are not API routes (docs, schema) must be public on purpose.
    others = [
        c.path for c in iter_route_contexts(secured.app.routes)
        if not isinstance(c.original_route, APIRoute)
    ]  # fmt: skip
    assert set(others) == PUBLIC_PATHS - {"/health"}


def test_the_default_deny_check_catches_an_unprotected_route(secured: Server) -> None:
    @secured.app.get("/v1/leak")
    async def leak() -> dict[str, str]:
        return {"secret": "data"}

    assert unprotected(secured.app, secured.client) == ["GET /v1/leak: 200"]


def test_every_route_declares_at_least_the_role_its_path_needs(secured: Server) -> None:
    for method, path, route in calls(secured.app):
        if public(path):
            assert declared_role(route) is None, path
            continue
        role = declared_role(route)
        assert role is not None, f"{method} {path} declares no role"
        assert ROLE_RANK[role] >= ROLE_RANK[least_role(method, path)], (method, path)


@pytest.mark.parametrize("key_role", ROLES)
def test_each_role_reaches_exactly_the_routes_of_its_rank(secured: Server, key_role: str) -> None:
    for method, path, route in calls(secured.app):
        role = declared_role(route)
        if role is None:
            continue
        res = secured.client.request(method, path, headers=bearer(key_role))
        if ROLE_RANK[key_role] < ROLE_RANK[role]:
            assert res.status_code == 403, (method, path, res.text)
            err = res.json()["error"]
            assert err["code"] == "forbidden" and role in err["message"]
        else:
            assert res.status_code not in (401, 403), (method, path, res.text)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "unauthorized"),
        ({"Authorization": "Bearer "}, "unauthorized"),
        ({"Authorization": f"Basic {KEYS['admin']}"}, "unauthorized"),
        ({"Authorization": KEYS["admin"]}, "unauthorized"),
        ({"Authorization": "Bearer not-a-configured-key-000"}, "invalid_api_key"),
        ({"Authorization": f"Bearer {KEYS['admin']}x"}, "invalid_api_key"),
        ({"Authorization": f"Bearer {KEYS['admin'].upper()}"}, "invalid_api_key"),
    ],
)
def test_missing_or_bad_keys_are_401(secured: Server, headers: dict, code: str) -> None:
    res = secured.client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert res.status_code == 401 and res.json()["error"]["code"] == code
    assert res.headers["WWW-Authenticate"] == "Bearer"
    assert "not-a-configured-key" not in res.text and KEYS["admin"] not in res.text


def test_roles_on_representative_routes(secured: Server) -> None:
    c = secured.client
    assert c.post("/v1/chat/completions", json=CHAT, headers=bearer("reader")).status_code == 200
    assert c.get("/v1/models", headers=bearer("reader")).status_code == 200
    assert c.get("/metrics", headers=bearer("reader")).status_code == 200
    assert c.get("/v1/documents", headers=bearer("reader")).status_code == 403
    assert c.post("/v1/documents/reindex", headers=bearer("reader")).status_code == 403
    assert c.get("/v1/documents", headers=bearer("editor")).status_code == 200
    job = c.post("/v1/documents/reindex", headers=bearer("editor"))
    assert job.status_code == 202 and job.json()["owner"] == "editor-key"
    assert secured.wait_job(job.json()["id"], role="editor")["state"] == "succeeded"
    promote = {"version": "1"}
    assert (
        c.post("/v1/adapters/brand/promote", json=promote, headers=bearer("editor")).status_code
        == 403
    )
    assert c.get("/v1/admin/audit", headers=bearer("editor")).status_code == 403
    assert (
        c.post("/v1/adapters/brand/promote", json=promote, headers=bearer("admin")).status_code
        == 200
    )
    assert c.get("/v1/admin/audit", headers=bearer("admin")).status_code == 200


def test_health_is_public_and_says_keys_are_on(secured: Server) -> None:
    res = secured.client.get("/health")
    assert res.status_code == 200 and res.json()["auth"] == "keys"
    assert KEYS["admin"] not in res.text


def test_without_keys_everyone_is_the_local_admin(server: Server) -> None:
    assert server.client.get("/v1/admin/audit").status_code == 200
    assert server.client.get("/health").json()["auth"] == "none (localhost only)"
    server.chat("hello", model="base")
    assert server.client.get("/v1/admin/audit").json()["data"][0]["key_id"] == "local"


def test_editors_see_only_ingest_jobs(secured: Server) -> None:
    job = secured.app.state.ctx.jobs.submit("train", lambda ctx: {}, params={}, owner="admin-key")
    secured.wait_job(job.id, role="admin")
    res = secured.client.get(f"/v1/jobs/{job.id}", headers=bearer("editor"))
    assert res.status_code == 404
    assert (
        secured.client.post(f"/v1/jobs/{job.id}/cancel", headers=bearer("editor")).status_code
        == 404
    )
    listed = secured.client.get("/v1/jobs", headers=bearer("editor")).json()["data"]
    assert job.id not in {j["id"] for j in listed}
    listed = secured.client.get("/v1/jobs", headers=bearer("admin")).json()["data"]
    assert job.id in {j["id"] for j in listed}


@pytest.mark.promise(7, 11)
def test_keys_never_appear_in_responses_logs_or_files(
    secured: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    for role in ROLES:
        h = bearer(role)
        c = secured.client
        texts += [
            c.post("/v1/chat/completions", json=CHAT, headers=h).text,
            c.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=h).text,
            c.post("/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=h).text,
            c.get("/v1/models", headers=h).text,
            c.get("/v1/jobs", headers=h).text,
            c.get("/v1/admin/audit", headers=h).text,
            c.get("/metrics", headers=h).text,
            c.get("/health").text,
        ]
    job = c.post("/v1/documents/reindex", headers=bearer("admin")).json()
    texts.append(str(secured.wait_job(job["id"], role="admin")))
    texts.append(c.get("/openapi.json").text)
    texts.append(caplog.text)
    data_dir = secured.settings.data_dir
    texts += [p.read_text("utf-8", "replace") for p in data_dir.rglob("*") if p.is_file()
              and p.suffix in (".json", ".jsonl", ".log")]  # fmt: skip
    audit = secured.settings.audit_path.read_text("utf-8")
    assert audit.count("\n") == 6  # 2 answered chats per key: plain and streamed
    for key in KEYS.values():
        for text in texts:
            assert key not in text
    assert "reader-key" in audit and "admin-key" in audit


def test_the_audit_log_is_for_admins_only(secured: Server) -> None:
    secured.chat("hello", model="base", role="reader")
    secured.chat("hello again", model="base", role="admin")
    for role in ("reader", "editor"):
        res = secured.client.get("/v1/admin/audit", headers=bearer(role))
        assert res.status_code == 403
    res = secured.client.get("/v1/admin/audit", headers=bearer("admin"))
    assert [r["key_id"] for r in res.json()["data"]] == ["admin-key", "reader-key"]
    res = secured.client.get(
        "/v1/admin/audit", params={"key_id": "reader-key"}, headers=bearer("admin")
    )
    assert [r["key_id"] for r in res.json()["data"]] == ["reader-key"]
    res = secured.client.get("/v1/admin/audit", params={"limit": 1}, headers=bearer("admin"))
    assert len(res.json()["data"]) == 1


def test_short_keys_are_refused_at_configuration(make_server: ServerFactory) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="shorter than 16"):
        make_server(server={"api_keys": [{"id": "k", "key": "short", "role": "admin"}]})
