"""The brand-voice score: a seeded TF-IDF + logistic-regression classifier, checked held out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline  # type: ignore[import-untyped]
from sklearn.preprocessing import FunctionTransformer  # type: ignore[import-untyped]
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from eval.text import strip_boilerplate
from eval.voice import voice_features, with_boilerplate
from tuning.data import load_examples

MIN_PER_CLASS = 5  # texts of each kind needed to train and still hold some out
HELDOUT_FRACTION = 0.2
C = 1.0  # inverse L2 strength: the classes separate easily, so keep probabilities soft
THRESHOLD = 0.5  # a score at or above it calls a text brand voice (held-out metrics only)


class ToneDataError(ValueError):
    """Too few texts of one kind to train and check the classifier."""


@dataclass(frozen=True)
class HeldoutReport:
    """How the classifier does on texts it was not trained on (at THRESHOLD)."""

    seed: int
    n_train: int  # before the pasted-boilerplate negatives are added
    n_heldout: int
    accuracy: float
    precision: float  # of "brand voice" calls; NaN when there are none
    recall: float  # share of held-out brand answers called brand voice
    pasted_accuracy: float  # held-out plain texts with greeting and sign-off pasted, called plain

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bodies(texts: Sequence[str]) -> list[str]:
    return [strip_boilerplate(t) for t in texts]


def _voice_matrix(texts: Sequence[str]) -> Any:
    """(n, 6) float64 in [0, 1]: `VoiceFeatures.vector` per text."""
    return np.asarray([voice_features(t).vector() for t in texts], dtype=np.float64)


def _pipeline(seed: int) -> Any:
    """Word 1-2 grams and char 3-5 grams of the body (greeting and sign-off removed), plus the
    bounded voice features: the boilerplate weighs in as two features, not dozens of n-grams."""

    def tfidf(**options: Any) -> Any:
        vectorizer = TfidfVectorizer(sublinear_tf=True, **options)
        return make_pipeline(FunctionTransformer(_bodies), vectorizer)

    features = FeatureUnion(
        [
            ("words", tfidf(ngram_range=(1, 2))),
            ("chars", tfidf(analyzer="char_wb", ngram_range=(3, 5))),
            ("voice", FunctionTransformer(_voice_matrix)),
        ]
    )
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)
    return Pipeline([("features", features), ("model", model)])


def _rates(predicted: Sequence[bool], truth: Sequence[bool]) -> tuple[float, float, float]:
    """(accuracy, precision, recall) of the brand class; NaN where undefined."""
    pairs = list(zip(predicted, truth, strict=True))
    hits = sum(p and t for p, t in pairs)
    called, actual = sum(predicted), sum(truth)
    accuracy = sum(p == t for p, t in pairs) / len(pairs)
    nan = float("nan")
    return accuracy, hits / called if called else nan, hits / actual if actual else nan


class ToneClassifier:
    """P(brand voice) for answers. In memory only (no pickle): it retrains, seeded, in ~1 s."""

    def __init__(self, pipeline: Any) -> None:
        self._pipeline = pipeline

    @classmethod
    def train(
        cls,
        positive_texts: Sequence[str],
        negative_texts: Sequence[str],
        seed: int = 0,
        heldout_fraction: float = HELDOUT_FRACTION,
    ) -> tuple[ToneClassifier, HeldoutReport]:
        """Brand answers (positive) vs plain ones, e.g. the base model's (negative); a seeded,
        stratified share is held out and scored.

        Every training negative is also added with the greeting and sign-off pasted in, still
        labelled plain: the boilerplate alone cannot make a text "brand voice", so the
        classifier has to learn the sentences in between as well.
        """
        for kind, given in (("brand", positive_texts), ("plain", negative_texts)):
            if len(given) < MIN_PER_CLASS:
                raise ToneDataError(f"{len(given)} {kind} text(s); need at least {MIN_PER_CLASS}")
        texts = [*positive_texts, *negative_texts]
        labels = [1] * len(positive_texts) + [0] * len(negative_texts)
        train_idx, test_idx = train_test_split(
            np.arange(len(texts)), test_size=heldout_fraction, stratify=labels, random_state=seed
        )
        fit_texts = [texts[i] for i in train_idx]
        fit_labels = [labels[i] for i in train_idx]
        pasted = [with_boilerplate(t) for t, y in zip(fit_texts, fit_labels, strict=True) if not y]
        pipeline = _pipeline(seed)
        with threadpool_limits(limits=1):  # BLAS threads only contend on a busy machine
            pipeline.fit([*fit_texts, *pasted], [*fit_labels, *[0] * len(pasted)])
        classifier = cls(pipeline)
        held_texts, held_labels = [texts[i] for i in test_idx], [labels[i] for i in test_idx]
        return classifier, classifier._check(held_texts, held_labels, seed, len(train_idx))

    def _check(self, texts: list[str], labels: list[int], seed: int, n_train: int) -> HeldoutReport:
        predicted = [s >= THRESHOLD for s in self.score(texts)]
        accuracy, precision, recall = _rates(predicted, [bool(y) for y in labels])
        plain = [with_boilerplate(t) for t, y in zip(texts, labels, strict=True) if not y]
        pasted = sum(s < THRESHOLD for s in self.score(plain)) / len(plain) if plain else np.nan
        return HeldoutReport(seed, n_train, len(texts), accuracy, precision, recall, pasted)

    def score(self, texts: Sequence[str]) -> list[float]:
        """P(brand voice) per text."""
        if not texts:
            return []
        with threadpool_limits(limits=1):
            probabilities = self._pipeline.predict_proba(list(texts))  # (n, 2): [plain, brand]
        return [float(p) for p in probabilities[:, 1]]


def load_brand_answers(paths: Iterable[Path]) -> list[str]:
    """The assistant answers of tone JSONL files (the classifier's positives), in file order."""
    answers: list[str] = []
    for path in paths:
        for example in load_examples(path).examples:
            answers.extend(m["content"] for m in example.messages if m["role"] == "assistant")
    return answers
