"""Incremental indexing: files -> documents -> chunks -> vectors, committed with a diff report.

Unchanged files are skipped by content hash; a changed file re-embeds only chunks whose text is
new to the index; documents chunked under another chunking config or embedder are re-chunked
from their stored text (no file needed); `sync` removes documents whose files are gone.
One `ingest` call is one write however many folders it covers (`IngestRoot`): it holds the
write lock throughout and commits once at the end (a long one also every `commit_every_chunks`
chunks, except a re-embed), removals with the last commit.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ingest.chunking import chunk_document
from ingest.config import IngestConfig
from ingest.discover import Failure, SourceFile, discover
from ingest.document import Chunk, Document, sha256_hex
from ingest.errors import IngestError
from ingest.loaders import DocumentLoader, read_checked
from retrieval import store
from retrieval.embedder import Embedder
from retrieval.index import Index
from retrieval.writer import FaultHook, IndexWriter, StoredDocument

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int | None], None]  # (stage "files" | "chunks", advance, total)
EMBED_BATCH = 512  # distinct new chunk texts embedded per call


@dataclass
class Counts:
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0


@dataclass
class IngestReport:
    """What an ingest changed; `to_dict()` is the `--json` shape."""

    documents: Counts = field(default_factory=Counts)
    chunks: Counts = field(default_factory=Counts)
    failures: list[Failure] = field(default_factory=list)
    index_version: int = 0
    embedded: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": asdict(self.documents),
            "chunks": asdict(self.chunks),
            "failures": [f.to_dict() for f in self.failures],
            "index_version": self.index_version,
            "embedded": self.embedded,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class IngestRoot:
    """A file or folder an ingest covers, and how.

    Its documents are named `prefix` + the file's path under `path` (the server's uploads:
    `uploads/<name>`); `within` refuses `path` when it resolves outside that folder (a link
    planted on the way; see `discover`). For `sync`, the documents of this root are those
    whose id starts with `prefix` and whose file lies under `path`. A folder that shows no
    files at all is left alone by `sync` and reported, unless `managed`: a folder its owner
    fills and empties itself (the server's uploads), where absent or empty means "no
    documents", so `sync` removes them all and nothing is reported.
    """

    path: Path
    prefix: str = ""
    within: Path | None = None
    managed: bool = False


@dataclass
class _Pending:
    document: Document
    chunks: list[Chunk]


def _diff(report: IngestReport, old: list[str], new: list[str]) -> None:
    """Chunk counts: same text = unchanged; replaced text = changed; the rest added/removed."""
    same = sum((Counter(old) & Counter(new)).values())
    changed = min(len(new) - same, len(old) - same)
    report.chunks.unchanged += same
    report.chunks.changed += changed
    report.chunks.added += len(new) - same - changed
    report.chunks.removed += len(old) - same - changed


class Indexer:
    """Keeps an `Index` equal to a set of files; one instance per index, reusable."""

    def __init__(
        self,
        index: Index,
        embedder: Embedder,
        config: IngestConfig,
        progress: Progress | None = None,
        fault_hook: FaultHook | None = None,
    ) -> None:
        if config.chunking.chunk_tokens > embedder.max_tokens:
            log.warning(
                "chunk_tokens %d is over the embedder's limit of %d tokens: using %d",
                config.chunking.chunk_tokens,
                embedder.max_tokens,
                embedder.max_tokens,
            )
        self.index = index
        self.embedder = embedder
        self.config = config
        self.config_hash = f"{config.chunking.fingerprint()}:{embedder.model_id}"
        self._progress = progress or (lambda stage, n, total: None)
        self._fault = fault_hook

    def ingest(
        self,
        paths: Sequence[Path | IngestRoot],
        *,
        sync: bool = False,
        reembed: bool = False,
        id_prefix: str = "",
        within: Path | None = None,
    ) -> IngestReport:
        """Bring the index in line with the files under `paths`; see the module docstring.

        A plain path is `IngestRoot(path, id_prefix, within)`: `id_prefix` puts its documents
        in a namespace, `within` refuses it when it resolves outside that folder. Give
        `IngestRoot`s to cover folders of different namespaces in one commit.
        """
        started = time.monotonic()
        report = IngestReport()
        roots = [
            p if isinstance(p, IngestRoot) else IngestRoot(p, id_prefix, within) for p in paths
        ]
        sources, synced = self._discover(roots, report)
        with (
            IndexWriter.open(self.index, self._fault) as writer,
            DocumentLoader(self.config) as loader,
        ):
            run = _Run(self, writer, report, reembed)
            self._progress("files", 0, len(sources))
            for src in sources:
                run.seen.add(src.doc_id)
                run.ingest_file(loader, src.path, src.doc_id)
                self._progress("files", 1, None)
            # With sync: the stored documents of a synced root whose file is gone. Known before
            # the re-chunking below, which would otherwise re-embed them only to drop them.
            gone = {
                doc_id
                for doc_id, old in run.stored.items()
                if sync and doc_id not in run.seen and _under(doc_id, old, synced)
            }
            for doc_id, old in run.stored.items():
                if doc_id in run.seen or doc_id in gone:
                    continue  # re-read from its file, or about to be removed
                if old.config_hash != self.config_hash or reembed:
                    run.rechunk(doc_id, old)
            for doc_id in sorted(gone):
                writer.remove(doc_id)
                report.documents.removed += 1
                report.chunks.removed += run.stored[doc_id].chunks
            run.flush(final=True)
        report.documents.failed = len(report.failures)
        report.index_version = self.index.current.version
        report.seconds = time.monotonic() - started
        return report

    def _discover(
        self, roots: list[IngestRoot], report: IngestReport
    ) -> tuple[list[SourceFile], list[tuple[str, Path]]]:
        """The files under each root (its ids prefixed), one file per id across all of them;
        and the (prefix, resolved folder) of each root that `sync` may remove documents from.
        Failures go to `report`."""
        sources: list[SourceFile] = []
        synced: list[tuple[str, Path]] = []
        for root in roots:
            found, failures = discover([root.path], self.config, within=root.within)
            whole = {f.code for f in failures if f.path == str(root.path)}  # the root itself
            if root.managed:  # absent or empty: no documents, nothing to report
                empty = ("not_found", "no_files")
                failures = [f for f in failures if f.path != str(root.path) or f.code not in empty]
                whole -= set(empty)
                folder = not root.path.exists() or root.path.is_dir()
            else:
                folder = root.path.is_dir()
            report.failures.extend(failures)
            sources += [replace(s, doc_id=root.prefix + s.doc_id) for s in found]
            # A folder that shows no files at all (an unmounted drive, a typo in a glob) is
            # reported and left alone rather than emptied from the index; a folder refused
            # as a whole (a symlink leading out) is left alone too.
            if folder and not whole & {"no_files", "symlink_outside_root"}:
                synced.append((root.prefix, root.path.resolve()))
        return _one_per_id(sources, report.failures), synced

    def delete(self, doc_ids: Sequence[str]) -> IngestReport:
        """Remove documents by id; unknown ids are reported as failures."""
        report = IngestReport()
        with IndexWriter.open(self.index, self._fault) as writer:
            stored = writer.documents()
            for doc_id in doc_ids:
                if doc_id not in stored:
                    report.failures.append(Failure(doc_id, "not_found", "no such document"))
                    continue
                writer.remove(doc_id)
                report.documents.removed += 1
                report.chunks.removed += stored[doc_id].chunks
            writer.commit()
        report.documents.failed = len(report.failures)
        report.index_version = self.index.current.version
        return report


def _under(doc_id: str, stored: StoredDocument, roots: list[tuple[str, Path]]) -> bool:
    """Is the document one of these (prefix, folder) roots': its id in the root's namespace
    and its file under the root's folder? The folder keeps a sync over the corpus from taking
    the uploads (ids of the corpus's namespace, "", but files elsewhere); the prefix keeps a
    sync over the uploads from taking documents named otherwise from files there."""
    source = Path(stored.source)
    return any(
        doc_id.startswith(prefix) and source.is_relative_to(folder) for prefix, folder in roots
    )


def _one_per_id(sources: list[SourceFile], failures: list[Failure]) -> list[SourceFile]:
    """One file per document id across roots: a later file with an id already taken is a
    failure (the same file found twice is just skipped)."""
    taken: dict[str, Path] = {}
    unique: list[SourceFile] = []
    for src in sources:
        first = taken.get(src.doc_id)
        if first is None:
            taken[src.doc_id] = src.path
            unique.append(src)
        elif first != src.path:
            reason = f"document id '{src.doc_id}' is already taken by {first}"
            failures.append(Failure(str(src.path), "duplicate_id", reason))
    return unique


class _Run:
    """State of one ingest: what is stored, what waits for vectors, what was seen."""

    def __init__(self, owner: Indexer, writer: IndexWriter, report: IngestReport, reembed: bool):
        self.o, self.writer, self.report, self.reembed = owner, writer, report, reembed
        self.stored: dict[str, StoredDocument] = writer.documents()
        self.seen: set[str] = set()
        self.pending: list[_Pending] = []
        self.fresh: dict[str, np.ndarray] = {}  # vectors computed in this run, not committed yet
        manifest = store.read_manifest(writer.conn)
        chunking = owner.config.chunking.model_dump()
        if manifest.get("chunking") != chunking:
            writer.set_manifest(chunking=chunking)
        if reembed:
            writer.rebuild_vectors()
            writer.set_manifest(
                embedder_model_id=owner.embedder.model_id, embedder_dim=owner.embedder.dim
            )

    def ingest_file(self, loader: DocumentLoader, path: Path, doc_id: str) -> None:
        old = self.stored.get(doc_id)
        try:
            data = read_checked(path, self.o.config)
            if (
                old is not None
                and not self.reembed
                and old.content_hash == sha256_hex(data)
                and old.config_hash == self.o.config_hash
                and old.source == str(path.resolve())
            ):
                self.report.documents.unchanged += 1
                self.report.chunks.unchanged += old.chunks
                return
            doc = loader.load(path, doc_id, data)
        except IngestError as exc:
            self.report.failures.append(Failure(str(path), exc.code, exc.message))
            log.info("failed %s: %s", path, exc)
            return
        self.stage(doc, old)

    def rechunk(self, doc_id: str, old: StoredDocument) -> None:
        self.stage(self.writer.stored_document(doc_id), old)

    def stage(self, doc: Document, old: StoredDocument | None) -> None:
        chunks = chunk_document(doc, self.o.config.chunking, self.o.embedder)
        old_hashes = [] if old is None else self.writer.chunk_hashes(doc.id)
        if old is None:
            self.report.documents.added += 1
        else:
            self.report.documents.changed += 1
        before = self.report.chunks.unchanged
        _diff(self.report, old_hashes, [c.hash for c in chunks])
        if self.reembed:  # every vector is recomputed: no chunk is unchanged
            self.report.chunks.changed += self.report.chunks.unchanged - before
            self.report.chunks.unchanged = before
        self.pending.append(_Pending(doc, chunks))
        batch = min(EMBED_BATCH, self.o.index.config.commit_every_chunks)
        if sum(len(p.chunks) for p in self.pending) >= batch:
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Embed what is pending, stage it, and commit when enough has piled up (or at the end)."""
        needed = {c.hash: c.embed_text for p in self.pending for c in p.chunks}
        known = {h: v for h, v in self.fresh.items() if h in needed}
        if not self.reembed:
            known.update(self.writer.stored_vectors(set(needed) - known.keys()))
        todo = sorted((h for h in needed if h not in known), key=lambda h: -len(needed[h]))
        for i in range(0, len(todo), EMBED_BATCH):
            part = todo[i : i + EMBED_BATCH]
            vecs = self.o.embedder.embed([needed[h] for h in part])
            known.update(zip(part, vecs, strict=True))
            self.o._progress("chunks", len(part), None)
        self.report.embedded += len(todo)
        self.fresh.update({h: known[h] for h in todo})
        for p in self.pending:
            self.writer.put(
                p.document, self.o.config_hash, p.chunks, {c.hash: known[c.hash] for c in p.chunks}
            )
        self.pending = []
        full = self.writer.staged_chunks >= self.o.index.config.commit_every_chunks
        if final or (full and not self.reembed):
            self.writer.commit()
            self.fresh = {}
