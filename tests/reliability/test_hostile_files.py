"""Promise 5: a batch of hostile files, generated in code, beside valid ones. Each hostile file
gets its stable error code, every valid file is committed and found, and the parent process is
unaffected: its memory stays bounded, no PDF child is left running, it goes on ingesting.

The batch runs through the `Indexer` (twice: the codes are stable) and through the server's
upload endpoint (one request, one job).
"""

from __future__ import annotations

import contextlib
import os
import resource
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.config import IngestConfig
from ingest.errors import ErrorCode
from retrieval.config import IndexConfig
from retrieval.embedder import HashEmbedder
from retrieval.index import Index
from retrieval.indexer import Indexer
from retrieval.retriever import Retriever
from tests.conftest import scratch_folder
from tests.fixtures import pdfs
from tests.reliability.test_disk_full import app_server
from tests.reliability_table import Figures
from tests.serve.conftest import Server

MAX_BYTES = 4_000_000
CONFIG = IngestConfig(max_file_bytes=MAX_BYTES, pdf_timeout_s=2.0, pdf_max_pages=50)


def spinning_pdf(ops: int = 2_000_000) -> bytes:
    """One page of `ops` text operators in a 15 KB Flate stream: pypdf needs about 15 µs each
    (30 s here), so only the wall-clock limit ends it."""
    body = zlib.compress(b"BT /F1 12 Tf 72 770 Td " + b"(a) Tj " * ops + b"ET", 9)
    return pdfs._assemble(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
            pdfs._FONT,
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(body) + body + b"\nendstream",
        ]
    )


# name -> (bytes, the error code it must get). The size-capped kinds are built lazily.
HOSTILE: dict[str, tuple[bytes, ErrorCode]] = {
    "bomb.pdf": (pdfs.bomb_pdf(200), "pdf_resources"),  # 200 KB inflating to 200 MiB
    "cyclic-page-tree.pdf": (pdfs.cyclic_page_tree_pdf(), "pdf_unreadable"),
    "deep-page-tree.pdf": (pdfs.deep_page_tree_pdf(), "pdf_resources"),
    "huge-declared-length.pdf": (pdfs.huge_length_pdf(), "pdf_resources"),
    "encrypted-with-password.pdf": (
        pdfs.encrypted_pdf(["hidden lamplighter text"], user_password="pw"),
        "pdf_encrypted",
    ),
    "image-only.pdf": (pdfs.blank_pdf(), "no_text"),
    "truncated.pdf": (pdfs.truncated_pdf(), "pdf_unreadable"),
    "garbage.pdf": (pdfs.garbage_bytes(), "pdf_unreadable"),
    "garbage-after-header.pdf": (pdfs.garbage_with_header(), "pdf_unreadable"),
    "spinning.pdf": (spinning_pdf(), "pdf_timeout"),
    "too-many-pages.pdf": (pdfs.many_pages_pdf(60, 3), "pdf_too_many_pages"),
    "empty.txt": (b"", "empty_file"),
    "binary.txt": (bytes(range(256)) * 16, "binary_content"),
    "control-characters.md": (b"\x01\x02\x03\x04\x05\x06 " * 500, "binary_content"),
    "latin-1.txt": ("Caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"), "invalid_utf8"),
    "cut-utf8.md": ("naïve".encode()[:3] + b" and more", "invalid_utf8"),
    "blank.md": (b" \n\t\r\n" * 1000, "no_text"),
    "script-only.html": (b"<html><script>" + b"var a = 1;" * 1000 + b"</script></html>", "no_text"),
    "nul.html": (b"<p>hello\x00world</p>", "binary_content"),
    "deep-empty.html": (b"<div>" * 50_000 + b"</div>" * 50_000, "no_text"),
}
# Odd but valid: each must be committed and found by its one marker word.
VALID: dict[str, tuple[bytes, str]] = {
    "plain.txt": (b"The Ravelston lighthouse keeper logs fog at dawn.", "ravelston"),
    "notes.md": (b"# Notes\n\nThe Quenby orchard ships pears in October.", "quenby"),
    "page.html": (
        b"<html><title>Dock</title><p>The Morrow dock opens at six.</p></html>",
        "morrow",
    ),
    "manual.pdf": (pdfs.make_pdf(["The Tressel winch needs oil monthly."]), "tressel"),
    "encrypted-empty-password.pdf": (
        pdfs.encrypted_pdf(["The Ardwick ledger is open to all."]),
        "ardwick",
    ),
    "huge-line.txt": (b"Halloran " + b"lantern wick oil brass " * 50_000, "halloran"),
    "deep.html": (b"<div>" * 50_000 + b"Strathy deep text" + b"</div>" * 50_000, "strathy"),
    "deep-quote.md": (b"> " * 20_000 + b"Pellow quoted deep", "pellow"),
}


def write_batch(folder: Path, outside: Path) -> dict[str, ErrorCode]:
    """The batch on disk; returns name -> expected code for every hostile file."""
    folder.mkdir(parents=True)
    expected: dict[str, ErrorCode] = {}
    for name, (data, code) in HOSTILE.items():
        (folder / name).write_bytes(data)
        expected[name] = code
    for name, (data, _) in VALID.items():
        (folder / name).write_bytes(data)
    (folder / "too-large.txt").write_bytes(b"big " * (MAX_BYTES // 4) + b"!")
    expected["too-large.txt"] = "too_large"
    outside.write_text("outside secret Zanzibarine", "utf-8")
    (folder / "linked-outside.txt").symlink_to(outside)
    expected["linked-outside.txt"] = "symlink_outside_root"
    return expected


def rss_peak_mb() -> float:
    """This process's peak resident memory since the last `reset_rss_peak()` (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_rss_peak() -> None:
    # Resets VmHWM to the current RSS; where refused, the peak covers the whole process.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def children() -> list[str]:
    """Command lines of this process's live child processes."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError, ValueError):
            continue
    return found


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def indexer(tmp_path: Path) -> Iterator[Indexer]:
    embedder = HashEmbedder(64)
    index = Index(tmp_path / "index", embedder_model_id=embedder.model_id, dim=64,
                  config=IndexConfig())  # fmt: skip
    yield Indexer(index, embedder, CONFIG)
    index.close()


@pytest.mark.promise(5)
def test_a_hostile_batch_through_the_indexer(
    tmp_path: Path, indexer: Indexer, figures: Figures
) -> None:
    expected = write_batch(tmp_path / "batch", tmp_path / "outside.txt")
    retriever = Retriever(indexer.index, indexer.embedder)
    fds, baseline = open_fds(), rss_peak_mb()
    reset_rss_peak()
    tried = passed = 0
    for attempt in range(2):  # the same codes twice: they are stable
        report = indexer.ingest([tmp_path / "batch"], sync=True)
        got = {Path(f.path).name: f.code for f in report.failures}
        tried += len(expected) + len(VALID)
        passed += sum(got.get(name) == code for name, code in expected.items())
        assert got == expected, {n: (got.get(n), c) for n, c in expected.items() if got.get(n) != c}
        if attempt == 0:
            assert report.documents.added == len(VALID), report.to_dict()
        else:
            assert report.documents.unchanged == len(VALID), report.to_dict()
        for name, (_, marker) in VALID.items():
            hits = retriever.retrieve(marker, 3, mode="keyword")
            passed += bool(hits) and hits[0].document_id == name
            assert hits and hits[0].document_id == name, (marker, hits[:1])
        assert not retriever.retrieve("zanzibarine", 3, mode="keyword")  # never read
    peak = rss_peak_mb()
    figures.memory_mb(peak)
    figures.cases(tried=tried, passed=passed)
    # The PDF child took the bomb and the spinner; the parent only read and chunked text.
    assert peak - baseline < 300, (baseline, peak)
    assert not [c for c in children() if "pdf_worker" in c], children()
    assert open_fds() <= fds + 2
    # And it goes on: a new file is ingested and found.
    (tmp_path / "after.txt").write_text("The Kilbride ferry runs hourly.", "utf-8")
    assert indexer.ingest([tmp_path / "after.txt"]).documents.added == 1
    assert retriever.retrieve("kilbride", 3, mode="keyword")[0].document_id == "after.txt"


@pytest.mark.promise(5)
def test_a_hostile_batch_through_the_upload_endpoint(figures: Figures) -> None:
    ingest = {"max_file_bytes": MAX_BYTES, "pdf_timeout_s": 2.0, "pdf_max_pages": 50}
    with scratch_folder() as root, app_server(root, ingest=ingest) as server:
        baseline = rss_peak_mb()
        reset_rss_peak()
        files = [(n, d) for n, (d, _) in HOSTILE.items()] + [(n, d) for n, (d, _) in VALID.items()]
        res = server.client.post(
            "/v1/documents",
            files=[("files", (name, data, "application/octet-stream")) for name, data in files],
        )
        assert res.status_code == 202, res.text
        job = server.wait_job(res.json()["id"], timeout=120)
        assert job["state"] == "succeeded", job
        result = job["result"]
        got = {Path(f["path"]).name: f["code"] for f in result["failures"]}
        expected = {name: code for name, (_, code) in HOSTILE.items()}
        right = sum(got.get(name) == code for name, code in expected.items())
        found = sum(found_by_chat(server, name, marker) for name, (_, marker) in VALID.items())
        # Too large for an upload: refused before anything is stored or started.
        big = b"x" * (MAX_BYTES + 1)
        res = server.client.post("/v1/documents", files=[("files", ("big.txt", big, "text/plain"))])
        refused = res.status_code == 413 and res.json()["error"]["code"] == "file_too_large"
        figures.cases(tried=len(HOSTILE) + len(VALID) + 1, passed=right + found + refused)
        assert got == expected, {n: (got.get(n), c) for n, c in expected.items() if got.get(n) != c}
        assert result["documents"]["added"] == found == len(VALID), result
        assert refused, res.text
        assert server.client.get("/health").status_code == 200
        peak = rss_peak_mb()  # the server runs in this process: its memory is this one's
        figures.memory_mb(peak)
        assert peak - baseline < 300, (baseline, peak)


def found_by_chat(server: Server, name: str, marker: str) -> bool:
    body = server.chat(f"{marker}?").json()
    return bool(body["sources"]) and body["sources"][0]["document_id"] == f"uploads/{name}"
