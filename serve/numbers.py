"""Numbers in answers and passages: which an answer states, which a passage holds.

Shared by the server's number check (`serve.grounding`) and the comparison's metrics
(`eval.text`), so an answer the server lets through is one the grounded-share metric would
call supported as far as its numbers go.
"""

from __future__ import annotations

import re

_NUMBER_WORD_TEXT = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
NUMBER_WORDS = {w: str(i) for i, w in enumerate(_NUMBER_WORD_TEXT.split())}
NUMBER_WORDS |= {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70"}
# A standalone quantity (4.5, 1,000, 4.5Nm) rather than part of a code (E3, MX250, MF-BAT-540).
QUANTITY = re.compile(r"(?<![^\W\d_])(?<![^\W\d_]-)(?<![\d.,])\d[\d,]*(?:\.\d+)?")
CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_DIGITS = re.compile(r"\d[\d,]*(?:\.\d+)?")
_WORD = re.compile(r"[^\W\d_]+")


def canonical_number(token: str) -> str:
    """'1,000' -> '1000', '4.50' -> '4.5', '4.0' -> '4': one spelling per value."""
    token = token.replace(",", "")
    if "." in token:
        token = token.rstrip("0").rstrip(".")
    return token or "0"


def stated(text: str) -> set[str]:
    """The standalone numbers `text` writes in digits, canonical (citations `[n]` and codes such
    as E3 or MF-BAT-540 are not statements of a quantity)."""
    return {canonical_number(m) for m in QUANTITY.findall(CITATION.sub(" ", text))}


def held(text: str) -> set[str]:
    """Every number in `text`, canonical: in codes too ("MF-BAT-540" holds 540), and the small
    ones written as words ("eleven" holds 11)."""
    numbers = {canonical_number(m) for m in _DIGITS.findall(text)}
    words = {NUMBER_WORDS.get(w) for w in _WORD.findall(text.casefold())}
    return numbers | {w for w in words if w is not None}
