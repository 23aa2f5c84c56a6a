"""Promise 2: a disk that fills up while the index or an adapter is saved gives a clear error
(507 `insufficient_storage`), the previous version is still served, no temp or partial file is
left behind, and the same operation succeeds once space is back.

Two ways to fill the disk:
- in this process, through the real app: `FullDisk` makes files written below a folder get part
  of their bytes and then ENOSPC (what write(2) does when blocks run out; the writer must remove
  what it left), and pins SQLite's `max_page_count` so SQLite itself reports SQLITE_FULL;
- a real server process whose RLIMIT_FSIZE is lowered from outside (prlimit) mid-run: every
  write past the limit fails with EFBIG (SIGXFSZ is ignored by Python), then the limit is lifted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import ingest.atomic as atomic
import retrieval.store as store
import tuning.recipe as recipe
from serve.app import create_app
from serve.services import Services
from serve.settings import Settings
from tests.conftest import ROOT, scratch_folder
from tests.reliability.test_concurrency import LiveServer, start_server, stop_server
from tests.serve.conftest import CORPUS_FILES, Server, make_settings, write_corpus
from tuning.adapters import CONFIG, WEIGHTS
from tuning.train import TrainResult

NO_SPACE = "No space left on device"
# About 60 chunks of text: its rows need new SQLite pages, its vectors a bigger file.
FERRY = ("# Ferry\n\nThe Vantablue ferry leaves the north quay at seven every morning.\n\n" + "\n\n".join(
    f"Paragraph {i}: " + " ".join(f"w{i}x{j}" for j in range(90)) for i in range(60)
)).encode()  # fmt: skip


class FullDisk:
    """A disk that has run out of space below some folders, for this process (see the module
    docstring). Install it before the server opens its index, so its connections are known."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: list[Path] = []
        self.databases: list[Path] = []
        self._connections: list[tuple[Path, sqlite3.Connection]] = []
        monkeypatch.setattr(atomic, "os", _FullOs(self))
        real_connect = store.connect

        def connect(path: Path) -> sqlite3.Connection:
            conn = real_connect(path)
            self._connections.append((path.resolve(), conn))
            self._pin(path.resolve(), conn)
            return conn

        monkeypatch.setattr(store, "connect", connect)

    def fill(self, folder: Path, *, files: bool = True, sqlite: bool = True) -> None:
        if files:
            self.files.append(folder.resolve())
        if sqlite:
            self.databases.append(folder.resolve())
        for path, conn in self._connections:
            self._pin(path, conn)

    def free(self) -> None:
        self.files, self.databases = [], []
        for _, conn in self._connections:
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed since
                conn.execute("PRAGMA max_page_count = 2147483646")

    def full_for_files(self, path: Path) -> bool:
        return any(path.resolve().is_relative_to(f) for f in self.files)

    def _pin(self, path: Path, conn: sqlite3.Connection) -> None:
        if any(path.is_relative_to(d) for d in self.databases):
            with contextlib.suppress(sqlite3.ProgrammingError):
                size = conn.execute("PRAGMA page_count").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {size}")

    def write(self, path: Path, data: bytes) -> None:
        """A plain write (a trainer saving its weights) that the full disk cuts short."""
        with path.open("wb") as fh:
            if not self.full_for_files(path):
                fh.write(data)
                return
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, NO_SPACE, str(path))


class _FullOs:
    """`os` as `ingest.atomic` sees it: files it opens below a full folder run out of space."""

    def __init__(self, disk: FullDisk) -> None:
        self._disk = disk

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fdopen(self, fd: int, *args: Any, **kwargs: Any) -> Any:
        fh = os.fdopen(fd, *args, **kwargs)
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        return _FullFile(fh) if self._disk.full_for_files(path) else fh


class _FullFile:
    """Takes half of what is written, then ENOSPC: a partial file stays for the caller to clean."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def write(self, data: bytes) -> int:
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        raise OSError(errno.ENOSPC, NO_SPACE)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


# -- servers -----------------------------------------------------------------------------------


@contextlib.contextmanager
def app_server(
    root: Path, before_start: Callable[[Settings], None] | None = None, **overrides: Any
) -> Iterator[Server]:
    """The real app in this process (echo generator, hash embedder), its corpus ingested;
    `before_start` may change the data directory before the app starts."""
    folder = write_corpus(root / "corpus", CORPUS_FILES)
    settings = make_settings(root, **overrides)
    services = Services.build(settings)
    try:
        services.indexer().ingest([folder], sync=True)
        if before_start is not None:
            before_start(settings)
        with TestClient(create_app(settings, services), raise_server_exceptions=False) as client:
            yield Server(client, client.app, settings, services, folder)
    finally:
        services.index.close()


@pytest.fixture
def root() -> Iterator[Path]:
    with scratch_folder() as folder:
        yield folder


def upload(server: Server, name: str, data: bytes) -> dict[str, Any]:
    res = server.client.post("/v1/documents", files=[("files", (name, data, "text/markdown"))])
    assert res.status_code == 202, res.text
    return server.wait_job(res.json()["id"])


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def temp_files(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob(".tmp-*")]


def cited(body: dict[str, Any]) -> list[str]:
    return [s["document_id"] for s in body["sources"]]


def assert_out_of_space(job: dict[str, Any], server: Server) -> None:
    assert job["state"] == "failed", job
    assert job["error"]["code"] == "insufficient_storage", job
    assert str(server.settings.data_dir) not in json.dumps(job["error"])


def assert_previous_version_served(server: Server, version: int) -> None:
    body = server.chat("When does the Vantablue ferry leave?").json()
    assert body["ragtune"]["index_version"] == version
    assert "uploads/ferry.md" not in cited(body)
    body = server.chat("Zephyrine harbor festival?").json()
    assert cited(body)[0] == "harbor.md" and body["ragtune"]["index_version"] == version


# -- index saves -------------------------------------------------------------------------------


@pytest.mark.promise(2)
@pytest.mark.parametrize("struck", ["vector file", "sqlite"])
def test_an_upload_on_a_full_disk(root: Path, monkeypatch: pytest.MonkeyPatch, struck: str) -> None:
    disk = FullDisk(monkeypatch)
    with app_server(root) as server:
        index_dir, version = server.settings.index_dir, server.index_version
        before = listing(index_dir)
        disk.fill(index_dir, files=struck == "vector file", sqlite=struck == "sqlite")
        assert_out_of_space(upload(server, "ferry.md", FERRY), server)
        assert_previous_version_served(server, version)
        assert listing(index_dir) == before and temp_files(server.settings.data_dir) == []

        disk.free()
        job = upload(server, "ferry.md", FERRY)
        assert job["state"] == "succeeded", job
        assert job["result"]["index_version"] == server.index_version == version + 1
        body = server.chat("When does the Vantablue ferry leave?").json()
        assert cited(body)[0] == "uploads/ferry.md"
        assert temp_files(server.settings.data_dir) == []


@pytest.mark.promise(2)
def test_a_reindex_on_a_full_disk(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = FullDisk(monkeypatch)
    with app_server(root) as server:
        index_dir, version = server.settings.index_dir, server.index_version
        before = listing(index_dir)
        (server.corpus / "ferry.md").write_bytes(FERRY)
        disk.fill(index_dir)
        res = server.client.post("/v1/documents/reindex")
        assert_out_of_space(server.wait_job(res.json()["id"]), server)
        assert_previous_version_served(server, version)
        assert listing(index_dir) == before and temp_files(server.settings.data_dir) == []

        disk.free()
        job = server.reindex()
        assert job["result"]["documents"]["added"] == 1
        assert cited(server.chat("Vantablue ferry?").json())[0] == "ferry.md"


@pytest.mark.promise(2)
def test_a_delete_on_a_full_disk_answers_507(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = FullDisk(monkeypatch)
    with app_server(root) as server:
        index_dir, version = server.settings.index_dir, server.index_version
        before = listing(index_dir)
        disk.fill(index_dir)
        res = server.client.delete("/v1/documents/harbor.md")
        assert res.status_code == 507, res.text
        assert res.json()["error"]["code"] == "insufficient_storage"
        assert_previous_version_served(server, version)
        assert listing(index_dir) == before and temp_files(server.settings.data_dir) == []

        disk.free()
        assert server.client.delete("/v1/documents/harbor.md").status_code == 200
        assert server.index_version == version + 1


# -- adapter saves -----------------------------------------------------------------------------

DATA = b"".join(
    line + b"\n" for line in (ROOT / "data/tone/brand_voice.jsonl").read_bytes().splitlines()[:20]
)
TINY = json.dumps({"max_steps": 2, "max_length": 64, "batch_size": 2, "rank": 2})


def train(server: Server, **form: str) -> dict[str, Any]:
    res = server.client.post("/v1/adapters/brand/train", data={"config": TINY, **form},
                             files={"data": ("brand.jsonl", DATA, "application/jsonl")})  # fmt: skip
    assert res.status_code == 202, res.text
    return server.wait_job(res.json()["id"])


def hidden(folder: Path) -> list[str]:
    """Staging folders and temp files: what an unfinished save leaves."""
    return (
        sorted(p.name for p in folder.rglob(".*") if p.name != ".lock") if folder.exists() else []
    )


@pytest.mark.promise(2)
@pytest.mark.parametrize("struck", ["weights", "manifest"])
def test_an_adapter_training_on_a_full_disk(
    root: Path, monkeypatch: pytest.MonkeyPatch, struck: str
) -> None:
    """The real train route and recipe, with a fake trainer (no model): the disk is full when
    the trainer saves its weights, or fills up just after, when the registry writes the manifest."""
    disk = FullDisk(monkeypatch)
    monkeypatch.setattr(recipe, "resolve_model_dir", lambda model, cache: (root, "echo"))
    monkeypatch.setattr(recipe, "weights_sha256", lambda folder: "0" * 64)
    full = [False]

    def fake_train_lora(model_dir: Path, train: Any, val: Any, config: Any, out_dir: Path,
                        work_dir: Path, **kwargs: Any) -> TrainResult:  # fmt: skip
        import numpy as np
        from safetensors.numpy import save

        if full[0] and struck == "weights":
            disk.fill(out_dir.parent, sqlite=False)
        disk.write(out_dir / WEIGHTS, save({"lora_A.weight": np.ones((2, 4), np.float32)}))
        (out_dir / CONFIG).write_text(json.dumps({"peft_type": "LORA", "r": 2}), "utf-8")
        if full[0] and struck == "manifest":
            disk.fill(out_dir.parent, sqlite=False)  # the disk fills up just after the weights
        return TrainResult(3.0, 2.0, 2, [(1, 3.1), (2, 2.5)], [(0, 3.0), (2, 2.0)], steps=2,
                           epochs=0.5, stopped_early=False, truncated_examples=0, train_tokens=100,
                           tokens_per_s=50.0, train_seconds=2.0, peak_memory_mb=500.0,
                           seconds=3.0)  # fmt: skip

    monkeypatch.setattr(recipe, "train_lora", fake_train_lora)
    with app_server(root) as server:
        folder = server.settings.adapters_dir / "brand"
        first = train(server, promote="prod")
        assert first["state"] == "succeeded", first
        before = listing(folder)

        full[0] = True
        assert_out_of_space(train(server, promote="prod"), server)
        rows = server.client.get("/v1/adapters").json()["data"]
        assert [(r["ref"], r["aliases"]) for r in rows] == [("brand@v1", ["prod"])]
        answer = server.chat("hello there", model="tuned:brand").json()
        assert answer["choices"][0]["message"]["content"].startswith("[brand@v1]"), answer
        assert listing(folder) == before and hidden(folder) == []
        assert list((server.settings.training_dir / "data").iterdir()) == []
        assert temp_files(server.settings.data_dir) == []

        full[0] = False
        disk.free()
        again = train(server, promote="prod")
        assert again["state"] == "succeeded", again
        assert again["result"]["adapter"]["ref"] == "brand@v2"
        answer = server.chat("hello there", model="tuned:brand").json()
        assert answer["choices"][0]["message"]["content"].startswith("[brand@v2]"), answer
        assert hidden(folder) == []


# -- a real server process, its file size limit lowered mid-run --------------------------------

# (embedding dim, extra corpus files, limit): the first write past the limit is the new vector
# file (256-dim vectors of about 50 chunks: about 50 KB), or SQLite's WAL at COMMIT (a 4 KB
# limit, a vector file of 2 KB). Every upload, job file and audit line here stays below it.
LIMITS = {
    "vector file": (256, {f"notes/n{i}.txt": f"Note n{i}q on lamp {i} of the quay." for i in range(48)},
                    16 * 1024),
    "sqlite": (64, {}, 4 * 1024),
}  # fmt: skip


@pytest.mark.promise(2)
@pytest.mark.parametrize("struck", list(LIMITS))
def test_a_server_process_past_its_file_size_limit(root: Path, struck: str) -> None:
    dim, extra, limit = LIMITS[struck]
    server = start_server(root, {**CORPUS_FILES, **extra}, RAGTUNE_EMBEDDER__DIM=str(dim))
    try:
        vector_file = max(p.stat().st_size for p in (root / "data/index").glob("*.faiss"))
        assert vector_file > limit if struck == "vector file" else vector_file + 2048 < limit
        check_file_size_limit(server, limit)
    finally:
        stop_server(server)


def check_file_size_limit(server: LiveServer, limit: int) -> None:
    index_dir = server.data_dir / "index"
    with server.client() as http:
        version = http.get("/health").json()["index"]["version"]
        before = listing(index_dir)
        _, hard = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (limit, hard))
        try:
            job = server.upload(http, "ferry.md", FERRY[:400])
            assert job["state"] == "failed", job
            assert server.proc.poll() is None, server.output()  # SIGXFSZ did not kill it
            body = ask_ferry(http)
            assert body["ragtune"]["index_version"] == version
            assert "uploads/ferry.md" not in cited(body)
            assert listing(index_dir) == before and temp_files(server.data_dir) == []
        finally:
            resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        again = server.upload(http, "ferry.md", FERRY[:400])
        assert again["state"] == "succeeded", again
        assert cited(ask_ferry(http))[0] == "uploads/ferry.md"
    assert job["error"]["code"] == "insufficient_storage", job
    assert "Traceback" not in server.output(), server.output()  # an expected error, not a bug


def ask_ferry(http: Any) -> dict[str, Any]:
    body = {"model": "rag", "messages": [{"role": "user", "content": "Vantablue ferry?"}]}
    res = http.post("/v1/chat/completions", json=body)
    assert res.status_code == 200, res.text
    reply: dict[str, Any] = res.json()
    return reply
