"""Train with-context examples the way the server will serve them.

A with-context example's user turn holds a sources block in the server's format
(`Sources:\\n<sources>\\n[1] <where>\\n<text>\\n\\n[2] ...\\n</sources>\\n\\nQuestion: <q>`, see
`serve.prompt.user_turn`; a test keeps the two in step). Tone data usually gives one relevant
passage; at serving, retrieval hands the model several (`top_k`, 4 by default), most of them
beside the point. An adapter trained only on the single-passage case learns to use whatever
passage it sees and, shown four, answers from the wrong one: on the shipped comparison, RAG +
tuned lost a third of RAG's key facts. So each with-context example also trains in a variant
with other passages mixed in at random places and its citations renumbered (the distractor
training of RAFT, Zhang et al. 2024), and under the system prompt the server uses in its
retrieval modes (persona + retrieval instructions).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tuning.data import Example

_TURN = re.compile(
    r"\ASources:\n<sources>\n(?P<blocks>.*)\n</sources>\n\nQuestion: (?P<question>.*)\Z", re.S
)
_BLOCK_START = re.compile(r"\n\n(?=\[\d+\] )")
_BLOCK = re.compile(r"\A\[(?P<n>\d+)\] (?P<where>[^\n]*)\n(?P<text>.*)\Z", re.S)
_CITATION = re.compile(r"\[(\d+)\]")
MAX_CHARS = 1300  # user turn + answer, under 400 tokens: with the system prompt, within 512


@dataclass(frozen=True)
class Passage:
    where: str
    text: str

    def block(self, number: int) -> str:
        return f"[{number}] {self.where}\n{self.text}"


@dataclass(frozen=True)
class WithContext:
    """A user turn split into its numbered passages and its question."""

    passages: dict[int, Passage]
    question: str

    def render(self, order: Sequence[Passage]) -> str:
        blocks = "\n\n".join(p.block(i) for i, p in enumerate(order, start=1))
        return f"Sources:\n<sources>\n{blocks}\n</sources>\n\nQuestion: {self.question}"


def parse_turn(text: str) -> WithContext | None:
    """The passages and question of a user turn in the server's format; None otherwise."""
    turn = _TURN.match(text)
    if turn is None:
        return None
    passages: dict[int, Passage] = {}
    for raw in _BLOCK_START.split(turn["blocks"]):
        block = _BLOCK.match(raw)
        if block is None or int(block["n"]) in passages:
            return None
        passages[int(block["n"])] = Passage(block["where"], block["text"])
    return WithContext(passages, turn["question"])


def _renumber(answer: str, numbers: dict[int, int]) -> str:
    return _CITATION.sub(lambda m: f"[{numbers.get(int(m[1]), int(m[1]))}]", answer)


def _with_system(messages: list[dict[str, str]], suffix: str, persona: str) -> list[dict[str, str]]:
    """The retrieval system prompt as the server builds it: the example's own system prompt,
    or else `persona` (the server's default), then the retrieval instructions."""
    if not suffix:
        return messages
    if messages[0]["role"] == "system":
        persona, messages = messages[0]["content"], messages[1:]
    content = f"{persona}\n\n{suffix}" if persona else suffix
    return [{"role": "system", "content": content}, *messages]


def for_serving(
    examples: Sequence[Example],
    *,
    distractors: int,
    rag_instructions: str = "",
    seed: int = 0,
    pool: Sequence[Example] = (),
    persona: str = "",
) -> list[Example]:
    """`examples` with every with-context one under the retrieval system prompt, plus (when
    `distractors` > 0) one variant with 1..`distractors` other passages (from the with-context
    examples of `pool`, default `examples`) mixed in and its citations renumbered.

    Examples without a sources block are returned as they are; the order is kept, each variant
    right after its original, so a seeded split stays what it was. A with-context example
    without a system prompt gets `persona` (the server's default system prompt) before the
    instructions, as the server would answer it."""
    rng = random.Random(seed)
    candidates: list[Passage] = []
    for example in pool or examples:
        turn = parse_turn(example.messages[-2]["content"])
        candidates.extend(turn.passages.values() if turn else ())
    out: list[Example] = []
    for example in examples:
        messages = list(example.messages)
        turn = parse_turn(messages[-2]["content"])
        if turn is None:
            out.append(example)
            continue
        messages = _with_system(messages, rag_instructions, persona)
        out.append(Example(tuple(messages)))
        if distractors <= 0:
            continue
        own = {p.text for p in turn.passages.values()}
        others = [p for p in candidates if p.text not in own]
        rng.shuffle(others)
        order = list(turn.passages.values())
        wanted = rng.randint(1, distractors)
        for other in others:
            if wanted == 0:
                break
            trial = [*order, other]
            if len(turn.render(trial)) + len(messages[-1]["content"]) <= MAX_CHARS:
                order, wanted = trial, wanted - 1
        if len(order) == len(turn.passages):
            continue  # nothing fits beside it: the plain example stands alone
        rng.shuffle(order)
        numbers = {n: order.index(p) + 1 for n, p in turn.passages.items()}
        variant = [
            *messages[:-2],
            {"role": "user", "content": turn.render(order)},
            {"role": "assistant", "content": _renumber(messages[-1]["content"], numbers)},
        ]
        out.append(Example(tuple(variant)))
    return out
