"""Streamed answers against the same model's bare `generate` on the same prompts, in one run."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from eval.bench.report import Latency, Report
from eval.bench.serve_load import TIMEOUT_S, Sizes, StreamRun, rate, stream_chat
from serve.settings import Settings
from tuning.generator import EchoGenerator, Message


@dataclass
class BareRun:
    """One bare generation; times in seconds from calling `generate`."""

    seconds: float
    cpu_s: float  # this process's CPU time over the call
    first_s: float  # first generated token (nan when not timed)
    last_s: float  # last generated token
    generated: int  # tokens out of the model, EOS included
    tokens: int  # tokens in the text, counted as the server counts usage
    text: str


class Bare(Protocol):
    def run(self, messages: Sequence[Message], max_new_tokens: int, timed: bool) -> BareRun:
        """Generate greedily; `timed` stamps every token (otherwise nothing but generate)."""
        ...

    def count_text(self, text: str) -> int: ...

    def describe(self) -> str: ...


class _Stamps:
    """A streamer that only notes when each token arrives (the first `put` is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class HFBare:
    """The converted model loaded straight with transformers; `model.generate` and nothing else."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self.model_dir = model_dir
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model: Any = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
        self.model.eval()  # type: ignore[no-untyped-call]

    def describe(self) -> str:
        return f"transformers AutoModelForCausalLM.generate on {self.model_dir.name}"

    def count_text(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def run(self, messages: Sequence[Message], max_new_tokens: int, timed: bool) -> BareRun:
        import torch

        inputs = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        prompt_len = int(inputs["input_ids"].shape[1])
        stamps = _Stamps() if timed else None
        kwargs = {
            **inputs,
            "max_new_tokens": max_new_tokens,
            "do_sample": False,
            "temperature": None,
            "top_p": None,
            "top_k": None,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        cpu, started = time.process_time(), time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**kwargs, streamer=stamps)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        new = out[0, prompt_len:]
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        times = stamps.times[1:] if stamps else []
        first, last = (times[0] - started, times[-1] - started) if times else (seconds, seconds)
        return BareRun(seconds, cpu, first, last, len(new), self.count_text(text), text)


class EchoBare:
    """The echo generator called directly: lets the smoke run exercise every step in seconds."""

    def __init__(self) -> None:
        self.generator = EchoGenerator()

    def describe(self) -> str:
        return "EchoGenerator.stream"

    def count_text(self, text: str) -> int:
        return self.generator.count_text(text)

    def run(self, messages: Sequence[Message], max_new_tokens: int, timed: bool) -> BareRun:
        from tuning.generator import GenerationParams

        params = GenerationParams(max_new_tokens=max_new_tokens)
        cpu, started = time.process_time(), time.perf_counter()
        times, pieces = [], []
        for piece in self.generator.stream(messages, params):
            times.append(time.perf_counter() - started)
            pieces.append(piece)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        text = "".join(pieces).strip()
        first, last = (times[0], times[-1]) if times else (seconds, seconds)
        tokens = self.count_text(text)
        return BareRun(seconds, cpu, first, last, tokens, tokens, text)


def load_bare(settings: Settings) -> Bare:
    """The bare counterpart of the server's generator (same converted weights)."""
    if settings.generator.backend == "echo":
        return EchoBare()
    from tuning.models import resolve_model_dir

    return HFBare(resolve_model_dir(settings.generator.model, settings.models_dir)[0])


@dataclass(frozen=True)
class Prompt:
    """One question in one mode, with the messages the server's pipeline builds for it."""

    mode: str
    question: str
    messages: list[Message]
    hit_ids: list[str]  # the sources cited in the prompt, in order
    prompt_tokens: int


def proc_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of process `pid` so far, from /proc; 0 without one."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Pair:
    """Every run of one prompt: through the server, and bare (plain and with token stamps)."""

    prompt: Prompt
    served: list[tuple[StreamRun, float]] = field(default_factory=list)  # (run, server CPU s)
    bare: list[BareRun] = field(default_factory=list)
    timed: list[BareRun] = field(default_factory=list)
    twin: list[BareRun] = field(default_factory=list)  # the same engine settings as the server

    def same_text(self) -> bool:
        """The server's text is the bare engine's: the twin's where there is one (the baseline
        then runs other settings, whose greedy text may differ at near ties)."""
        reference = self.twin or self.bare
        return all(run.text == b.text for run, _ in self.served for b in reference)


def run_rounds(
    client: httpx.Client,
    bare: Bare,
    pairs: list[Pair],
    sizes: Sizes,
    server_pid: int | None,
    report: Report,
    twin: Bare | None = None,
) -> None:
    """Warm both up, then alternate: every prompt through the server, then every prompt bare
    (and through the `twin`, timed). The server is idle while a bare model runs, and the other
    way round."""
    report.log("warming up: one streamed answer and two bare ones per mode")
    for p in {pair.prompt.mode: pair.prompt for pair in pairs}.values():
        stream_chat(client, p.question, p.mode, sizes.warm_tokens)
        bare.run(p.messages, sizes.warm_tokens, timed=False)
        bare.run(p.messages, sizes.warm_tokens, timed=True)
        if twin is not None:
            twin.run(p.messages, sizes.warm_tokens, timed=True)
    for r in range(sizes.repeats):
        report.log(f"round {r + 1}/{sizes.repeats}: {len(pairs)} prompts via the server, then bare")
        for pair in pairs:
            cpu = proc_cpu_s(server_pid)
            run = stream_chat(client, pair.prompt.question, pair.prompt.mode, sizes.max_tokens)
            pair.served.append((run, proc_cpu_s(server_pid) - cpu))
        for pair in pairs:
            pair.bare.append(bare.run(pair.prompt.messages, sizes.max_tokens, timed=False))
        for pair in pairs:
            pair.timed.append(bare.run(pair.prompt.messages, sizes.max_tokens, timed=True))
        if twin is not None:
            for pair in pairs:
                pair.twin.append(twin.run(pair.prompt.messages, sizes.max_tokens, timed=True))


def add_trio(
    report: Report,
    mode: str,
    key: str,
    label: str,
    values: tuple[float, float],
    notes: list[str],
    target: float = 0.9,
) -> None:
    """Server figure, bare figure and their ratio (>= target); notes: server, bare, ratio."""
    server, bare = values
    report.add(f"stream.{mode}.{key}", f"{mode}: server {label}", server, "tok/s", note=notes[0])
    report.add(f"bare.{mode}.{key}", f"{mode}: bare {label}", bare, "tok/s", note=notes[1])
    ratio_key = "end_to_end" if key == "tokens_per_s" else "decode"
    report.add(
        f"ratio.{mode}.{ratio_key}",
        f"{mode}: server / bare {label}",
        server / bare,
        "x",
        target=target,
        note=notes[2],
    )


def mode_figures(
    report: Report, mode: str, pairs: list[Pair], bare: Bare, cpu: bool, target: float = 0.9
) -> None:
    """Figures 1 and 2 for one mode; rates are total tokens / total time of the fastest runs."""
    served = [min((run for run, _ in p.served), key=lambda r: r.seconds) for p in pairs]
    plain = [min(p.bare, key=lambda r: r.seconds) for p in pairs]
    timed = [min(p.timed, key=lambda r: r.seconds) for p in pairs]
    ttft = [run.first_s * 1000 for p in pairs for run, _ in p.served]
    report.add_latency(
        f"stream.{mode}.ttft",
        f"{mode}: server time to first token",
        Latency.of(ttft),
        "streamed; retrieval, prompt, prefill, HTTP",
    )
    bare_ttft = [r.first_s * 1000 for p in pairs for r in p.timed]
    report.add_latency(
        f"bare.{mode}.ttft",
        f"{mode}: bare time to first token",
        Latency.of(bare_ttft),
        "prefill and first token of generate",
    )
    where = f"{len(pairs)} prompts, fastest of {len(pairs[0].served)}"
    where += f", {sum(r.tokens for r in served) / len(pairs):.0f} tokens each"
    end_to_end = (
        rate(sum(r.tokens for r in served), sum(r.seconds for r in served)),
        rate(sum(r.tokens for r in plain), sum(r.seconds for r in plain)),
    )
    notes = [f"request sent to [DONE]; {where}", "generate() call", "same prompt, greedy"]
    add_trio(report, mode, "tokens_per_s", "tokens/s", end_to_end, notes, target)
    decode = (
        rate(
            sum(r.tokens - bare.count_text(r.first_piece) for r in served),
            sum(r.last_s - r.first_s for r in served),
        ),
        rate(sum(r.generated - 1 for r in timed), sum(r.last_s - r.first_s for r in timed)),
    )
    notes = ["after the first SSE piece (a word)", "after the first token", "approximate"]
    add_trio(report, mode, "decode_tokens_per_s", "decode tokens/s", decode, notes, target)
    if pairs[0].twin:
        twin_figures(report, mode, pairs, decode[0])
    if cpu:  # every run, not the fastest: CPU time barely moves with the machine's load
        server_cpu = sum(c for p in pairs for _, c in p.served)
        server_tok = sum(run.tokens for p in pairs for run, _ in p.served)
        bare_cpu = sum(r.cpu_s for p in pairs for r in p.bare)
        bare_tok = sum(r.tokens for p in pairs for r in p.bare)
        report.add(
            f"ratio.{mode}.cpu",
            f"{mode}: server / bare tokens per CPU s",
            rate(server_tok, server_cpu) / rate(bare_tok, bare_cpu),
            "x",
            note=f"CPU ms per token: server process {1000 * server_cpu / server_tok:.0f}, "
            f"bare {1000 * bare_cpu / bare_tok:.0f}",
        )


def twin_figures(report: Report, mode: str, pairs: list[Pair], served_decode: float) -> None:
    """The bare engine with the server's own settings: how much of the ratio they account for
    (the rest is the server's own work: retrieval, HTTP, a server-sent event per piece)."""
    twin = [min(p.twin, key=lambda r: r.seconds) for p in pairs]
    report.add_latency(
        f"twin.{mode}.ttft",
        f"{mode}: bare, server's settings, time to first token",
        Latency.of([r.first_s * 1000 for p in pairs for r in p.twin]),
        "the same engine settings as the server (flash attention)",
    )
    decode = rate(sum(r.generated - 1 for r in twin), sum(r.last_s - r.first_s for r in twin))
    report.add(
        f"twin.{mode}.decode_tokens_per_s",
        f"{mode}: bare, server's settings, decode tokens/s",
        decode,
        "tok/s",
        note="after the first token",
    )
    report.add(
        f"ratio.{mode}.decode_same_settings",
        f"{mode}: server / bare with the server's settings, decode tokens/s",
        served_decode / decode,
        "x",
        note="informative: the server's own per-token work",
    )


def bench_requests(
    report: Report,
    url: str,
    bare: Bare,
    prompts: list[Prompt],
    sizes: Sizes,
    server_pid: int | None,
    target: float = 0.9,
    twin: Bare | None = None,
) -> None:
    """Figures 1 and 2: streamed answers and the bare model on the same prompts; `target`: of
    the server / bare ratios (0.9 against transformers, 1.0 against llama.cpp); `twin`: the
    bare engine with the server's settings, where the baseline runs its own defaults."""
    pairs = [Pair(p) for p in prompts]
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        run_rounds(client, bare, pairs, sizes, server_pid, report, twin)
    for mode in dict.fromkeys(p.mode for p in prompts):
        chosen = [p for p in pairs if p.prompt.mode == mode]
        mode_figures(report, mode, chosen, bare, server_pid is not None, target)
    report.info["texts_match"] = f"{sum(p.same_text() for p in pairs)}/{len(pairs)} prompts"
    report.info["sources_match"] = (
        f"{sum(all(r.source_ids == p.prompt.hit_ids for r, _ in p.served) for p in pairs)}"
        f"/{len(pairs)} prompts"
    )
    report.info["answers"] = [
        {
            "mode": p.prompt.mode,
            "question": p.prompt.question,
            "server": p.served[0][0].text,
            "bare": p.bare[0].text,
            **({"twin": p.twin[0].text} if p.twin else {}),
            "tokens": p.served[0][0].tokens,
        }
        for p in pairs
    ]
