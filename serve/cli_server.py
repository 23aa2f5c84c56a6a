"""`ragtune serve`: run the HTTP server (localhost only unless API keys are configured)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
from pathlib import Path
from typing import Any

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
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="debug" if args.verbose else "info",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
    )
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve the OpenAI-compatible chat API")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--corpus", default=None, help="folder that re-index requests sync")
    p.add_argument("--model", default=None, help="the mode model 'default' means, e.g. rag")
    p.set_defaults(func=cmd_serve, needs_settings=True)
