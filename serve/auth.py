"""API keys with roles; default deny: every route names the least role it needs.

Keys are compared as SHA-256 digests with `hmac.compare_digest` against every configured key,
so neither the time taken nor the logs tell anything about a key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from serve.config import ROLE_RANK, ApiKey, Role
from serve.errors import ApiError

# Routes anyone may call. A test enumerates the app's routes against this list. `/` and
# `/console` are the web console's page and files (serve.api.console): no data, only code.
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
                          "/", "/console"})  # fmt: skip
LOCAL = "local"  # the principal of every request when no keys are configured (localhost only)


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: Role

    def can(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        self._keys = [(_digest(k.key.get_secret_value()), k.id, k.role) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, authorization: str | None) -> Principal:
        if not self._keys:
            return Principal(LOCAL, "admin")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "send an API key: Authorization: Bearer <key>",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        given = _digest(token.strip())
        found: Principal | None = None
        for digest, key_id, role in self._keys:  # no early exit: same time for every key
            if hmac.compare_digest(given, digest):
                found = Principal(key_id, role)
        if found is None:
            raise ApiError(401, "invalid_api_key", "the API key is not valid",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return found


def require(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller's principal, or 401/403."""

    async def check(request: Request) -> Principal:
        ring: KeyRing = request.app.state.keyring
        principal = ring.identify(request.headers.get("authorization"))
        if not principal.can(role):
            raise ApiError(
                403, "forbidden", f"this needs the {role} role; the key is {principal.role}"
            )
        request.state.principal = principal
        return principal

    check.ragtune_role = role  # type: ignore[attr-defined]  # read by the default-deny test
    return check
