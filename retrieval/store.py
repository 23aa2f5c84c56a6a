"""SQLite side of the index: documents, chunks (with their vectors), FTS5 and the manifest."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import sqlite3
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 2  # 2: chunks.context, keyword-indexed with the text
SQLITE_FULL = 13  # "database or disk is full": what SQLite reports for ENOSPC
SQLITE_IOERR = 10  # the primary code of every SQLITE_IOERR_* (a write or an fsync failed)
DB_FILE_GLOB = "*.sqlite3*"  # the database, its WAL and its shared-memory index

_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    text TEXT NOT NULL,
    pages TEXT NOT NULL,
    metadata TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL REFERENCES documents(id),
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    page INTEGER,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    hash TEXT NOT NULL,
    embedding BLOB NOT NULL,
    context TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(document_id);
CREATE INDEX IF NOT EXISTS chunks_by_hash ON chunks(hash);
"""
# The keyword index over context and text, and the triggers that keep it in step; apart from
# _SCHEMA so the migration can run them inside its transaction (executescript would commit).
_FTS = (
    """CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
        context, text, content='chunks', content_rowid='pk',
        tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, context, text) VALUES (new.pk, new.context, new.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, context, text)
        VALUES ('delete', old.pk, old.context, old.text);
    END""",
)


def connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode with full fsync on commit; transactions are explicit."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)
    if not _columns(conn, "chunks_fts"):
        for statement in _FTS:
            conn.execute(statement)
    _migrate(conn)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def _migrate(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2, in one transaction (a kill leaves schema 1): chunks get a `context`
    column, and the keyword index covers it (rebuilt from the rows)."""
    if "context" in _columns(conn, "chunks_fts"):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if "context" not in _columns(conn, "chunks"):
            conn.execute("ALTER TABLE chunks ADD COLUMN context TEXT NOT NULL DEFAULT ''")
        for trigger in ("chunks_fts_insert", "chunks_fts_delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        conn.execute("DROP TABLE IF EXISTS chunks_fts")
        for statement in _FTS:
            conn.execute(statement)
        conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
        if read_manifest(conn):
            write_manifest(conn, {"schema_version": SCHEMA_VERSION})
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def read_manifest(conn: sqlite3.Connection) -> dict[str, object]:
    """The manifest as a dict (values were stored as JSON)."""
    rows = conn.execute("SELECT key, value FROM manifest")
    return {key: json.loads(value) for key, value in rows}


def all_vectors(conn: sqlite3.Connection, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Every chunk's (pk, vector) as committed: (n,) int64 ids and (n, dim) float32 rows."""
    rows = conn.execute("SELECT pk, embedding FROM chunks ORDER BY pk").fetchall()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
    return ids, mat


def read_manifest_file(db: Path) -> dict[str, object] | None:
    """The manifest of the index database at `db`, or None where there is none (yet)."""
    if not db.is_file():
        return None
    conn = connect(db)
    try:
        return read_manifest(conn) or None
    except sqlite3.OperationalError:  # the schema is not created yet
        return None
    finally:
        conn.close()


def write_manifest(conn: sqlite3.Connection, values: dict[str, object]) -> None:
    conn.executemany(
        "INSERT INTO manifest(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [(k, json.dumps(v)) for k, v in values.items()],
    )


def storage_error(exc: BaseException, directory: Path) -> OSError | None:
    """The OSError a failed SQLite write stands for when the disk is out of room, else None.

    SQLite reports ENOSPC as SQLITE_FULL, but a write refused otherwise (a file size limit:
    EFBIG, or an fsync that finds the space gone) only as SQLITE_IOERR_*: then the folder's
    free space and the process's file size limit tell which it was. Callers then see one kind
    of full disk, whichever file it struck first.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(exc, sqlite3.Error) or code is None:
        return None
    if code == SQLITE_FULL:
        return OSError(errno.ENOSPC, "No space left on device (the index database is full)")
    if code & 0xFF != SQLITE_IOERR:
        return None
    if _at_size_limit(directory):
        return OSError(errno.EFBIG, "File too large (the index database reached the size limit)")
    with contextlib.suppress(OSError):
        if os.statvfs(directory).f_bavail == 0:
            return OSError(errno.ENOSPC, "No space left on device (writing the index database)")
    return None


def _at_size_limit(directory: Path) -> bool:
    """Has a database file reached this process's RLIMIT_FSIZE (writes past it fail, EFBIG)?"""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit == resource.RLIM_INFINITY:
        return False
    for path in directory.glob(DB_FILE_GLOB):
        with contextlib.suppress(OSError):
            if path.stat().st_size >= limit:
                return True
    return False
