"""Dependencies the routes declare: the shared context and the caller's role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import unquote_to_bytes

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serve.auth import Principal, require
from serve.config import Role
from serve.context import AppContext, context
from serve.errors import ApiError

# Only declares the scheme in the OpenAPI schema (clients and /docs learn to send a key);
# `require` reads and checks the header itself.
_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key of role reader, editor or admin, as `Authorization: Bearer <key>`.",
)

# Error statuses a route can answer whatever it does: a URL that is not UTF-8, the role check
# and the catch-all.
AS_READER = (400, 401, 500)  # no role is below reader: never 403
AS_EDITOR = (400, 401, 403, 500)
AS_ADMIN = AS_EDITOR
WITH_BODY = (400, 408, 413)  # invalid, too slow, too large
PUBLIC = (500,)


def get_ctx(request: Request) -> AppContext:
    return context(request.app)


def check_url(request: Request) -> None:
    """Refuse a path or query that is not UTF-8 once percent-decoded: the server would read
    its bytes as U+FFFD and answer about a name the client never sent."""
    raw = request.scope.get("raw_path") or b""
    query = request.scope.get("query_string") or b""
    try:
        unquote_to_bytes(raw + b"?" + query).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_request", "the URL is not UTF-8 once percent-decoded; "
                       "percent-encode the UTF-8 bytes of each character") from None  # fmt: skip


def _role(role: Role) -> Callable[..., Awaitable[Principal]]:
    check = require(role)

    async def principal(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    ) -> Principal:
        who = await check(request)  # first: a caller without a key learns nothing else
        check_url(request)
        return who

    principal.ragtune_role = role  # type: ignore[attr-defined]  # read by the default-deny test
    return principal


Ctx = Annotated[AppContext, Depends(get_ctx)]
Reader = Annotated[Principal, Depends(_role("reader"))]
Editor = Annotated[Principal, Depends(_role("editor"))]
Admin = Annotated[Principal, Depends(_role("admin"))]
