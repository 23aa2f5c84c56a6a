"""The persistent `Index`: SQLite is the record, FAISS files are versioned, immutable snapshots.

Commit protocol (see `IndexWriter.commit`): inside one SQLite write transaction the chunk rows
change, a new vector file `vectors-<version>.faiss` is written and fsynced beside the old one,
and the manifest is pointed at it; COMMIT is the single moment the new version exists. A kill
before it leaves the old version (and an orphan file, removed on the next open); after it, the
new one. Readers search the snapshot named by the manifest they read, in the same SQLite read
transaction as the chunk rows, so one search never mixes two versions.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from retrieval import store, vectors
from retrieval.config import IndexConfig
from retrieval.read import ReadView

log = logging.getLogger(__name__)
DB_NAME = "index.sqlite3"


class IndexStoreError(Exception):
    """Base of the index's errors."""


class EmbedderMismatchError(IndexStoreError):
    """The index was built with another embedder than the one configured."""


class IndexBusyError(IndexStoreError):
    """Another writer holds the index for longer than the configured wait."""


def _refuse_link(path: Path) -> None:
    """The index's folder and files are never symlinks: one planted there would send reads
    and writes outside the data directory."""
    if path.is_symlink():
        raise IndexStoreError(
            f"{path.name} in the index is a symbolic link: refusing to follow it "
            "(remove the link; the index keeps its files in its own folder)"
        )


def _open_lock(path: Path) -> IO[str]:
    """The lock file, never through a symlink (which could create a file anywhere)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _refuse_link(path)
        raise
    return os.fdopen(fd, "a")


@dataclass(frozen=True)
class Snapshot:
    """One committed version's vectors; never mutated after it is published."""

    version: int
    vectors: Any  # faiss.IndexIDMap2


class Index:
    """FAISS vectors + SQLite chunk table + manifest under one directory."""

    def __init__(
        self,
        directory: Path,
        *,
        embedder_model_id: str,
        dim: int,
        config: IndexConfig | None = None,
        allow_embedder_change: bool = False,
    ) -> None:
        self.directory = directory
        self.config = config or IndexConfig()
        self.embedder_model_id = embedder_model_id
        self.dim = dim
        _refuse_link(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.db_path = directory / DB_NAME
        self._local = threading.local()
        self._snapshot: Snapshot | None = None
        self._load_lock = threading.Lock()
        with ExitStack() as stack:
            try:
                stack.enter_context(self.write_lock(timeout_s=0))
            except IndexBusyError:
                # A writer elsewhere is committing: its commit is authoritative, so skip
                # recovery (it would race with that writer) unless there is no index yet.
                manifest = store.read_manifest_file(self.db_path)
                if manifest is not None:
                    if not allow_embedder_change:
                        self._check_embedder(manifest)
                    return
                stack.enter_context(self.write_lock())
            conn = self.connection()
            store.create_schema(conn)
            manifest = store.read_manifest(conn)
            if not manifest:
                store.write_manifest(conn, self._fresh_manifest())
            elif not allow_embedder_change:
                self._check_embedder(manifest)
            self._recover(conn)

    @classmethod
    def open_existing(cls, directory: Path, config: IndexConfig | None = None) -> Index:
        """Open an index with the embedder its manifest names (to inspect it: no model needed)."""
        manifest = store.read_manifest_file(directory / DB_NAME)
        if manifest is None:
            raise IndexStoreError(f"no index in {directory}: run `ragtune ingest` first")
        return cls(
            directory,
            embedder_model_id=str(manifest["embedder_model_id"]),
            dim=int(str(manifest["embedder_dim"])),
            config=config,
        )

    def _fresh_manifest(self) -> dict[str, object]:
        return {
            "schema_version": store.SCHEMA_VERSION,
            "embedder_model_id": self.embedder_model_id,
            "embedder_dim": self.dim,
            "index_kind": self.config.kind,
            "version": 0,
            "vectors_file": None,
            "vectors_sha256": None,
            "vectors_count": 0,
            "chunking": None,
            "updated_at": None,
        }

    def _check_embedder(self, manifest: dict[str, object]) -> None:
        built = (manifest.get("embedder_model_id"), manifest.get("embedder_dim"))
        if built != (self.embedder_model_id, self.dim):
            raise EmbedderMismatchError(
                f"the index in {self.directory} was built with embedder '{built[0]}' "
                f"(dim {built[1]}), but '{self.embedder_model_id}' (dim {self.dim}) is "
                "configured: configure the same embedder, or re-embed everything with "
                "`ragtune ingest --reembed`"
            )

    # -- connections and locking -------------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections must not be shared mid-transaction)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
                _refuse_link(self.directory / name)  # SQLite would follow it, and write there
            conn = self._local.conn = store.connect(self.db_path)
        return conn

    @contextmanager
    def write_lock(self, timeout_s: float | None = None) -> Iterator[None]:
        """Exclusive across threads and processes; waits `timeout_s`, then IndexBusyError."""
        wait = self.config.lock_timeout_s if timeout_s is None else timeout_s
        with _open_lock(self.directory / "write.lock") as fh:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise IndexBusyError(
                            f"another ingest is writing to {self.directory}; try again later"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- snapshots -----------------------------------------------------------------------------

    def _recover(self, conn: sqlite3.Connection) -> None:
        """Called under the write lock: drop orphan files, verify or rebuild the current one."""
        manifest = store.read_manifest(conn)
        current = manifest.get("vectors_file")
        for path in self.directory.glob(f"*{vectors.VECTOR_SUFFIX}"):
            if path.name != current:
                path.unlink(missing_ok=True)  # an interrupted commit's file, or an old version
        try:
            if manifest.get("index_kind") != self.config.kind:
                raise vectors.IndexCorruptError(
                    f"index kind {manifest.get('index_kind')} -> {self.config.kind}"
                )
            self._snapshot = self._load(manifest)
            count = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
            if self._snapshot.vectors.ntotal != count:
                raise vectors.IndexCorruptError(
                    f"{current} holds {self._snapshot.vectors.ntotal} vectors; SQLite has {count}"
                )
        except (OSError, vectors.IndexCorruptError, RuntimeError) as exc:
            log.warning("rebuilding the vector file from the vectors in SQLite: %s", exc)
            self._snapshot = self._rebuild(conn, manifest)

    def _rebuild(self, conn: sqlite3.Connection, manifest: dict[str, object]) -> Snapshot:
        version = int(str(manifest["version"]))
        dim = int(str(manifest["embedder_dim"]))
        ids, mat = store.all_vectors(conn, dim)
        index = vectors.vectors_from(ids, mat, dim, self.config)
        name = vectors.vector_file_name(version)
        sha = vectors.write_vectors(index, self.directory / name)
        conn.execute("BEGIN IMMEDIATE")
        store.write_manifest(
            conn,
            {
                "vectors_file": name,
                "vectors_sha256": sha,
                "vectors_count": len(ids),
                "index_kind": self.config.kind,
            },
        )
        conn.execute("COMMIT")
        return Snapshot(version, index)

    def _load(self, manifest: dict[str, object]) -> Snapshot:
        version = int(str(manifest["version"]))
        name = manifest.get("vectors_file")
        if not name:
            return Snapshot(
                version, vectors.empty_vectors(int(str(manifest["embedder_dim"])), self.config)
            )
        loaded = vectors.load_vectors(self.directory / str(name), str(manifest["vectors_sha256"]))
        return Snapshot(version, vectors.tune(loaded, self.config))

    def _snapshot_for(self, conn: sqlite3.Connection, version: int) -> Snapshot:
        snap = self._snapshot
        if snap is not None and snap.version == version:
            return snap
        with self._load_lock:
            snap = self._snapshot
            if snap is None or snap.version != version:
                snap = self._load(store.read_manifest(conn))
                if self._snapshot is None or snap.version > self._snapshot.version:
                    self._snapshot = snap
            return snap

    def publish(self, snapshot: Snapshot) -> None:
        """Make a just-committed snapshot the one new readers use (the writer calls this)."""
        with self._load_lock:
            if self._snapshot is None or snapshot.version >= self._snapshot.version:
                self._snapshot = snapshot

    @property
    def current(self) -> Snapshot:
        with self.read() as view:
            return Snapshot(view.version, view.vectors)

    @contextmanager
    def read(self) -> Iterator[ReadView]:
        """A consistent view of one committed version: its vectors and its chunk rows."""
        conn = self.connection()
        for attempt in range(5):
            conn.execute("BEGIN")
            try:
                row = conn.execute("SELECT value FROM manifest WHERE key = 'version'").fetchone()
                snap = self._snapshot_for(conn, int(row[0]))
                break
            except FileNotFoundError:
                conn.execute("ROLLBACK")  # a writer elsewhere replaced that file: read anew
                if attempt == 4:
                    raise
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        try:
            yield ReadView(conn, snap.version, snap.vectors)
        finally:
            conn.execute("COMMIT")

    def info(self) -> dict[str, object]:
        """The manifest plus document and chunk counts, as one consistent read."""
        with self.read() as view:
            out = store.read_manifest(view.conn)
            out["documents"] = view.conn.execute("SELECT count(*) FROM documents").fetchone()[0]
            out["chunks"] = view.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
            out["directory"] = str(self.directory)
            return out

    @property
    def version(self) -> int:
        return self.current.version

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
