"""Documents: upload (ingested by a background job), list, get, delete, re-index; and jobs.

Uploaded files are stored under `<data_dir>/uploads/` by their bare file name and indexed as
`uploads/<name>`; a name with a path in it is refused, never cleaned up into another path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from ingest.atomic import atomic_write_bytes, check_within, fsync_dir
from ingest.loaders import SUPPORTED_SUFFIXES
from retrieval.indexer import IngestRoot, Progress
from retrieval.read import get_document, list_documents
from serve.api.deps import AS_EDITOR, WITH_BODY, Ctx, Editor
from serve.api.schema import clean_text, public_roots, public_source
from serve.auth import Principal
from serve.context import AppContext
from serve.errors import ApiError, documented, public_message
from serve.jobs import Job, JobContext, JobNotFoundError

router = APIRouter(prefix="/v1", tags=["documents"])
UPLOAD_PREFIX = "uploads/"
MAX_FILES = 64


def upload_name(raw: str | None) -> str:
    name = raw or ""
    try:
        clean_text(name)
    except ValueError as exc:
        raise ApiError(400, "invalid_filename", f"bad file name: {exc}") from None
    if not name or "/" in name or "\\" in name or name.startswith(".") or len(name) > 200:
        raise ApiError(400, "invalid_filename", f"bad file name {name[:200]!r}: send a bare "
                       "name (no folders, not hidden, at most 200 characters)")  # fmt: skip
    if Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
        kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise ApiError(415, "unsupported_type", f"{name!r}: only {kinds} files are indexed")
    return name


def public_report(report: dict[str, Any], roots: list[Path]) -> dict[str, Any]:
    """An ingest report as clients know the files (corpus-relative, `uploads/x.pdf`), never by
    a server folder: editors read every ingest job. Reasons name at most a file."""
    for failure in report.get("failures", []):
        failure["path"] = public_source(failure["path"], roots)
        failure["reason"] = public_message(failure["reason"])
    return report


def progress_of(context: JobContext) -> Progress:
    counts = {"files_done": 0, "files_total": 0, "chunks_embedded": 0}

    def update(stage: str, advance: int, total: int | None) -> None:
        if stage == "files":
            counts["files_total"] = total if total is not None else counts["files_total"]
            counts["files_done"] += advance
        else:
            counts["chunks_embedded"] += advance
        context.report(**counts)  # raises JobCancelled: uncommitted work is rolled back

    return update


def job_view(job: Job) -> dict[str, Any]:
    return {"object": "job", **job.to_dict()}


@router.post(
    "/documents",
    status_code=202,
    summary="Upload files and index them (a job)",
    responses=documented(*AS_EDITOR, *WITH_BODY, 415, 507),
)
async def upload(
    ctx: Ctx, who: Editor, files: Annotated[list[UploadFile], File(description="The files")]
) -> dict[str, Any]:
    if not files or len(files) > MAX_FILES:
        raise ApiError(400, "invalid_request", f"send 1 to {MAX_FILES} files")
    names = [upload_name(f.filename) for f in files]
    if len(set(names)) != len(names):
        raise ApiError(400, "invalid_request", "two files have the same name")
    limit = ctx.settings.ingest.max_file_bytes
    blobs = []
    for name, f in zip(names, files, strict=True):
        data = await f.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, "file_too_large", f"{name!r} is over {limit} bytes")
        blobs.append(data)
    folder = ctx.settings.uploads_dir
    paths = [folder / name for name in names]

    def run(context: JobContext) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        for path, data in zip(paths, blobs, strict=True):
            atomic_write_bytes(path, data, within=ctx.settings.data_dir)
        indexer = ctx.services.indexer(progress_of(context))
        within = ctx.settings.data_dir  # never through a link planted as uploads/
        report = indexer.ingest(paths, id_prefix=UPLOAD_PREFIX, within=within).to_dict()
        return public_report(report, public_roots(ctx.settings))

    job = ctx.jobs.submit("ingest", run, params={"files": names}, owner=who.key_id)
    return job_view(job)


class ReindexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reembed: bool = False


@router.post(
    "/documents/reindex",
    status_code=202,
    summary="Re-index corpus and uploads (a job)",
    responses=documented(*AS_EDITOR, *WITH_BODY, 507),
)
async def reindex(ctx: Ctx, who: Editor, body: ReindexRequest | None = None) -> dict[str, Any]:
    reembed = body.reembed if body else False
    corpus, uploads = ctx.settings.corpus_dir, ctx.settings.uploads_dir

    def run(context: JobContext) -> dict[str, Any]:
        indexer = ctx.services.indexer(progress_of(context))
        roots = [] if corpus is None else [IngestRoot(corpus)]
        # The uploads are the server's own folder: absent or empty means none are left, so the
        # sync removes every `uploads/` document (a DELETE killed between its file and the
        # index is finished here). A link planted as uploads/ is refused (and reported), never
        # listed or read, and its documents are left as they are.
        roots.append(IngestRoot(uploads, UPLOAD_PREFIX, within=ctx.settings.data_dir,
                                managed=True))  # fmt: skip
        # One ingest for both folders: one write, so a kill leaves the index as it was or
        # fully re-indexed, never the corpus done and the uploads not; a re-embed embeds once.
        report = indexer.ingest(roots, sync=True, reembed=reembed).to_dict()
        return public_report(report, public_roots(ctx.settings))

    job = ctx.jobs.submit("ingest", run, params={"reembed": reembed}, owner=who.key_id)
    return job_view(job)


def _list(ctx: AppContext, limit: int, offset: int, prefix: str) -> dict[str, Any]:
    with ctx.services.index.read() as view:
        rows = list_documents(view, limit, offset, prefix)
        roots = public_roots(ctx.settings)
        for row in rows:  # the file as the corpus (or uploads) knows it, not the server's path
            row["source"] = public_source(row["source"], roots)
        return {"object": "list", "index_version": view.version, "data": rows}


@router.get(
    "/documents",
    summary="List indexed documents",
    responses=documented(*AS_EDITOR, 400, 503),
)
async def documents(
    ctx: Ctx,
    who: Editor,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    prefix: Annotated[str, Query(max_length=500)] = "",
) -> dict[str, Any]:
    return await run_in_threadpool(_list, ctx, limit, offset, clean_query(prefix))


def clean_query(value: str) -> str:
    try:
        return clean_text(value)
    except ValueError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None


def _get(ctx: AppContext, doc_id: str) -> dict[str, Any]:
    with ctx.services.index.read() as view:
        found = get_document(view, doc_id)
        if found is None:
            raise ApiError(404, "document_not_found", "no document with that id")
        found["source"] = public_source(found["source"], public_roots(ctx.settings))
        return {"object": "document", "index_version": view.version, **found}


@router.get(
    "/documents/{doc_id:path}",
    summary="One document, with its chunks",
    responses=documented(*AS_EDITOR, 400, 404, 503),
)
async def document(ctx: Ctx, who: Editor, doc_id: str) -> dict[str, Any]:
    return await run_in_threadpool(_get, ctx, clean_query(doc_id))


def _delete(ctx: AppContext, doc_id: str) -> dict[str, Any]:
    with ctx.services.index.read() as view:
        if get_document(view, doc_id) is None:  # nothing changes for an unknown id
            raise ApiError(404, "document_not_found", "no document with that id")
    if doc_id.startswith(UPLOAD_PREFIX):
        # An upload's file goes first, durably, then its document: a kill in between leaves
        # a document whose file is gone, which a retried DELETE or the next re-index (its
        # sync) removes. The other order would leave the file without its document: a retry
        # would answer 404 and the next re-index would bring the deleted document back.
        _remove_upload(ctx, doc_id)
    report = ctx.services.indexer().delete([doc_id])
    if report.documents.removed == 0:  # another writer removed it meanwhile
        raise ApiError(404, "document_not_found", "no document with that id")
    return report.to_dict()


def _remove_upload(ctx: AppContext, doc_id: str) -> None:
    """Remove an upload's file, if still there; a name that is not bare is refused (400)."""
    path = ctx.settings.uploads_dir / upload_name(doc_id.removeprefix(UPLOAD_PREFIX))
    check_within(path, ctx.settings.data_dir)  # never through a planted uploads/ link
    try:
        path.unlink()
    except FileNotFoundError:
        return  # already gone: a DELETE cut short after this step, retried
    fsync_dir(path.parent)  # gone for good before the document is


@router.delete(
    "/documents/{doc_id:path}",
    summary="Remove a document from the index",
    responses=documented(*AS_EDITOR, 400, 404, 409, 503, 507),
)
async def delete_document(ctx: Ctx, who: Editor, doc_id: str) -> dict[str, Any]:
    return await run_in_threadpool(_delete, ctx, clean_query(doc_id))


def visible(job: Job, who: Principal) -> bool:
    return who.can("admin") or job.kind == "ingest"


def find_job(ctx: AppContext, who: Principal, job_id: str) -> Job:
    try:
        job = ctx.jobs.get(job_id)
    except JobNotFoundError:
        job = None
    if job is None or not visible(job, who):
        raise ApiError(404, "job_not_found", "no job with that id")
    return job


@router.get(
    "/jobs",
    summary="Background jobs, newest first",
    responses=documented(*AS_EDITOR, 400),
)
async def jobs(
    ctx: Ctx,
    who: Editor,
    kind: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z][a-z_-]*$")] = None,
) -> dict[str, Any]:
    rows = [job_view(j) for j in ctx.jobs.list(kind) if visible(j, who)]
    return {"object": "list", "data": rows}


@router.get(
    "/jobs/{job_id}",
    summary="One job: state, progress, result",
    responses=documented(*AS_EDITOR, 404),
)
async def job(ctx: Ctx, who: Editor, job_id: str) -> dict[str, Any]:
    return job_view(find_job(ctx, who, job_id))


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Ask a job to stop",
    responses=documented(*AS_EDITOR, 404, 507),
)
async def cancel_job(ctx: Ctx, who: Editor, job_id: str) -> dict[str, Any]:
    find_job(ctx, who, job_id)
    return job_view(ctx.jobs.cancel(job_id))
