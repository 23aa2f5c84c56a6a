"""Chat examples to token ids with loss on assistant tokens only; seeded, padded batches."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuning.data import Example

if TYPE_CHECKING:
    import torch

IGNORE = -100  # label of a token that carries no loss (torch cross_entropy's ignore_index)
# Answer positions per LM-head call: (256, vocab) float32 logits, 48 MiB on SmolLM2, at a time.
LOSS_CHUNK = 256


class TemplateError(ValueError):
    """The tokenizer's chat template does not render a conversation prefix by prefix."""


@dataclass(frozen=True)
class Tokenized:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # the token id on assistant tokens, IGNORE elsewhere
    truncated: bool

    @property
    def targets(self) -> int:
        return sum(label != IGNORE for label in self.labels)


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (batch, longest) int64, right-padded
    attention_mask: torch.Tensor  # (batch, longest) int64, 0 on padding
    labels: torch.Tensor  # (batch, longest) int64, IGNORE on padding and non-assistant tokens
    tokens: int  # non-padding tokens
    targets: int  # tokens that carry loss


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], prompt: bool) -> str:
    text = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=prompt
    )
    return str(text)


def assistant_spans(tokenizer: Any, example: Example) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant answer.

    A span starts where the template's generation prompt ends and ends after the answer's
    end-of-turn marker (so the model learns to stop), trailing whitespace excluded.
    """
    messages = example.messages
    text = _render(tokenizer, messages, prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], prompt=True)
        through = _render(tokenizer, messages[: i + 1], prompt=False).rstrip()
        if not (text.startswith(before) and text.startswith(through)):
            raise TemplateError(
                "the chat template renders a conversation differently from its prefixes; "
                "assistant tokens cannot be located"
            )
        spans.append((len(before), len(through)))
    return text, spans


def tokenize_example(tokenizer: Any, example: Example, max_length: int) -> Tokenized:
    """Token ids of the chat-templated example and its labels, cut to max_length tokens."""
    text, spans = assistant_spans(tokenizer, example)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoded["input_ids"])
    # a token is an answer token when it starts inside an answer's character span
    labels = [
        token if any(lo <= start < hi for lo, hi in spans) else IGNORE
        for token, (start, _) in zip(ids, encoded["offset_mapping"], strict=True)
    ]
    cut = len(ids) > max_length
    return Tokenized(tuple(ids[:max_length]), tuple(labels[:max_length]), cut)


def tokenize_examples(
    tokenizer: Any, examples: Sequence[Example], max_length: int
) -> tuple[list[Tokenized], int, int]:
    """(kept, truncated count, dropped count): an example cut before its first answer token
    has nothing to learn from and is dropped."""
    items = [tokenize_example(tokenizer, e, max_length) for e in examples]
    kept = [item for item in items if item.targets > 0]
    return kept, sum(item.truncated for item in items), len(items) - len(kept)


def collate(items: Sequence[Tokenized], pad_id: int, device: str) -> Batch:
    """Pad to the longest item of this batch only (dynamic padding)."""
    import torch

    longest = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), longest), dtype=torch.long)
    labels = torch.full((len(items), longest), IGNORE, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(item.labels)
    tokens = sum(len(item.input_ids) for item in items)
    targets = int((labels[:, 1:] != IGNORE).sum())  # the first token is never predicted
    return Batch(ids.to(device), mask.to(device), labels.to(device), tokens, targets)


def steps_per_epoch(n_items: int, batch_size: int, grad_accum: int) -> int:
    return math.ceil(math.ceil(n_items / batch_size) / grad_accum)


def epoch_batches(n_items: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Item indices per batch: a fresh seeded shuffle each epoch, no sorting by length."""
    order = list(range(n_items))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n_items, batch_size)]


def step_batches(
    n_items: int, batch_size: int, grad_accum: int, seed: int, step: int
) -> list[list[int]]:
    """The micro-batches of 0-based optimizer step `step`; a function of the step alone, so a
    resumed run sees the same batches as an uninterrupted one."""
    per_epoch = steps_per_epoch(n_items, batch_size, grad_accum)
    epoch, k = divmod(step, per_epoch)
    batches = epoch_batches(n_items, batch_size, seed, epoch)
    return batches[k * grad_accum : (k + 1) * grad_accum]


def micro_batches(items: Sequence[Tokenized], max_tokens: int) -> list[list[Tokenized]]:
    """A step's examples as forward passes of at most max_tokens padded tokens each (a longer
    example is a pass alone). Shortest first, so similar lengths share a pass and little of it
    is padding; the step's summed loss and gradient do not depend on how it is split."""
    passes: list[list[Tokenized]] = []
    for item in sorted(items, key=lambda t: len(t.input_ids)):
        # sorted: the new item is the longest of its pass, so the pass pads to its length
        if passes and (len(passes[-1]) + 1) * len(item.input_ids) <= max_tokens:
            passes[-1].append(item)
        else:
            passes.append([item])
    return passes


def _head_loss(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F  # noqa: N812

    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def loss_sum(model: Any, batch: Batch) -> torch.Tensor:
    """Summed next-token cross-entropy over the batch's answer tokens (a 0-dim tensor).

    The (batch, length, vocab) logits never exist: 49k floats per token on SmolLM2, 0.8 GB at
    8 x 512 and as much again for each of their log-softmax and gradients. The decoder's hidden
    states of answer positions alone go through the LM head, LOSS_CHUNK at a time, and with
    gradients on each chunk's logits are recomputed in backward instead of kept. For models whose
    logits are lm_head(hidden) (Llama-style; no logit scaling or soft-capping).
    """
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch.utils.checkpoint import checkpoint

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    # No attention mask: collate pads on the right and attention is causal, so a real token
    # never sees padding; without a mask SDPA runs its fused causal kernel instead of building
    # (batch, heads, length, length) scores. Padding positions carry no loss.
    hidden = decoder(input_ids=batch.input_ids, use_cache=False).last_hidden_state
    # token t predicts token t+1: shift the labels left (a copy of ints)
    targets = F.pad(batch.labels[:, 1:], (0, 1), value=IGNORE)
    keep = targets != IGNORE
    hidden, targets = hidden[keep], targets[keep]  # (answer tokens, hidden), (answer tokens,)
    total = torch.zeros((), device=hidden.device)
    for start in range(0, len(targets), LOSS_CHUNK):
        part = (head, hidden[start : start + LOSS_CHUNK], targets[start : start + LOSS_CHUNK])
        if torch.is_grad_enabled():
            total = total + checkpoint(_head_loss, *part, use_reentrant=False)
        else:
            total = total + _head_loss(*part)
    return total
