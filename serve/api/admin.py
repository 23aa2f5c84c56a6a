"""Admin routes: the audit log; adapters: list, show, promote, roll back, delete, train (a job)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ingest.atomic import atomic_write_bytes
from serve.api.deps import AS_ADMIN, AS_READER, WITH_BODY, Admin, Ctx, Reader
from serve.api.schema import CleanStr, check_tree
from serve.context import AppContext
from serve.errors import ApiError, documented
from serve.jobs import JobCancelled, JobContext
from tuning.adapters import DEFAULT_ALIAS, AdapterRegistry, check_alias, check_name
from tuning.data import DataError
from tuning.recipe import train_adapter
from tuning.train import TrainCancelled, TrainProgress
from tuning.train_config import TrainConfig

router = APIRouter(prefix="/v1", tags=["admin"])


@router.get(
    "/admin/audit",
    summary="The newest audit records, newest first",
    responses=documented(*AS_ADMIN, 400),
)
async def audit(
    ctx: Ctx,
    who: Admin,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    key_id: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = None,
) -> dict[str, Any]:
    rows = await run_in_threadpool(ctx.audit.tail, limit, key_id) if ctx.audit else []
    return {"object": "list", "data": rows}


def adapter_rows(registry: AdapterRegistry, name: str | None = None) -> list[dict[str, Any]]:
    rows = registry.all()
    return [a.to_dict(aliases) for a, aliases in rows if name is None or a.name == name]


@router.get(
    "/adapters",
    summary="Every adapter version, with aliases and metrics",
    responses=documented(*AS_READER),
)
async def adapters(ctx: Ctx, who: Reader) -> dict[str, Any]:
    rows = await run_in_threadpool(adapter_rows, ctx.services.registry)
    return {"object": "list", "data": rows}


@router.get(
    "/adapters/{name}",
    summary="One adapter's versions, with their manifests",
    responses=documented(*AS_READER, 400, 404),
)
async def adapter(ctx: Ctx, who: Reader, name: str) -> dict[str, Any]:
    registry = ctx.services.registry
    check_name(name)
    versions = [a.manifest for a in registry.versions(name)]
    if not versions:
        from tuning.adapters import AdapterNotFoundError

        raise AdapterNotFoundError(f"no adapter named {name!r}")
    return {"object": "adapter", "name": name, "aliases": registry.aliases(name),
            "versions": versions}  # fmt: skip


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: CleanStr = Field(max_length=64, description="A version (3, v3) or an alias.")
    alias: CleanStr = Field(DEFAULT_ALIAS, max_length=32)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    alias: CleanStr = Field(DEFAULT_ALIAS, max_length=32)


@router.post(
    "/adapters/{name}/promote",
    summary="Point an alias at a version",
    responses=documented(*AS_ADMIN, *WITH_BODY, 404, 409, 507),
)
async def promote(ctx: Ctx, who: Admin, name: str, body: PromoteRequest) -> dict[str, Any]:
    registry = ctx.services.registry
    done = await run_in_threadpool(
        registry.promote, f"{check_name(name)}@{body.version}", body.alias
    )
    return {"object": "adapter.alias", "alias": body.alias, **done.to_dict([body.alias])}


@router.post(
    "/adapters/{name}/rollback",
    summary="Point an alias back at its previous version",
    responses=documented(*AS_ADMIN, *WITH_BODY, 404, 409, 507),
)
async def rollback(ctx: Ctx, who: Admin, name: str, body: RollbackRequest) -> dict[str, Any]:
    done = await run_in_threadpool(ctx.services.registry.rollback, check_name(name), body.alias)
    return {"object": "adapter.alias", "alias": body.alias, **done.to_dict([body.alias])}


@router.delete(
    "/adapters/{name}",
    summary="Delete an adapter (or one version of it)",
    responses=documented(*AS_ADMIN, 400, 404, 507),
)
async def delete_adapter(
    ctx: Ctx, who: Admin, name: str, version: Annotated[int | None, Query(ge=1, le=10**9)] = None
) -> dict[str, Any]:
    gone = await run_in_threadpool(ctx.services.registry.delete, check_name(name), version)
    return {"object": "adapter.deleted", "name": name, "versions": gone}


def _train_config(ctx: AppContext, raw: str | None) -> TrainConfig:
    try:
        overrides = json.loads(raw) if raw else {}
        if not isinstance(overrides, dict):
            raise ValueError("config must be a JSON object of training settings")
        check_tree(overrides, max_depth=2)
        return TrainConfig.model_validate({**ctx.settings.training.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ApiError(400, "invalid_request", f"config.{where}: {first['msg']}") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_request", f"config: {exc}") from None


@router.post(
    "/adapters/{name}/train",
    status_code=202,
    summary="Train a new version (a job)",
    responses=documented(*AS_ADMIN, *WITH_BODY, 507),
)
async def train(
    ctx: Ctx,
    who: Admin,
    name: str,
    data: Annotated[UploadFile, File(description="JSONL: {messages} or {prompt, response}")],
    config: Annotated[str | None, Form(description="JSON object of training settings")] = None,
    promote: Annotated[str | None, Form(description="alias to point at the new version")] = None,
) -> dict[str, Any]:
    check_name(name)
    if promote is not None:
        check_alias(promote)
    settings = _train_config(ctx, config)
    limit = ctx.settings.ingest.max_file_bytes
    blob = await data.read(limit + 1)
    if len(blob) > limit:
        raise ApiError(413, "file_too_large", f"the training data is over {limit} bytes")
    uploads = ctx.settings.training_dir / "data"
    index_version = ctx.services.index.version

    def run(context: JobContext) -> dict[str, Any]:
        uploads.mkdir(parents=True, exist_ok=True)
        path = uploads / f"{context.job.id}.jsonl"
        atomic_write_bytes(path, blob, within=ctx.settings.data_dir)

        def progress(p: TrainProgress) -> None:
            context.report(step=p.step, total_steps=p.total_steps, epoch=round(p.epoch, 3),
                           loss=p.loss, val_loss=p.val_loss,
                           tokens_per_s=round(p.tokens_per_s, 1))  # fmt: skip

        try:
            adapter, result = train_adapter(
                name=name, data_paths=[path], config=settings, model=ctx.settings.generator.model,
                cache_dir=ctx.settings.models_dir, registry=ctx.services.registry,
                work_dir=ctx.settings.training_dir / name, index_version=index_version,
                progress=progress, should_stop=context.cancelled.is_set,
                rag_instructions=ctx.settings.chat.rag_instructions,
                persona=ctx.settings.chat.system_prompt,
            )  # fmt: skip
        except TrainCancelled:
            raise JobCancelled from None
        except DataError as exc:  # it names the server's copy of the file: name the upload
            raise DataError(str(exc).replace(str(path), data.filename or "data")) from None
        finally:
            path.unlink(missing_ok=True)
        if promote:
            ctx.services.registry.promote(adapter.ref, promote)
        return {"adapter": adapter.to_dict([promote] if promote else []),
                "result": result.to_dict()}  # fmt: skip

    job = ctx.jobs.submit("tune", run, params={"name": name, "promote": promote,
                                               "config": settings.model_dump(mode="json")},
                          owner=who.key_id)  # fmt: skip
    return {"object": "job", **job.to_dict()}
