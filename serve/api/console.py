"""The web console: its page at `/`, its files under `/console/`, and two small JSON routes.

The page and its files are public (they hold no data); everything the console shows comes from
the JSON API with the key the user typed. `GET /v1/whoami` tells the page which controls to
show (the server checks the role on every route anyway); `GET /v1/stats` is `/metrics` as a few
numbers a person can read at a glance.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

from serve.api.deps import AS_READER, Ctx, Reader
from serve.context import AppContext
from serve.errors import documented

router = APIRouter(prefix="/v1", tags=["console"])
STATIC = Path(__file__).resolve().parent.parent / "console"
PAGE_PATH, FILES_PATH = "/", "/console"  # both in serve.auth.PUBLIC_PATHS
# Only this server's own files: no inline script, nothing from elsewhere. Inline styles are
# allowed for the comparison reports, shown in a sandboxed frame that inherits this policy.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """The console's script and style sheet, revalidated on every load (no stale script after
    an upgrade) and never sniffed as another type."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update({"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})
        return response

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if path.endswith(".html"):  # the page is served at `/` only, with its policy
            return "", None
        return super().lookup_path(path)


async def page(request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers=HEADERS)  # fmt: skip


def mount(app: FastAPI) -> None:
    """Serve the console at `/` (the page) and `/console/` (its files); include the routes."""
    app.add_route(PAGE_PATH, page, methods=["GET"], include_in_schema=False)
    app.mount(FILES_PATH, ConsoleFiles(directory=STATIC, check_dir=False), name="console")
    app.include_router(router)


@router.get(
    "/whoami",
    summary="The caller's key id and role (what the console may show)",
    responses=documented(*AS_READER),
)
async def whoami(ctx: Ctx, who: Reader) -> dict[str, Any]:
    keys = bool(ctx.settings.server.api_keys)
    return {"object": "principal", "key_id": who.key_id, "role": who.role,
            "auth": "keys" if keys else "none"}  # fmt: skip


def _samples(ctx: AppContext) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus samples by name: [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in ctx.metrics.registry.collect():
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def _total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str,
           **match: str) -> float:  # fmt: skip
    rows = samples.get(name, [])
    return sum(v for labels, v in rows if all(labels.get(k) == w for k, w in match.items()))


def _quantile(samples: dict[str, list[tuple[dict[str, str], float]]], name: str,
              q: float) -> float | None:  # fmt: skip
    """The upper bound of the histogram bucket that holds quantile `q` (None: no requests)."""
    buckets: dict[float, float] = {}
    for labels, value in samples.get(f"{name}_bucket", []):
        bound = float(labels["le"])
        buckets[bound] = buckets.get(bound, 0.0) + value
    count = buckets.get(float("inf"), 0.0)
    if not count:
        return None
    bound = next(b for b in sorted(buckets) if buckets[b] >= q * count)
    return None if bound == float("inf") else bound


def stats(ctx: AppContext) -> dict[str, Any]:
    s = _samples(ctx)
    latency_name = "ragtune_chat_latency_seconds"
    count, spent = _total(s, f"{latency_name}_count"), _total(s, f"{latency_name}_sum")
    completion = _total(s, "ragtune_tokens_total", kind="completion")
    rag = _total(s, "ragtune_rag_requests_total")
    return {
        "object": "stats",
        "queue": {"waiting": ctx.gate.waiting, "active": ctx.gate.active},
        "requests": {
            "total": _total(s, "ragtune_chat_requests_total"),
            "ok": _total(s, "ragtune_chat_requests_total", status="ok"),
            "rejected": _total(s, "ragtune_rejected_total"),
        },
        "latency_s": {
            "mean": spent / count if count else None,
            "p50_at_most": _quantile(s, latency_name, 0.5),
            "p95_at_most": _quantile(s, latency_name, 0.95),
        },
        "tokens": {
            "prompt": _total(s, "ragtune_tokens_total", kind="prompt"),
            "completion": completion,
        },
        # Completion tokens per second of request time, over every answered request.
        "tokens_per_s": completion / spent if spent else None,
        "empty_context_rate": _total(s, "ragtune_rag_empty_context_total") / rag if rag else None,
    }


@router.get(
    "/stats",
    summary="Queue, latency, tokens/s and empty-context rate at a glance (from /metrics)",
    responses=documented(*AS_READER),
)
async def stats_route(ctx: Ctx, who: Reader) -> dict[str, Any]:
    return stats(ctx)
