"""Admission control: a few generation slots, a bounded queue, 429 with Retry-After beyond it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

from serve.errors import ApiError


class Gate:
    """`async with gate.slot():` runs when a slot is free; a full queue is refused at once."""

    def __init__(self, slots: int, max_queue: int, timeout_s: float) -> None:
        self.slots, self.max_queue, self.timeout_s = slots, max_queue, timeout_s
        self._free = asyncio.Semaphore(slots)
        self.waiting = 0
        self.active = 0
        self.rejected = 0
        self._recent = 5.0  # seconds one slot is held, smoothed; the Retry-After estimate

    def retry_after(self) -> int:
        return max(1, math.ceil(self._recent * (self.waiting + 1) / self.slots))

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.waiting >= self.max_queue and (self._free.locked() or self.waiting):
            self.rejected += 1
            raise ApiError(429, "overloaded", "the server is busy: retry later",
                           headers={"Retry-After": str(self.retry_after())})  # fmt: skip
        self.waiting += 1
        try:
            await asyncio.wait_for(self._free.acquire(), self.timeout_s)
        except TimeoutError:
            self.rejected += 1
            raise ApiError(503, "queue_timeout", "waited too long for a free slot: retry later",
                           headers={"Retry-After": str(self.retry_after())}) from None  # fmt: skip
        finally:
            self.waiting -= 1
        self.active += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self.active -= 1
            self._free.release()
            self._recent = 0.8 * self._recent + 0.2 * (time.monotonic() - started)
