"""Prompts: numbered sources in one delimited block of the user turn, trimmed to a token budget.

Retrieved text never becomes a system instruction, and chat-template control tokens inside it
are made inert, so a document cannot open a new turn or role.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from retrieval.retriever import Hit
from tuning.generator import Message

# <|im_start|>, <|endoftext|>, <s>, </s>, [INST], <<SYS>>: what chat templates use as structure;
# <sources> and </sources>: the block's own delimiters, so a document cannot close it early.
_CONTROL = re.compile(
    r"<\|[^<>|\n]{0,40}\|>|</?s>|\[/?INST\]|<</?SYS>>|<\s*/?\s*sources\s*>", re.IGNORECASE
)


_LOOK_ALIKES = str.maketrans("<>[]", "‹›⟦⟧")


class PromptTooLongError(ValueError):
    """The question and history alone do not fit the model's context window."""


def neutralise(text: str) -> str:
    """Control tokens become look-alikes the tokenizer reads as plain text."""
    return _CONTROL.sub(lambda m: m.group().translate(_LOOK_ALIKES), text)


def source_label(hit: Hit) -> str:
    """Where a source is from, as the prompt prints it above its text."""
    return hit.document_id + (f", page {hit.page}" if hit.page else "")


def source_block(number: int, hit: Hit, text: str | None = None) -> str:
    """Source `number` as the prompt shows it: where it is from, then its text (or `text`, an
    excerpt of it)."""
    return f"[{number}] {source_label(hit)}\n{neutralise(hit.text if text is None else text)}"


def user_turn(question: str, blocks: Sequence[str]) -> str:
    if not blocks:
        return question
    sources = "\n\n".join(blocks)
    return f"Sources:\n<sources>\n{sources}\n</sources>\n\nQuestion: {question}"


def build_messages(
    question: str,
    hits: Sequence[Hit],
    *,
    system: str,
    count_tokens: Callable[[list[Message]], int],
    budget: int,
    history: Sequence[Message] = (),
    excerpt: Callable[[Hit], str] | None = None,
) -> tuple[list[Message], list[Hit]]:
    """Messages whose prompt fits `budget` tokens, and the hits it cites (in rank order).

    Sources are added best first while they fit; one that does not fit is left out whole
    (a later, shorter one may still fit), never cut in the middle. `excerpt`, if given, is
    what of each hit the prompt shows (its text by default).
    """
    head: list[Message] = [{"role": "system", "content": system}, *history]

    def messages(blocks: Sequence[str]) -> list[Message]:
        return [*head, {"role": "user", "content": user_turn(question, blocks)}]

    if count_tokens(messages([])) > budget:
        raise PromptTooLongError(
            f"the question and history take more than the {budget} tokens the model can read"
        )
    blocks: list[str] = []
    used: list[Hit] = []
    for hit in hits:
        block = source_block(len(blocks) + 1, hit, excerpt(hit) if excerpt else None)
        if count_tokens(messages([*blocks, block])) <= budget:
            blocks.append(block)
            used.append(hit)
    return messages(blocks), used
