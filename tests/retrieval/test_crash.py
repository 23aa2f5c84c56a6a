"""Kill -9 a real ingest process, at named points of a commit and at random moments: the index
always reopens consistent, equal to a committed state, and a re-run converges."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.chunking import chunk_document
from ingest.config import ChunkingConfig
from retrieval.embedder import HashEmbedder
from retrieval.index import Index
from retrieval.writer import IndexWriter
from tests.conftest import ROOT
from tests.retrieval.helpers import assert_consistent, paragraph, write_files

CHILD = """
import os, signal, sys
from pathlib import Path
from ingest.config import ChunkingConfig, IngestConfig
from retrieval.config import IndexConfig
from retrieval.embedder import HashEmbedder
from retrieval.index import Index
from retrieval.indexer import Indexer

index_dir, corpus, point, every = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def hook(name):
    if name == point:
        os.kill(os.getpid(), signal.SIGKILL)

embedder = HashEmbedder(64)
index = Index(Path(index_dir), embedder_model_id=embedder.model_id, dim=64,
              config=IndexConfig(commit_every_chunks=every))
config = IngestConfig(chunking=ChunkingConfig(chunk_tokens=40, overlap_tokens=8))
print("start", flush=True)
report = Indexer(index, embedder, config, fault_hook=hook).ingest([Path(corpus)], sync=True)
print(report.index_version)
"""
CHUNKING = ChunkingConfig(chunk_tokens=40, overlap_tokens=8)


def run_child(
    index_dir: Path, corpus: Path, point: str = "-", every: int = 10_000
) -> subprocess.Popen[bytes]:
    script = index_dir.parent / "child.py"
    script.write_text(CHILD)
    return subprocess.Popen(
        [sys.executable, str(script), str(index_dir), str(corpus), point, str(every)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def state(index_dir: Path) -> dict[str, str]:
    """document id -> content hash, as committed."""
    conn = sqlite3.connect(index_dir / "index.sqlite3")
    try:
        return dict(conn.execute("SELECT id, content_hash FROM documents").fetchall())
    finally:
        conn.close()


def check_documents_whole(index_dir: Path) -> None:
    """Every stored document has exactly the chunks its stored text yields: no half-written doc."""
    embedder = HashEmbedder(64)
    index = Index(index_dir, embedder_model_id=embedder.model_id, dim=64)
    with IndexWriter.open(index) as writer:
        for doc_id in writer.documents():
            doc = writer.stored_document(doc_id)
            expected = [c.hash for c in chunk_document(doc, CHUNKING, embedder)]
            assert writer.chunk_hashes(doc_id) == expected, doc_id
    index.close()


def files_hashes(corpus: Path) -> dict[str, str]:
    from ingest.document import sha256_hex

    return {
        p.relative_to(corpus).as_posix(): sha256_hex(p.read_bytes()) for p in corpus.rglob("*.txt")
    }


@pytest.mark.promise(1)
@pytest.mark.slow
@pytest.mark.parametrize("point", ["rows_written", "vectors_written", "before_commit", "committed"])
def test_kill_at_named_points_leaves_before_or_after(tmp_path: Path, point: str) -> None:
    corpus, index_dir = tmp_path / "corpus", tmp_path / "index"
    write_files(corpus, {f"d{i:02d}.txt": paragraph(f"v1doc{i}", 4) for i in range(12)})
    assert run_child(index_dir, corpus).wait(60) == 0
    before = state(index_dir)
    write_files(corpus, {f"d{i:02d}.txt": paragraph(f"v2doc{i}", 5) for i in range(0, 12, 3)})
    write_files(corpus, {"new.txt": paragraph("fresh", 3)})
    (corpus / "d01.txt").unlink()
    after = files_hashes(corpus)
    child = run_child(index_dir, corpus, point)
    assert child.wait(60) == -signal.SIGKILL
    expected = after if point == "committed" else before
    assert state(index_dir) == expected
    assert_consistent(index_dir)
    check_documents_whole(index_dir)
    assert run_child(index_dir, corpus).wait(60) == 0  # recovery, then the work completes
    assert state(index_dir) == after
    version = json.loads(sqlite3.connect(index_dir / "index.sqlite3").execute(
        "SELECT value FROM manifest WHERE key = 'version'").fetchone()[0])  # fmt: skip
    rerun = run_child(index_dir, corpus)
    assert rerun.wait(60) == 0 and int(rerun.stdout.read().split()[-1]) == version  # idempotent


@pytest.mark.promise(1)
@pytest.mark.slow
def test_random_kills_during_ingest_never_corrupt(tmp_path: Path) -> None:
    rng = random.Random(1234)
    corpus, index_dir = tmp_path / "corpus", tmp_path / "index"
    write_files(corpus, {f"d{i:03d}.txt": paragraph(f"doc{i}", 6) for i in range(200)})
    first = run_child(index_dir, corpus, every=15)
    assert first.stdout is not None and first.stdout.readline() == b"start\n"
    started = time.monotonic()
    assert first.wait(120) == 0
    window = time.monotonic() - started  # how long a full ingest of this corpus takes
    killed = 0
    for iteration in range(12):
        for _ in range(60):  # change, add and remove files between runs
            name = f"d{rng.randrange(220):03d}.txt"
            if rng.random() < 0.2:
                (corpus / name).unlink(missing_ok=True)
            else:
                write_files(corpus, {name: paragraph(f"it{iteration}x{rng.randrange(10**6)}", 6)})
        child = run_child(index_dir, corpus, every=15)
        assert child.stdout is not None and child.stdout.readline() == b"start\n"
        time.sleep(rng.uniform(0, window * 0.4))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            killed += 1
        child.wait(60)
        assert_consistent(index_dir)
        check_documents_whole(index_dir)
    assert killed >= 6, f"only {killed} of 12 kills landed mid-ingest: widen the window"
    assert run_child(index_dir, corpus).wait(60) == 0
    assert state(index_dir) == files_hashes(corpus)
    assert_consistent(index_dir)
