"""POST /v1/compare as a job (admin), its progress and cancel, and the reports it serves."""

from __future__ import annotations

import uuid
from typing import Any

from tests.serve.conftest import GatedGenerator, Server, ServerFactory

CASES = [
    {"id": "h1", "question": "When does the Zephyrine harbor festival open?",
     "reference": "On the ninth of June.", "document_ids": ["harbor.md"], "tags": ["new"],
     "key_facts": ["ninth of June"]},
    {"id": "t1", "question": "Which teas do the Ferncombe tea rooms serve?",
     "reference": "Lapsang souchong and oolong.", "document_ids": ["tea.txt"], "tags": ["new"],
     "key_facts": ["oolong"]},
    {"id": "k1", "question": "What is the capital of France?", "reference": "Paris.",
     "document_ids": [], "tags": ["known"], "key_facts": ["Paris"]},
]  # fmt: skip


def post(server: Server, role: str | None = "admin", **body: Any) -> Any:
    body = {"cases": CASES, "tone_questions": 0, **body}
    return server.client.post("/v1/compare", json=body, headers=server.auth(role))


def finished(server: Server, res: Any, state: str = "succeeded") -> dict:
    assert res.status_code == 202, res.text
    job = server.wait_job(res.json()["id"], role="admin", timeout=60)
    assert job["state"] == state, job
    return job


def test_compare_job_writes_and_serves_the_report(make_server: ServerFactory) -> None:
    server = make_server(keys=True)
    server.publish("brand")
    res = post(server, adapter="brand", tone_questions=6, max_tokens=24)
    started = res.json()
    assert started["kind"] == "compare" and started["state"] in ("queued", "running")
    assert started["links"]["html"] == f"/v1/compare/{started['id']}/report.html"
    job = finished(server, res)
    result = job["result"]
    assert result["report_id"] == job["id"] and job["progress"]["done"] == 3
    assert result["arms"] == ["base", "rag", "tuned", "rag+tuned"]
    assert result["settings"]["adapter"]["ref"] == "brand@v1"
    assert result["settings"]["cases"]["source"] == "inline"
    assert result["settings"]["decoding"]["max_new_tokens"] == 24
    assert result["tone"]["heldout"]["accuracy"] is not None
    assert "questions" not in result and result["summary"]["rag"]["recall@k"]["mean"] == 1.0

    html = server.client.get(started["links"]["html"], headers=server.auth("admin"))
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in html.headers["content-security-policy"]
    assert "<svg" in html.text and "Zephyrine" in html.text
    data = server.client.get(started["links"]["json"], headers=server.auth("admin")).json()
    assert [q["id"] for q in data["questions"]] == ["h1", "t1", "k1"]
    folder = server.settings.data_dir / "reports" / job["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json"]


def test_only_admins_compare_and_read_reports(make_server: ServerFactory) -> None:
    server = make_server(keys=True)
    for role in ("reader", "editor"):
        assert post(server, role).status_code == 403
    assert post(server, None).status_code == 401
    job = finished(server, post(server, modes=["base"]))
    for role in ("reader", "editor"):
        for kind in ("html", "json"):
            url = f"/v1/compare/{job['id']}/report.{kind}"
            assert server.client.get(url, headers=server.auth(role)).status_code == 403
    hidden = server.client.get(f"/v1/jobs/{job['id']}", headers=server.auth("editor"))
    assert hidden.status_code == 404  # like training jobs: editors see only ingest jobs


def test_requests_are_validated_before_a_job_starts(make_server: ServerFactory) -> None:
    server = make_server()
    bad = [CASES[0], {"id": "x", "question": "Why?", "document_ids": []}, CASES[0]]

    def error(res: Any, status: int) -> dict:
        assert res.status_code == status, res.text
        return res.json()["error"]

    err = error(post(server, cases=bad), 400)
    assert err["code"] == "invalid_cases" and "cases[1]: 'reference' is missing" in err["message"]
    assert "cases[2]: duplicate id" in err["message"]
    assert error(post(server, use_shipped=True), 400)["code"] == "invalid_request"
    none = server.client.post("/v1/compare", json={"modes": ["base"]})
    assert "use_shipped" in error(none, 400)["message"]
    assert "need an adapter" in error(post(server, modes=["base", "tuned"]), 400)["message"]
    assert error(post(server, adapter="nope"), 404)["code"] == "adapter_not_found"
    assert error(post(server, max_tokens=10**6), 400)["param"] == "max_tokens"
    assert error(post(server, modes=["fancy"]), 400)["code"] == "invalid_request"
    assert error(post(server, cases=[]), 400)["code"] == "invalid_cases"
    assert "at least 5" in error(post(server, tone_questions=3), 400)["message"]
    assert server.client.get("/v1/jobs?kind=compare").json()["data"] == []


def test_cancel_between_questions(make_server: ServerFactory) -> None:
    generator = GatedGenerator()
    server = make_server(generator=generator)
    res = post(server, modes=["base"])
    job_id = res.json()["id"]
    assert generator.entered.wait(10)  # the first question is being answered
    assert server.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    generator.release.set()
    job = finished(server, res, "cancelled")
    assert job["progress"]["done"] <= 1 and generator.calls <= 2
    ready = server.client.get(f"/v1/compare/{job_id}/report.html")
    assert ready.status_code == 409 and ready.json()["error"]["code"] == "report_not_ready"


def test_report_of_an_unknown_or_other_job_is_404(make_server: ServerFactory) -> None:
    server = make_server()
    ingest = server.reindex()
    for job_id in (uuid.uuid4().hex, ingest["id"], "..%2F..%2Fjobs"):
        res = server.client.get(f"/v1/compare/{job_id}/report.json")
        assert res.status_code == 404, res.text


def test_shipped_cases_with_a_limit(make_server: ServerFactory) -> None:
    server = make_server()
    body = {"use_shipped": True, "limit": 2, "modes": ["base", "rag"], "tone_questions": 0}
    res = server.client.post("/v1/compare", json=body)
    result = finished(server, res)["result"]
    cases = result["settings"]["cases"]
    assert cases["source"] == "shipped" and cases["count"] == 2 and cases["limit"] == 2
    assert cases["file"] == "cases.jsonl" and len(cases["file_sha256"]) == 64
