"""The console's page and files (public, with a strict policy) and its routes: whoami, stats."""

from __future__ import annotations

import re

import pytest

from serve.api.console import STATIC
from tests.serve.conftest import Server, ServerFactory, bearer

SCRIPTS = sorted(p.name for p in STATIC.glob("*.js"))


@pytest.fixture
def secured(make_server: ServerFactory) -> Server:
    return make_server(keys=True)


def test_the_page_and_its_files_need_no_key_and_carry_a_strict_policy(secured: Server) -> None:
    page = secured.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-eval" not in policy and "script-src 'self' 'unsafe-inline'" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/console/app.js">' in page.text
    assert "http" not in page.text.split("<body")[0]
    for name, kind in [*((n, "javascript") for n in SCRIPTS), ("style.css", "text/css")]:
        res = secured.client.get(f"/console/{name}")
        assert res.status_code == 200 and kind in res.headers["content-type"], name
        assert res.headers["x-content-type-options"] == "nosniff"
    # The page only at `/`, where its policy is sent; nothing outside the console's folder.
    assert secured.client.get("/console/index.html").status_code == 404
    assert secured.client.get("/console/../app.py").status_code == 404
    assert secured.client.get("/console/nothing.js").status_code == 404


def test_the_console_writes_no_html_and_loads_nothing_from_elsewhere(secured: Server) -> None:
    texts = [secured.client.get(path).text for path in ("/", "/console/style.css")]
    for name in SCRIPTS:
        script = secured.client.get(f"/console/{name}").text
        assert "innerHTML" not in script and "outerHTML" not in script, name
        assert "insertAdjacentHTML" not in script and "document.write" not in script, name
        assert "eval(" not in script and "new Function" not in script, name
        # Modules import one another by relative path only.
        for target in re.findall(r'from "([^"]+)"', script):
            assert re.fullmatch(r"\./[a-z]+\.js", target) and target[2:] in SCRIPTS, target
        texts.append(script)
    for text in texts:
        assert "https://" not in text and "//cdn" not in text


@pytest.mark.parametrize("role", ["reader", "editor", "admin"])
def test_whoami_names_the_key_and_its_role(secured: Server, role: str) -> None:
    res = secured.client.get("/v1/whoami", headers=bearer(role))
    assert res.status_code == 200
    assert res.json() == {"object": "principal", "key_id": f"{role}-key", "role": role,
                          "auth": "keys"}  # fmt: skip
    assert "secret" not in res.text


def test_whoami_without_keys_configured_is_the_local_admin(server: Server) -> None:
    assert server.client.get("/v1/whoami").json()["role"] == "admin"


@pytest.mark.parametrize("path", ["/v1/whoami", "/v1/stats"])
def test_the_console_routes_need_a_key(secured: Server, path: str) -> None:
    res = secured.client.get(path)
    assert res.status_code == 401 and res.json()["error"]["code"] == "unauthorized"


def test_stats_sum_up_the_metrics(secured: Server) -> None:
    empty = secured.client.get("/v1/stats", headers=bearer("reader")).json()
    assert empty["requests"]["total"] == 0 and empty["latency_s"]["mean"] is None
    assert empty["tokens_per_s"] is None and empty["empty_context_rate"] is None
    assert empty["queue"] == {"waiting": 0, "active": 0}
    for question in ("Zephyrine festival?", "Quillwort bicycles?"):
        assert secured.chat(question, role="reader").status_code == 200
    assert secured.chat("Hello", model="base", role="reader").status_code == 200
    stats = secured.client.get("/v1/stats", headers=bearer("reader")).json()
    assert stats["requests"] == {"total": 3, "ok": 3, "rejected": 0}
    assert stats["tokens"]["completion"] > 0 and stats["tokens_per_s"] > 0
    assert stats["latency_s"]["mean"] > 0 and stats["latency_s"]["p95_at_most"] >= 0.05
    assert stats["empty_context_rate"] == 0.0  # both retrieval questions found sources
