"""The crasher's world: a corpus, a data directory (index, adapters, uploads, jobs), and the real
child processes (`ragtune` commands, an adapter publish, `ragtune serve`) it kills."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ingest.config import IngestConfig
from ingest.document import sha256_hex
from retrieval.embedder import HashEmbedder
from retrieval.index import Index
from retrieval.indexer import Indexer
from tests.conftest import ROOT
from tests.procs import free_port
from tests.reliability.crasher_shim import NAME, write_adapter
from tests.reliability.crasher_state import CrashCheckError
from tests.retrieval.helpers import paragraph
from tuning.adapters import AdapterRegistry

UPLOAD_PREFIX = "uploads/"
CHILD_TIMEOUT_S = 60.0


def text(rng: random.Random, tag: str) -> bytes:
    """A distinct document of 1 to 3 chunks (at the default 200 tokens a chunk)."""
    return paragraph(f"{tag}x{rng.randrange(10**6)}", rng.randint(3, 14)).encode()


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str


@dataclass
class World:
    root: Path
    generation: int = 0  # a failed iteration moves on to a fresh data directory
    windows: dict[str, float] = field(default_factory=dict)  # op -> seconds its work takes
    servers: list[Server] = field(default_factory=list)
    serial: int = 0

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def data(self) -> Path:
        return self.root / f"data{self.generation}"

    @property
    def uploads(self) -> Path:
        return self.data / "uploads"

    @property
    def adapters(self) -> Path:
        return self.data / "adapters"

    def log(self, what: str) -> Path:
        self.serial += 1
        (self.root / "logs").mkdir(exist_ok=True)
        return self.root / "logs" / f"{self.serial:03d}-{what}.log"

    # -- the files the operations read ---------------------------------------------------------

    def build(self, rng: random.Random) -> None:
        """A fresh data directory: the corpus and three uploads indexed, two adapter versions."""
        if not self.corpus.is_dir():
            self.corpus.mkdir(parents=True)
            for i in range(60):
                (self.corpus / f"c{i:03d}.txt").write_bytes(text(rng, f"c{i}"))
        self.uploads.mkdir(parents=True)
        for i in range(3):
            (self.uploads / f"up{i}.txt").write_bytes(text(rng, f"up{i}"))
        embedder = HashEmbedder(64)
        index = Index(self.data / "index", embedder_model_id=embedder.model_id, dim=64)
        indexer = Indexer(index, embedder, IngestConfig())
        indexer.ingest([self.corpus], sync=True)
        indexer.ingest([self.uploads], id_prefix=UPLOAD_PREFIX)
        index.close()
        registry = AdapterRegistry(self.adapters)
        for seed in (1, 2):
            staged = registry.staging_dir(NAME)
            write_adapter(staged, seed)
            registry.publish(NAME, staged, {"base_model_id": "echo", "seed": seed})
        registry.promote(f"{NAME}@v1")

    def rebuild(self, rng: random.Random) -> None:
        self.stop_servers()
        self.generation += 1
        self.build(rng)

    def mutate_corpus(self, rng: random.Random, tag: str) -> None:
        """Files added, changed and removed (never fewer than 40 left)."""
        files = sorted(self.corpus.glob("*.txt"))
        for path in rng.sample(files, rng.randint(4, 8)):
            path.write_bytes(text(rng, f"{tag}{path.stem}"))
        for path in rng.sample(files, min(rng.randint(2, 5), len(files) - 40)):
            path.unlink()
        for _ in range(rng.randint(2, 6)):
            (self.corpus / f"n{tag}x{rng.randrange(10**6)}.txt").write_bytes(text(rng, tag))

    def corpus_documents(self) -> dict[str, str]:
        return {p.name: sha256_hex(p.read_bytes()) for p in self.corpus.glob("*.txt")}

    # -- child processes -----------------------------------------------------------------------

    def env(self, dim: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAGTUNE_")}
        return {
            **env,
            "RAGTUNE_DATA_DIR": str(self.data),
            "RAGTUNE_CORPUS_DIR": str(self.corpus),
            "RAGTUNE_EMBEDDER__BACKEND": "hash",
            "RAGTUNE_EMBEDDER__DIM": str(dim),
            "RAGTUNE_GENERATOR__BACKEND": "echo",
            "RAGTUNE_SERVER__AUDIT": "false",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }

    def spawn(
        self, point: str, args: list[str], dim: int, log: Path, *, pipe: bool = True
    ) -> subprocess.Popen[bytes]:
        """The shim in a child process; stderr (and stdout unless `pipe`) go to `log`."""
        cmd = [sys.executable, "-m", "tests.reliability.crasher_shim", point, *args]
        with log.open("wb") as out:
            stdout = subprocess.PIPE if pipe else out
            return subprocess.Popen(cmd, cwd=ROOT, env=self.env(dim), stdout=stdout, stderr=out)

    def run_child(
        self, op: str, point: str | None, args: list[str], dim: int, rng: random.Random
    ) -> None:
        """Run to the end (`point` None), die at a named point, or be killed at a random moment
        of the operation's work (timed from the child's `ready`)."""
        log = self.log(op)
        proc = self.spawn(point if point not in (None, "random") else "-", args, dim, log)
        assert proc.stdout is not None
        ready = proc.stdout.readline() == b"ready\n"
        started = time.monotonic()
        if point == "random":
            time.sleep(rng.uniform(0, 1.3 * self.windows.get(op, 0.8)))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        try:
            rc = proc.wait(CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise CrashCheckError(f"{args[:3]} hung; log {log}") from None
        proc.stdout.close()
        if point is None:
            if rc != 0 or not ready:
                raise CrashCheckError(f"{args[:3]} exited {rc}:\n{_tail(log)}")
            self.windows[op] = time.monotonic() - started
        elif point != "random" and rc != -signal.SIGKILL:
            raise CrashCheckError(f"never reached {point!r} (exit {rc}):\n{_tail(log)}")

    # -- the server ----------------------------------------------------------------------------

    def start_server(self, point: str | None, dim: int) -> Server:
        for _ in range(3):  # another test may take the free port before the server binds it
            log = self.log("serve")
            server = self._spawn_server(point, dim, log)
            if server is not None:
                return server
            if "address already in use" not in _tail(log):
                raise CrashCheckError(f"the server exited while starting:\n{_tail(log)}")
        raise CrashCheckError("no free port for the server after three tries")

    def _spawn_server(self, point: str | None, dim: int, log: Path) -> Server | None:
        """A running server, or None when it exited while starting."""
        port = free_port()
        args = ["cli", "serve", "--port", str(port)]
        # `ready` is not needed here: /health says when it listens.
        proc = self.spawn(point if point not in (None, "random") else "-", args, dim, log,
                          pipe=False)  # fmt: skip
        server = Server(proc, f"http://127.0.0.1:{port}")
        self.servers.append(server)
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None
            try:
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise CrashCheckError(f"the server never answered /health:\n{_tail(log)}")

    def serve_once(
        self,
        op: str,
        point: str | None,
        dim: int,
        rng: random.Random,
        request: Callable[[httpx.Client], str | None],
    ) -> None:
        """Start `ragtune serve`, send one request (which may start a job), and either see it
        through (point None), let the server die at `point`, or SIGKILL it at a random moment."""
        server = self.start_server(point, dim)
        client = httpx.Client(base_url=server.url, timeout=30)
        try:
            if point is None:
                started = time.monotonic()
                job = request(client)
                if job is not None:
                    wait_job(client, job)
                self.windows[op] = time.monotonic() - started
                self.stop(server)
                return
            sender = threading.Thread(target=_quietly, args=(request, client), daemon=True)
            sender.start()
            if point == "random":
                time.sleep(rng.uniform(0, 1.3 * self.windows.get(op, 0.3)))
                if server.proc.poll() is None:
                    server.proc.send_signal(signal.SIGKILL)
            try:
                rc = server.proc.wait(CHILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise CrashCheckError(f"the server never reached {point!r}") from None
            if point != "random" and rc != -signal.SIGKILL:
                raise CrashCheckError(f"the server never reached {point!r} (exit {rc})")
            sender.join(CHILD_TIMEOUT_S)
        finally:
            client.close()
            self.stop_servers()

    def stop(self, server: Server) -> None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            rc = server.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise CrashCheckError("the server ignored SIGTERM for 30 s") from None
        if rc not in (0, -signal.SIGTERM):
            raise CrashCheckError(f"the server exited {rc} on SIGTERM")

    def stop_servers(self) -> None:
        """Kill what is still running of the servers this test started (only those)."""
        for server in self.servers:
            if server.proc.poll() is None:
                server.proc.kill()
            server.proc.wait(CHILD_TIMEOUT_S)
        self.servers.clear()

    def wipe(self) -> None:
        self.stop_servers()
        shutil.rmtree(self.root, ignore_errors=True)


def wait_job(client: httpx.Client, job_id: str) -> None:
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] == "succeeded":
            return
        if job["state"] in ("failed", "cancelled", "interrupted"):
            raise CrashCheckError(f"job {job['kind']} ended {job['state']}: {job['error']}")
        time.sleep(0.02)
    raise CrashCheckError(f"job {job_id} did not finish in {CHILD_TIMEOUT_S} s")


def _quietly(request: Callable[[httpx.Client], str | None], client: httpx.Client) -> None:
    with contextlib.suppress(httpx.TransportError, CrashCheckError):
        request(client)  # the server may be killed under the request: expected


def _tail(log: Path) -> str:
    return log.read_text("utf-8", errors="replace")[-3000:]
