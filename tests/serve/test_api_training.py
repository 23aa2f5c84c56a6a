"""POST /v1/adapters/{name}/train: request checks before any job, then a real (tiny) training
job with progress, its failure and cancel paths, and the registry it leaves behind."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.serve.conftest import Server, ServerFactory, bearer

SHIPPED = ROOT / "data" / "tone" / "brand_voice.jsonl"
# 20 examples: the default 10% validation split holds 2
DATA = b"".join(line + b"\n" for line in SHIPPED.read_bytes().splitlines()[:20])
TINY = {"max_steps": 2, "max_length": 64, "batch_size": 2, "rank": 2}


def train(
    server: Server,
    name: str = "brand",
    *,
    data: bytes = DATA,
    filename: str = "brand.jsonl",
    config: dict[str, Any] | str | None = None,
    role: str | None = None,
    **form: str,
) -> Any:
    fields = dict(form)
    if config is not None:
        fields["config"] = config if isinstance(config, str) else json.dumps(config)
    return server.client.post(
        f"/v1/adapters/{name}/train",
        files={"data": (filename, data, "application/jsonl")},
        data=fields,
        headers=server.auth(role),
    )


def tune_jobs(server: Server) -> list[dict[str, Any]]:
    headers = bearer("admin") if server.keys else {}
    res = server.client.get("/v1/jobs", params={"kind": "tune"}, headers=headers)
    assert res.status_code == 200, res.text
    return res.json()["data"]


def leftovers(server: Server, name: str = "brand") -> list[str]:
    """Staging or temp folders under adapters/<name>/, and uploads not cleaned up."""
    folder = server.settings.adapters_dir / name
    hidden = []
    if folder.is_dir():
        hidden = [p.name for p in folder.iterdir() if p.name.startswith(".") and p.is_dir()]
    uploads = server.settings.training_dir / "data"
    return hidden + ([p.name for p in uploads.iterdir()] if uploads.is_dir() else [])


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"rank": -1}, "config.rank"),
        ({"nope": 1}, "config.nope"),
        ({"max_steps": 2, "eval_every_steps": 5}, "eval_every_steps"),
        ("not json", "config:"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_a_bad_config_is_refused_at_once(
    make_server: ServerFactory, config: Any, message: str
) -> None:
    server = make_server(ingest_corpus=False)
    res = train(server, config=config)
    assert res.status_code == 400, res.text
    error = res.json()["error"]
    assert error["code"] == "invalid_request" and message in error["message"]
    assert tune_jobs(server) == [] and leftovers(server) == []


@pytest.mark.parametrize("name", ["Brand", "a.b", "-x", "x" * 64])
def test_a_bad_name_or_alias_is_refused_at_once(make_server: ServerFactory, name: str) -> None:
    server = make_server(ingest_corpus=False)
    res = train(server, name, config=TINY)
    assert res.status_code == 400, res.text
    assert res.json()["error"]["code"] == "invalid_adapter"
    res = train(server, config=TINY, promote="v3")  # an alias shaped like a version
    assert res.status_code == 400 and "bad alias" in res.json()["error"]["message"]
    assert tune_jobs(server) == []


def test_training_needs_an_admin_key(make_server: ServerFactory) -> None:
    server = make_server(ingest_corpus=False, keys=True)
    for role in ("reader", "editor"):
        res = train(server, config=TINY, role=role)
        assert res.status_code == 403, res.text
        assert res.json()["error"]["code"] == "forbidden"
    res = server.client.post("/v1/adapters/brand/train", files={"data": ("a.jsonl", DATA)})
    assert res.status_code == 401
    assert tune_jobs(server) == []


def test_broken_data_fails_the_job_naming_the_upload_not_a_server_path(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(ingest_corpus=False, model_cache_dir=tmp_path / "unused-models")
    broken = b'{"prompt": "Hi?", "response": "Hey there, rider!"}\n{oops\n{"prompt": "x"}\n'
    res = train(server, data=broken, filename="my-voice.jsonl", config=TINY)
    assert res.status_code == 202, res.text
    job = server.wait_job(res.json()["id"], timeout=60)
    assert job["state"] == "failed", job
    error = job["error"]
    assert error["code"] == "invalid_training_data"
    message = error["message"]
    assert message.startswith("my-voice.jsonl: mostly broken") and "line 2: bad JSON" in message
    assert "training/data" not in message and job["id"] not in message
    assert str(server.settings.data_dir) not in json.dumps(job)
    assert server.services.registry.all() == [] and leftovers(server) == []
    assert not (tmp_path / "unused-models").exists()  # refused before loading the model


@pytest.mark.slow
def test_a_training_job_publishes_and_promotes_a_version(
    make_server: ServerFactory, model_cache_dir: Path, packaged_model_dir: Path
) -> None:
    server = make_server(ingest_corpus=False, model_cache_dir=model_cache_dir)
    res = train(server, config=TINY, promote="prod")
    assert res.status_code == 202, res.text
    job = res.json()
    assert job["object"] == "job" and job["kind"] == "tune"
    assert job["params"]["name"] == "brand" and job["params"]["config"]["rank"] == 2
    done = server.wait_job(job["id"], timeout=300)
    assert done["state"] == "succeeded", done
    progress = done["progress"]
    assert (progress["step"], progress["total_steps"]) == (2, 2)
    assert isinstance(progress["loss"], float) and progress["tokens_per_s"] > 0
    adapter = done["result"]["adapter"]
    assert adapter["ref"] == "brand@v1" and adapter["aliases"] == ["prod"]
    assert done["result"]["result"]["steps"] == 2

    rows = server.client.get("/v1/adapters").json()["data"]
    assert [(r["ref"], r["aliases"]) for r in rows] == [("brand@v1", ["prod"])]
    assert rows[0]["base_model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    manifest = server.client.get("/v1/adapters/brand").json()["versions"][0]
    assert manifest["index_version"] == server.index_version
    assert manifest["dataset"]["examples"] == 20 and manifest["dataset"]["validation"] == 2
    assert leftovers(server) == []  # the upload is gone, no staging folder remains
    assert not (server.settings.training_dir / "brand").exists()
    # the server sees it at once, and refuses it: the echo generator is not its base model
    answer = server.chat("hello", model="tuned:brand@prod")
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "adapter_base_mismatch"


@pytest.mark.slow
def test_a_cancelled_training_publishes_nothing(
    make_server: ServerFactory, model_cache_dir: Path, packaged_model_dir: Path
) -> None:
    server = make_server(ingest_corpus=False, model_cache_dir=model_cache_dir)
    res = train(server, config={**TINY, "max_steps": 500}, promote="prod")
    assert res.status_code == 202, res.text
    job_id = res.json()["id"]
    deadline = time.monotonic() + 300
    while True:  # cancel once it is really training
        job = server.client.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] in ("queued", "running"), job
        if job["progress"].get("step", 0) >= 1:
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    res = server.client.post(f"/v1/jobs/{job_id}/cancel")
    assert res.status_code == 200, res.text
    done = server.wait_job(job_id, timeout=120)
    assert done["state"] == "cancelled", done
    assert done["progress"]["step"] < 500 and done["result"] is None
    assert server.services.registry.all() == [] and server.services.registry.aliases("brand") == {}
    assert server.client.get("/v1/adapters").json()["data"] == []
    assert leftovers(server) == []
