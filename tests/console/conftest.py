"""Browser fixtures: Debian's chromium driven by Playwright, a real server on a socket, screenshots.

No browser is downloaded: Playwright launches the system's chromium (`CHROMIUM_PATH`, else
`chromium` or `chromium-browser` on PATH). Without one, or without Playwright, the browser tests
skip and say why (`.ci/run` installs chromium, so CI never skips).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from serve.app import create_app
from serve.services import Services
from tests.conftest import scratch_folder
from tests.procs import free_port
from tests.serve.conftest import (  # noqa: F401 (fixtures for the non-browser console tests)
    API_KEYS,
    CORPUS_FILES,
    KEYS,
    fast_tmp,
    make_server,
    make_settings,
    publish_adapter,
    server,
    write_corpus,
)
from tuning.generator import EchoGenerator, GenerationParams, Message

# A document that would run script if the console ever put document text in as HTML.
XSS_TEXT = (
    "# Vexillum notes\n\nThe Vexillum flag shop <script>window.__xss = 1</script> opens at ten. "
    '<img src="x" onerror="window.__xss = 2"> Ask for <b>bold</b> banners.'
)
TRAIN_CURVE = [[s, 3.0 - 0.05 * s] for s in range(1, 21)]
VAL_CURVE = [[0, 3.2], [10, 2.4], [20, 2.0]]


def chromium_path() -> str | None:
    given = os.environ.get("CHROMIUM_PATH")
    if given:
        return given if Path(given).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


class PacedEcho(EchoGenerator):
    """The echo generator, one word every `pace` seconds: a stream a browser can watch grow."""

    def __init__(self, pace: float = 0.02) -> None:
        self.pace = pace

    def stream(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        adapter: Any = None,
        stop: threading.Event | None = None,
        stats: Any = None,
    ) -> Iterator[str]:
        for piece in super().stream(messages, params, adapter, stop, stats):
            time.sleep(self.pace)
            yield piece


@dataclass
class Live:
    url: str
    services: Services


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    """The app with reader/editor/admin keys on a real socket (uvicorn in a thread): the tiny
    corpus plus the XSS document, adapter `brand` v1 (prod) and v2, a paced echo generator."""
    with scratch_folder() as root:
        corpus = write_corpus(root / "corpus", {**CORPUS_FILES, "xss.md": XSS_TEXT})
        settings = make_settings(root, server={"api_keys": API_KEYS},
                                 chat={"loop_guard_words": 0})  # fmt: skip
        services = Services.build(settings)
        services._generator = PacedEcho()
        services.indexer().ingest([corpus], sync=True)
        manifest = {"curves": {"train": TRAIN_CURVE, "validation": VAL_CURVE},
                    "dataset": {"sha256": "ab" * 32, "file": "voice.jsonl", "examples": 40},
                    "metrics": {"best_val_loss": 2.0}}  # fmt: skip
        first = publish_adapter(services.registry, "brand", **manifest)
        publish_adapter(services.registry, "brand", **manifest)
        services.registry.promote(first.ref, "prod")
        port = free_port()
        config = uvicorn.Config(create_app(settings, services), host="127.0.0.1", port=port,
                                log_level="warning")  # fmt: skip
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        try:
            yield Live(f"http://127.0.0.1:{port}", services)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            services.index.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"Playwright is not installed ({exc}): pip install -e '.[dev]'")
    executable = chromium_path()
    if executable is None:
        given = os.environ.get("CHROMIUM_PATH")
        pytest.skip(f"CHROMIUM_PATH={given} is not a file" if given else
                    "no chromium on PATH: apt-get install chromium (or set CHROMIUM_PATH)")  # fmt: skip
    with sync_playwright() as pw:
        try:
            # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
            launched = pw.chromium.launch(executable_path=executable, headless=True,
                                          args=["--no-sandbox", "--disable-dev-shm-usage"])  # fmt: skip
        except Exception as exc:
            pytest.skip(f"chromium at {executable} did not start: {exc}")
        yield launched
        launched.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)  # read by `pages` to screenshot a failure
    return report


@pytest.fixture
def pages(browser: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """pages(path="/") -> a fresh page (its own session storage) at the server; on failure
    each page's screenshot is saved as tmp_path/screenshot-<n>.png."""
    opened: list[Any] = []
    live: Live = request.getfixturevalue("live")

    def open_page(path: str = "/") -> Any:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.script_errors = errors
        page.goto(live.url + path)
        opened.append(page)
        return page

    yield open_page
    failed = any(getattr(request.node, f"report_{w}", None) and
                 getattr(request.node, f"report_{w}").failed for w in ("setup", "call"))  # fmt: skip
    for number, page in enumerate(opened, 1):
        if failed:
            shot = tmp_path / f"screenshot-{number}.png"
            try:
                page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot of page {number}: {shot}")
            except Exception as exc:  # a crashed page still lets the others be saved
                print(f"no screenshot of page {number}: {exc}")
        page.context.close()


def sign_in(page: Any, role: str) -> None:
    page.fill("#key", KEYS[role])
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")
