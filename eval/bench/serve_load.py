"""The serving benchmark's HTTP clients: one timed streamed answer, and N concurrent clients."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from eval.bench.report import Latency, Report

CHAT = "/v1/chat/completions"
TIMEOUT_S = 900.0  # a request queued behind 16 others on a slow CPU still finishes
RETRY_CAP_S = 1.0  # a client told to retry after N s waits at most this long


@dataclass(frozen=True)
class Sizes:
    questions: int  # fixed questions, asked in each mode
    repeats: int  # rounds of (every prompt through the server, then bare); fastest run kept
    max_tokens: int  # of streamed and bare answers
    load_max_tokens: int  # of the concurrent clients' answers
    load: tuple[tuple[int, int], ...]  # (concurrent clients, requests each)
    load_model: str = "rag"  # the mode the concurrent clients ask for
    warm_tokens: int = 8  # of each warm-up answer: the prompt's prefill is what warms up


FULL = Sizes(3, 3, 64, 32, ((1, 4), (4, 2), (16, 1)))
# Smoke sizes: the load runs in base mode, whose 40-token prompts prefill 25 times faster.
QUICK = Sizes(1, 1, 32, 8, ((1, 2), (4, 1), (16, 1)), load_model="base")


class ServerError(RuntimeError):
    """The server answered something other than a chat completion."""


def chat_body(question: str, model: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    """Greedy decoding, the question as the only message: the server adds its system prompt."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


@dataclass
class StreamRun:
    """One streamed answer as the client saw it; times in seconds from sending the request."""

    seconds: float  # until `data: [DONE]`
    first_s: float  # first non-empty content delta (time to first token)
    last_s: float  # last content delta
    tokens: int  # usage.completion_tokens
    text: str
    first_piece: str  # SSE pieces are words, not tokens: the decode rate needs the first one
    source_ids: list[str]


def stream_chat(client: httpx.Client, question: str, model: str, max_tokens: int) -> StreamRun:
    """Send one streaming chat request and time its server-sent events."""
    pieces: list[str] = []
    first = last = 0.0
    tokens, sources = 0, []
    started = time.perf_counter()
    with client.stream("POST", CHAT, json=chat_body(question, model, max_tokens, True)) as resp:
        if resp.status_code != 200:
            raise ServerError(f"{resp.status_code}: {resp.read().decode()[:300]}")
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue  # `event: sources` names the next data line; blank lines end events
            if line == "data: [DONE]":
                break
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise ServerError(f"error mid-stream: {chunk['error']}")
            if "sources" in chunk:
                sources = [s["chunk_id"] for s in chunk["sources"]]
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
            for choice in chunk["choices"]:
                if content := choice["delta"].get("content"):
                    last = time.perf_counter() - started
                    first = first or last
                    pieces.append(content)
    seconds = time.perf_counter() - started
    return StreamRun(
        seconds, first, last, tokens, "".join(pieces).strip(), pieces[0] if pieces else "", sources
    )


@dataclass
class LoadResult:
    """What `clients` threads sending `per_client` requests each got back."""

    clients: int
    per_client: int
    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)  # successful requests only
    completion_tokens: int = 0
    rejected: int = 0  # 429 overloaded: deliberate, counted apart
    errors: list[str] = field(default_factory=list)  # anything else
    timings: list[dict[str, float]] = field(default_factory=list)  # server side, per success
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    def one(self, client: httpx.Client, question: str, model: str, max_tokens: int) -> float:
        """Send one request and record it; returns how long to wait before the next one."""
        started = time.perf_counter()
        try:
            resp = client.post(CHAT, json=chat_body(question, model, max_tokens, False))
        except httpx.HTTPError as exc:
            with self._lock:
                self.errors.append(repr(exc))
            return 0.0
        elapsed = time.perf_counter() - started
        with self._lock:
            if resp.status_code == 429:
                self.rejected += 1
                return float(resp.headers.get("Retry-After", "1"))
            if resp.status_code != 200:
                self.errors.append(f"{resp.status_code}: {resp.text[:200]}")
                return 0.0
            answer = resp.json()
            self.latencies_s.append(elapsed)
            self.completion_tokens += int(answer["usage"]["completion_tokens"])
            self.timings.append(answer["ragtune"]["timings"])
        return 0.0


def run_load(
    base_url: str,
    questions: list[str],
    *,
    clients: int,
    per_client: int,
    model: str,
    max_tokens: int,
    retry_cap_s: float,
) -> LoadResult:
    """`clients` threads start together, each sending `per_client` non-streaming requests back
    to back. A 429 counts as one of its requests; the client then waits Retry-After (capped at
    `retry_cap_s`, so the run stays short) before its next one."""
    result = LoadResult(clients, per_client)
    start = threading.Barrier(clients + 1)

    def client_loop(i: int) -> None:
        with httpx.Client(base_url=base_url, timeout=TIMEOUT_S) as client:
            start.wait()
            for j in range(per_client):
                question = questions[(i * per_client + j) % len(questions)]
                wait = result.one(client, question, model, max_tokens)
                if wait and j + 1 < per_client:
                    time.sleep(min(wait, retry_cap_s))

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()  # every client has its connection object: start the clock
    started = time.perf_counter()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - started
    return result


def rate(tokens: float, seconds: float) -> float:
    return tokens / max(seconds, 1e-9)


def bench_load(report: Report, url: str, questions: list[str], sizes: Sizes) -> None:
    """Figure 3: throughput and latency at each level of concurrency."""
    for clients, per_client in sizes.load:
        report.log(f"{clients} concurrent clients x {per_client} requests ({sizes.load_model})")
        res = run_load(
            url,
            questions,
            clients=clients,
            per_client=per_client,
            model=sizes.load_model,
            max_tokens=sizes.load_max_tokens,
            retry_cap_s=RETRY_CAP_S,
        )
        key, who = f"load.c{clients}", f"{clients:>2} clients"
        note = f"{res.ok}/{clients * per_client} answered; {sizes.load_model}, "
        note += f"max_tokens {sizes.load_max_tokens}"
        report.add(
            f"{key}.requests_per_s",
            f"{who}: requests/s",
            rate(res.ok, res.seconds),
            "req/s",
            note=note,
        )
        report.add(
            f"{key}.completion_tokens_per_s",
            f"{who}: completion tokens/s",
            rate(res.completion_tokens, res.seconds),
            "tok/s",
        )
        if res.latencies_s:
            ms = [s * 1000 for s in res.latencies_s]
            report.add_latency(
                f"{key}.latency", f"{who}: latency", Latency.of(ms), "non-streaming, whole request"
            )
        report.add(
            f"{key}.rejected_429",
            f"{who}: 429 overloaded",
            res.rejected,
            "requests",
            note="deliberate: the queue is shorter than 16",
        )
        report.add(
            f"{key}.errors",
            f"{who}: other errors",
            len(res.errors),
            "requests",
            target=1,
            higher_is_better=False,
        )
        if res.errors:
            report.info.setdefault("errors", {})[key] = res.errors[:5]
        if clients == 1 and res.timings:  # where a request's time goes, by the server's clock
            for part in ("retrieve_s", "prompt_s", "generate_s"):
                ms = [t[part] * 1000 for t in res.timings if part in t]
                if ms:
                    report.add(
                        f"{key}.server.{part[:-2]}_ms",
                        f"{who}: server {part[:-2]} p50",
                        Latency.of(ms).p50,
                        "ms",
                        note="ragtune.timings",
                    )
