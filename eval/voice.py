"""Transparent brand-voice cues (greeting, sign-off, sentence length, person, jargon)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from eval.text import BRAND_GREETING, BRAND_SIGNOFF, normalize, split_sentences, strip_boilerplate

SHORT_SENTENCE_WORDS = 15  # the voice rules: sentences "mostly under 15 words"
SENTENCES_RANGE = (2, 5)  # the voice rules: "2-5 short sentences" between greeting and sign-off
# The voice rules' banned words (data/tone/README.md), matched by stem: "utilising", "leveraged".
JARGON = re.compile(
    r"\b(utili[sz]\w*|leverag\w*|synerg\w*|facilitat\w*|per|aforementioned)\b", re.IGNORECASE
)
SECOND_PERSON = frozenset(
    {"you", "your", "yours", "yourself", "yourselves", "you're", "you'll", "you've", "you'd"}
)
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")


@dataclass(frozen=True)
class VoiceFeatures:
    """What the voice rules ask for, measured; shown in the report beside the tone score."""

    has_greeting: bool  # the first line opens with "Hey there, rider!"
    has_signoff: bool  # the last line is the sign-off
    sentences: int  # between the greeting and the sign-off
    mean_sentence_words: float  # NaN when there is no sentence
    short_sentence_share: float  # sentences of at most SHORT_SENTENCE_WORDS words
    second_person_rate: float  # share of words that are "you", "your", ...
    jargon_hits: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def vector(self) -> list[float]:
        """Bounded numbers for the classifier: each in [0, 1], so none can extrapolate wildly
        (a raw sentence length would make a one-word answer look extremely on-brand)."""
        low, high = SENTENCES_RANGE
        return [
            float(self.has_greeting),
            float(self.has_signoff),
            self.short_sentence_share,
            float(low <= self.sentences <= high),
            min(1.0, 10.0 * self.second_person_rate),  # brand answers run at about 0.05-0.1
            float(self.jargon_hits > 0),
        ]


def _lines(text: str) -> list[str]:
    return [line for line in (normalize(raw) for raw in text.splitlines()) if line]


def voice_features(text: str) -> VoiceFeatures:
    sentences = split_sentences(text)
    lengths = [len(_WORD.findall(s)) for s in sentences]
    body = strip_boilerplate(text)
    words = [w.lower().replace("’", "'") for w in _WORD.findall(body)]
    lines = _lines(text)
    return VoiceFeatures(
        has_greeting=bool(lines) and lines[0].startswith(normalize(BRAND_GREETING)),
        has_signoff=len(lines) > 1 and lines[-1] == normalize(BRAND_SIGNOFF),
        sentences=len(sentences),
        mean_sentence_words=sum(lengths) / len(lengths) if lengths else float("nan"),
        short_sentence_share=(
            sum(n <= SHORT_SENTENCE_WORDS for n in lengths) / len(lengths) if lengths else 0.0
        ),
        second_person_rate=sum(w in SECOND_PERSON for w in words) / len(words) if words else 0.0,
        jargon_hits=len(JARGON.findall(body)),
    )


def with_boilerplate(text: str) -> str:
    """A text with the brand greeting and sign-off pasted around it."""
    return f"{BRAND_GREETING} {text.strip()}\n{BRAND_SIGNOFF}"
