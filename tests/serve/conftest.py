"""Fast server fixtures: hash embedder, echo generator, a tiny corpus, and an in-process client."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from safetensors.numpy import save_file

from serve.app import create_app
from serve.services import Services
from serve.settings import Settings
from tests.conftest import scratch_folder
from tuning.adapters import CONFIG, WEIGHTS, Adapter, AdapterRegistry
from tuning.generator import EchoGenerator, GenerationParams, Message

KEYS = {
    "reader": "reader-secret-0123456789",
    "editor": "editor-secret-0123456789",
    "admin": "admin-secret-0123456789ab",
}
API_KEYS = [{"id": f"{role}-key", "key": key, "role": role} for role, key in KEYS.items()]

# Four small documents; each holds one word no other holds, so keyword retrieval is unambiguous.
CORPUS_FILES = {
    "harbor.md": "# Harbor festival\n\nThe Zephyrine harbor festival opens on the ninth of June "
    "at the old pier. Lanterns are lit at dusk.",
    "tea.txt": "Ferncombe tea rooms serve lapsang souchong and oolong. They close on Mondays.",
    "guides/bikes.md": "# Bicycles\n\nQuillwort bicycles can be rented for twelve euros a day "
    "from the station kiosk.",
    "guides/policy.txt": "Refunds are paid within fourteen days of a cancelled booking.",
}


def write_corpus(folder: Path, files: dict[str, str] = CORPUS_FILES) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    return folder


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a fast server under `tmp_path` (data/ and corpus/)."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "embedder": {"backend": "hash", "dim": 64},
        "generator": {"backend": "echo"},
        "corpus_dir": tmp_path / "corpus",
        **overrides,
    }
    return Settings(**values)


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


def user(content: str) -> list[Message]:
    return [{"role": "user", "content": content}]


def publish_adapter(
    registry: AdapterRegistry, name: str, *, base_model_id: str = "echo", **manifest: Any
) -> Adapter:
    """A tiny but well-formed LoRA adapter (safetensors + peft config) published as a version."""
    staging = registry.staging_dir(name)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = {
        f"{prefix}.lora_A.weight": np.zeros((4, 8), np.float32),
        f"{prefix}.lora_B.weight": np.zeros((8, 4), np.float32),
    }
    save_file(tensors, str(staging / WEIGHTS))  # safetensors' numpy API: no torch import
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}
    (staging / CONFIG).write_text(json.dumps(config), "utf-8")
    return registry.publish(name, staging, {"base_model_id": base_model_id, **manifest})


def sse_events(raw: str) -> list[tuple[str | None, str]]:
    """(event name, data) of each server-sent event in a body."""
    events = []
    for block in raw.strip().split("\n\n"):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data.append(line.removeprefix("data: "))
        events.append((name, "\n".join(data)))
    return events


@dataclass
class Server:
    """A running app (lifespan entered) and helpers to talk to it."""

    client: TestClient
    app: FastAPI
    settings: Settings
    services: Services
    corpus: Path
    keys: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def auth(self, role: str | None) -> dict[str, str]:
        if role is None:
            return dict(self.headers)
        return bearer(role)

    def chat(
        self,
        content: str | None = None,
        *,
        model: str = "rag",
        messages: list[Message] | None = None,
        role: str | None = None,
        **extra: Any,
    ) -> Any:
        body = {"model": model, "messages": messages or user(content or ""), **extra}
        return self.client.post("/v1/chat/completions", json=body, headers=self.auth(role))

    def wait_job(self, job_id: str, timeout: float = 20.0, role: str | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            res = self.client.get(f"/v1/jobs/{job_id}", headers=self.auth(role))
            assert res.status_code == 200, res.text
            job = res.json()
            if job["state"] in ("succeeded", "failed", "cancelled", "interrupted"):
                return job
            assert time.monotonic() < deadline, f"job still {job['state']}: {job}"
            time.sleep(0.02)

    def reindex(self, role: str | None = None) -> dict:
        res = self.client.post("/v1/documents/reindex", headers=self.auth(role))
        assert res.status_code == 202, res.text
        job = self.wait_job(res.json()["id"], role=role)
        assert job["state"] == "succeeded", job
        return job

    def publish(self, name: str, **manifest: Any) -> Adapter:
        return publish_adapter(self.services.registry, name, **manifest)

    @property
    def index_version(self) -> int:
        return self.services.index.current.version


ServerFactory = Callable[..., Server]


@pytest.fixture
def fast_tmp(tmp_path: Path) -> Iterator[Path]:
    """A folder on tmpfs when there is one: SQLite's fsyncs make each server 10x slower on disk."""
    with scratch_folder(tmp_path) as folder:
        yield folder


@pytest.fixture
def make_server(fast_tmp: Path) -> Iterator[ServerFactory]:
    """make_server(generator=None, ingest_corpus=True, keys=False, **settings) -> a started Server.

    The tmp corpus is ingested before the app starts (unless `ingest_corpus=False`); `generator`
    replaces the echo generator (a test double); `keys=True` configures reader/editor/admin keys.
    """
    with contextlib.ExitStack() as stack:
        count = 0

        def factory(
            *,
            generator: Any = None,
            ingest_corpus: bool = True,
            keys: bool = False,
            corpus: dict[str, str] | None = None,
            **overrides: Any,
        ) -> Server:
            nonlocal count
            count += 1
            root = fast_tmp / f"server{count}"
            folder = write_corpus(root / "corpus", CORPUS_FILES if corpus is None else corpus)
            if generator is not None:
                # Test doubles such as GatedGenerator hold whole answers in generate(); the
                # repetition guard would route them through stream() instead.
                overrides.setdefault("chat", {"loop_guard_words": 0})
            if keys:
                server_cfg = dict(overrides.pop("server", {}))
                server_cfg.setdefault("api_keys", API_KEYS)
                overrides["server"] = server_cfg
            settings = make_settings(root, **overrides)
            services = Services.build(settings)
            stack.callback(services.index.close)
            if generator is not None:
                services._generator = generator
            if ingest_corpus:
                services.indexer().ingest([folder], sync=True)
            app = create_app(settings, services)
            client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
            return Server(client, app, settings, services, folder, keys)

        yield factory


@pytest.fixture
def server(make_server: ServerFactory) -> Server:
    return make_server()


class GatedGenerator(EchoGenerator):
    """The echo generator, but each generation waits until `release` is set (tests of load).

    `entered` is set when a generation starts; streams yield one word per `pace` seconds, keep
    the `stop` event they were given in `stop_events`, and record in `stopped` whether it
    ended them early (when they are iterated after it was set).
    """

    def __init__(self, pace: float = 0.02, words: int = 0) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.pace = pace
        self.words = words  # streams: pad the answer to this many words (a long answer)
        self.stopped: list[bool] = []
        self.stop_events: list[threading.Event | None] = []
        self.calls = 0

    def _wait(self) -> None:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(10), "the test never released the generator"

    def generate(self, messages: Sequence[Message], params: GenerationParams, adapter: Any = None):
        self._wait()
        return super().generate(messages, params, adapter)

    def stream(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        adapter: Any = None,
        stop: threading.Event | None = None,
        stats: Any = None,
    ) -> Iterator[str]:
        self.calls += 1
        self.entered.set()
        self.stop_events.append(stop)
        words = self._words(messages, params, adapter)
        words += ["more"] * max(0, self.words - len(words))
        for i, word in enumerate(words):
            if stop is not None and stop.is_set():
                self.stopped.append(True)
                return
            time.sleep(self.pace)
            yield word if i == 0 else f" {word}"
        self.stopped.append(False)
