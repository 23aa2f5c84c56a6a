"""Synthetic but realistic text for the ingest benchmark: a generated corpus, chunks and queries.

Sentences are taken from the sample corpus (data/corpus, Markdown, text and HTML files) and
recombined at random, with every number replaced by a random one of the same length, so
generated files read like the sample documents but no two chunks share their text.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from ingest.text import html_to_text

SAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"(])")
_NUMBER = re.compile(r"\d+")
_MARKUP = re.compile(r"^\s*(?:[#>|*-]|\d+\.|={3,}|-{3,})")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")

# Questions a user of the sample company's documents might ask (dense, keyword, hybrid queries).
QUERIES: tuple[str, ...] = (
    "How long is the warranty on the Aurora E3 battery?",
    "What does error code E07 mean?",
    "How do I store the battery over winter?",
    "Can I return a bike after 30 days?",
    "What is the maximum load of the Ridgeline Cargo?",
    "How much does shipping to the Scottish Highlands cost?",
    "Who is the head of engineering?",
    "How many days of annual leave do employees get?",
    "What personal data is kept and for how long?",
    "How do I reset the display on the Kestrel S?",
    "When will the Heron T1 touring bike be delivered?",
    "Is finance available at 0% APR?",
    "What should I do if the motor cuts out on a hill?",
    "Which dealers are Gold dealers?",
    "How often should the brakes be serviced?",
    "What tyre pressure should I use?",
    "Can I trade in my old bike?",
    "What are the showroom opening hours?",
    "How do I report a safety incident in the workshop?",
    "What protective equipment is required in the workshop?",
    "Does the warranty cover a cracked frame?",
    "How do I charge the battery safely?",
    "What is the range of the Aurora E3 on one charge?",
    "Who founded Marlowe & Finch and when?",
    "How are customer records deleted?",
    "What happens if my delivery is damaged?",
    "How do I book a test ride?",
    "What is the code of conduct on gifts from suppliers?",
    "How do I torque the rear axle nuts?",
    "What does a flashing red battery light mean?",
    "Can I ride the bike in heavy rain?",
    "How do I update the motor firmware?",
    "What is the policy on working from home?",
    "How are expenses reimbursed?",
    "Which Cycle to Work schemes are accepted?",
    "What is covered by the second battery for the cargo bike?",
    "How do I adjust the gears after a cable replacement?",
    "What is the press release about the new factory?",
    "How do I contact customer support by phone?",
    "How long does a refund take to arrive?",
    "What are the lithium battery transport rules for shipping?",
    "How should a swollen battery be disposed of?",
    "What is the chain wear limit?",
    "Where is Saltmarsh Works?",
    "How many people work at the company?",
    "Is there a sick pay policy?",
    "What does error code E12 on the display mean?",
    "How do I fit the child seat to the Ridgeline Cargo?",
    "What is the policy on CCTV footage retention?",
    "How do I register my bike's frame number?",
)


def _sample_texts(root: Path) -> list[str]:
    texts: list[str] = []
    for path in sorted(root.rglob("*")):
        suffix = path.suffix.lower()
        if suffix in {".md", ".txt"}:
            texts.append(path.read_text(encoding="utf-8"))
        elif suffix in {".html", ".htm"}:
            texts.append(html_to_text(path.read_text(encoding="utf-8")))
    return texts


@dataclass(frozen=True)
class SentencePool:
    """Prose sentences and heading-like phrases of the sample corpus."""

    sentences: tuple[str, ...]
    headings: tuple[str, ...]
    words: tuple[str, ...]

    @classmethod
    def from_corpus(cls, root: Path = SAMPLE_CORPUS) -> SentencePool:
        sentences: list[str] = []
        headings: list[str] = []
        words: dict[str, None] = {}
        for text in _sample_texts(root):
            prose: list[str] = []
            for line in [*text.splitlines(), ""]:
                line = line.strip()
                for w in _WORD.findall(line):
                    words[w.lower()] = None
                if line.startswith("#"):
                    headings.append(line.lstrip("#").strip())
                if line and not _MARKUP.match(line):
                    prose.append(line)
                    continue
                for s in _SENTENCE_END.split(" ".join(prose)):
                    if len(s.split()) >= 6 and s[:1].isupper() and s[-1:] in ".!?":
                        sentences.append(s)
                prose = []
        if len(sentences) < 50 or not headings:
            raise RuntimeError(f"too little prose in {root} to generate a corpus from")
        return cls(tuple(dict.fromkeys(sentences)), tuple(dict.fromkeys(headings)), tuple(words))

    def sentence(self, rng: random.Random) -> str:
        """A corpus sentence with each number replaced by a random one of the same length."""
        return _NUMBER.sub(
            lambda m: _random_digits(rng, len(m.group())), rng.choice(self.sentences)
        )

    def paragraph(self, rng: random.Random, lo: int = 3, hi: int = 7) -> str:
        return " ".join(self.sentence(rng) for _ in range(rng.randint(lo, hi)))

    def heading(self, rng: random.Random) -> str:
        return _NUMBER.sub(lambda m: _random_digits(rng, len(m.group())), rng.choice(self.headings))


def _random_digits(rng: random.Random, n: int) -> str:
    first = str(rng.randint(1, 9)) if n > 1 else ""
    return first + "".join(str(rng.randint(0, 9)) for _ in range(n - len(first)))


def _document(pool: SentencePool, rng: random.Random, markdown: bool, paragraphs: int) -> str:
    title = pool.heading(rng)
    parts = [f"# {title}" if markdown else title.upper(), ""]
    for i in range(paragraphs):
        if i % rng.randint(2, 5) == 0:
            heading = pool.heading(rng)
            parts += [f"## {heading}" if markdown else f"{heading}\n{'-' * len(heading)}", ""]
        parts += [pool.paragraph(rng), ""]
    return "\n".join(parts)


def write_corpus(
    root: Path, *, files: int, total_chars: int, pool: SentencePool, seed: int = 7
) -> list[Path]:
    """`files` .md and .txt files of varying size, about `total_chars` characters in all."""
    rng = random.Random(seed)
    weights = [rng.uniform(0.2, 1.8) for _ in range(files)]
    scale = total_chars / sum(weights)
    avg_paragraph = 480  # characters of a 3-7 sentence paragraph and its heading, roughly
    out: list[Path] = []
    for i, w in enumerate(weights):
        markdown = i % 3 != 2
        folder = root / f"section-{i % 8:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"doc-{i:04d}.{'md' if markdown else 'txt'}"
        text = _document(pool, rng, markdown, max(2, round(w * scale / avg_paragraph)))
        path.write_text(text, encoding="utf-8")
        out.append(path)
    return out


def modify_files(paths: list[Path], pool: SentencePool, rng: random.Random) -> None:
    """Replace one sentence in the middle of each file with another (new numbers included)."""
    for path in paths:
        text = path.read_text(encoding="utf-8")
        sentences = [s for s in _SENTENCE_END.split(text) if len(s.split()) >= 6]
        if not sentences:
            path.write_text(text + "\n" + pool.sentence(rng) + "\n", encoding="utf-8")
            continue
        old = sentences[len(sentences) // 2].split("\n")[-1]
        path.write_text(text.replace(old, pool.sentence(rng), 1), encoding="utf-8")


def chunk_texts(pool: SentencePool, n: int, rng: random.Random) -> list[str]:
    """`n` chunk-sized texts (one paragraph of 5-9 sentences, roughly 150 words each)."""
    return [pool.paragraph(rng, 5, 9) for _ in range(n)]
