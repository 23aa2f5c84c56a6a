"""Decode speed with an adapter on llama.cpp: the bare model, run-time LoRA and a merged copy.

    python -m eval.bench.lora [--rounds 3] [--tokens 64] [--rank 16]

The three arms run interleaved in one process on the same prompts (the cores may be shared:
read the ratios); decode tokens/s counts the tokens after the first (prefill excluded).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tuning.adapters import Adapter, AdapterRegistry
from tuning.generator import GenerationParams

PROMPTS = ["Tell me a long story about a lighthouse keeper.",
           "Explain how a bicycle gear works, step by step.",
           "Describe a walk through a forest in autumn."]  # fmt: skip
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def random_adapter(registry: AdapterRegistry, model_dir: Path, rank: int) -> Adapter:
    """A LoRA on every projection with small random B, as the trainer saves it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                        target_modules=TARGETS)  # fmt: skip
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config)
    with torch.no_grad():
        for key, param in peft_model.named_parameters():
            if "lora_B" in key:
                param.copy_(torch.randn(param.shape) * 0.01)
    staging = registry.staging_dir("bench")
    peft_model.save_pretrained(str(staging / "tmp"), safe_serialization=True)
    for item in (staging / "tmp").iterdir():
        item.replace(staging / item.name)
    (staging / "tmp").rmdir()
    return registry.publish(
        "bench", staging, {"base_model_id": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    )


def decode_rate(gen: Any, prompt: str, adapter: Adapter | None, tokens: int) -> float:
    """Tokens per second after the first token (greedy, EOS not honoured past the budget)."""
    ids = gen.encode([{"role": "user", "content": prompt}])
    stamps: list[float] = []
    for _ in gen._tokens(ids, GenerationParams(max_new_tokens=tokens), adapter, threading.Event()):
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    from serve.settings import Settings
    from tuning.backends import build_generator
    from tuning.config import GeneratorConfig
    from tuning.gguf_merge import merge_adapter
    from tuning.models import resolve_model_dir

    with tempfile.TemporaryDirectory(prefix="bench-lora-") as tmp:
        cache = Settings().models_dir  # the packaged model, converted once
        model_dir, _ = resolve_model_dir("SmolLM2-135M-Instruct", cache)
        adapter = random_adapter(AdapterRegistry(Path(tmp)), model_dir, args.rank)
        runtime = build_generator(GeneratorConfig(backend="llamacpp", lora_mode="runtime"), cache)
        merged: Any = build_generator(GeneratorConfig(backend="llamacpp"), cache)
        started = time.perf_counter()
        path = merge_adapter(adapter, merged._base, cache / "gguf-lora")
        merge_s, size = time.perf_counter() - started, path.stat().st_size / 2**20
        before = rss_mib()
        merged.load_adapter(adapter)
        loaded = rss_mib() - before
        runtime.load_adapter(adapter)  # type: ignore[attr-defined]
        arms = {"base": (merged, None), "runtime LoRA": (runtime, adapter),
                "merged LoRA": (merged, adapter)}  # fmt: skip
        for gen, chosen in arms.values():
            decode_rate(gen, PROMPTS[0], chosen, 8)  # warm up
        rates: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.rounds):
            for prompt in PROMPTS:
                for name, (gen, chosen) in arms.items():
                    rates[name].append(decode_rate(gen, prompt, chosen, args.tokens))
        base = statistics.median(rates["base"])
        print(f"adapter r={args.rank} on {len(TARGETS)} projections; {args.rounds} rounds x "
              f"{len(PROMPTS)} prompts x {args.tokens} tokens, interleaved")  # fmt: skip
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"{name:>13}: {median:7.1f} decode tok/s (median), {median / base:.2f}x base")
        print(f"merge: {merge_s:.1f} s, {size:.0f} MiB on disk; RSS +{loaded:.0f} MiB loaded")
        path.unlink()  # the next run merges afresh (and times it)


if __name__ == "__main__":
    main()
