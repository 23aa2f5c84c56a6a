"""Text canonicalisation for scoring: normalised tokens, numbers, stems, sentences, boilerplate."""

from __future__ import annotations

import re
from collections.abc import Sequence

from serve.numbers import CITATION as CITATION  # re-exported: [n] citations
from serve.numbers import NUMBER_WORDS, canonical_number, stated

BRAND_GREETING = "Hey there, rider!"
BRAND_SIGNOFF = "Ride bright, the Marlowe & Finch crew"
# The voice, not the answer: stripped before answer and grounding metrics (tone scores it).
BRAND_BOILERPLATE: tuple[str, ...] = (BRAND_GREETING, BRAND_SIGNOFF)

_ARTICLES = frozenset({"a", "an", "the"})
_STOPWORD_TEXT = """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not of off on once only or other our ours ourselves out
    over own same she should so some such than that the their theirs them themselves then there
    these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves also may might must
    shall s t ll re ve d m dont doesnt didnt isnt arent wasnt werent cant couldnt wont wouldnt
    shouldnt its im youre youll youve youd were weve well theyre thats whats heres theres lets
    yes sure please just really get got"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# Spelled-out units to the abbreviation (after plural stripping is not enough: "h" vs "hour").
UNIT_ALIASES = {
    "h": "hour", "hr": "hour", "hrs": "hour", "min": "minute", "mins": "minute",
    "kilogram": "kg", "kilograms": "kg", "kilo": "kg", "kilos": "kg", "kilometre": "km",
    "kilometres": "km", "kilometer": "km", "kilometers": "km", "millimetre": "mm",
    "millimetres": "mm", "millimeter": "mm", "millimeters": "mm", "centimetre": "cm",
    "centimetres": "cm", "centimeter": "cm", "centimeters": "cm",
}  # fmt: skip
# An amount is its number: "58 GBP", "£58" and "58 pounds" all match "58".
CURRENCY_WORDS = frozenset({"gbp", "pound", "pounds", "usd", "dollar", "dollars", "eur", "euro"})

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b")
_PERCENT = re.compile(r"%|\bper\s+cent\b")
_APOSTROPHE = re.compile(r"(?<=\w)['’](?=\w)")
_DIGIT_LETTER = re.compile(r"(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)")
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_TRAILING_CITATIONS = re.compile(r"([.!?])((?:\s*\[\d+(?:\s*,\s*\d+)*\])+)")


def tokens(text: str) -> list[str]:
    """SQuAD-style tokens, number-aware: lowercase, no punctuation or articles.

    Unlike SQuAD, a decimal point survives ("4.5" must not become "45"), thousands separators
    go ("1,299" == "1299"), numbers split from glued units ("4.5Nm" -> "4.5 nm") and ordinals
    lose their suffix ("14th" -> "14").
    """
    text = _THOUSANDS.sub("", text.casefold())
    text = _ORDINAL.sub(r"\1", _PERCENT.sub(" percent ", text))
    text = _DIGIT_LETTER.sub(" ", _APOSTROPHE.sub("", text))
    found = _TOKEN.findall(text)
    return [canonical_number(t) if t[0].isdigit() else t for t in found if t not in _ARTICLES]


def normalize(text: str) -> str:
    """The tokens of `tokens(text)` joined by single spaces."""
    return " ".join(tokens(text))


def stem(token: str) -> str:
    """Light suffix stripping, applied alike to both sides, so only consistency matters."""
    if token[0].isdigit() or len(token) <= 3:
        return token
    if token.endswith("ies") and len(token) > 4:
        token = token[:-3] + "y"
    elif token.endswith("s") and not token.endswith(("ss", "us", "is")):
        token = token[:-1]
    for suffix in ("ing", "ed"):
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            token = token[: -len(suffix)]
            break
    return token[:-1] if token.endswith("e") and len(token) > 3 else token


def canonical_tokens(text: str) -> list[str]:
    """Tokens for fact matching: number words as digits, unit aliases, no currency, stemmed."""
    out: list[str] = []
    for token in tokens(text):
        token = NUMBER_WORDS.get(token, UNIT_ALIASES.get(token, token))
        if token not in CURRENCY_WORDS:
            out.append(stem(token))
    # "3.5 to 4.5" and "3.5-4.5" are one range: drop a joining word between two numbers.
    return [
        t
        for i, t in enumerate(out)
        if not (
            t in ("to", "and")
            and 0 < i < len(out) - 1
            and out[i - 1][0].isdigit()
            and out[i + 1][0].isdigit()
        )
    ]


def content_tokens(text: str) -> list[str]:
    """canonical_tokens without stopwords: what a sentence claims."""
    return [t for t in canonical_tokens(text) if t not in STOPWORDS]


def quantities(text: str) -> set[str]:
    """Standalone numbers written in digits, canonicalised (codes such as E3 are not counted)."""
    return stated(text)


def all_numbers(text: str) -> set[str]:
    """Every number in a text, codes and number words included: what a passage can support."""
    return {t for t in canonical_tokens(text) if _NUMBER.fullmatch(t)}


def strip_boilerplate(text: str, boilerplate: Sequence[str] = BRAND_BOILERPLATE) -> str:
    """The text without the given phrases (case- and spacing-insensitive, wherever they are)."""
    for phrase in boilerplate:
        pattern = r"\s+".join(re.escape(word) for word in phrase.split())
        text = re.sub(pattern, " ", text, flags=re.IGNORECASE)
    return text.strip()


def split_sentences(text: str, boilerplate: Sequence[str] = BRAND_BOILERPLATE) -> list[str]:
    """Sentences of an answer, boilerplate removed; citations after the full stop ("4.5 Nm. [1]")
    or on a line of their own belong to the sentence before."""
    sentences: list[str] = []
    for line in strip_boilerplate(text, boilerplate).splitlines():
        line = _TRAILING_CITATIONS.sub(lambda m: f"{m.group(2)}{m.group(1)}", line.strip())
        for piece in _SENTENCE_END.split(line):
            piece = piece.strip()
            if sentences and not CITATION.sub("", piece).strip(" .!?;,"):
                sentences[-1] = f"{sentences[-1]} {piece}"  # "It is 18 Nm. [1]"
            elif re.search(r"\w", piece):
                sentences.append(piece)
    return sentences


def citations(sentence: str) -> list[int]:
    """The source numbers cited in a sentence, each once, in order: "[1][3]", "[1, 2]"."""
    found: list[int] = []
    for group in CITATION.findall(sentence):
        found.extend(int(n) for n in group.split(","))
    return list(dict.fromkeys(found))
