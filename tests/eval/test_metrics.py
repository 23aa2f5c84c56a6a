"""Per-question metrics against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from eval.metrics import (
    METRIC_BY_NAME,
    METRICS,
    abstains,
    abstention_metrics,
    citation_accuracy,
    contains_fact,
    document_ranking,
    exact_match,
    grounded_share,
    key_fact_recall,
    mrr,
    ndcg_at_k,
    normalize,
    recall_at_k,
    supports,
    token_f1,
)
from eval.text import split_sentences
from ingest.document import Chunk
from retrieval.retriever import Hit
from serve.pipeline import Mode

GREETING, SIGNOFF = "Hey there, rider!", "Ride bright, the Marlowe & Finch crew"
BRAKES = "Brake levers: tighten the lever clamp bolts to 4.5 Nm with a torque wrench."
WARRANTY = "The frame carries a 10-year warranty for the original owner."


def hit(document_id: str, rank: int) -> Hit:
    chunk = Chunk(f"{document_id}#{rank}", document_id, "text", None, 0, 4, "h")
    return Hit(chunk, document_id, 1.0 / rank, rank, 1)


# -- retrieval -----------------------------------------------------------------------------

CHUNK_DOCS = ["a", "b", "a", "c", "d"]  # chunk hits in rank order; documents a, b, c, d


def test_chunk_hits_become_documents_at_their_best_rank() -> None:
    hits = [hit(d, r) for r, d in reversed(list(enumerate(CHUNK_DOCS, 1)))]
    assert document_ranking(hits) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(("k", "expected"), [(1, 0.0), (2, 0.0), (3, 0.5), (10, 0.5)])
def test_recall_at_k_counts_documents(k: int, expected: float) -> None:
    assert recall_at_k(CHUNK_DOCS, {"c", "x"}, k) == expected


def test_mrr() -> None:
    assert mrr(CHUNK_DOCS, {"c", "d"}) == pytest.approx(1 / 3)  # c is the 3rd document
    assert mrr(CHUNK_DOCS, {"x"}) == 0.0
    assert math.isnan(mrr(CHUNK_DOCS, set()))  # a general-knowledge control: not applicable


def test_ndcg() -> None:
    dcg = 1 / math.log2(3) + 1 / math.log2(5)  # b at rank 2, d at rank 4
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at_k(CHUNK_DOCS, {"b", "d"}, 4) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(CHUNK_DOCS, {"a"}, 3) == 1.0
    assert ndcg_at_k(CHUNK_DOCS, {"d"}, 3) == 0.0
    assert math.isnan(ndcg_at_k(CHUNK_DOCS, [], 3))
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(CHUNK_DOCS, {"a"}, 0)


# -- answer --------------------------------------------------------------------------------


def test_normalize_is_squad_like_but_keeps_numbers_apart() -> None:
    assert normalize("The  Brake-lever bolts: 4.5Nm!") == "brake lever bolts 4.5 nm"
    assert normalize("£1,299.00 (an offer)") == "1299 offer"
    assert normalize("4.5 Nm") != normalize("45 Nm")  # SQuAD would make both "45 nm"


def test_exact_match_ignores_the_brand_boilerplate() -> None:
    assert exact_match(f"{GREETING} 4.5 Nm.\n{SIGNOFF}", "4.5 Nm.") == 1.0
    assert exact_match("45 Nm", "4.5 Nm.") == 0.0


def test_token_f1_on_a_known_pair() -> None:
    # pred: motor is halden mx 250 (5); ref: halden mx 250 rear hub motor (6); 4 shared
    f1 = token_f1("The motor is a Halden MX250.", "A Halden MX250 rear hub motor.")
    assert f1 == pytest.approx(2 * (4 / 5) * (4 / 6) / (4 / 5 + 4 / 6))
    assert token_f1("Breeze", "Tempo") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("The", "Tokyo") == 0.0


@pytest.mark.parametrize(
    ("answer", "fact"),
    [
        ("Tighten them to 4.5Nm.", "4.5 Nm"),
        ("Use 4.5 nm, no more.", "4.5 Nm"),
        ("It costs 1299.", "£1,299"),
        ("It costs £58 an hour.", "58 GBP"),
        ("Service it every 1000km.", "1,000 km"),
        ("After six weeks.", "6 weeks"),
        ("It takes 1.5 hours.", "1.5 h"),
        ("Keep them at 3.5–4.5 bar.", "3.5 to 4.5 bar"),
        ("It opened on 14th March 2011.", "14 March 2011"),
        ("A 35 per cent discount.", "35%"),
        ("Its symbol is Au.", "Au"),
        ("Order part MF-BAT-540.", "MF-BAT-540"),
    ],
)
def test_key_fact_matching_forgives_formatting(answer: str, fact: str) -> None:
    assert contains_fact(answer, fact)


@pytest.mark.parametrize(
    ("answer", "fact"),
    [
        ("About 45 minutes.", "Au"),  # whole tokens only
        ("Tighten them to 45 Nm.", "4.5 Nm"),
        ("Tighten them to 4.5 mm.", "4.5 Nm"),
        ("Order part MF-BAT-360.", "MF-BAT-540"),
        ("Breeze and Tempo.", "Tempo and Breeze"),  # in order
    ],
)
def test_key_fact_matching_is_not_fooled(answer: str, fact: str) -> None:
    assert not contains_fact(answer, fact)


def test_key_fact_recall_is_the_share_found() -> None:
    assert key_fact_recall("The first service is at 300 km.", ["300 km", "6 weeks"]) == 0.5
    assert key_fact_recall("300 km or six weeks", ["300 km", "6 weeks"]) == 1.0
    assert math.isnan(key_fact_recall("anything", []))


# -- grounding -----------------------------------------------------------------------------


def test_sentences_skip_boilerplate_and_keep_decimals_and_citations() -> None:
    answer = f"{GREETING} Good question. Use 4.5 Nm. [1] Then check it.\n[2]\n{SIGNOFF}"
    assert split_sentences(answer) == ["Good question.", "Use 4.5 Nm [1].", "Then check it. [2]"]


def test_grounded_vs_invented_sentence() -> None:
    answer = (
        f"{GREETING} Good question. Tighten the lever clamp bolts to 4.5 Nm [1]. "
        f"The brake pads come with a lifetime guarantee and free fitting.\n{SIGNOFF}"
    )
    # "Good question." is a pleasantry, not a claim: 1 of 2 claims is supported.
    assert grounded_share(answer, [WARRANTY, BRAKES]) == 0.5
    assert grounded_share(answer, []) == 0.0
    assert math.isnan(grounded_share(f"{GREETING} Happy to help!\n{SIGNOFF}", [BRAKES]))


def test_a_wrong_number_is_not_supported() -> None:
    assert supports(BRAKES, "Tighten the lever clamp bolts to 4.5 Nm.")
    assert not supports(BRAKES, "Tighten the lever clamp bolts to 5 Nm.")
    assert not supports(BRAKES, "Tighten the lever clamp bolts to 45 Nm.")
    assert supports(WARRANTY, "Your frame has a ten-year warranty.")  # words as digits


def test_citation_accuracy_checks_number_and_support() -> None:
    sources = {1: BRAKES, 2: WARRANTY}
    right = "Tighten the lever clamp bolts to 4.5 Nm [1]."
    assert citation_accuracy(right, sources) == (1, 1)
    assert citation_accuracy(right.replace("[1]", "[2]"), sources) == (0, 1)  # wrong source
    assert citation_accuracy(right.replace("[1]", "[3]"), sources) == (0, 1)  # no source 3
    both = f"{right[:-1]} [1][2]. The frame has a 10-year warranty [2]."
    assert citation_accuracy(both, sources) == (2, 3)
    assert citation_accuracy("Tighten them to 4.5 Nm.", sources) == (0, 0)  # N/A


# -- registry ------------------------------------------------------------------------------


def test_registry_describes_each_metric_once() -> None:
    assert len(METRIC_BY_NAME) == len(METRICS)
    for metric in METRICS:
        assert metric.description and "\n" not in metric.description
        retrieving = metric.group in ("retrieval", "grounding")
        assert metric.applies_to(Mode.BASE) is not retrieving
        assert metric.applies_to(Mode.RAG_TUNED)
    assert METRIC_BY_NAME["latency_s"].higher_is_better is False
    assert {"recall@k", "mrr", "ndcg@k", "token_f1", "key_fact_recall"} <= set(METRIC_BY_NAME)


@pytest.mark.parametrize(
    "answer",
    [
        "The sources do not say which football club the company sponsors.",
        "Hey there, rider! The documents don't mention a student discount. Ride bright, the Marlowe & Finch crew",
        "I do not know.",
        "I don't know the answer to that.",
        "That is not mentioned in the sources [1].",
        "There is no information about gift cards in the passages.",
        "I cannot find the opening hours for a Paris shop.",
    ],
)  # fmt: skip
def test_abstentions_are_recognised(answer: str) -> None:
    assert abstains(answer)


@pytest.mark.parametrize(
    "answer",
    [
        "The battery warranty is 2 years or 800 full charge cycles [1].",
        "The sources say the frame is guaranteed for 10 years.",
        "Do not charge a battery that shows E23; the warranty does not cover deep discharge.",
        "You cannot ride above 25 km/h with assistance.",
    ],
)
def test_answers_are_not_abstentions(answer: str) -> None:
    assert not abstains(answer)


def test_abstention_metrics_split_absent_from_answerable_cases() -> None:
    said = "The sources do not say."
    assert abstention_metrics(said, ("absent",), answerable=False)["abstains_when_absent"] == 1.0
    assert math.isnan(abstention_metrics(said, ("absent",), answerable=False)["false_abstention"])
    on_new = abstention_metrics(said, ("new",), answerable=True)
    assert on_new["false_abstention"] == 1.0 and math.isnan(on_new["abstains_when_absent"])
    answered = abstention_metrics("It is 4.5 Nm [1].", ("absent",), answerable=False)
    assert answered["abstains_when_absent"] == 0.0
