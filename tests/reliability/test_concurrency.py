"""Promise 3 at the server: 8 chat clients against a real server process (uvicorn on a socket,
echo generator, hash embedder) while documents are uploaded and the corpus re-indexed without a
pause; a second writer in another process holds the index lock or commits beside the server.

Every answer is checked against a model of what each index version holds: its sources carry one
version, cite only documents committed by that version and the text that version held; a query
sent after an upload was acknowledged finds it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.config import IngestConfig
from retrieval.config import IndexConfig
from retrieval.embedder import HashEmbedder
from retrieval.index import Index
from retrieval.indexer import Indexer
from tests.conftest import ROOT
from tests.procs import free_port, stop_process
from tests.reliability_table import Figures

DIM = 64
LOCK_TIMEOUT_S = 1.0
READERS = 8
BASE_FILES = {
    "harbor.md": "# Harbor\n\nThe Zephyrine harbor festival opens on the ninth of June.",
    "tea.txt": "Ferncombe tea rooms serve lapsang souchong and oolong.",
    "guides/bikes.md": "# Bicycles\n\nQuillwort bicycles are rented from the station kiosk.",
}


def ledger_text(generation: int) -> str:
    """The corpus file the writer rewrites between re-indexes: its generation word changes."""
    return f"The harbour ledger stands at generation gen{generation}x of the quay records."


@dataclass
class LiveServer:
    """A `ragtune serve` process on a free port, its output kept by a reader thread."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    corpus: Path
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=400))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return "\n".join(self.lines)

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def wait_job(self, http: httpx.Client, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
            if job["state"] in ("succeeded", "failed", "cancelled", "interrupted"):
                return job
            assert time.monotonic() < deadline, f"job still {job['state']}: {job}"
            time.sleep(0.02)

    def upload(self, http: httpx.Client, name: str, data: bytes) -> dict[str, Any]:
        res = http.post("/v1/documents", files=[("files", (name, data, "text/plain"))])
        assert res.status_code == 202, res.text
        return self.wait_job(http, res.json()["id"])

    def reindex(self, http: httpx.Client) -> dict[str, Any]:
        res = http.post("/v1/documents/reindex")
        assert res.status_code == 202, res.text
        return self.wait_job(http, res.json()["id"])


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGTUNE_")}
    env.update(
        RAGTUNE_DATA_DIR=str(data_dir),
        RAGTUNE_EMBEDDER__BACKEND="hash",
        RAGTUNE_EMBEDDER__DIM=str(DIM),
        RAGTUNE_GENERATOR__BACKEND="echo",
        HF_HUB_OFFLINE="1",
    )
    return {**env, **extra}


def start_server(root: Path, files: dict[str, str], **env: str) -> LiveServer:
    """Write the corpus, start the server, wait for /health, re-index the corpus once."""
    corpus = root / "corpus"
    for name, text in files.items():
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_text(text, "utf-8")
    port = free_port()
    cmd = [sys.executable, "-m", "serve.cli", "serve", "--port", str(port), "--corpus", str(corpus)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=server_env(root / "data", **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    server = LiveServer(proc, port, root / "data", corpus)

    def drain() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            server.lines.append(raw.decode("utf-8", "replace").rstrip())

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 60
    with server.client(5) as http:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{server.output()}")
            try:
                if http.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no /health after 60 s:\n{server.output()}"
            time.sleep(0.1)
        job = server.reindex(http)
        assert job["state"] == "succeeded", job
    return server


def stop_server(server: LiveServer) -> None:
    stop_process(server.proc, timeout=20)


@pytest.fixture
def live_root() -> Iterator[Path]:
    from tests.conftest import scratch_folder

    with scratch_folder() as folder:
        yield folder


# -- the model of what each version holds ------------------------------------------------------


@dataclass
class History:
    """When each document was committed (version) and acknowledged (monotonic time)."""

    committed: dict[str, int] = field(default_factory=dict)  # document id -> first version
    acked: dict[str, float] = field(default_factory=dict)  # document id -> ack time
    generations: list[tuple[int, int]] = field(default_factory=list)  # (version, generation)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def commit(self, doc_id: str, version: int, acked_at: float) -> None:
        with self.lock:
            self.committed.setdefault(doc_id, version)
            self.acked.setdefault(doc_id, acked_at)

    def generation_at(self, version: int) -> int:
        return max(g for v, g in self.generations if v <= version)


@dataclass
class Answer:
    sent: float
    seconds: float
    query: str
    status: int
    body: dict[str, Any]


def problems_of(answer: Answer, history: History) -> list[str]:
    """Why this answer is not one consistent version's, given what the writers recorded."""
    if answer.status != 200:
        return [f"status {answer.status}: {answer.body}"]
    out = []
    version = answer.body["ragtune"]["index_version"]
    sources = answer.body["sources"]
    if {s["index_version"] for s in sources} - {version}:
        out.append(f"mixed versions {[s['index_version'] for s in sources]} in v{version}")
    for s in sources:
        doc = s["document_id"]
        if doc == "ledger.txt":
            expected = f"gen{history.generation_at(version)}x"
            if expected not in s["text"]:
                out.append(f"v{version} cites ledger {s['text']!r}, expected {expected}")
        elif doc not in BASE_FILES and not history.committed.get(doc, 10**9) <= version:
            out.append(f"v{version} cites {doc}, committed at v{history.committed.get(doc)}")
    for doc, acked in history.acked.items():
        if answer.sent > acked and version < history.committed[doc]:
            out.append(f"sent after {doc} was acknowledged, answered from v{version}")
        found = bool(sources) and sources[0]["document_id"] == doc
        if answer.sent > acked and doc_marker(doc) == answer.query and not found:
            out.append(f"{doc} acknowledged but not found by {answer.query!r}")
    return out


def doc_marker(doc_id: str) -> str:
    """The one word only that document holds: uploads/m3.md -> m3q."""
    return Path(doc_id).stem + "q"


def ask(http: httpx.Client, query: str) -> Answer:
    body = {"model": "rag", "messages": [{"role": "user", "content": query}], "max_tokens": 8}
    sent = time.monotonic()
    res = http.post("/v1/chat/completions", json=body)
    return Answer(sent, time.monotonic() - sent, query, res.status_code, res.json())


def note_text(doc: str) -> bytes:
    return f"Note {doc_marker(doc)} about the ferry timetable and the quay lamps.".encode()


# -- the test ----------------------------------------------------------------------------------


@pytest.mark.promise(3)
def test_eight_clients_during_ingest_and_reindex_see_one_version_each(
    live_root: Path, figures: Figures
) -> None:
    files = {**BASE_FILES, "ledger.txt": ledger_text(0)}
    server = start_server(live_root, files, RAGTUNE_INDEX__LOCK_TIMEOUT_S=str(LOCK_TIMEOUT_S))
    try:
        run_clients_and_writers(server, live_root, figures)
    finally:
        stop_server(server)
    assert server.proc.returncode in (0, -signal.SIGTERM), server.output()
    assert "Traceback" not in server.output(), server.output()


def run_clients_and_writers(server: LiveServer, root: Path, figures: Figures) -> None:
    history = History()
    with server.client() as http:
        start_version = http.get("/health").json()["index"]["version"]
    history.generations.append((start_version, 0))
    answers: list[Answer] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with server.client() as http:
                while not stop.is_set():
                    with history.lock:
                        known = list(history.committed)
                    pick = rng.random()
                    if pick < 0.3 or not known:
                        query = "harbour ledger generation quay records"
                    elif pick < 0.5:  # a document that may not be committed yet
                        query = f"m{rng.randrange(24)}q"
                    else:
                        query = doc_marker(rng.choice(known))
                    answers.append(ask(http, query))
        except BaseException as exc:  # surfaced in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
    for t in threads:
        t.start()
    try:
        writer(server, root, history, answers)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, repr(failures[0])
    bad = {id(a): problems_of(a, history) for a in answers}
    wrong = [(a.query, p) for a in answers for p in bad[id(a)]]
    figures.cases(tried=len(answers), passed=sum(1 for a in answers if not bad[id(a)]))
    figures.latency_ms(max(a.seconds for a in answers) * 1000)
    assert len(answers) >= 100, len(answers)
    assert not wrong, f"{len(wrong)} inconsistent answers, first: {wrong[:5]}"
    versions = {a.body["ragtune"]["index_version"] for a in answers}
    assert len(versions) >= 10, versions  # the readers really ran across many commits


def writer(server: LiveServer, root: Path, history: History, answers: list[Answer]) -> None:
    """Uploads, corpus changes + re-index, then a second writer from this process."""
    generation = 0
    with server.client() as http:
        for n in range(12):
            doc = f"uploads/m{n}.md"
            job = server.upload(http, f"m{n}.md", note_text(doc))
            assert job["state"] == "succeeded", job
            history.commit(doc, job["result"]["index_version"], time.monotonic())
            probe = ask(http, doc_marker(doc))  # the next query finds it
            answers.append(probe)
            assert probe.body["sources"][0]["document_id"] == doc, probe.body
            if n % 3 == 2:
                generation += 1
                (server.corpus / "ledger.txt").write_text(ledger_text(generation), "utf-8")
                job = server.reindex(http)
                assert job["state"] == "succeeded", job
                history.generations.append((job["result"]["index_version"], generation))
            if n == 5:
                second_writer_waits_then_gets_409(server, http, history, answers)
                second_writer_commits_beside_the_server(server, root, http, history, answers)


def second_writer_waits_then_gets_409(
    server: LiveServer, http: httpx.Client, history: History, answers: list[Answer]
) -> None:
    """Another process holds the write lock past the server's bounded wait: an upload job fails
    with index_busy, a delete answers 409 after about the wait, and reads go on meanwhile."""
    index = Index.open_existing(server.data_dir / "index")
    try:
        with index.write_lock(timeout_s=10):
            held = time.monotonic()
            res = http.post("/v1/documents", files=[("files", ("busy.md", note_text("busy.md")))])
            assert res.status_code == 202, res.text
            job = server.wait_job(http, res.json()["id"])
            assert job["state"] == "failed" and job["error"]["code"] == "index_busy", job
            started = time.monotonic()
            res = http.delete("/v1/documents/tea.txt")
            waited = time.monotonic() - started
            assert res.status_code == 409, res.text
            assert res.json()["error"]["code"] == "index_busy"
            assert LOCK_TIMEOUT_S * 0.9 <= waited < LOCK_TIMEOUT_S + 5, waited
            during = [a for a in answers if a.sent > held]
            assert during and all(a.status == 200 for a in during)  # readers never wait on it
    finally:
        index.close()
    # The failed upload's file stayed in uploads/: the next re-index commits it.
    job = server.reindex(http)
    assert job["state"] == "succeeded", job
    version = job["result"]["index_version"]
    history.commit("uploads/busy.md", version, time.monotonic())
    assert http.get("/v1/documents/tea.txt").status_code == 200  # the 409'd delete did nothing


def second_writer_commits_beside_the_server(
    server: LiveServer, root: Path, http: httpx.Client, history: History, answers: list[Answer]
) -> None:
    """An Indexer in this process and a server re-index write at once: one waits for the other
    (bounded), both commit, and the server answers from the version this process committed."""
    ext = root / "ext"
    ext.mkdir(exist_ok=True)
    embedder = HashEmbedder(DIM)
    index = Index(server.data_dir / "index", embedder_model_id=embedder.model_id, dim=DIM,
                  config=IndexConfig(lock_timeout_s=30))  # fmt: skip
    try:
        indexer = Indexer(index, embedder, IngestConfig())
        for n in range(3):
            path = ext / f"x{n}.txt"
            path.write_bytes(note_text(path.name))
            res = http.post("/v1/documents/reindex")  # the server's writer, at the same time
            assert res.status_code == 202, res.text
            report = indexer.ingest([path])
            assert report.documents.added == 1 and not report.failures, report.to_dict()
            history.commit(path.name, report.index_version, time.monotonic())
            job = server.wait_job(http, res.json()["id"])
            assert job["state"] == "succeeded", job
            probe = ask(http, doc_marker(path.name))
            answers.append(probe)
            assert probe.body["sources"][0]["document_id"] == path.name, probe.body
    finally:
        index.close()
