"""`ragtune serve`: run the HTTP server (localhost only unless API keys are configured)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
from pathlib import Path
from typing import Any

from serve.config import ServerConfig
from serve.settings import Settings

log = logging.getLogger("ragtune")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    server = settings.server.model_copy(
        update={k: v for k in ("host", "port") if (v := getattr(args, k)) is not None}
    )
    update: dict[str, Any] = {"server": server}
    if args.corpus is not None:
        update["corpus_dir"] = Path(args.corpus).resolve()
    if args.model is not None:
        update["chat"] = settings.chat.model_copy(update={"default_model": args.model})
    return settings.model_copy(update=update)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from serve.app import create_app

    settings = server_settings(settings, args)
    host, port = settings.server.host, settings.server.port
    if not settings.server.api_keys:
        if not is_loopback(host):
            raise ValueError(
                f"refusing to listen on {host} without API keys: configure "
                "RAGTUNE_SERVER__API_KEYS, or bind 127.0.0.1"
            )
        log.warning("no API keys configured: listening on %s only; every local caller is admin",
                    host)  # fmt: skip
    log.info("serving on http://%s:%d (OpenAI base URL http://%s:%d/v1)", host, port, host, port)
    uvicorn.run(create_app(settings), **uvicorn_options(settings.server, args.verbose))
    return 0


def uvicorn_options(server: ServerConfig, verbose: bool = False) -> dict[str, Any]:
    """uvicorn's settings for a server that must shed load and outlast slow clients:

    - `http`: h11 (the only parser installed), guarded: a deadline for each request's headers,
      and a JSON 503 with Retry-After past `limit_concurrency` (see `guarded_protocol`);
    - `timeout_keep_alive`: an idle kept-alive connection is closed after 5 s;
    - `limit_concurrency`: `max_connections`; a request that arrives while more connections are
      open, or more requests run, is refused at once, before its body is read, which bounds
      the bodies and tasks in memory (uvicorn still accepts every connection: the two timeouts
      above are what close idle ones).

    The body's deadline (408) is BodyLimit's, in the app; the queue's 429/503 the Gate's.
    """
    return {
        "host": server.host,
        "port": server.port,
        "log_level": "debug" if verbose else "info",
        "http": guarded_protocol(server.header_timeout_s),
        "timeout_keep_alive": 5,
        "limit_concurrency": server.max_connections,
        "timeout_graceful_shutdown": 10,
    }


def guarded_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, with two changes:

    - a connection that has not sent a complete request line and headers `header_timeout_s`
      after it opened, or after its last response, is closed. uvicorn arms no timer before the
      first request, and stops its keep-alive timer at the first byte of the next: without
      this, a client sending a header byte now and then holds a connection for ever;
    - past `limit_concurrency` the refusal is a JSON 503 with Retry-After, like the queue's,
      instead of uvicorn's plain-text 503 without it.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from serve import errors

    class H11Guarded(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._limit, self._app = self.limit_concurrency, self.app
            self.limit_concurrency = None  # uvicorn's own check, which _admit replaces
            self.app = self._admit

        async def _admit(self, scope: Any, receive: Any, send: Any) -> None:
            # Counted as uvicorn counts, but this request's connection and task are included.
            limit = self._limit
            if limit is not None and (len(self.connections) > limit or len(self.tasks) > limit):
                self.logger.warning("over %d connections or requests: answered 503", limit)
                message = "the server has too many connections open: retry later"
                payload = json.dumps(errors.body("overloaded", message)).encode()
                headers = [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                           (b"content-length", str(len(payload)).encode()),
                           (b"connection", b"close")]  # fmt: skip
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": payload})
                return
            await self._app(scope, receive, send)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._expect_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._expect_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _expect_headers(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            if not self.transport.is_closing():
                self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _headers_late(self) -> None:
            # No request in progress: the headers of the next one are what we wait for.
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self.transport.is_closing():
                self.logger.debug("closed a connection whose request headers took over %g s",
                                 header_timeout_s)  # fmt: skip
                self.transport.close()

    return H11Guarded


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve the OpenAI-compatible chat API")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--corpus", default=None, help="folder that re-index requests sync")
    p.add_argument("--model", default=None, help="the mode model 'default' means, e.g. rag")
    p.set_defaults(func=cmd_serve, needs_settings=True)
