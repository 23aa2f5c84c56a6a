"""What the crasher checks after a kill: a restart (the server's startup) loads the index, the
adapter registry and the jobs; checksums match; FAISS and SQLite agree on every chunk; nothing
is left over."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from ingest.chunking import chunk_document
from ingest.config import ChunkingConfig
from retrieval import store
from retrieval.embedder import HashEmbedder
from retrieval.index import DB_NAME, Index
from retrieval.writer import IndexWriter
from serve.app import create_app
from serve.jobs import FINAL, JobManager
from serve.settings import Settings
from tuning.adapters import (
    CONFIG,
    WEIGHTS,
    AdapterRegistry,
    check_adapter_files,
    file_sha256,
)

SQLITE_SIDE_FILES = (f"{DB_NAME}-wal", f"{DB_NAME}-shm")  # change on every open: not state
_JOB_FILE = re.compile(r"[0-9a-f]{32}\.json")


class CrashCheckError(AssertionError):
    """The state a restart finds is damaged, mixed or littered."""


@dataclass(frozen=True)
class IndexState:
    version: int
    dim: int
    documents: Mapping[str, str]  # document id -> content hash
    chunks: Mapping[int, tuple[str, str]]  # pk (the FAISS id) -> (chunk id, text hash)


@dataclass(frozen=True)
class RegistryState:
    versions: Mapping[int, str]  # version -> weights sha256
    aliases: Mapping[str, int]


@dataclass(frozen=True)
class Snapshot:
    """Everything a restart finds under the data directory."""

    index: IndexState
    registry: RegistryState
    uploads: Mapping[str, str]  # file name -> sha256
    jobs: Mapping[str, str]  # job id -> state
    files: Mapping[str, str]  # every file's relative path -> sha256 (idempotence)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def restart(data_dir: Path, corpus: Path) -> float:
    """What a restarting server does before it answers (its lifespan: index recovery on open,
    `clean_staging`, the job table), in this process; returns how long it took."""
    manifest = store.read_manifest_file(data_dir / "index" / DB_NAME) or {}
    settings = Settings(
        data_dir=data_dir,
        corpus_dir=corpus,
        embedder={"backend": "hash", "dim": int(str(manifest.get("embedder_dim", 64)))},
        generator={"backend": "echo"},
        server={"audit": False},
    )
    app = create_app(settings)
    started = time.perf_counter()
    with TestClient(app) as client:
        seconds = time.perf_counter() - started
        # The lifespan leaves its index open; close its connection (in the thread that opened
        # it) so that no connection of this process outlives the restart.
        client.portal.call(app.state.ctx.services.index.close)  # type: ignore[union-attr]
    return seconds


def recover(data_dir: Path, corpus: Path) -> tuple[Snapshot, float]:
    """Restart, then reopen everything and check it; returns what it holds and how long the
    restart took."""
    seconds = restart(data_dir, corpus)
    index = Index.open_existing(data_dir / "index")
    try:
        index_state = check_index(index)
    finally:
        index.close()
    snapshot = Snapshot(
        index=index_state,
        registry=check_registry(data_dir / "adapters"),
        uploads=check_uploads(data_dir / "uploads"),
        jobs=check_jobs(JobManager(data_dir / "jobs", lambda exc: ("error", str(exc)))),
        files=tree(data_dir),
    )
    return snapshot, seconds


def check_index(index: Index) -> IndexState:
    with index.read() as view:
        manifest = store.read_manifest(view.conn)
        dim = int(str(manifest["embedder_dim"]))
        documents = dict(view.conn.execute("SELECT id, content_hash FROM documents").fetchall())
        rows = view.conn.execute(
            "SELECT pk, id, document_id, hash, embedding FROM chunks ORDER BY pk"
        ).fetchall()
        _check_vectors(index.directory, manifest, view.vectors, rows, dim)
        _check_whole_documents(index, manifest, dim)
    orphans = sorted({r["document_id"] for r in rows} - documents.keys())
    if orphans:
        raise CrashCheckError(f"chunks of documents that are not stored: {orphans[:5]}")
    # The keyword index must cover exactly the chunk rows (an external-content FTS5 table).
    index.connection().execute(
        "INSERT INTO chunks_fts(chunks_fts, rank) VALUES('integrity-check', 1)"
    )
    allowed = {DB_NAME, *SQLITE_SIDE_FILES, "write.lock", str(manifest.get("vectors_file"))}
    _no_leftovers(index.directory, allowed, "index")
    chunks = {int(r["pk"]): (str(r["id"]), str(r["hash"])) for r in rows}
    return IndexState(int(str(manifest["version"])), dim, documents, chunks)


def _check_vectors(
    directory: Path, manifest: dict[str, object], vectors: Any, rows: list[sqlite3.Row], dim: int
) -> None:
    """The manifest's checksum and count hold; FAISS ids == SQLite pks, vector for vector."""
    import faiss

    name = manifest.get("vectors_file")
    if name is not None and sha256_file(directory / str(name)) != manifest["vectors_sha256"]:
        raise CrashCheckError(f"{name} does not match the checksum in the manifest")
    if manifest["vectors_count"] != len(rows):
        raise CrashCheckError(f"manifest counts {manifest['vectors_count']}, SQLite {len(rows)}")
    ids = faiss.vector_to_array(vectors.id_map)  # (n,) int64
    pks = np.array([r["pk"] for r in rows], dtype=np.int64)
    if len(set(ids.tolist())) != len(ids) or sorted(ids.tolist()) != pks.tolist():
        missing = sorted(set(pks.tolist()) - set(ids.tolist()))[:5]
        phantom = sorted(set(ids.tolist()) - set(pks.tolist()))[:5]
        raise CrashCheckError(
            f"FAISS has {len(ids)} ids, SQLite {len(pks)} chunks (missing {missing}, phantom "
            f"{phantom}, duplicated {len(ids) - len(set(ids.tolist()))})"
        )
    if not len(rows):
        return
    inner = faiss.downcast_index(vectors.index)
    stored = inner.reconstruct_n(0, inner.ntotal)  # (n, dim) float32, in the order of `ids`
    by_pk = {int(r["pk"]): r["embedding"] for r in rows}
    expected = np.stack([np.frombuffer(by_pk[int(i)], dtype=np.float32) for i in ids])
    if expected.shape != (len(ids), dim) or not np.array_equal(stored, expected):
        raise CrashCheckError("a FAISS vector differs from its chunk's embedding in SQLite")


def _check_whole_documents(index: Index, manifest: dict[str, object], dim: int) -> None:
    """Every document has exactly the chunks its stored text yields: none is half-written."""
    if manifest.get("chunking") is None:
        return
    chunking = ChunkingConfig(**manifest["chunking"])  # type: ignore[arg-type]
    tokenizer = HashEmbedder(dim)
    writer = IndexWriter(index)  # reads only, in the caller's read transaction
    for doc_id in writer.documents():
        expected = [
            c.hash for c in chunk_document(writer.stored_document(doc_id), chunking, tokenizer)
        ]
        if writer.chunk_hashes(doc_id) != expected:
            raise CrashCheckError(f"document {doc_id!r} has chunks of another text")


def check_registry(root: Path) -> RegistryState:
    """Every listed version is complete and matches its checksums; aliases name live versions."""
    registry = AdapterRegistry(root)
    names = registry.names()
    _no_leftovers(root, set(names), "registry")
    versions: dict[int, str] = {}
    aliases: dict[str, int] = {}
    for name in names:
        listed = registry.versions(name)
        for adapter in listed:
            check_adapter_files(adapter.path)
            m = adapter.manifest
            if (m.get("name"), m.get("version")) != (name, adapter.version) or (
                file_sha256(adapter.path / WEIGHTS),
                file_sha256(adapter.path / CONFIG),
            ) != (m.get("weights_sha256"), m.get("config_sha256")):
                raise CrashCheckError(f"{adapter.ref} does not match its manifest")
            versions[adapter.version] = str(m["weights_sha256"])
        live = {a.version for a in listed}
        for alias, version in registry.aliases(name).items():
            if version not in live:
                raise CrashCheckError(f"{name}@{alias} points at v{version}, which is gone")
            aliases[alias] = version
        allowed = {".lock", "aliases.json", *(f"v{v}" for v in live)}
        _no_leftovers(root / name, allowed, f"adapter {name!r}")
    return RegistryState(versions, aliases)


def check_uploads(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    files = {p.name: sha256_file(p) for p in folder.iterdir() if not p.name.startswith(".")}
    _no_leftovers(folder, set(files), "uploads")
    return files


def check_jobs(jobs: JobManager) -> dict[str, str]:
    """After a restart no job is still queued or running (the killed one is `interrupted`)."""
    states: dict[str, str] = {job.id: job.state for job in jobs.list()}
    unfinished = {k: v for k, v in states.items() if v not in FINAL}
    if unfinished:
        raise CrashCheckError(f"jobs left unfinished after a restart: {unfinished}")
    on_disk = {p.name for p in jobs.root.iterdir()}
    _no_leftovers(jobs.root, {n for n in on_disk if _JOB_FILE.fullmatch(n)}, "jobs")
    return states


def _no_leftovers(folder: Path, allowed: set[str], what: str) -> None:
    extra = sorted(p.name for p in folder.iterdir() if p.name not in allowed)
    if extra:
        raise CrashCheckError(f"left over in the {what} folder after recovery: {extra}")


def tree(root: Path) -> dict[str, str]:
    """Every file's checksum, except the SQLite database's: opening and closing it outside
    SQLite drops the POSIX locks of any connection of this process, and a writer elsewhere
    may then reset the WAL under it (sqlite.org/howtocorrupt.html, 2.2). Its rows are in
    `IndexState`."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(DB_NAME)
    }
