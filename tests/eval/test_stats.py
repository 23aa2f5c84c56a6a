"""Bootstrap intervals: contain the truth, narrow with n, NaN-aware and seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.stats import mean_ci, paired_bootstrap, ratio_ci


def paired_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Arm a beats arm b by 0.1 on average; questions differ a lot in difficulty."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0.0, 1.0, n)
    a = difficulty + 0.1 + rng.normal(0.0, 0.05, n)
    b = difficulty + rng.normal(0.0, 0.05, n)
    return a, b


def test_paired_interval_contains_the_true_difference_and_narrows_with_n() -> None:
    widths = []
    for n in (30, 500):
        a, b = paired_scores(n, seed=n)
        diff, lo, hi = paired_bootstrap(a, b, seed=1)
        assert lo < 0.1 < hi
        assert lo <= diff <= hi
        assert diff == pytest.approx(float(np.mean(a - b)))
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2.5  # ~ 1/sqrt(n): sqrt(500/30) ~ 4


def test_pairing_beats_comparing_two_independent_means() -> None:
    a, b = paired_scores(100, seed=3)
    _, lo, hi = paired_bootstrap(a, b)
    _, a_lo, a_hi = mean_ci(a)
    assert hi - lo < (a_hi - a_lo) / 3  # difficulty cancels out within each pair
    assert lo > 0  # the difference is significant though the arms' own intervals overlap


def test_seeded_and_nan_aware() -> None:
    a, b = paired_scores(40, seed=5)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7) != paired_bootstrap(a, b, seed=8)
    a_nan, b_nan = a.copy(), b.copy()
    a_nan[[0, 5]] = np.nan
    b_nan[9] = np.nan
    keep = np.ones(40, dtype=bool)
    keep[[0, 5, 9]] = False
    assert paired_bootstrap(a_nan, b_nan, seed=2) == paired_bootstrap(a[keep], b[keep], seed=2)


def test_edge_cases() -> None:
    assert mean_ci([0.5] * 10) == (0.5, 0.5, 0.5)
    assert all(math.isnan(x) for x in mean_ci([float("nan"), float("nan")]))
    single = mean_ci([0.3, float("nan")])
    assert single.estimate == 0.3 and math.isnan(single.lo) and math.isnan(single.hi)
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="n_resamples"):
        mean_ci([1.0, 2.0], n_resamples=0)


def test_mean_interval_contains_the_true_mean() -> None:
    values = np.random.default_rng(11).binomial(1, 0.7, 400).astype(float)
    estimate, lo, hi = mean_ci(values, seed=4)
    assert lo < 0.7 < hi
    assert estimate == pytest.approx(values.mean())
    assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.7 * 0.3 / 400), rel=0.25)


def test_ratio_of_sums_for_citations() -> None:
    correct = [1, 0, 2, 0, 3]
    total = [1, 0, 2, 1, 4]  # question 2 cited nothing: it adds no weight
    estimate, lo, hi = ratio_ci(correct, total, seed=0)
    assert estimate == pytest.approx(6 / 8)
    assert 0.0 <= lo <= estimate <= hi <= 1.0
    assert all(math.isnan(x) for x in ratio_ci([0, 0], [0, 0]))  # no citations at all: N/A
