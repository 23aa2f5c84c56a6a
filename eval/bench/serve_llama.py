"""The serving benchmark's llama.cpp side: bare llama-cpp-python, adapters, cold start, targets."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from eval.bench.report import Report
from eval.bench.serve_bare import Bare, BareRun, load_bare
from eval.bench.serve_load import TIMEOUT_S, Sizes, StreamRun, rate, stream_chat
from serve.settings import Settings
from tuning.adapters import CONFIG, WEIGHTS, AdapterRegistry
from tuning.generator import Message
from tuning.llamacpp_prefix import PrefixCache

BENCH_ADAPTER = "bench"  # published in the benchmark's own data dir
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LlamaBare:
    """llama-cpp-python on the same GGUF, given the same prompt token ids (the transformers
    chat template), with the same threads and greedy sampler as the server: the plain
    `Llama.generate` loop a user would write, keeping its prefix cache between calls.
    `flash_attention`: None leaves llama-cpp-python's default (off) and its own prefix reuse
    (any common prefix), as a user who runs it gets; True or False sets it as the server's
    setting does, and prefixes are then reused as the server reuses them
    (`tuning.llamacpp_prefix`), so that greedy texts can be compared token for token."""

    def __init__(
        self, gguf: Path, tokenizer: Any, threads: int, flash_attention: bool | None = None
    ) -> None:
        import llama_cpp

        self.gguf, self.tokenizer, self.threads = gguf, tokenizer, threads
        self.flash_attention = flash_attention
        self.llm = llama_cpp.Llama(
            model_path=str(gguf),
            n_ctx=0,
            n_batch=512,
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=bool(flash_attention),  # None: llama-cpp-python's default, off
            verbose=False,
        )
        self.eos = int(tokenizer.eos_token_id)
        self.prefix = PrefixCache(llama_cpp) if flash_attention is not None else None

    def describe(self) -> str:
        attention = {None: "its defaults", True: "flash attention", False: "no flash attention"}
        return (
            f"llama-cpp-python Llama.generate on {self.gguf.name}, {self.threads} threads, "
            f"{attention[self.flash_attention]}"
        )

    def count_text(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def run(self, messages: Sequence[Message], max_new_tokens: int, timed: bool) -> BareRun:
        ids = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        ids = [int(t) for t in ids]
        new: list[int] = []
        times: list[float] = []
        cpu, started = time.process_time(), time.perf_counter()
        batch = ids if self.prefix is None else self.prefix.prefill(self.llm, ids)
        steps = self.llm.generate(
            batch, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0,
            reset=self.prefix is None,
        )  # fmt: skip
        for token in steps:
            if self.prefix is not None and not new:
                self.prefix.evaluated(self.llm, ids)
            new.append(int(token))
            if timed:
                times.append(time.perf_counter() - started)
            if token == self.eos or len(new) >= max_new_tokens:
                break
        steps.close()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        text = str(self.tokenizer.decode(new, skip_special_tokens=True)).strip()
        first, last = (times[0], times[-1]) if times else (seconds, seconds)
        return BareRun(seconds, cpu, first, last, len(new), self.count_text(text), text)


def load_llama_bare(settings: Settings, *, as_served: bool = False) -> LlamaBare:
    """Bare llama-cpp-python on the server's GGUF: with its own defaults (what a user running
    it instead of ragtune gets), or `as_served`, with the server's engine settings."""
    from tuning.llamacpp import available_threads
    from tuning.llamacpp_build import gguf_and_tokenizer

    gguf, tokenizer, _ = gguf_and_tokenizer(settings.generator.model, settings.models_dir)
    threads = settings.generator.threads or available_threads()
    flash = settings.generator.flash_attention if as_served else None
    return LlamaBare(gguf, tokenizer, threads, flash)


def publish_bench_adapter(settings: Settings, base_model_id: str, model_dir: Path | None) -> str:
    """A rank-8 LoRA on the seven projections (random weights: what is timed is the shape, not
    the voice), published as `bench` in the benchmark's data dir; returns its model name."""
    import numpy as np
    from safetensors.numpy import save_file

    dims = {
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_hidden_layers": 1,
        "num_key_value_heads": 1,
        "num_attention_heads": 1,
    }
    if model_dir is not None:  # the real model's shapes
        dims = json.loads((model_dir / "config.json").read_text("utf-8"))
    hidden, inter = int(dims["hidden_size"]), int(dims["intermediate_size"])
    kv = hidden * int(dims["num_key_value_heads"]) // int(dims["num_attention_heads"])
    shapes = {
        "q_proj": (hidden, hidden),
        "k_proj": (kv, hidden),
        "v_proj": (kv, hidden),
        "o_proj": (hidden, hidden),
        "gate_proj": (inter, hidden),
        "up_proj": (inter, hidden),
        "down_proj": (hidden, inter),
    }
    rng = np.random.default_rng(0)
    tensors = {}
    for layer in range(int(dims["num_hidden_layers"])):
        for module, (out, inp) in shapes.items():
            part = (
                "self_attn" if module.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            )
            key = f"base_model.model.model.layers.{layer}.{part}.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.normal(0, 0.02, (8, inp)).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = rng.normal(0, 0.02, (out, 8)).astype(np.float32)
    registry = AdapterRegistry(settings.adapters_dir)
    staging = registry.staging_dir(BENCH_ADAPTER)
    save_file(tensors, str(staging / WEIGHTS))
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": list(LORA_TARGETS)}
    (staging / CONFIG).write_text(json.dumps(config), "utf-8")
    registry.publish(BENCH_ADAPTER, staging, {"base_model_id": base_model_id})
    return f"rag+tuned:{BENCH_ADAPTER}"


def decode_rate(runs: list[StreamRun], count_text: Any) -> float:
    return rate(
        sum(r.tokens - count_text(r.first_piece) for r in runs),
        sum(r.last_s - r.first_s for r in runs),
    )


def bench_adapter(
    report: Report, url: str, questions: list[str], sizes: Sizes, tuned: str, count_text: Any
) -> None:
    """rag and rag+tuned on the same questions, alternating (so every request switches the
    adapter and starts from an empty KV cache: the worst case); ratio tuned / plain."""
    runs: dict[str, list[StreamRun]] = {"rag": [], tuned: []}
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        stream_chat(client, questions[0], tuned, sizes.warm_tokens)  # exports the adapter
        for _ in range(sizes.repeats):
            for q in questions:
                for model in runs:
                    runs[model].append(stream_chat(client, q, model, sizes.max_tokens))
    plain, adapted = (decode_rate(runs[m], count_text) for m in runs)
    report.add(
        "stream.rag_tuned.decode_tokens_per_s",
        "rag+tuned: server decode tokens/s",
        adapted,
        "tok/s",
        note=f"adapter {tuned}, rank 8, 7 projections",
    )
    report.add(
        "ratio.adapter.decode",
        "rag+tuned / rag decode tokens/s",
        adapted / plain,
        "x",
        target=0.9,
        note=f"alternating, {len(runs[tuned])} requests each",
    )
    ttft = {m: statistics.median(r.first_s for r in rs) * 1000 for m, rs in runs.items()}
    report.add(
        "ratio.adapter.ttft",
        "rag+tuned / rag time to first token p50",
        ttft[tuned] / ttft["rag"],
        "x",
        higher_is_better=False,
        note=f"{ttft[tuned]:.0f} vs {ttft['rag']:.0f} ms; every request switches adapter",
    )


def cold_start(report: Report, started: float, url: str, question: str) -> None:
    """Seconds from starting `ragtune serve` to the first answer's last byte (the model was
    converted earlier in the run, as after a first start)."""
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        stream_chat(client, question, "base", 8)
    report.add(
        "serve.cold_start_s",
        "cold start: `ragtune serve` to first answer",
        time.perf_counter() - started,
        "s",
        target=5.0,
        higher_is_better=False,
        note="process start, imports, index and model load, one 8-token answer",
    )


def ttft_targets(report: Report, versus: str) -> None:
    """RAG time to first token: p50 against the bare run's (<= 1.1x) and absolute (<= 1.5 s);
    against the twin's (the server's engine settings), where there is one, for information."""
    figures = report.to_json()["figures"]
    server = figures["stream.rag.ttft.p50_ms"]["value"]
    bare = figures["bare.rag.ttft.p50_ms"]["value"]
    report.add(
        "ratio.rag.ttft",
        f"rag: server / {versus} time to first token p50",
        server / bare,
        "x",
        target=1.1,
        higher_is_better=False,
        note=f"{server:.0f} vs {bare:.0f} ms",
    )
    if "twin.rag.ttft.p50_ms" in figures:
        twin = figures["twin.rag.ttft.p50_ms"]["value"]
        report.add(
            "ratio.rag.ttft_same_settings",
            f"rag: server / {versus} with the server's settings, time to first token p50",
            server / twin,
            "x",
            higher_is_better=False,
            note=f"{server:.0f} vs {twin:.0f} ms; informative",
        )
    report.add(
        "target.rag.ttft_p50_ms",
        "rag: server time to first token p50",
        server,
        "ms",
        target=1500,
        higher_is_better=False,
        note="retrieval, prompt, prefill, HTTP",
    )


def model_dir(settings: Settings) -> Path:
    from tuning.models import resolve_model_dir

    return resolve_model_dir(settings.generator.model, settings.models_dir)[0]


def choose_bare(settings: Settings, report: Report) -> tuple[Bare, Bare | None]:
    """(the baseline, its twin): llama-cpp-python on the same GGUF with its own defaults, and
    with the server's engine settings where they differ (flash attention): the server is timed
    against what a user would run instead, and its text checked against the same engine. Where
    the server runs transformers: the bare transformers model, no twin."""
    if settings.generator.uses_llamacpp:
        try:
            plain = load_llama_bare(settings)
        except ImportError:
            report.log("llama-cpp-python is not installed: the bare side is transformers")
        else:
            twin = settings.generator.flash_attention  # llama-cpp-python's default is off
            return plain, load_llama_bare(settings, as_served=True) if twin else None
    return load_bare(settings), None
