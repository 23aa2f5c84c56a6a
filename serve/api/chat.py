"""POST /v1/chat/completions: the OpenAI chat API over `Pipeline`, plain or as SSE."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.types import Receive, Scope, Send

from retrieval.read import Filters
from serve.api.deps import AS_READER, WITH_BODY, Ctx, Reader
from serve.api.schema import ChatCompletionRequest, public_roots, public_source
from serve.auth import Principal
from serve.context import AppContext
from serve.errors import ApiError, body, documented, to_api_error
from serve.pipeline import Answer, Prepared, Route
from tuning.generator import GenerationParams, StreamStats

router = APIRouter(tags=["chat"])


def decoding(request: ChatCompletionRequest, ctx: AppContext) -> GenerationParams:
    chat = ctx.settings.chat
    asked = request.max_completion_tokens or request.max_tokens or chat.max_tokens
    if asked > chat.max_tokens_limit:
        raise ApiError(400, "invalid_request", f"max_tokens is {asked}; this server allows at "
                       f"most {chat.max_tokens_limit}", param="max_tokens")  # fmt: skip
    return GenerationParams(
        max_new_tokens=asked,
        temperature=request.temperature or 0.0,
        top_p=request.top_p or 1.0,
        seed=request.seed,
    )


def retrieval_args(request: ChatCompletionRequest, ctx: AppContext) -> dict[str, Any]:
    limit = ctx.settings.chat.max_top_k
    if request.top_k is not None and request.top_k > limit:
        raise ApiError(400, "invalid_request", f"top_k is {request.top_k}; at most {limit}",
                       param="top_k")  # fmt: skip
    filters = None
    if request.filters is not None:
        f = request.filters
        filters = Filters(document_ids=tuple(f.document_ids or ()),
                          source=f.source)  # fmt: skip
    return {"top_k": request.top_k, "filters": filters}


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stops if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class Call:
    """One chat request: what it asked, who asked, and the bookkeeping when it ends."""

    def __init__(self, ctx: AppContext, who: Principal, request: ChatCompletionRequest) -> None:
        self.ctx, self.who, self.request = ctx, who, request
        self.route: Route = ctx.pipeline.route(request.model)
        self.params = decoding(request, ctx)
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.started = time.perf_counter()

    def prepare(self) -> Prepared:
        messages = [m.as_message() for m in self.request.messages]
        args = retrieval_args(self.request, self.ctx)
        return self.ctx.pipeline.prepare(messages, self.route, self.params, **args)

    def model_name(self, prepared: Prepared) -> str:
        if prepared.adapter is None:
            return str(self.route.mode)
        return f"{self.route.mode}:{prepared.adapter.ref}"

    def labels(self, prepared: Prepared | None) -> dict[str, str]:
        adapter = prepared.adapter.ref if prepared and prepared.adapter else "none"
        return {"mode": str(self.route.mode), "adapter": adapter}

    def record(self, prepared: Prepared, text: str, completion_tokens: int, status: str) -> None:
        latency = time.perf_counter() - self.started
        m, labels = self.ctx.metrics, self.labels(prepared)
        m.requests.labels(**labels, status=status).inc()
        m.latency.labels(**labels).observe(latency)
        m.tokens.labels(**labels, kind="prompt").inc(prepared.prompt_tokens)
        m.tokens.labels(**labels, kind="completion").inc(completion_tokens)
        if self.route.mode.retrieves:
            m.rag_requests.inc()
            if prepared.unknown_terms:
                m.rag_unknown.inc()
            elif not prepared.hits:
                m.rag_empty.inc()
        if self.ctx.audit is not None:
            a = prepared.adapter
            self.ctx.audit.append({
                "request_id": self.id, "key_id": self.who.key_id, "mode": str(self.route.mode),
                "adapter": a.name if a else None, "adapter_version": a.version if a else None,
                "index_version": prepared.index_version, "status": status,
                "retrieved": [{"chunk_id": h.chunk.id, "score": round(h.score, 6),
                               "cited": h in prepared.hits} for h in prepared.retrieved],
                "latency_s": round(latency, 4), "prompt_tokens": prepared.prompt_tokens,
                "completion_tokens": completion_tokens, "stream": self.request.stream,
            })  # fmt: skip

    def sources(self, prepared: Prepared) -> list[dict[str, Any]]:
        """The cited hits, numbered as in the prompt; `source` without the server's folders."""
        roots = public_roots(self.ctx.settings)
        out = []
        for number, hit in enumerate(prepared.hits, 1):
            row = {"number": number, **hit.to_dict()}
            row["source"] = public_source(hit.source, roots)
            out.append(row)
        return out

    def retrieval(self, prepared: Prepared) -> dict[str, Any]:
        """What retrieval found (the prompt shows some of it) and the question's unknown words."""
        shown = {id(h) for h in prepared.hits}
        found = [{"rank": h.rank, "chunk_id": h.chunk.id, "document_id": h.document_id,
                  "page": h.page, "score": round(h.score, 6), "shown": id(h) in shown}
                 for h in prepared.retrieved]  # fmt: skip
        return {"retrieved": found, "unknown_terms": list(prepared.unknown_terms)}

    def completion(self, prepared: Prepared, answer: Answer) -> dict[str, Any]:
        text, stopped = cut_at_stop(answer.text, self.request.stops())
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model_name(prepared),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop" if stopped else answer.finish_reason}],
            "usage": {"prompt_tokens": answer.usage.prompt_tokens,
                      "completion_tokens": answer.usage.completion_tokens,
                      "total_tokens": answer.usage.total_tokens},
            "sources": self.sources(prepared),
            "ragtune": {"mode": str(self.route.mode),
                        "adapter": prepared.adapter.ref if prepared.adapter else None,
                        "index_version": prepared.index_version,
                        **self.retrieval(prepared),
                        "timings": {k: round(v, 4) for k, v in answer.timings.items()}},
        }  # fmt: skip

    def envelope(self, prepared: Prepared, choices: list[Any], **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model_name(prepared), "choices": choices, **extra}  # fmt: skip

    def chunk(self, prepared: Prepared, delta: dict[str, str], finish: str | None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return f"data: {json.dumps(self.envelope(prepared, [choice]))}\n\n"


# One server-sent event (OpenAPI 3.2 `itemSchema`, as FastAPI writes it for its own SSE routes).
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"enum": ["sources", "message"], "description": "`sources` for the first "
                  "event; the others are unnamed (`message`)."},
        "data": {"type": "string", "description": "A chat.completion.chunk as JSON (the "
                 "first carries `sources`), an error body, or the final `[DONE]`."},
    },
}  # fmt: skip
ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The completion; with `stream: true`, server-sent events: the sources, "
        "text deltas, a finish chunk, usage if asked, then `data: [DONE]`",
        "content": {"text/event-stream": {"itemSchema": SSE_EVENT}},
    },
    **documented(*AS_READER, *WITH_BODY, 404, 409, 422, 429, 502, 503, 507),
}


QUEUE_POLL_S = 0.2  # how often a queued request checks that its client is still there
CLIENT_GONE = 499  # nginx's "client closed request": logged, never seen by the client


async def admitted(slot: Any, http: Request) -> bool:
    """Wait for a generation slot; False, holding nothing, when the client hangs up first (a
    queued request whose client left would otherwise run a whole generation for nobody)."""
    entering = asyncio.ensure_future(slot.__aenter__())
    try:
        while not entering.done():
            await asyncio.wait({entering}, timeout=QUEUE_POLL_S)
            if not entering.done() and await http.is_disconnected():
                entering.cancel()
                await asyncio.wait({entering})
    except BaseException:  # this request itself was cancelled while it waited
        entering.cancel()
        await asyncio.wait({entering})
        if not entering.cancelled() and entering.exception() is None:
            await slot.__aexit__(None, None, None)
        raise
    if entering.cancelled():
        return False
    entering.result()  # the gate's 429 or 503
    return True


@router.post("/v1/chat/completions", summary="Chat (OpenAI-compatible)", responses=ANSWERS)
async def chat_completions(
    request: ChatCompletionRequest, ctx: Ctx, who: Reader, http: Request
) -> Any:
    call = Call(ctx, who, request)
    slot = ctx.gate.slot()
    try:
        if not await admitted(slot, http):
            ctx.metrics.rejected.labels(reason="disconnected").inc()
            return Response(status_code=CLIENT_GONE)
    except ApiError:
        ctx.metrics.rejected.labels(reason="overloaded").inc()
        raise
    try:
        prepared = await run_in_threadpool(call.prepare)
        if request.stream:
            return stream_response(call, prepared, slot)
        answer = await run_in_threadpool(ctx.pipeline.generate, prepared, call.params)
    except BaseException:
        await slot.__aexit__(None, None, None)
        raise
    await slot.__aexit__(None, None, None)
    call.record(prepared, answer.text, answer.usage.completion_tokens, "ok")
    return JSONResponse(call.completion(prepared, answer))


class ClosingStreamingResponse(StreamingResponse):
    """Closes its body generator however the response ends. A client that hangs up while a
    `send` waits leaves the generator suspended at a `yield`: nothing else would run its
    `finally` (which frees the generation slot) until the garbage collector found it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            body = self.body_iterator
            if isinstance(body, AsyncGenerator):
                with anyio.CancelScope(shield=True):
                    await body.aclose()


def stream_response(call: Call, prepared: Prepared, slot: Any) -> StreamingResponse:
    """Sources first (their own event), then text deltas, a finish chunk, usage if asked, [DONE]."""
    stop = threading.Event()
    released = False

    async def release() -> None:
        nonlocal released
        stop.set()  # a client that hung up stops the generation at the next token
        if not released:
            released = True
            with anyio.CancelScope(shield=True):
                await slot.__aexit__(None, None, None)

    async def events() -> AsyncIterator[str]:
        text, status, cut_short = "", "ok", False
        stops = call.request.stops()
        stats = StreamStats()

        def completion_tokens() -> int:  # the model's own count, unless a stop sequence cut it
            done = stats.completion_tokens and not cut_short
            return stats.completion_tokens if done else call.ctx.services.generator.count_text(text)

        try:
            opening = {"index": 0, "delta": {"role": "assistant", "content": ""},
                       "finish_reason": None}  # fmt: skip
            sources = call.sources(prepared)
            first = call.envelope(
                prepared, [opening], sources=sources,
                ragtune=call.retrieval(prepared),
            )  # fmt: skip
            yield f"event: sources\ndata: {json.dumps(first)}\n\n"
            pieces = call.ctx.pipeline.stream(prepared, call.params, stop, stats)
            sent = 0
            async for piece in iterate_in_threadpool(pieces):
                if not text:
                    call.ctx.metrics.ttft.labels(**call.labels(prepared)).observe(
                        time.perf_counter() - call.started
                    )
                text += piece
                cut, stopped = cut_at_stop(text, stops)
                # Hold back what could be the start of a stop sequence.
                safe = (
                    len(cut)
                    if stopped
                    else max(sent, len(cut) - max(map(len, stops), default=1) + 1)
                )
                if safe > sent:
                    yield call.chunk(prepared, {"content": cut[sent:safe]}, None)
                    sent = safe
                if stopped:
                    text, cut_short = cut, True
                    stop.set()
                    break
            if sent < len(text):
                yield call.chunk(prepared, {"content": text[sent:]}, None)
            tokens = completion_tokens()
            yield call.chunk(prepared, {}, "stop" if cut_short else stats.finish_reason)
            opts = call.request.stream_options
            if opts is not None and opts.include_usage:
                usage = {"prompt_tokens": prepared.prompt_tokens, "completion_tokens": tokens,
                         "total_tokens": prepared.prompt_tokens + tokens}  # fmt: skip
                yield f"data: {json.dumps(call.envelope(prepared, [], usage=usage))}\n\n"
            yield "data: [DONE]\n\n"
        except Exception as exc:
            status = "error"
            err = to_api_error(exc)
            yield f"data: {json.dumps(body(err.code, err.message))}\n\n"
        except BaseException:
            status = "disconnected"
            raise
        finally:
            await release()
            call.record(prepared, text, completion_tokens(), status)

    return ClosingStreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(release),
    )
