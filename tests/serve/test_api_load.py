"""Admission control: a full queue answers 429 + Retry-After; a client that hangs up frees its slot."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from serve.config import ChatConfig
from serve.errors import ApiError
from serve.gate import Gate
from serve.pipeline import Pipeline, Route
from tests.serve.conftest import GatedGenerator, Server, ServerFactory
from tuning.adapters import AdapterRegistry
from tuning.generator import GenerationParams

pytestmark = pytest.mark.promise(4)

BODY = {"model": "base", "messages": [{"role": "user", "content": "hello there"}]}


def wait_until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def gate_of(server: Server) -> Gate:
    gate: Gate = server.app.state.ctx.gate
    return gate


def in_background(pool: ThreadPoolExecutor, server: Server, body: dict = BODY) -> Future:
    return pool.submit(server.client.post, "/v1/chat/completions", json=body)


def metric(server: Server, line_start: str) -> float:
    text = server.client.get("/metrics").text
    line = next(ln for ln in text.splitlines() if ln.startswith(line_start))
    return float(line.rsplit(" ", 1)[1])


@pytest.mark.parametrize("max_queue", [0, 1])
def test_beyond_the_queue_requests_get_429_then_succeed_again(
    make_server: ServerFactory, max_queue: int
) -> None:
    gen = GatedGenerator()
    server = make_server(generator=gen, server={"generation_slots": 1, "max_queue": max_queue})
    gate = gate_of(server)
    with ThreadPoolExecutor(4) as pool:
        running = in_background(pool, server)
        assert gen.entered.wait(5)
        queued = [in_background(pool, server) for _ in range(max_queue)]
        wait_until(lambda: gate.waiting == max_queue)
        assert server.client.get("/health").json()["queue"] == {
            "waiting": max_queue, "active": 1,
        }  # fmt: skip
        refused = server.client.post("/v1/chat/completions", json=BODY)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        assert int(refused.headers["Retry-After"]) >= 1
        assert metric(server, "ragtune_queue_depth") == max_queue
        assert metric(server, 'ragtune_rejected_total{reason="overloaded"}') == 1.0
        gen.release.set()
        for future in [running, *queued]:
            res = future.result(timeout=10)
            assert res.status_code == 200 and res.json()["choices"][0]["message"]["content"] == (
                "hello there"
            )
    assert server.client.post("/v1/chat/completions", json=BODY).status_code == 200
    assert (gate.active, gate.waiting) == (0, 0)
    assert gen.calls == 2 + max_queue  # the refused request never reached the model
    audit = server.client.get("/v1/admin/audit").json()["data"]
    assert len(audit) == 2 + max_queue  # refused requests are not answered requests


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Nothing may depend on the cyclic garbage collector happening to run."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_gc")
def test_a_client_that_hangs_up_mid_stream_frees_its_slot(make_server: ServerFactory) -> None:
    # A long answer (400 words, 20 ms each = 8 s) the client leaves after its first word.
    gen = GatedGenerator(pace=0.02, words=400)
    gen.release.set()
    server = make_server(generator=gen, server={"generation_slots": 1, "max_queue": 0})
    gate = gate_of(server)
    started = time.monotonic()
    body = {**BODY, "stream": True}
    with server.client.stream("POST", "/v1/chat/completions", json=body) as res:
        assert res.status_code == 200
        lines = res.iter_lines()
        assert next(lines) == "event: sources"
        first_delta = next(ln for ln in lines if '"content": "hello"' in ln)
        assert json.loads(first_delta.removeprefix("data: "))["choices"][0]["delta"]
        assert gate.active == 1
        # Leaving the block closes the response: the client has hung up.
    # The slot is free and the generation was told to stop, without waiting for a GC pass.
    wait_until(lambda: gate.active == 0, timeout=2)
    assert gen.stop_events[0] is not None and gen.stop_events[0].is_set()
    assert time.monotonic() - started < 5  # long before the 8 s answer would have ended
    res = server.client.post("/v1/chat/completions", json=BODY)
    assert res.status_code == 200, res.text  # max_queue=0: served only because the slot is free
    audit = server.client.get("/v1/admin/audit").json()["data"]
    assert [(r["stream"], r["status"]) for r in audit] == [(False, "ok"), (True, "disconnected")]
    assert 0 < audit[1]["completion_tokens"] < 400


# -- the Gate itself -----------------------------------------------------------------------------


async def hold(gate: Gate, entered: asyncio.Event, leave: asyncio.Event) -> None:
    async with gate.slot():
        entered.set()
        await leave.wait()


async def test_gate_refuses_beyond_the_queue_and_admits_after_release() -> None:
    gate = Gate(slots=1, max_queue=1, timeout_s=5)
    entered, leave = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold(gate, entered, leave))
    await entered.wait()
    second_in, second_leave = asyncio.Event(), asyncio.Event()
    waiter = asyncio.create_task(hold(gate, second_in, second_leave))
    await asyncio.sleep(0.01)
    assert (gate.active, gate.waiting) == (1, 1)
    with pytest.raises(ApiError) as refused:
        async with gate.slot():
            pass
    assert refused.value.status == 429 and int(refused.value.headers["Retry-After"]) >= 1
    assert gate.rejected == 1
    leave.set()
    await asyncio.wait_for(second_in.wait(), 1)
    assert (gate.active, gate.waiting) == (1, 0)
    second_leave.set()
    await asyncio.gather(holder, waiter)
    assert (gate.active, gate.waiting) == (0, 0)


async def test_gate_with_no_queue_admits_when_a_slot_is_free() -> None:
    gate = Gate(slots=2, max_queue=0, timeout_s=5)
    async with gate.slot(), gate.slot():
        assert gate.active == 2
        with pytest.raises(ApiError):
            async with gate.slot():
                pass
    async with gate.slot():
        assert gate.active == 1


async def test_a_cancelled_holder_or_waiter_gives_everything_back() -> None:
    gate = Gate(slots=1, max_queue=4, timeout_s=5)
    entered, never = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold(gate, entered, never))
    await entered.wait()
    waiter = asyncio.create_task(hold(gate, asyncio.Event(), never))
    await asyncio.sleep(0.01)
    assert gate.waiting == 1
    waiter.cancel()  # a client that left while queued
    holder.cancel()  # a client that left while served
    await asyncio.gather(holder, waiter, return_exceptions=True)
    assert (gate.active, gate.waiting) == (0, 0)
    async with gate.slot():  # the semaphore was released exactly once
        assert gate.active == 1


async def test_a_waiter_past_the_timeout_gets_503() -> None:
    gate = Gate(slots=1, max_queue=4, timeout_s=0.05)
    entered, leave = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold(gate, entered, leave))
    await entered.wait()
    with pytest.raises(ApiError) as late:
        async with gate.slot():
            pass
    assert late.value.status == 503 and late.value.code == "queue_timeout"
    assert gate.waiting == 0
    leave.set()
    await holder


def test_stop_event_ends_a_stream_at_the_next_piece(tmp_path: Path) -> None:
    gen = GatedGenerator(pace=0.0, words=50)
    pipeline = Pipeline(gen, AdapterRegistry(tmp_path), None, ChatConfig())
    params = GenerationParams(max_new_tokens=100)
    prepared = pipeline.prepare([{"role": "user", "content": "a b c"}], Route.parse("base"), params)
    stop = threading.Event()
    pieces = []
    for piece in pipeline.stream(prepared, params, stop):
        pieces.append(piece)
        if len(pieces) == 3:
            stop.set()
    assert pieces == ["a", " b", " c"] and gen.stopped == [True]
