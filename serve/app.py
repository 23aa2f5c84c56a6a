"""`create_app(settings, services)`: the FastAPI application, with heavy loading in the lifespan."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.atomic import remove_stale_temp_files
from serve import errors
from serve.api import admin, chat, compare, console, documents, system
from serve.audit import AuditLog
from serve.auth import KeyRing
from serve.context import AppContext
from serve.gate import Gate
from serve.jobs import JobManager
from serve.metrics import Metrics
from serve.services import Services
from serve.settings import Settings

log = logging.getLogger(__name__)
MULTIPART_OVERHEAD = 64 * 1024


def job_error(exc: Exception) -> tuple[str, str]:
    err = errors.to_api_error(exc)
    return err.code, err.message


class BodyLimit:
    """Refuse bodies over the limit (413), by Content-Length at once or by counting as they
    arrive, and bodies that arrive too slowly (408): the whole body is due `timeout_s` after
    the headers, plus 1/`min_rate` seconds for each byte received (0: no allowance)."""

    def __init__(
        self,
        app: ASGIApp,
        json_limit: int,
        upload_limit: int,
        timeout_s: float = 30.0,
        min_rate: int = 0,
    ) -> None:
        self.app, self.json_limit, self.upload_limit = app, json_limit, upload_limit
        self.timeout_s, self.min_rate = timeout_s, min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # File uploads (documents, training data) come as multipart forms; the rest is JSON.
        kind = dict(scope["headers"]).get(b"content-type", b"")
        upload = kind.lower().startswith(b"multipart/form-data")
        limit = self.upload_limit if upload else self.json_limit
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _answer(send, 413, "body_too_large", f"the body exceeds {limit} bytes")
            return
        started = time.monotonic()
        seen, complete, answered = 0, False, False

        async def counted() -> Message:
            nonlocal seen, complete, answered
            if complete:  # after the body: http.disconnect, whenever it comes
                return await receive()
            allowance = seen / self.min_rate if self.min_rate else 0.0
            left = started + self.timeout_s + allowance - time.monotonic()
            with anyio.move_on_after(max(left, 0.0)):
                message = await receive()
                complete = message["type"] != "http.request" or not message.get("more_body")
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException: FastAPI turns anything else raised while it reads the
                    # body into "400 There was an error parsing the body".
                    raise HTTPException(413, f"the body exceeds {limit} bytes")
                return message
            # Answer here, with the right code, and close the connection (the rest of the body
            # may never come); the app unwinds through the exception and its answer is dropped.
            answered = True
            reason = f"the request body did not arrive within {self.timeout_s:g} s"
            await _answer(send, 408, "request_timeout", reason, close=True)
            raise HTTPException(408, reason)

        async def guarded(message: Message) -> None:
            if not answered:
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except HTTPException:
            if not answered:
                raise


async def _answer(send: Send, status: int, code: str, message: str, close: bool = False) -> None:
    payload = json.dumps(errors.body(code, message)).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode())]  # fmt: skip
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = services or Services.build(settings, generator=True)
        removed = built.registry.clean_staging()
        if removed:
            log.info("removed %d unfinished adapter saves", removed)
        # Temp files of uploads (and training data) whose writer was killed; a live writer's
        # (another server on this data directory) stay. The jobs folder: JobManager does it.
        for folder in (settings.uploads_dir, settings.training_dir / "data"):
            removed = remove_stale_temp_files(folder)
            if removed:
                log.info("removed %d unfinished writes in %s/", removed, folder.name)
        gate = Gate(
            settings.server.generation_slots,
            settings.server.max_queue,
            settings.server.queue_timeout_s,
        )
        app.state.ctx = AppContext(
            settings=settings,
            services=built,
            pipeline=built.pipeline(),
            gate=gate,
            metrics=Metrics(lambda: gate.waiting, lambda: gate.active),
            audit=AuditLog(settings.audit_path, within=settings.data_dir)
            if settings.server.audit
            else None,
            jobs=JobManager(settings.jobs_dir, job_error, within=settings.data_dir),
        )
        try:
            yield
        finally:
            app.state.ctx.jobs.shutdown()

    app = FastAPI(
        title="ragtune",
        version="0.1.0",
        description="Answers from your documents (RAG) in your voice (LoRA adapters); "
        "OpenAI-compatible chat.",
        lifespan=lifespan,
    )
    app.state.keyring = KeyRing(settings.server.api_keys)
    errors.install(app)
    _routes(app)
    upload_limit = settings.ingest.max_file_bytes + MULTIPART_OVERHEAD
    app.add_middleware(
        BodyLimit,
        json_limit=settings.server.max_body_bytes,
        upload_limit=upload_limit,
        timeout_s=settings.server.body_timeout_s,
        min_rate=settings.server.body_min_bytes_per_s,
    )
    return app


def _routes(app: FastAPI) -> None:
    for module in (chat, system, documents, admin, compare):
        app.include_router(module.router)
    console.mount(app)
