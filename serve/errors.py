"""Error bodies in the OpenAI shape, and the one map from domain errors to HTTP statuses.

Bodies carry a code and a message written for the client: never a traceback, a path or a key.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


def body(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    kind = (
        "server_error"
        if code in ("internal_error", "generator_failed")
        else "invalid_request_error"
    )
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def to_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
        return ApiError(507, "insufficient_storage", "the server's disk is full; nothing was lost")
    for kind, status, code in DOMAIN_ERRORS:
        if isinstance(exc, kind):
            return ApiError(status, code, str(exc))
    log.exception("unexpected error", exc_info=exc)
    return ApiError(500, "internal_error", "the server failed to answer; see its log")


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    # Drop "body" and pydantic's union/validator tags such as "function-after[clean_text(), str]".
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and "[" not in str(p)]
    where = ".".join(loc) or "body"
    reason = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "json_invalid":
        return f"the body is not valid JSON ({reason})", None
    return f"{where}: {reason}", where


def install(app: FastAPI) -> None:
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
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                 413: "body_too_large"}  # fmt: skip
        return respond(ApiError(exc.status_code, codes.get(exc.status_code, "http_error"),
                                str(exc.detail), headers=dict(exc.headers or {})))  # fmt: skip

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    kinds: list[type[Exception]] = [ApiError, *(k for k, _, _ in DOMAIN_ERRORS), Exception]
    for kind in kinds:
        app.add_exception_handler(kind, api_error)
