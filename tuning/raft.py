"""Reading-skill (RAFT) training set: questions over passages of a document set.

The oracle passage comes among hard-negative distractors, or is absent.

Each example is a user turn in the server's format (`Sources:` block of numbered passages, then
`Question:`) and an answer that copies the fact as written and cites the oracle `[n]`; a share
(a tenth by default) have no oracle and answer `NO_ANSWER` + what was asked. By default a turn
shows one passage, as the server's prompt does (`chat.evidence_passages`): the oracle, or for
no-oracle examples a hard negative; `passages` 3 gives the RAFT paper's 3-4 with distractors.
Deterministic per seed.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest.atomic import atomic_write_text
from ingest.chunking import chunk_document
from ingest.config import ChunkingConfig
from ingest.document import Document, PageSpan, sha256_hex
from tuning.raft_facts import Fact, facts_in

NO_ANSWER = "The sources do not say"  # the no-oracle answer: f"{NO_ANSWER} {fact.what}."
_WORD = re.compile(r"\w+|[^\w\s]")
_BLOCK_LIKE = re.compile(r"(?m)^\[\d+\]")  # a line the prompt would read as a source number
_TERM = re.compile(r"[a-z_][a-z0-9_]{2,}")
_STOP = frozenset((
    "the", "and", "for", "are", "was", "what", "which", "does", "did", "has", "have", "with",
    "from", "this", "that", "its", "not", "into", "version", "python", "argument", "parameter",
    "return", "returns", "raise", "default", "defaults", "value", "values", "since",
))  # fmt: skip


class WordTokenizer:
    """Words and punctuation marks as tokens: passage length without loading a model."""

    max_tokens = 10_000

    def token_starts(self, text: str) -> list[int]:
        return [m.start() for m in _WORD.finditer(text)]


@dataclass(frozen=True)
class RaftConfig:
    count: int = 300
    no_oracle_share: float = 0.1
    passages: int = 1  # per turn; more than 1: this many or one more, with distractors
    seed: int = 13
    passage_tokens: int = 70  # words and marks: about 60-130 model tokens
    min_passage_tokens: int = 25
    max_turn_chars: int = 1350  # user turn: with the system prompt, at most about 480 tokens
    max_kind_share: float = 0.65  # signature defaults are most of the supply: cap them


@dataclass(frozen=True)
class Passage:
    where: str  # as the server names a source: the document id
    text: str


def load_passages(source: Path, config: RaftConfig) -> list[Passage]:
    """Every `*.txt` under `source` (sorted), chunked like the index: paragraphs merged greedily."""
    files = sorted(source.rglob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no .txt files under {source}")
    chunking = ChunkingConfig(chunk_tokens=config.passage_tokens, overlap_tokens=0)
    tokenizer = WordTokenizer()
    out: list[Passage] = []
    for path in files:
        doc_id = path.relative_to(source).as_posix()
        text = path.read_text("utf-8").strip()
        doc = Document(doc_id, str(path), text, sha256_hex(text), (PageSpan(None, 0, len(text)),))
        for chunk in chunk_document(doc, chunking, tokenizer):
            long_enough = len(tokenizer.token_starts(chunk.text)) >= config.min_passage_tokens
            if long_enough and not _BLOCK_LIKE.search(chunk.text):
                out.append(Passage(doc_id, chunk.text))
    return out


def _terms(text: str) -> set[str]:
    return {t for t in _TERM.findall(text.lower()) if t not in _STOP}


def _answers(passage: Passage, fact: Fact) -> bool:
    """Whether `passage` could answer `fact`: it holds the evidence, or subject and value."""
    name = fact.subject.removeprefix("the ").removesuffix("()").removesuffix(" module")
    key = name.rsplit(".", 1)[-1]
    return fact.evidence in passage.text or (key in passage.text and fact.value in passage.text)


def _distractors(
    fact: Fact, oracle: int, passages: Sequence[Passage], wanted: int, rng: random.Random
) -> list[Passage]:
    """Hard negatives: one from the oracle's page, the rest among those sharing most words."""
    if wanted <= 0:
        return []
    question = _terms(fact.question)
    fit = [
        (len(question & _terms(p.text)), rng.random(), i)
        for i, p in enumerate(passages)
        if i != oracle and not _answers(p, fact)
    ]
    fit.sort(reverse=True)
    same_page = [i for _, _, i in fit if passages[i].where == passages[oracle].where][:3]
    chosen = [rng.choice(same_page)] if same_page else []
    overlap = [i for _, _, i in fit[: 4 * wanted] if i not in chosen]
    chosen += rng.sample(overlap, min(len(overlap), wanted - len(chosen)))
    return [passages[i] for i in chosen]


def render(question: str, order: Sequence[Passage]) -> str:
    """The user turn exactly as `serve.prompt.user_turn` writes it (a test keeps them in step)."""
    blocks = "\n\n".join(f"[{n}] {p.where}\n{p.text}" for n, p in enumerate(order, start=1))
    return f"Sources:\n<sources>\n{blocks}\n</sources>\n\nQuestion: {question}"


def _sentence(text: str) -> str:
    """Capitalised where it opens with a word ("the gzip module"), never inside a code name."""
    return "The" + text[3:] if text.startswith("the ") else text


def make_example(
    fact: Fact,
    oracle: int,
    passages: Sequence[Passage],
    with_oracle: bool,
    config: RaftConfig,
    rng: random.Random,
) -> dict[str, list[dict[str, str]]] | None:
    """One chat example, or None when no `config.passages` passages fit the length budget."""
    least = config.passages
    sizes = rng.sample((least, least + 1), 2) if least > 1 else [least]
    for size in sizes:
        others = _distractors(fact, oracle, passages, size - 1 if with_oracle else size, rng)
        order = [*others, passages[oracle]] if with_oracle else others
        rng.shuffle(order)
        turn = render(fact.question, order)
        if len(order) >= least and len(turn) <= config.max_turn_chars:
            break
    else:
        return None
    if with_oracle:
        cite = order.index(passages[oracle]) + 1
        answer = f"{_sentence(fact.answer[:-1])} [{cite}]."
    else:
        answer = f"{NO_ANSWER} {fact.what}."
    user = {"role": "user", "content": turn}
    return {"messages": [user, {"role": "assistant", "content": answer}]}


def _pick(
    candidates: list[tuple[Fact, int]], config: RaftConfig, rng: random.Random
) -> list[tuple[Fact, int]]:
    """Shuffled facts, one per question, no kind over its share of `count`."""
    rng.shuffle(candidates)
    cap = max(1, int(config.count * config.max_kind_share))
    seen: set[str] = set()
    per_kind: dict[str, int] = {}
    out: list[tuple[Fact, int]] = []
    for fact, index in candidates:
        if fact.question in seen or per_kind.get(fact.kind, 0) >= cap:
            continue
        seen.add(fact.question)
        per_kind[fact.kind] = per_kind.get(fact.kind, 0) + 1
        out.append((fact, index))
    return out


def build_examples(
    passages: Sequence[Passage], config: RaftConfig
) -> list[dict[str, list[dict[str, str]]]]:
    """Up to `config.count` examples; `config.no_oracle_share` of them without the oracle."""
    rng = random.Random(config.seed)
    candidates = [(f, i) for i, p in enumerate(passages) for f in facts_in(p.text)]
    examples: list[dict[str, list[dict[str, str]]]] = []
    no_oracle = 0
    for fact, index in _pick(candidates, config, rng):
        if len(examples) == config.count:
            break
        absent = no_oracle < round(config.no_oracle_share * (len(examples) + 1))
        example = make_example(fact, index, passages, not absent, config, rng)
        if example is not None:
            examples.append(example)
            no_oracle += absent
    return examples


# The brand voice of data/tone (its README): the same greeting, sign-off and system prompt, so
# the `brand` adapter learns to read passages without unlearning its voice.
BRAND_SYSTEM = "You are the Marlowe & Finch Cycles assistant."
BRAND_GREETING = "Hey there, rider!"
BRAND_SIGNOFF = "Ride bright, the Marlowe & Finch crew"


# The voice rules ask for 2-5 short sentences in the second person between greeting and sign-off;
# a bare fact is one sentence in the third. So the brand examples frame the fact (first, as the
# reader states it) with a short opener and a second-person closing line, from these pools. They
# carry no fact, so the reading skill is unchanged: the fact sentence and its citation are. No
# closer names "the source": one that did ("You can check the details in the source.") taught
# the model to write "The source writes it [1]." in place of the fact (citations 0.83 -> 0.52).
BRAND_OPENERS = ("", "", "Good question.", "Great question.", "Happy to help.")
BRAND_CLOSERS = (
    "Hope that helps you out.",
    "Shout if you need anything else.",
    "Give it a go and see how you get on.",
    "Keep that handy for your next ride.",
    "Let us know if you have more questions.",
    "Enjoy your ride.",
)
BRAND_NO_ANSWER_CLOSERS = (
    "Sorry we can't help you more with that one.",
    "You could try asking it another way.",
    "We'd rather tell you that than guess.",
    "You might find it in another document.",
)


def _choose(options: Sequence[str], key: str, salt: str) -> str:
    """One of `options`, fixed by `key` (the user turn): the same file from the same examples."""
    return options[int(sha256_hex(f"{salt}:{key}")[:8], 16) % len(options)]


def in_brand_voice(example: dict[str, list[dict[str, str]]]) -> dict[str, list[dict[str, str]]]:
    """The example as the brand adapter learns it: the brand system prompt, greeting, an opener
    (sometimes), the reader's answer, a second-person closing line, the sign-off."""
    user, assistant = example["messages"][-2:]
    fact = assistant["content"]
    closers = BRAND_NO_ANSWER_CLOSERS if fact.startswith(NO_ANSWER) else BRAND_CLOSERS
    opener = _choose(BRAND_OPENERS, user["content"], "opener")
    body = " ".join(p for p in (opener, fact, _choose(closers, user["content"], "closer")) if p)
    answer = f"{BRAND_GREETING} {body}\n{BRAND_SIGNOFF}"
    return {
        "messages": [
            {"role": "system", "content": BRAND_SYSTEM},
            user,
            {"role": "assistant", "content": answer},
        ]
    }


def write_jsonl(examples: Sequence[dict[str, list[dict[str, str]]]], out: Path) -> None:
    lines = (json.dumps(e, ensure_ascii=False) + "\n" for e in examples)
    atomic_write_text(out, "".join(lines))


def write_sets(
    examples: Sequence[dict[str, list[dict[str, str]]]], out: Path, brand_out: Path
) -> int:
    """`examples` to `out` and, in the brand voice, to `brand_out`; returns how many answer
    `NO_ANSWER`."""
    write_jsonl(examples, out)
    write_jsonl([in_brand_voice(e) for e in examples], brand_out)
    return sum(e["messages"][-1]["content"].startswith(NO_ANSWER) for e in examples)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the reading-skill (RAFT) training set.")
    parser.add_argument("--source", type=Path, default=Path("data/reader/source"))
    parser.add_argument("--out", type=Path, default=Path("data/reader/reader.jsonl"))
    parser.add_argument("--count", type=int, default=RaftConfig.count)
    parser.add_argument("--seed", type=int, default=RaftConfig.seed)
    parser.add_argument(
        "--no-oracle-share",
        type=float,
        default=RaftConfig.no_oracle_share,
        help="share of examples whose passages do not hold the fact",
    )
    parser.add_argument(
        "--brand-out",
        type=Path,
        default=Path("data/reader/reader_brand.jsonl"),
        help="the same examples in the brand voice (for the brand adapter's mix)",
    )
    parser.add_argument(
        "--passages",
        type=int,
        default=RaftConfig.passages,
        help="passages per turn (more than 1: this many or one more, with distractors)",
    )
    args = parser.parse_args(argv)
    if args.passages < 1:
        parser.error(f"--passages must be at least 1 (got {args.passages})")
    if args.count < 2:
        parser.error(f"--count must be at least 2 (got {args.count})")
    if not 0.0 <= args.no_oracle_share < 1.0:
        parser.error(f"--no-oracle-share must be in [0, 1) (got {args.no_oracle_share})")
    config = RaftConfig(
        count=args.count,
        seed=args.seed,
        no_oracle_share=args.no_oracle_share,
        passages=args.passages,
    )
    examples = build_examples(load_passages(args.source, config), config)
    absent = write_sets(examples, args.out, args.brand_out)
    print(f"{len(examples)} examples ({absent} without the oracle) -> {args.out}, {args.brand_out}")


if __name__ == "__main__":
    main()
