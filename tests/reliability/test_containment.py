"""Promise 8: nothing outside the data directory is read or written through a name a client
chose (upload names, document ids, adapter names) or through a symlink planted in storage.

Beside the data directory lies `outside/` with sentinel files whose bytes, times and names are
compared after every attempt; their access times are set in the past first, so a read shows
(tmpfs and most disks update atime when it is older than the file's mtime). Their marker word
must never reach the index or any response.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ingest.atomic import OutsideRootError
from retrieval.index import IndexStoreError
from serve.services import Services
from serve.settings import Settings
from tests.conftest import scratch_folder
from tests.reliability.test_concurrency import start_server, stop_server
from tests.reliability.test_disk_full import app_server
from tests.reliability_table import Figures
from tests.serve.conftest import CORPUS_FILES, Server, publish_adapter

SECRET = "Zanzibarine"  # the word only the files outside hold
PASSWD = "root:x:0:0"


# -- the outside world and how it is watched ----------------------------------------------------


def make_outside(root: Path) -> Path:
    outside = root / "outside"
    (outside / "up").mkdir(parents=True)
    (outside / "secret.txt").write_text(f"{SECRET} vault codes 4417.", "utf-8")
    (outside / "victim.txt").write_text("do not delete or change me", "utf-8")
    (outside / "up" / "secret.txt").write_text(f"{SECRET} in the planted uploads.", "utf-8")
    (outside / "up" / "ferry.md").write_text("an outside file named like an upload", "utf-8")
    (outside / "jobs").mkdir()
    (outside / "idx").mkdir()
    past = time.time() - 3 * 86400
    for path in outside.rglob("*"):
        if path.is_file():
            os.utime(path, (past, time.time()))  # atime before mtime: a read updates it
    return outside


def snapshot(folder: Path) -> dict[str, tuple[int, str, int, int]]:
    """name -> (size, sha256, mtime, atime) of every file; names alone for folders and links."""
    out: dict[str, tuple[int, str, int, int]] = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        if path.is_file() and not path.is_symlink():
            data_hash = hashlib.sha256(path.read_bytes()).hexdigest()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # hashing is not a read by them
            out[str(path.relative_to(folder))] = (st.st_size, data_hash, st.st_mtime_ns,
                                                  st.st_atime_ns)  # fmt: skip
        else:
            out[str(path.relative_to(folder))] = (0, "", 0, 0)
    return out


def outside_of_data(root: Path) -> set[str]:
    """Every path under the test folder that is not inside the data directory."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if "data" not in p.relative_to(root).parts[:1]
    }


@dataclass
class Watch:
    """The test folder (data/ inside it) and outside/ beside data/, as they were at the start."""

    root: Path
    outside: Path
    before: dict[str, tuple[int, str, int, int]]

    def check(self) -> None:
        """outside/ is unchanged: same names, bytes, modification and access times."""
        assert snapshot(self.outside) == self.before


@pytest.fixture
def watch() -> Iterator[Watch]:
    with scratch_folder() as root:
        outside = make_outside(root)
        yield Watch(root, outside, snapshot(outside))


class Responses:
    """Keeps every response body so the test can check no secret reached a client."""

    def __init__(self, server: Server) -> None:
        self.server, self.bodies = server, []

    def __call__(self, method: str, url: str, **kwargs: Any) -> Any:
        res = self.server.client.request(method, url, **kwargs)
        self.bodies.append(res.text)
        return res

    def assert_clean(self) -> None:
        text = "\n".join(self.bodies)
        assert SECRET not in text and PASSWD not in text
        index = self.server.services.index
        with index.read() as view:
            rows = view.conn.execute("SELECT text FROM documents").fetchall()
        assert not [r[0] for r in rows if SECRET in r[0] or PASSWD in r[0]]


def multipart(filename: bytes, data: bytes) -> tuple[bytes, str]:
    """A one-file form built by hand: the file name's bytes go out exactly as given."""
    boundary = "ragtune-boundary-7d1f"
    body = (f"--{boundary}\r\n".encode() + b'Content-Disposition: form-data; name="files"; '
            b'filename="' + filename + b'"\r\nContent-Type: text/plain\r\n\r\n' + data +
            f"\r\n--{boundary}--\r\n".encode())  # fmt: skip
    return body, f"multipart/form-data; boundary={boundary}"


# -- names a client chose ----------------------------------------------------------------------

NAMES = [
    b"../escape.txt", b"../../outside/escape.txt", b"..\\escape.txt", b"/tmp/escape.txt",
    b"C:\\escape.txt", b"sub/escape.txt", b"escape.txt/", b"..", b".", b"", b".escape.txt",
    b"escape.txt\x00.pdf", b"escape\x00/../../x.txt", b"..%2fescape.txt", b"%2e%2e%2fescape.txt",
    "\uff0e\uff0e\uff0fescape.txt".encode(), "\u2025\u2215escape.txt".encode(),
    "..\u2044escape.txt".encode(), "..\u29f5escape.txt".encode(), b"\xc0\xae\xc0\xae/escape.txt",
    "e\u0301scape\u202e.txt".encode(), b"a" * 300 + b".txt", b"escape.txt\r\nX-Evil: 1",
]  # fmt: skip


@pytest.mark.promise(8)
def test_upload_names_never_leave_the_uploads_folder(watch: Watch, figures: Figures) -> None:
    root, bad = watch.root, []
    with app_server(root) as server:
        calls, before = Responses(server), outside_of_data(root)
        uploads = server.settings.uploads_dir
        for name in NAMES:
            body, kind = multipart(name, f"escape attempt {name!r}".encode())
            res = calls("POST", "/v1/documents", content=body, headers={"content-type": kind})
            if res.status_code == 202:
                job = server.wait_job(res.json()["id"])
                if job["state"] != "succeeded":
                    bad.append((name, job))
            elif res.status_code not in (400, 413, 415):
                bad.append((name, res.text))
            # Accepted only as one bare file inside uploads/ (look-alike slashes are letters).
            stored = [p for p in uploads.rglob("*")] if uploads.exists() else []
            escaped = [p for p in root.rglob("*escape*") if uploads not in p.parents]
            if (
                outside_of_data(root) != before
                or escaped
                or any(p.parent != uploads for p in stored)
            ):
                bad.append((name, escaped, stored))
        figures.cases(tried=len(NAMES), passed=len(NAMES) - len(bad))
        assert not bad, bad
        calls.assert_clean()
    watch.check()


DOC_IDS = [
    "uploads/%2e%2e%2f%2e%2e%2foutside%2fvictim.txt", "uploads/..%2F..%2F..%2Foutside%2Fvictim.txt",
    "%2e%2e/%2e%2e/outside/victim.txt", "uploads/%252e%252e%252fvictim.txt",
    "uploads\\..\\..\\outside\\victim.txt", "uploads/%00../victim.txt", "/outside/victim.txt",
    "uploads/" + str(Path("/").resolve()) + "etc/passwd",
]  # fmt: skip


@pytest.mark.promise(8)
def test_document_ids_never_reach_outside(watch: Watch, figures: Figures) -> None:
    root = watch.root
    with app_server(root) as server:
        calls = Responses(server)
        res = calls("POST", "/v1/documents", files=[("files", ("ferry.md", b"Ferry notes."))])
        assert server.wait_job(res.json()["id"])["state"] == "succeeded"
        tried = [(m, d, calls(m, f"/v1/documents/{d}")) for d in DOC_IDS for m in ("GET", "DELETE")]
        bad = [(m, d, r.text) for m, d, r in tried if r.status_code not in (400, 404)]
        figures.cases(tried=len(tried), passed=len(tried) - len(bad))
        assert not bad, bad
        assert calls("GET", "/v1/documents/uploads/ferry.md").status_code == 200
        calls.assert_clean()
    watch.check()


ADAPTER_NAMES = ["..", "%2e%2e", "..%2F..%2Foutside", "brand%00", "Brand", "..%5C..%5Coutside",
                 "%2E%2E%2F%2E%2E%2Foutside", "brand%2F..%2F..%2Foutside"]  # fmt: skip
MODELS = ["tuned:../../outside", "tuned:..%2f..%2foutside", "rag+tuned:brand@../../x",
          "tuned:brand@v1/../../x", "tuned:/etc/passwd", "tuned:..\\..\\outside"]  # fmt: skip


@pytest.mark.promise(8)
def test_adapter_names_never_reach_outside(watch: Watch, figures: Figures) -> None:
    root = watch.root
    with app_server(root) as server:
        calls, bad, tried = Responses(server), [], 0
        publish_adapter(server.services.registry, "brand", base_model_id="echo")
        data = {"data": ("d.jsonl", b'{"prompt": "a", "response": "b"}\n')}
        for name in ADAPTER_NAMES:
            for method, url, kwargs in [
                ("GET", f"/v1/adapters/{name}", {}),
                ("DELETE", f"/v1/adapters/{name}", {}),
                ("POST", f"/v1/adapters/{name}/promote", {"json": {"version": "1"}}),
                ("POST", f"/v1/adapters/{name}/rollback", {"json": {}}),
                ("POST", f"/v1/adapters/{name}/train", {"files": data}),
            ]:
                res, tried = calls(method, url, **kwargs), tried + 1
                if res.status_code not in (400, 404, 405):
                    bad.append((method, url, res.text))
        for model in MODELS:
            res, tried = calls("POST", "/v1/chat/completions",
                               json={"model": model, "messages": [{"role": "user",
                                                                   "content": "hi"}]}), tried + 1  # fmt: skip
            if res.status_code not in (400, 404):
                bad.append((model, res.text))
        figures.cases(tried=tried, passed=tried - len(bad))
        assert not bad, bad
        assert calls("GET", "/v1/jobs", params={"kind": "tune"}).json()["data"] == []
        assert sorted(p.name for p in server.settings.adapters_dir.iterdir()) == ["brand"]
        assert [a.ref for a, _ in server.services.registry.all()] == ["brand@v1"]
        calls.assert_clean()
    watch.check()


RAW_TARGETS = [
    ("GET", "/v1/documents/../../outside/victim.txt"),
    ("DELETE", "/v1/documents/uploads/../../../outside/victim.txt"),
    ("DELETE", "/v1/documents/uploads/..%2f..%2f..%2foutside%2fvictim.txt"),
    ("GET", "/v1/adapters/../../outside"),
    ("DELETE", "/v1/adapters/..%2f..%2foutside"),
    ("GET", "/v1/jobs/../../outside/victim.txt"),
    ("GET", "/../../outside/victim.txt"),
]


@pytest.mark.promise(8)
def test_raw_dot_segments_over_a_socket(watch: Watch, figures: Figures) -> None:
    """HTTP clients remove `..` segments; an attacker's raw request keeps them."""
    server = start_server(watch.root, CORPUS_FILES)
    try:
        replies = [(m, t, *raw_request(server.port, m, t)) for m, t in RAW_TARGETS]
    finally:
        stop_server(server)
    bad = [r for r in replies if r[2] not in (400, 404, 405) or b"do not delete" in r[3]]
    figures.cases(tried=len(replies), passed=len(replies) - len(bad))
    assert not bad, bad
    assert not [r for r in replies if SECRET.encode() in r[3]]
    watch.check()


def raw_request(port: int, method: str, target: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
                  "Connection: close\r\n\r\n".encode())  # fmt: skip
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# -- symlinks planted in storage ---------------------------------------------------------------


@pytest.mark.promise(8)
def test_links_inside_the_uploads_folder_and_the_corpus_are_not_followed(watch: Watch) -> None:
    root, outside = watch.root, watch.outside
    with app_server(root) as server:
        calls, uploads = Responses(server), server.settings.uploads_dir
        uploads.mkdir(parents=True)
        (uploads / "secret.txt").symlink_to(outside / "secret.txt")
        (uploads / "passwd.txt").symlink_to("/etc/passwd")
        (server.corpus / "passwd.md").symlink_to("/etc/passwd")
        (server.corpus / "secret.txt").symlink_to(outside / "secret.txt")
        (server.corpus / "linked").symlink_to(outside / "up", target_is_directory=True)
        job = server.wait_job(calls("POST", "/v1/documents/reindex").json()["id"])
        assert job["state"] == "succeeded", job
        codes = Counter(f["code"] for f in job["result"]["failures"])
        # uploads/ holds only the two links: no uploads (the server's own folder: not reported)
        assert codes == {"symlink_outside_root": 5}, job["result"]
        # An upload of the same name replaces the link itself, never what it points at.
        res = calls("POST", "/v1/documents", files=[("files", ("secret.txt", b"Fresh text."))])
        assert server.wait_job(res.json()["id"])["state"] == "succeeded"
        assert not (uploads / "secret.txt").is_symlink()
        assert calls("DELETE", "/v1/documents/uploads/secret.txt").status_code == 200
        assert calls("DELETE", "/v1/documents/uploads/passwd.txt").status_code == 404
        calls("POST", "/v1/chat/completions",
              json={"model": "rag", "messages": [{"role": "user", "content": "vault codes root"}]})  # fmt: skip
        calls.assert_clean()
    watch.check()


@pytest.mark.promise(8)
def test_links_planted_in_the_index_folder_are_refused(watch: Watch) -> None:
    root, outside = watch.root, watch.outside
    with app_server(root) as server:
        index_dir = server.settings.index_dir
        lock = index_dir / "write.lock"
        lock.unlink()
        lock.symlink_to(outside / "created-by-the-lock")  # a dangling link: open() would create
        res = server.client.post("/v1/documents", files=[("files", ("a.md", b"Alder notes."))])
        job = server.wait_job(res.json()["id"])
        assert job["state"] == "failed" and job["error"]["code"] == "index_unavailable", job
        assert not (outside / "created-by-the-lock").exists()
        lock.unlink()  # the operator removes the link: writes work again
        assert server.wait_job(server.client.post("/v1/documents/reindex").json()["id"])[
            "state"] == "succeeded"  # fmt: skip
        settings = server.settings
        current = str(server.services.index.info()["vectors_file"])
    # The current vector file replaced by a link out: the next start rebuilds it, unread.
    (index_dir / current).unlink()
    (index_dir / current).symlink_to(outside / "secret.txt")
    reopened = Services.build(settings)
    try:
        assert not (index_dir / current).is_symlink()
        hits = reopened.retriever().retrieve("Zephyrine harbor", 2)
        assert hits and hits[0].document_id == "harbor.md"
    finally:
        reopened.index.close()
    # The whole index folder replaced by a link out: refused, nothing made there.
    index_dir.rename(root / "data" / "index-moved")
    index_dir.symlink_to(outside / "idx", target_is_directory=True)
    with pytest.raises(IndexStoreError, match="symbolic link"):
        Services.build(settings)
    assert list((outside / "idx").iterdir()) == []
    watch.check()


@pytest.mark.promise(8)
def test_a_symlinked_uploads_folder_is_not_followed(watch: Watch) -> None:
    root, outside = watch.root, watch.outside
    with app_server(root) as server:
        calls, uploads = Responses(server), server.settings.uploads_dir
        res = calls("POST", "/v1/documents", files=[("files", ("ferry.md", b"Ferry notes."))])
        assert server.wait_job(res.json()["id"])["state"] == "succeeded"
        moved = uploads.rename(uploads.with_name("uploads-moved"))
        uploads.symlink_to(outside / "up", target_is_directory=True)
        job = server.wait_job(calls("POST", "/v1/documents/reindex").json()["id"])
        assert SECRET not in json.dumps(job)
        res = calls("POST", "/v1/documents", files=[("files", ("new.txt", b"New notes."))])
        server.wait_job(res.json()["id"])
        assert not (outside / "up" / "new.txt").exists()
        calls("DELETE", "/v1/documents/uploads/ferry.md")  # the outside ferry.md stays
        calls("POST", "/v1/chat/completions",
              json={"model": "rag", "messages": [{"role": "user", "content": "vault codes in the planted uploads"}]})  # fmt: skip
        calls.assert_clean()
        assert moved.is_dir()
    watch.check()


@pytest.mark.promise(8)
def test_a_symlinked_adapter_folder_is_not_followed(watch: Watch) -> None:
    root, outside = watch.root, watch.outside
    with app_server(root) as server:
        calls, registry = Responses(server), server.services.registry
        planted = publish_adapter(registry, "brand", base_model_id="echo").path.parent
        planted.rename(outside / "brand")  # an adapter folder outside, linked in
        for path in (outside / "brand").rglob("*"):
            if path.is_file():
                os.utime(path, (time.time() - 3 * 86400, time.time()))
        planted.symlink_to(outside / "brand", target_is_directory=True)
        watch.before = snapshot(outside)
        assert calls("GET", "/v1/adapters").json()["data"] == []
        assert calls("GET", "/v1/adapters/brand").status_code in (400, 404)
        calls("DELETE", "/v1/adapters/brand")
        assert (outside / "brand" / "v1").is_dir()
        res = calls("POST", "/v1/chat/completions",
                    json={"model": "tuned:brand", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert res.status_code in (400, 404), res.text
    watch.check()


@pytest.mark.promise(8)
def test_planted_audit_and_jobs_links_are_not_written_through(watch: Watch) -> None:
    root, outside = watch.root, watch.outside

    def plant(settings: Settings) -> None:
        settings.jobs_dir.parent.mkdir(parents=True, exist_ok=True)
        settings.jobs_dir.symlink_to(outside / "jobs", target_is_directory=True)
        settings.audit_path.parent.mkdir(parents=True, exist_ok=True)
        settings.audit_path.symlink_to(outside / "audit-target")

    # Refusing to start over a planted jobs/ link is as good as never writing through it.
    with contextlib.suppress(OutsideRootError), app_server(root, before_start=plant) as server:
        server.chat("Zephyrine harbor?")
        server.client.post("/v1/documents/reindex")
    assert not (outside / "audit-target").exists()
    assert list((outside / "jobs").iterdir()) == []
    watch.check()
