"""Admin routes: the audit log and the adapter registry (list, show, promote, roll back, delete)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from serve.api.deps import Admin, Ctx, Reader
from serve.api.schema import CleanStr
from tuning.adapters import DEFAULT_ALIAS, AdapterRegistry, check_name

router = APIRouter(prefix="/v1", tags=["admin"])


@router.get("/admin/audit", summary="The newest audit records, newest first")
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


@router.get("/adapters", summary="Every adapter version, with aliases and metrics")
async def adapters(ctx: Ctx, who: Reader) -> dict[str, Any]:
    rows = await run_in_threadpool(adapter_rows, ctx.services.registry)
    return {"object": "list", "data": rows}


@router.get("/adapters/{name}", summary="One adapter's versions, with their manifests")
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
    model_config = ConfigDict(extra="forbid")
    version: CleanStr = Field(max_length=64, description="A version (3, v3) or an alias.")
    alias: CleanStr = Field(DEFAULT_ALIAS, max_length=32)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: CleanStr = Field(DEFAULT_ALIAS, max_length=32)


@router.post("/adapters/{name}/promote", summary="Point an alias at a version")
async def promote(ctx: Ctx, who: Admin, name: str, body: PromoteRequest) -> dict[str, Any]:
    registry = ctx.services.registry
    done = await run_in_threadpool(
        registry.promote, f"{check_name(name)}@{body.version}", body.alias
    )
    return {"object": "adapter.alias", "alias": body.alias, **done.to_dict([body.alias])}


@router.post("/adapters/{name}/rollback", summary="Point an alias back at its previous version")
async def rollback(ctx: Ctx, who: Admin, name: str, body: RollbackRequest) -> dict[str, Any]:
    done = await run_in_threadpool(ctx.services.registry.rollback, check_name(name), body.alias)
    return {"object": "adapter.alias", "alias": body.alias, **done.to_dict([body.alias])}


@router.delete("/adapters/{name}", summary="Delete an adapter (or one version of it)")
async def delete_adapter(
    ctx: Ctx, who: Admin, name: str, version: Annotated[int | None, Query(ge=1, le=10**9)] = None
) -> dict[str, Any]:
    gone = await run_in_threadpool(ctx.services.registry.delete, check_name(name), version)
    return {"object": "adapter.deleted", "name": name, "versions": gone}
