"""PDF text extraction in a long-lived child process, killed and restarted on a timeout."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ingest.errors import IngestError

STARTUP_TIMEOUT_S = 60.0  # interpreter start and pypdf import, on a slow or busy machine


class PdfParser:
    """Sends one PDF at a time to `ingest.pdf_worker`; thread-safe; `close()` ends the child."""

    def __init__(self, timeout_s: float = 30.0, memory_mb: int = 1024, max_pages: int = 5000):
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.max_pages = max_pages
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def pages(self, path: Path) -> list[str]:
        """Text of each page, or `IngestError` (encrypted, damaged, timeout, resources)."""
        with self._lock:
            reply = self._ask({"path": os.fspath(path), "max_pages": self.max_pages})
        if not reply.get("ok"):
            raise IngestError(reply.get("code", "pdf_unreadable"), str(reply.get("message", "")))
        return [str(p) for p in reply["pages"]]

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "ingest.pdf_worker", str(self.memory_mb)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=Path(__file__).resolve().parent.parent,
            )
            # Wait for the ready line, so interpreter start-up and the pypdf import are not
            # charged to the next file's timeout (after a timeout kill, every file would pay).
            if not self._readline(self._proc, max(self.timeout_s, STARTUP_TIMEOUT_S)):
                self._kill()
                raise IngestError(
                    "pdf_resources",
                    f"the PDF parser did not start (memory limit {self.memory_mb} MiB?)",
                )
        return self._proc

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
        except BrokenPipeError:
            self._kill()
            raise IngestError("pdf_resources", "the PDF parser process died") from None
        line = self._readline(proc, self.timeout_s)
        if line is None:
            self._kill()
            raise IngestError(
                "pdf_timeout", f"parsing took longer than the {self.timeout_s:g} s limit"
            )
        if not line:
            self._kill()
            raise IngestError(
                "pdf_resources",
                f"the PDF parser was killed (memory limit {self.memory_mb} MiB or a crash)",
            )
        reply: dict[str, Any] = json.loads(line)
        return reply

    @staticmethod
    def _readline(proc: subprocess.Popen[bytes], timeout_s: float) -> bytes | None:
        """One reply line; None on timeout, b'' when the child exited."""
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                return None
        # The child writes each reply in one flush, so a readable pipe holds a whole line.
        return proc.stdout.readline()

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    stream.close()
            self._proc = None

    def close(self) -> None:
        """Stop the child process (a new one starts on the next call)."""
        with self._lock:
            self._kill()

    def __enter__(self) -> PdfParser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
