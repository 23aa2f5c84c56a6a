"""Prefix reuse for llama.cpp that never changes an answer.

llama.cpp keeps the previous prompt's keys and values; a next prompt that starts the same way
needs only its new part evaluated. But the numbers a prompt token gets depend, in their last
bits, on how many tokens were evaluated together with it: ggml's CPU flash attention runs rows
in batches of at least `TILE` (64) query tokens through a tiled kernel (f32 throughout), and
smaller batches, a decoded token included, through another (f16 products). Reusing whatever
the previous request left (llama-cpp-python's own rule: any common prefix, down to re-running
the last token) therefore makes a greedy answer depend on the question asked before it: in 3 of
10 of the benchmark's prompts it did.

The rule here: a prompt of `TILE` tokens or more is always evaluated as if it were evaluated
from scratch in batches of at least `TILE`, so every one of its tokens takes the tiled kernel:
a cached prefix is reused only as far as it holds prompt tokens that were themselves evaluated
so (never the tokens of an answer, which were decoded one by one), and only up to `TILE` tokens
before the end (the rest is one batch of at least `TILE`). A shorter prompt is evaluated whole.
Then the same prompt gives the same tokens whatever came before it
(tests/tuning/test_llamacpp.py), and a run of questions on the same sources still reuses the
system prompt and the sources.
"""

from __future__ import annotations

from typing import Any

TILE = 64  # ggml's GGML_FA_TILE_Q: the fewest query rows its tiled flash attention takes


def reusable(cached: list[int], prompt: list[int]) -> int:
    """How many leading tokens of `prompt` to keep from `cached` (the context's prompt tokens
    that were evaluated in batches of at least TILE)."""
    if len(prompt) < TILE:
        return 0
    same = 0
    for a, b in zip(cached, prompt, strict=False):
        if a != b:
            break
        same += 1
    return min(same, len(prompt) - TILE)


def parts(n: int, batch: int) -> list[tuple[int, int]]:
    """`n` tokens as consecutive batches of at most `batch`, of (nearly) equal size: none
    shorter than TILE where n allows it (512 + 10 tokens go as 261 + 261, not 512 + 10)."""
    if n <= 0:
        return [(0, 0)]
    count = -(-n // batch)
    size = -(-n // count)
    return [(start, min(n, start + size)) for start in range(0, n, size)]


class PrefixCache:
    """The prompt tokens held in a `llama_cpp.Llama` context that the rule allows reusing."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self._held: dict[int, int] = {}  # id(llm) -> prompt tokens evaluated in batches >= TILE

    def forget(self, llm: Any) -> None:
        self._held.pop(id(llm), None)

    def prefill(self, llm: Any, prompt: list[int]) -> list[int]:
        """Evaluate `prompt` in `llm` up to its last batch, which is returned for
        `llm.generate(last, reset=False)` to evaluate and sample from."""
        held = min(self._held.pop(id(llm), 0), int(llm.n_tokens))
        keep = reusable(llm.input_ids[:held].tolist(), prompt)
        memory = self._lib.llama_get_memory(llm.ctx)
        if keep and self._lib.llama_memory_seq_rm(memory, 0, keep, -1):
            llm.n_tokens = keep
        else:  # nothing to keep, or a cache that cannot be cut there
            keep = 0
            llm.reset()  # the next evaluation drops the cache from token 0
        rest = prompt[keep:]
        batches = parts(len(rest), int(llm.n_batch))
        for start, end in batches[:-1]:
            llm.eval(rest[start:end])
        start, end = batches[-1]
        return rest[start:end]

    def evaluated(self, llm: Any, prompt: list[int]) -> None:
        """`prompt` is now evaluated in `llm` (by `prefill` and the first step of generate)."""
        if len(prompt) >= TILE:
            self._held[id(llm)] = len(prompt)
