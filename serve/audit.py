"""The audit log: one JSON line per answered request, appended and fsynced, never rewritten."""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.atomic import check_within


class AuditLog:
    def __init__(self, path: Path, within: Path | None = None) -> None:
        self.path, self.within = path, within or path.parent
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps({"time": datetime.now(UTC).isoformat(), **record}, ensure_ascii=True)
        data = (line + "\n").encode("ascii")
        with self._lock:
            # Never through a link planted as the audit folder, nor as the file (O_NOFOLLOW).
            check_within(self.path, self.within)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
            fd = os.open(self.path, flags, 0o600)
            try:
                os.write(fd, data)  # one write of one line: O_APPEND keeps lines whole
                os.fsync(fd)
            finally:
                os.close(fd)

    def tail(self, limit: int = 100, key_id: str | None = None) -> list[dict[str, Any]]:
        """The newest `limit` records, newest first; a torn last line (a crash) is skipped."""
        if not self.path.is_file():
            return []
        kept: deque[dict[str, Any]] = deque(maxlen=limit)
        with self._lock, self.path.open("rb") as fh:
            for raw in fh:
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if key_id is None or record.get("key_id") == key_id:
                    kept.append(record)
        return list(reversed(kept))
