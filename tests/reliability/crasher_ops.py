"""The operations the crasher kills, their kill points, and what each leaves once complete; and
the judge: a state found after a kill is the one before the operation or after it, never a mix."""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from ingest.document import sha256_hex
from tests.reliability.crasher_shim import NAME, write_adapter
from tests.reliability.crasher_state import CrashCheckError, IndexState, RegistryState, Snapshot
from tests.reliability.crasher_world import UPLOAD_PREFIX, World, text
from tuning.adapters import WEIGHTS, file_sha256

INDEX_POINTS = ("rows_written", "vectors_written", "before_commit", "committed",
                "tmp:vectors-*.faiss")  # fmt: skip
PUBLISH_POINTS = ("files_synced", "tmp:ragtune-adapter.json", "manifest_written", "renamed",
                  "tmp:aliases.json", "published")  # fmt: skip
JOB_FILE = "tmp:[0-9a-f]*.json"  # a job's state file (its first save: queued)


@dataclass(frozen=True)
class Expect:
    """The state once the operation is complete; a part left None must not change at all."""

    documents: Mapping[str, str] | None = None  # document id -> content hash
    dim: int | None = None
    fresh: bool = False  # a re-embed: no chunk row of before survives
    registry: RegistryState | None = None
    uploads: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Plan:
    expect: Expect
    run: Callable[[str | None], None]  # kill point, or None: run to completion
    rerun_when_done: bool = False  # re-run it even when the kill came after it (idempotence)


@dataclass(frozen=True)
class Op:
    points: tuple[str, ...]
    plan: Callable[[World, Snapshot, random.Random], Plan]
    prepare: Callable[[World, random.Random], None] = lambda world, rng: None
    weight: int = 1  # how often random kills pick it


def classify(before: Snapshot, expect: Expect, now: Snapshot) -> str:
    """'before' or 'after' the operation; a mix raises CrashCheckError."""
    index_after = expect.documents is not None and _index_done(before.index, expect, now.index)
    if not index_after and now.index != before.index:
        raise CrashCheckError(
            f"mix: the index is neither before nor after: {_diff(before, expect, now)}"
        )
    if now.registry not in (before.registry, expect.registry or before.registry):
        raise CrashCheckError(f"mix: the registry is neither before ({_reg(before.registry)}) "
                              f"nor after ({_reg(expect.registry)}): {_reg(now.registry)}")  # fmt: skip
    uploads_after = expect.uploads if expect.uploads is not None else before.uploads
    if now.uploads not in (before.uploads, uploads_after):
        raise CrashCheckError(f"mix: uploads are {sorted(now.uploads)}")
    if index_after and now.uploads != uploads_after:
        raise CrashCheckError("mix: the index is after the operation but the uploads folder is "
                              "before it, so a re-index would undo it")  # fmt: skip
    if expect.documents is not None:
        return "after" if index_after else "before"
    return "after" if now.registry == expect.registry else "before"


def _index_done(before: IndexState, expect: Expect, now: IndexState) -> bool:
    return (
        now.version > before.version
        and dict(now.documents) == dict(expect.documents or {})
        and now.dim == (expect.dim or before.dim)
        and not (expect.fresh and now.chunks.keys() & before.chunks.keys())
    )


def _diff(before: Snapshot, expect: Expect, now: Snapshot) -> str:
    docs, old, new = now.index.documents, before.index.documents, expect.documents or {}
    touched = [k for k in old.keys() | new.keys() if old.get(k) != new.get(k)]
    as_before = sum(docs.get(k) == old.get(k) for k in touched)
    as_after = sum(docs.get(k) == new.get(k) for k in touched)
    kept = len(now.index.chunks.keys() & before.index.chunks.keys())
    return (f"version {before.index.version} -> {now.index.version}, dim {now.index.dim}; of "
            f"the {len(touched)} documents the operation changes, {as_before} are as before and "
            f"{as_after} as after; {kept} of {len(now.index.chunks)} chunk rows are from before"
            f"{' (a re-embed replaces them all)' if expect.fresh else ''}")  # fmt: skip


def _reg(state: RegistryState | None) -> str:
    return "unchanged" if state is None else f"v{sorted(state.versions)} {dict(state.aliases)}"


# -- index operations, through the real `ragtune` command line ---------------------------------


def _ingest(world: World, before: Snapshot, rng: random.Random) -> Plan:
    uploads = {k: v for k, v in before.index.documents.items() if k.startswith(UPLOAD_PREFIX)}
    args = ["cli", "ingest", str(world.corpus), "--sync", "--json"]
    return Plan(
        Expect(documents={**world.corpus_documents(), **uploads}, dim=before.index.dim),
        lambda point: world.run_child("ingest", point, args, before.index.dim, rng),
        rerun_when_done=True,
    )


def _reindex(world: World, before: Snapshot, rng: random.Random) -> Plan:
    """`ragtune ingest --sync --reembed` under another embedder (hash-64 <-> hash-48), so the
    vectors of before and after cannot be confused."""
    dim = 48 if before.index.dim == 64 else 64
    args = ["cli", "ingest", str(world.corpus), "--sync", "--reembed", "--json"]
    return Plan(
        Expect(documents=before.index.documents, dim=dim, fresh=True),
        lambda point: world.run_child("reindex", point, args, dim, rng),
    )


# -- adapter registry operations ---------------------------------------------------------------


def _publish(world: World, before: Snapshot, rng: random.Random) -> Plan:
    seed = rng.randrange(10**6)
    state = json.loads((world.adapters / NAME / "aliases.json").read_text("utf-8"))
    version = max([*before.registry.versions, int(state.get("last_version", 0))]) + 1
    with tempfile.TemporaryDirectory() as scratch:
        write_adapter(Path(scratch), seed)
        sha = file_sha256(Path(scratch) / WEIGHTS)
    after = RegistryState({**before.registry.versions, version: sha}, before.registry.aliases)
    args = ["publish", str(world.adapters), NAME, str(seed)]
    return Plan(
        Expect(registry=after),
        lambda point: world.run_child("publish", point, args, before.index.dim, rng),
    )


def _promote(world: World, before: Snapshot, rng: random.Random) -> Plan:
    reg = before.registry
    target = rng.choice(
        [v for v in reg.versions if v != reg.aliases.get("prod")] or [*reg.versions]
    )
    after = RegistryState(reg.versions, {**reg.aliases, "prod": target})
    args = ["cli", "adapters", "promote", f"{NAME}@v{target}"]
    return Plan(
        Expect(registry=after),
        lambda point: world.run_child("promote", point, args, before.index.dim, rng),
    )


# -- the server: `ragtune serve` answering uploads, deletes and re-index requests --------------


def _job(reply: httpx.Response) -> str:
    if reply.status_code != 202:
        raise CrashCheckError(f"{reply.request.url.path}: {reply.status_code} {reply.text[:300]}")
    return str(reply.json()["id"])


def _upload(world: World, before: Snapshot, rng: random.Random) -> Plan:
    existing = sorted(before.uploads)
    name = (
        rng.choice(existing) if existing and rng.random() < 0.4 else f"u{rng.randrange(10**6)}.txt"
    )
    data = text(rng, "upload")
    sha = sha256_hex(data)

    def request(client: httpx.Client) -> str:
        return _job(client.post("/v1/documents", files=[("files", (name, data, "text/plain"))]))

    return Plan(
        Expect(
            documents={**before.index.documents, UPLOAD_PREFIX + name: sha},
            dim=before.index.dim,
            uploads={**before.uploads, name: sha},
        ),
        lambda point: world.serve_once("server-upload", point, before.index.dim, rng, request),
    )


def _delete(world: World, before: Snapshot, rng: random.Random) -> Plan:
    uploaded = sorted(n for n in before.uploads if UPLOAD_PREFIX + n in before.index.documents)
    doc_id = (
        UPLOAD_PREFIX + rng.choice(uploaded)
        if uploaded
        else rng.choice(sorted(before.index.documents))
    )
    documents = {k: v for k, v in before.index.documents.items() if k != doc_id}
    uploads = {k: v for k, v in before.uploads.items() if UPLOAD_PREFIX + k != doc_id}

    def request(client: httpx.Client) -> None:
        reply = client.delete(f"/v1/documents/{doc_id}")
        if reply.status_code != 200:
            raise CrashCheckError(f"DELETE {doc_id}: {reply.status_code} {reply.text[:300]}")

    return Plan(
        Expect(documents=documents, dim=before.index.dim, uploads=uploads),
        lambda point: world.serve_once("server-delete", point, before.index.dim, rng, request),
    )


def _prepare_server_reindex(world: World, rng: random.Random) -> None:
    """Corpus files changed, and an upload that was saved but whose job was killed."""
    world.mutate_corpus(rng, "r")
    world.uploads.mkdir(parents=True, exist_ok=True)
    (world.uploads / f"late{rng.randrange(10**6)}.txt").write_bytes(text(rng, "late"))


def _server_reindex(world: World, before: Snapshot, rng: random.Random) -> Plan:
    reembed = rng.random() < 0.5
    uploads = {UPLOAD_PREFIX + k: v for k, v in before.uploads.items()}

    def request(client: httpx.Client) -> str:
        return _job(client.post("/v1/documents/reindex", json={"reembed": reembed}))

    return Plan(
        Expect(
            documents={**world.corpus_documents(), **uploads}, dim=before.index.dim, fresh=reembed
        ),
        lambda point: world.serve_once("server-reindex", point, before.index.dim, rng, request),
    )


OPS: dict[str, Op] = {
    "ingest": Op(INDEX_POINTS, _ingest, lambda world, rng: world.mutate_corpus(rng, "i"), 3),
    "reindex": Op(("rows_written", "tmp:vectors-*.faiss", "committed"), _reindex, weight=2),
    "publish": Op(PUBLISH_POINTS, _publish, weight=2),
    "promote": Op(("tmp:aliases.json",), _promote),
    "server-upload": Op(("tmp:*.txt", JOB_FILE, "before_commit", "committed"), _upload),
    "server-delete": Op(("committed",), _delete),
    "server-reindex": Op(("rows_written", "committed"), _server_reindex, _prepare_server_reindex),
}


def schedule(seed: int) -> Iterator[tuple[str, str]]:
    """(operation, kill point) forever: every named point once per round, in a shuffled order,
    with a kill at a random moment of a random operation in every fourth iteration."""
    rng = random.Random(seed)
    named = [(op, point) for op, spec in OPS.items() for point in spec.points]
    names, weights = list(OPS), [spec.weight for spec in OPS.values()]
    count = 0
    while True:
        rng.shuffle(named)
        for pair in named:
            if count % 4 == 3:
                yield rng.choices(names, weights)[0], "random"
                count += 1
            yield pair
            count += 1
