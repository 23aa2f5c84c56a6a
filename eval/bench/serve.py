"""Serving benchmark: `python -m eval.bench.serve [--quick] [--out FILE] [--tmp DIR]`.

Through a real `ragtune serve` process with the packaged SmolLM2 model, on the sample corpus:

1. time to first token and tokens/s of streamed answers (greedy, fixed max_tokens) in the rag and
   base modes, end to end (completion tokens / request time) and decoding only (tokens after the
   first piece / time after it; approximate, SSE pieces are words);
2. the same prompts through the bare engine the server runs, in the same run, and the ratio
   server tokens/s / bare tokens/s: llama-cpp-python's `Llama.generate` on the same GGUF (target
   >= 1.0; time to first token on RAG prompts within 1.1x and under 1.5 s) when the server
   runs llama.cpp, else transformers' `model.generate` on the converted model (target >= 0.9),
   with an adapter attached (rag+tuned, >= 0.9x of rag), and the cold start of `ragtune serve`
   to its first answer (< 5 s). The prompts come from the
   server's own `Pipeline.prepare`, built in this process with the same settings; greedy decoding
   makes both sides produce the same text, which is checked. Server and bare runs alternate,
   never overlap, and both are warmed up first. CPU seconds per token (the server process's own,
   from /proc) are printed beside the wall-clock figures: they hold when other work shares the
   machine;
3. throughput at 1, 4 and 16 concurrent clients (non-streaming): requests/s, completion
   tokens/s, p50/p95 latency, deliberate 429s (the queue is set below 16) and other errors (0).

OpenMP's wait policy is set to PASSIVE for both sides (unless OMP_WAIT_POLICY is set, or with
`--omp-default`). With libgomp's default spin-waiting, a 2-thread generate on a busy 2-core
machine was measured 4-6 times slower, with 4 times the CPU per token, and erratically so: it
varied with the thread the call ran on (a bare `generate` in the main thread against the server's
worker threads), which would measure that accident instead of the server.

`--fake` runs the same path with the echo generator and hash embedder (no models: a smoke run).
Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from eval.bench.report import Report, command_line, machine
from eval.bench.serve_bare import Bare, Prompt, bench_requests
from eval.bench.serve_llama import (
    LlamaBare,
    bench_adapter,
    choose_bare,
    cold_start,
    model_dir,
    publish_bench_adapter,
    ttft_targets,
)
from eval.bench.serve_load import FULL, QUICK, Sizes, bench_load
from serve.services import Services
from serve.settings import CHECKOUT, Settings
from tuning.generator import GenerationParams

CORPUS = CHECKOUT / "data" / "corpus"
CASES = CHECKOUT / "data" / "eval" / "cases.jsonl"
# Fixed eval questions whose greedy base answers reach 64 tokens (rag answers stay shorter: the
# prompt asks for brevity, and their ~1,000-token prompts make prefill the larger part).
QUESTION_IDS = ("q001", "q002", "q004", "q005", "q007")
MODES = ("rag", "base")
MAX_QUEUE = 8  # below 16 clients: the last level gets deliberate 429s


def server_env(data_dir: Path, model_cache: Path, fake: bool) -> dict[str, str]:
    env = {
        "RAGTUNE_DATA_DIR": str(data_dir),
        "RAGTUNE_MODEL_CACHE_DIR": str(model_cache),
        "RAGTUNE_SERVER__MAX_QUEUE": str(MAX_QUEUE),
        # Waiting long is not what this measures: no 503 while 16 clients share one slot.
        "RAGTUNE_SERVER__QUEUE_TIMEOUT_S": "900",
        # Every prompt is asked once a round, so the default 64 kept question vectors would
        # time later rounds without the query embedding a new question pays. One kept: each
        # request embeds its question once, as a new question does, and the window comparison
        # reuses it (0 would embed it twice, which no request does).
        "RAGTUNE_RETRIEVAL__QUERY_VECTORS_KEPT": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if fake:
        env |= {"RAGTUNE_GENERATOR__BACKEND": "echo", "RAGTUNE_EMBEDDER__BACKEND": "hash"}
    return env


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    saved = os.environ.copy()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def settings_for(env: dict[str, str]) -> Settings:
    """The settings the server process reads from `env` (and whatever RAGTUNE_* is set here)."""
    with environment(env):
        return Settings()


def load_questions(n: int) -> list[str]:
    cases = {}
    for line in CASES.read_text(encoding="utf-8").splitlines():
        if line.strip():
            case = json.loads(line)
            cases[case["id"]] = case["question"]
    return [cases[i] for i in QUESTION_IDS[:n]]


def prepare_prompts(settings: Settings, questions: list[str], max_tokens: int) -> list[Prompt]:
    """The messages the server will build: `Pipeline.prepare` in this process, same settings."""
    services = Services.build(settings)
    try:
        pipeline = services.pipeline()
        params = GenerationParams(max_new_tokens=max_tokens)
        prompts = []
        for mode in MODES:
            route = pipeline.route(mode)
            for q in questions:
                prepared = pipeline.prepare([{"role": "user", "content": q}], route, params)
                hit_ids = [h.chunk.id for h in prepared.hits]
                prompts.append(Prompt(mode, q, prepared.messages, hit_ids, prepared.prompt_tokens))
    finally:
        services.index.close()
    del services
    gc.collect()  # the pipeline's copy of the model: the bare one is loaded next
    return prompts


def ingest(env: dict[str, str], report: Report) -> None:
    report.log(f"ingesting {CORPUS} (ragtune ingest --sync)")
    proc = subprocess.run(
        [sys.executable, "-m", "serve.cli", "ingest", str(CORPUS), "--sync"],
        cwd=CHECKOUT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ingest failed ({proc.returncode}): {proc.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`python -m serve.cli serve` on a free port, with its log in a file; stopped on exit."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> ServerProcess:
        port = self.url.rsplit(":", 1)[1]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "serve.cli", "serve", "--port", port],
                cwd=CHECKOUT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_healthy(self, timeout_s: float = 300.0) -> dict[str, Any]:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                resp = httpx.get(f"{self.url}/health", timeout=5)
                if resp.status_code == 200:
                    return dict(resp.json())
            time.sleep(0.5)
        raise RuntimeError(f"the server did not answer /health in {timeout_s} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)  # uvicorn shuts down gracefully
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def bench_server(
    report: Report,
    url: str,
    bare: Bare,
    prompts: list[Prompt],
    sizes: Sizes,
    server_pid: int | None = None,
    tuned: str | None = None,
    twin: Bare | None = None,
) -> None:
    """Every figure against the server at `url` (`server_pid`: its CPU time, where it is local;
    `tuned`: a rag+tuned model name to time against plain rag; `twin`: the bare engine with the
    server's settings, where `bare` runs its own defaults)."""
    llama = isinstance(bare, LlamaBare)
    target = 1.0 if llama else 0.9
    bench_requests(report, url, bare, prompts, sizes, server_pid, target, twin)
    if any(p.mode == "rag" for p in prompts):
        ttft_targets(report, "llama.cpp" if llama else "bare")
    questions = list(dict.fromkeys(p.question for p in prompts))
    if tuned is not None:
        bench_adapter(report, url, questions, sizes, tuned, bare.count_text)
    bench_load(report, url, questions, sizes)
    if llama and any(p.mode == "rag" for p in prompts):
        prefill_ratio(report)


def prefill_ratio(report: Report) -> None:
    """The server's RAG time to first token less its own retrieval (which llama.cpp, given the
    finished prompt, never does), against llama.cpp's: what the target compares, like for like.
    Retrieval is the one-client load run's p50 by the server's clock (`ragtune.timings`)."""
    figures = report.to_json()["figures"]
    retrieve = next(
        (f["value"] for k, f in figures.items() if k.endswith(".server.retrieve_ms")), None
    )
    if retrieve is None:
        return
    server = figures["stream.rag.ttft.p50_ms"]["value"]
    bare = figures["bare.rag.ttft.p50_ms"]["value"]
    report.add(
        "ratio.rag.ttft_less_retrieval",
        "rag: server time to first token less retrieval / llama.cpp's",
        (server - retrieve) / bare,
        "x",
        note=f"({server:.0f} - {retrieve:.0f}) vs {bare:.0f} ms; informative, no target",
    )


def machine_info(bare: Bare, twin: Bare | None = None) -> dict[str, Any]:
    return {**machine(), "bare": bare.describe()} | ({"twin": twin.describe()} if twin else {})


def run_serve(
    sizes: Sizes,
    *,
    out: Path | None,
    tmp: Path | None,
    model_cache: Path,
    fake: bool,
    command: str,
) -> Report:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # as in the server (serve.cli sets it)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="ragtune-perf-serve-", dir=tmp) as work:
        env = server_env(Path(work) / "data", model_cache, fake)
        settings = settings_for(env)
        if not fake:
            from transformers.utils import logging as hf_logging

            from tuning.models import resolve_model_dir

            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]

            report.log(f"converted model cache: {model_cache} (converted once, about 20 s)")
            resolve_model_dir(settings.generator.model, settings.models_dir)
        ingest(env, report)
        prompts = prepare_prompts(settings, load_questions(sizes.questions), sizes.max_tokens)
        bare, twin = choose_bare(settings, report)
        report.info.update(
            command=command,
            omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "unset (libgomp default)"),
            sizes=sizes.__dict__,
            machine=machine_info(bare, twin),
            server_env={
                k: v
                for k, v in env.items()
                if k.startswith(("RAGTUNE_SERVER", "RAGTUNE_RETRIEVAL"))
            },
            prompts=[
                {
                    "mode": p.mode,
                    "question": p.question,
                    "prompt_tokens": p.prompt_tokens,
                    "sources": p.hit_ids,
                }
                for p in prompts
            ],
        )
        report.log(f"starting the server ({'echo + hash' if fake else settings.generator.model})")
        started = time.perf_counter()
        with ServerProcess(env, Path(work) / "server.log") as server:
            health = server.wait_healthy()
            cold_start(report, started, server.url, prompts[0].question)
            report.info["model"] = health.get("generator")
            model_id = str(health["generator"]["model_id"])
            tuned = publish_bench_adapter(settings, model_id, None if fake else model_dir(settings))
            bench_server(report, server.url, bare, prompts, sizes, server.pid, tuned, twin)
    report.finish(out, report.info["machine"])
    return report


def summary(report: Report) -> str:
    info = report.info
    model = info.get("model") or {}
    lines = [
        f"model: {model.get('model_id')} ({model.get('backend')}); bare: {info['machine']['bare']}"
        + (f"; twin: {info['machine']['twin']}" if "twin" in info["machine"] else ""),
        report.machine_line(info["machine"]),
        f"same text from server and bare model (the twin, where run): {info.get('texts_match')}; "
        f"same sources: "
        f"{info.get('sources_match')}; OMP_WAIT_POLICY {info['omp_wait_policy']}",
        f"command: {info['command']}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_line("eval.bench.serve", __doc__, model_cache=True)
    parser.add_argument("--quick", action="store_true", help="small sizes (under 2 minutes)")
    parser.add_argument("--tmp", type=Path, help="folder for the data dir and the server log")
    parser.add_argument("--fake", action="store_true", help="echo generator + hash embedder")
    parser.add_argument(
        "--omp-default",
        action="store_true",
        help="leave OMP_WAIT_POLICY unset (libgomp spins; erratic on a busy machine)",
    )
    args = parser.parse_args(argv)
    if not args.omp_default:
        if "torch" in sys.modules:  # libgomp read its settings when torch loaded it
            print(
                "warning: torch is already imported: OMP_WAIT_POLICY comes too late",
                file=sys.stderr,
            )
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # for this process and the server
    shown = list(sys.argv[1:] if argv is None else argv)
    report = run_serve(
        QUICK if args.quick else FULL,
        out=args.out,
        tmp=args.tmp,
        model_cache=args.model_cache,
        fake=args.fake,
        command=shlex.join(["python", "-m", "eval.bench.serve", *shown]),
    )
    print(report.table())
    print()
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
