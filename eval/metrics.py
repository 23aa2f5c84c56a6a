"""Per-question metrics (retrieval, answer, grounding) and the registry that describes them."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from eval.text import (
    BRAND_BOILERPLATE,
    CITATION,
    all_numbers,
    canonical_tokens,
    citations,
    content_tokens,
    quantities,
    split_sentences,
    strip_boilerplate,
    tokens,
)
from eval.text import normalize as normalize  # re-exported: SQuAD-style, number-aware
from retrieval.retriever import Hit
from serve.pipeline import Mode

# A sentence is supported by a passage when at least this share of its content tokens
# (stopwords out, lightly stemmed) occur in the passage. 0.6 lets an answer rephrase a word or
# two and add connectives, while a sentence about facts the passage lacks rarely reaches it.
SUPPORT_THRESHOLD = 0.6
# Sentences with fewer content tokens and no number ("Good question.", "Yes.", "Stay safe out
# there.") are pleasantries, not claims: they are not judged for grounding.
MIN_CLAIM_TOKENS = 3

NAN = float("nan")


# -- retrieval: document level, binary relevance -------------------------------------------


def ranked_documents(doc_ids: Iterable[str]) -> list[str]:
    """Document ids in rank order, each once, at its best (first) rank."""
    return list(dict.fromkeys(doc_ids))


def document_ranking(hits: Sequence[Hit]) -> list[str]:
    """The documents of a list of chunk hits, in rank order, each once at its best rank."""
    return ranked_documents(h.document_id for h in sorted(hits, key=lambda h: h.rank))


def _top(retrieved_doc_ids: Sequence[str], k: int) -> list[str]:
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    return ranked_documents(retrieved_doc_ids)[:k]


def recall_at_k(retrieved_doc_ids: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant documents among the top k distinct documents; NaN if none are.

    Chunk-level lists are fine: each document counts once, at its best rank, so k counts
    documents. A question with no relevant documents (a general-knowledge control) is NaN.
    """
    top = _top(retrieved_doc_ids, k)
    if not relevant:
        return NAN
    return len(set(top) & set(relevant)) / len(set(relevant))


def mrr(retrieved_doc_ids: Sequence[str], relevant: Collection[str]) -> float:
    """1 / rank of the first relevant document (0 when none is retrieved; NaN when none exist)."""
    if not relevant:
        return NAN
    for rank, doc_id in enumerate(ranked_documents(retrieved_doc_ids), start=1):
        if doc_id in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(retrieved_doc_ids: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Binary-relevance nDCG over the top k distinct documents (each once, at its best rank)."""
    top = _top(retrieved_doc_ids, k)
    if not relevant:
        return NAN
    dcg = sum(1.0 / math.log2(rank + 1) for rank, d in enumerate(top, 1) if d in relevant)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(set(relevant)), k) + 1))
    return dcg / ideal


# -- answer --------------------------------------------------------------------------------


def exact_match(pred: str, ref: str, boilerplate: Sequence[str] = BRAND_BOILERPLATE) -> float:
    """1.0 when the normalised answer (greeting and sign-off removed) equals the reference."""
    return float(normalize(strip_boilerplate(pred, boilerplate)) == normalize(ref))


def token_f1(pred: str, ref: str, boilerplate: Sequence[str] = BRAND_BOILERPLATE) -> float:
    """SQuAD token F1 between the normalised answer (boilerplate removed) and the reference."""
    pred_tokens, ref_tokens = tokens(strip_boilerplate(pred, boilerplate)), tokens(ref)
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def contains_fact(text: str, fact: str) -> bool:
    """Whether the fact's canonical tokens occur, contiguous and in order, in the text's.

    Both sides go through `canonical_tokens`: case, punctuation and articles are ignored;
    "4.5Nm" = "4.5 nm", "1,299" = "1299", "£58" = "58 GBP" = "58" (currency is dropped), "six"
    = "6", "1.5 h" = "1.5 hours", "3.5-4.5" = "3.5 to 4.5", "14th" = "14". Whole tokens only:
    "Au" does not match "about".
    """
    needle, hay = canonical_tokens(fact), canonical_tokens(text)
    if not needle:
        return False
    n = len(needle)
    return any(hay[i : i + n] == needle for i in range(len(hay) - n + 1))


def key_fact_recall(pred: str, key_facts: Sequence[str]) -> float:
    """Share of the key facts the answer contains (`contains_fact`); NaN when there are none."""
    if not key_facts:
        return NAN
    return sum(contains_fact(pred, fact) for fact in key_facts) / len(key_facts)


# -- abstention: saying that the sources do not hold the answer ----------------------------

ABSENT_TAG = "absent"  # cases no document answers: the right answer says so
_ABSTAINS = re.compile(
    r"\b(?:sources?|documents?|passages?|context|information (?:given|provided))\s+"
    r"(?:do|does|did)\s*(?:not|n't)\s+(?:say|mention|contain|hold|state|include|give|provide|"
    r"cover|specify|answer)"
    r"|\b(?:i|we)\s+(?:do\s*(?:not|n't)|don't|dont)\s+know\b"
    r"|\bnot\s+(?:mentioned|stated|specified|covered|given|provided|found|included)\s+in\s+"
    r"the\s+(?:sources?|documents?|passages?|context)"
    r"|\b(?:no|not enough)\s+information\s+(?:about|on|in|regarding)\b"
    r"|\b(?:can ?not|can't|unable to)\s+(?:find|answer|tell)\b",
    re.IGNORECASE,
)


def abstains(text: str) -> bool:
    """Whether the answer says that the sources (or the model) do not hold the answer."""
    return bool(_ABSTAINS.search(strip_boilerplate(text).replace("’", "'")))


def abstention_metrics(answer: str, tags: Collection[str], answerable: bool) -> dict[str, float]:
    """`abstains_when_absent` on absent cases, `false_abstention` on answerable ones."""
    said = float(abstains(answer))
    return {
        "abstains_when_absent": said if ABSENT_TAG in tags else NAN,
        "false_abstention": said if answerable else NAN,
    }


# -- grounding -----------------------------------------------------------------------------


def is_claim(sentence: str) -> bool:
    """A sentence worth judging: it states a number or has MIN_CLAIM_TOKENS content tokens."""
    text = CITATION.sub(" ", sentence)
    return bool(quantities(text)) or len(set(content_tokens(text))) >= MIN_CLAIM_TOKENS


def supports(passage: str, sentence: str) -> bool:
    """Whether the passage covers the sentence's content tokens at SUPPORT_THRESHOLD and holds
    every standalone number the sentence states (a wrong number is an invented fact).

    A sentence with no content tokens is vacuously supported.
    """
    text = CITATION.sub(" ", sentence)
    claimed = set(content_tokens(text))
    if not quantities(text) <= all_numbers(passage):
        return False
    if not claimed:
        return True
    covered = claimed & set(canonical_tokens(passage))
    return len(covered) / len(claimed) >= SUPPORT_THRESHOLD


def grounded_share(
    answer: str, passages: Sequence[str], boilerplate: Sequence[str] = BRAND_BOILERPLATE
) -> float:
    """Share of the answer's claim sentences that at least one passage supports.

    The boilerplate (greeting, sign-off) is removed first and pleasantries are not claims;
    NaN when the answer makes no claim at all.
    """
    claims = [s for s in split_sentences(answer, boilerplate) if is_claim(s)]
    if not claims:
        return NAN
    supported = sum(any(supports(p, s) for p in passages) for s in claims)
    return supported / len(claims)


def citation_accuracy(
    answer: str,
    passages_by_number: Mapping[int, str],
    boilerplate: Sequence[str] = BRAND_BOILERPLATE,
) -> tuple[int, int]:
    """(correct, total) over the answer's [n] citations, each counted once per sentence.

    A citation is correct when n numbers a source in the prompt and that passage supports the
    sentence it is attached to. total == 0 (no citations) means N/A, not 0 or 1.
    """
    correct = total = 0
    for sentence in split_sentences(answer, boilerplate):
        for number in citations(sentence):
            total += 1
            passage = passages_by_number.get(number)
            correct += passage is not None and supports(passage, sentence)
    return correct, total


def numbered_passages(hits: Sequence[Hit]) -> dict[int, str]:
    """The prompt's sources as citation numbers: [1] is the first hit in the prompt."""
    return {number: hit.text for number, hit in enumerate(hits, start=1)}


# -- registry ------------------------------------------------------------------------------

Group = Literal["retrieval", "answer", "grounding", "tone", "cost"]
ALL_ARMS = frozenset(Mode)
RETRIEVING_ARMS = frozenset(m for m in Mode if m.retrieves)


@dataclass(frozen=True)
class Metric:
    name: str
    group: Group
    higher_is_better: bool | None  # None: informative, no better direction (token counts)
    arms: frozenset[Mode]
    description: str  # one line, shown in the README and the HTML report

    def applies_to(self, mode: Mode) -> bool:
        return mode in self.arms


METRICS: tuple[Metric, ...] = (
    Metric("recall@k", "retrieval", True, RETRIEVING_ARMS,
           "Share of the reference documents among the top k retrieved documents."),
    Metric("mrr", "retrieval", True, RETRIEVING_ARMS,
           "1 / rank of the first reference document retrieved (0 if none)."),
    Metric("ndcg@k", "retrieval", True, RETRIEVING_ARMS,
           "Binary-relevance nDCG of the top k documents against the reference documents."),
    Metric("exact_match", "answer", True, ALL_ARMS,
           "Normalised answer (greeting and sign-off removed) equals the reference."),
    Metric("token_f1", "answer", True, ALL_ARMS,
           "SQuAD token F1 of the normalised answer against the reference."),
    Metric("key_fact_recall", "answer", True, ALL_ARMS,
           "Share of the reference's key facts found in the answer (case, punctuation, "
           "number formats ignored)."),
    Metric("abstains_when_absent", "answer", True, ALL_ARMS,
           "On questions no document answers (tag 'absent'): share of answers that say the "
           "sources do not hold it."),
    Metric("false_abstention", "answer", False, ALL_ARMS,
           "On questions the corpus answers: share of answers that say the sources do not."),
    Metric("grounded_share", "grounding", True, RETRIEVING_ARMS,
           f"Share of claim sentences whose content words a retrieved passage covers at "
           f">= {SUPPORT_THRESHOLD:.0%}, with every number present."),
    Metric("citation_accuracy", "grounding", True, RETRIEVING_ARMS,
           "Share of [n] citations naming a real source that supports its sentence "
           "(N/A without citations)."),
    Metric("tone_score", "tone", True, ALL_ARMS,
           "P(brand voice) from a TF-IDF + logistic-regression classifier."),
    Metric("latency_s", "cost", False, ALL_ARMS,
           "Seconds from question to complete answer (p50 and p95 reported)."),
    Metric("prompt_tokens", "cost", None, ALL_ARMS, "Tokens in the prompt."),
    Metric("completion_tokens", "cost", None, ALL_ARMS, "Tokens generated."),
    Metric("tokens_per_s", "cost", True, ALL_ARMS, "Generated tokens per second."),
)  # fmt: skip
METRIC_BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
