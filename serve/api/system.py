"""GET /health (public), /metrics (Prometheus) and /v1/models (every mode x adapter)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from serve.api.deps import AS_READER, PUBLIC, Ctx, Reader
from serve.context import AppContext
from serve.errors import documented
from serve.pipeline import Mode
from tuning.adapters import DEFAULT_ALIAS

router = APIRouter(tags=["system"])


def _index_summary(ctx: AppContext) -> dict[str, Any]:
    info = ctx.services.index.info()
    keys = ("version", "documents", "chunks", "embedder_model_id", "index_kind", "updated_at")
    return {k: info.get(k) for k in keys}


def _adapter_count(ctx: AppContext) -> int:
    registry = ctx.services.registry
    return sum(1 for name in registry.names() if registry.versions(name))


@router.get(
    "/health",
    summary="Liveness, index version and size, loaded model and adapters",
    responses=documented(*PUBLIC, 503),
)
async def health(ctx: Ctx) -> dict[str, Any]:
    index = await run_in_threadpool(_index_summary, ctx)
    generator = ctx.services.generator
    return {
        "status": "ok",
        "index": index,
        "generator": {
            # The backend that loaded ('auto' names what it chose: llamacpp, or hf).
            "backend": getattr(generator, "backend", ctx.settings.generator.backend),
            "model_id": generator.model_id,
            "context_window": generator.context_window,
            "loaded_adapters": generator.loaded_adapters,
        },
        "adapters": await run_in_threadpool(_adapter_count, ctx),
        "queue": {"waiting": ctx.gate.waiting, "active": ctx.gate.active},
        "auth": "keys" if ctx.settings.server.api_keys else "none (localhost only)",
    }


PROMETHEUS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text format",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
    **documented(*AS_READER),
}  # fmt: skip


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses=PROMETHEUS)
async def metrics(ctx: Ctx, who: Reader) -> Response:
    return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def model_ids(ctx: AppContext) -> list[dict[str, Any]]:
    """base, rag, default, then per adapter: tuned/rag+tuned with the bare name, each alias
    and each version."""
    base_id = ctx.services.generator.model_id
    rows: list[dict[str, Any]] = [
        {"id": "default", "mode": ctx.settings.chat.default_model, "adapter": None},
        {"id": str(Mode.BASE), "mode": str(Mode.BASE), "adapter": None},
        {"id": str(Mode.RAG), "mode": str(Mode.RAG), "adapter": None},
    ]
    registry = ctx.services.registry
    for name in registry.names():
        # Only what this base model can load: a name or alias naming a version trained for
        # another base model would only fail with 409.
        versions = registry.versions(name)
        live = {a.version for a in versions if a.base_model_id == base_id}
        if not live:
            continue
        aliases = registry.aliases(name)
        bare = aliases.get(DEFAULT_ALIAS, versions[-1].version)  # what `name` alone resolves to
        refs = [name] if bare in live else []
        refs += [f"{name}@{a}" for a in sorted(aliases) if aliases[a] in live]
        refs += [f"{name}@v{v}" for v in sorted(live)]
        for mode in (Mode.TUNED, Mode.RAG_TUNED):
            rows += [{"id": f"{mode}:{ref}", "mode": str(mode), "adapter": ref} for ref in refs]
    return rows


@router.get(
    "/v1/models",
    summary="Every model name this server answers to",
    responses=documented(*AS_READER),
)
async def models(ctx: Ctx, who: Reader) -> dict[str, Any]:
    rows = await run_in_threadpool(model_ids, ctx)
    now = int(time.time())
    data = [{"id": r["id"], "object": "model", "created": now, "owned_by": "ragtune",
             "ragtune": {"mode": r["mode"], "adapter": r["adapter"]}} for r in rows]  # fmt: skip
    return {"object": "list", "data": data}
