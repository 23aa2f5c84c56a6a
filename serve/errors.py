"""Error bodies in the OpenAI shape, and the one map from domain errors to HTTP statuses.

Bodies carry a code and a message written for the client: never a traceback, a path or a key.
"""

from __future__ import annotations

import errno
import logging
import re
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from retrieval.index import EmbedderMismatchError, IndexBusyError, IndexStoreError
from retrieval.retriever import QueryError
from serve.pipeline import ConversationError, UnknownModelError
from serve.prompt import PromptTooLongError
from tuning.adapters import (
    AdapterError,
    AdapterMismatchError,
    AdapterNotFoundError,
    UnsafeAdapterError,
)
from tuning.data import DataError
from tuning.generator import GeneratorError
from tuning.train_run import TrainError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client caused or must know about."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.headers = headers or {}


# Most specific first: the first matching class wins.
DOMAIN_ERRORS: list[tuple[type[Exception], int, str]] = [
    (UnknownModelError, 404, "model_not_found"),
    (AdapterNotFoundError, 404, "adapter_not_found"),
    (AdapterMismatchError, 409, "adapter_base_mismatch"),
    (UnsafeAdapterError, 422, "adapter_refused"),
    (AdapterError, 400, "invalid_adapter"),
    (ConversationError, 400, "invalid_messages"),
    (PromptTooLongError, 400, "context_length_exceeded"),
    (QueryError, 400, "invalid_query"),
    (IndexBusyError, 409, "index_busy"),
    (EmbedderMismatchError, 409, "embedder_mismatch"),
    (IndexStoreError, 503, "index_unavailable"),
    (GeneratorError, 502, "generator_failed"),
    (DataError, 400, "invalid_training_data"),
    (TrainError, 422, "training_failed"),
]


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, for a person; names no server path or key.")
    type: Literal["invalid_request_error", "server_error"]
    code: str = Field(description="Stable, for programs: invalid_request, model_not_found, ...")
    param: str | None = Field(description="The request field at fault, when there is one.")


class ErrorResponse(BaseModel):
    """Every error body: the OpenAI shape."""

    error: ErrorDetail


# Why each error status is answered; the OpenAPI schema lists, per route, the ones it can give.
WHY: dict[int, str] = {
    400: "Bad input: invalid JSON, parameters or URL (not UTF-8), unsafe text (lone "
    "surrogates, NUL, C1 or bidi controls), a bad name or conversation",
    401: "No API key, or not a valid one",
    403: "The key's role is below the one this route needs",
    404: "Not found (model, adapter, document, job or report)",
    408: "The request body arrived too slowly",
    409: "Conflicts with the server's state (adapter for another base model, index busy, "
    "report not ready)",
    413: "The body (or an uploaded file) is over the limit",
    415: "An uploaded file of a type that is not indexed",
    422: "Refused adapter weights (pickled), or a training that failed",
    429: "Too many requests waiting: retry after `Retry-After` seconds",
    500: "The server failed (the details are in its log, never in the answer)",
    502: "The generator backend failed",
    503: "The index is unavailable, or the request waited too long for a slot",
    507: "The server's disk is full; nothing was lost",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"const": "Bearer"}}},
    429: {"Retry-After": {"required": True, "description": "Seconds to wait",
                          "schema": {"type": "integer", "minimum": 1}}},
}  # fmt: skip


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each error status it can answer, with the error body.

    FastAPI lists the model under the route's media type: routes that answer text or files
    must name a `response_class` without one (`Response`, `FileResponse`), so it stays JSON.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted(set(statuses)):
        doc: dict[str, Any] = {"model": ErrorResponse, "description": WHY[status]}
        if status in _HEADERS:
            doc["headers"] = _HEADERS[status]
        out[status] = doc
    return out


def body(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    kind = (
        "server_error"
        if code in ("internal_error", "generator_failed")
        else "invalid_request_error"
    )
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


# An absolute path of two or more parts (`/srv/data/index/x.db`), not a part of a word, a URL
# or a relative path (`text/plain`, `../x`, `a/b`).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~/:-])/(?:[^\s'\"/:,;()\[\]]+/)+([^\s'\"/:,;()\[\]]*)")


def public_message(message: str) -> str:
    """A library's message without the server's folders: an absolute path becomes its last
    part (the file's name), which is all a client can act on."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "…", message)


def printable(text: str) -> str:
    """Client text echoed in a message, with controls, bidi marks and lone surrogates escaped:
    an error message must neither reorder a terminal's line nor fail to encode."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


# Out of room: no space, over quota, or past the process's file size limit (RLIMIT_FSIZE).
STORAGE_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def to_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, OSError) and exc.errno in STORAGE_FULL:
        return ApiError(507, "insufficient_storage", "the server's disk is full; nothing was lost")
    for kind, status, code in DOMAIN_ERRORS:
        if isinstance(exc, kind):
            return ApiError(status, code, public_message(str(exc)))
    log.exception("unexpected error", exc_info=exc)
    return ApiError(500, "internal_error", "the server failed to answer; see its log")


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    # Drop "body" and pydantic's union/validator tags such as "function-after[clean_text(), str]".
    loc = [printable(str(p)) for p in first.get("loc", ()) if p != "body" and "[" not in str(p)]
    where = ".".join(loc) or "body"
    reason = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "json_invalid":
        return f"the body is not valid JSON ({reason})", None
    return f"{where}: {reason}", where


def without_validation_422(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop the 422 FastAPI documents on every route with input: this server answers request
    validation errors with 400 and the error body (`documented` lists the real 422s)."""
    fastapi_422 = {"$ref": "#/components/schemas/HTTPValidationError"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {})
            if content.get("application/json", {}).get("schema") == fastapi_422:
                del responses["422"]
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = without_validation_422(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    def respond(err: ApiError) -> JSONResponse:
        return JSONResponse(body(err.code, err.message, err.param), err.status, err.headers)

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        return respond(to_api_error(exc))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = validation_message(exc)
        return respond(ApiError(400, "invalid_request", message, param=param))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {400: "invalid_request", 401: "unauthorized", 404: "not_found",
                 405: "method_not_allowed", 408: "request_timeout",
                 413: "body_too_large"}  # fmt: skip
        message = str(exc.detail)
        if message == "There was an error parsing the body":  # FastAPI's, for any reader error
            message = "the body could not be read: send UTF-8 JSON (uploads: a multipart form)"
        return respond(ApiError(exc.status_code, codes.get(exc.status_code, "http_error"),
                                message, headers=dict(exc.headers or {})))  # fmt: skip

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    kinds: list[type[Exception]] = [ApiError, *(k for k, _, _ in DOMAIN_ERRORS), Exception]
    for kind in kinds:
        app.add_exception_handler(kind, api_error)
