"""Bootstrap confidence intervals: one arm's mean, a ratio of sums, and paired arm differences."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
N_RESAMPLES = 2000
CONFIDENCE = 0.95
_ROWS_PER_BLOCK = 256  # resamples drawn at once: bounds memory at 256 x n indices


class Interval(NamedTuple):
    """A point estimate with its percentile-bootstrap interval (NaN bounds when n < 2)."""

    estimate: float
    lo: float
    hi: float


def _as_floats(values: Sequence[float] | Floats) -> Floats:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"expected a 1-d sequence of values, got shape {array.shape}")
    return array


def _check(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, not {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be within (0, 1), not {confidence}")


def _bootstrap(
    columns: tuple[Floats, ...],
    statistic: Callable[..., Floats],
    n_resamples: int,
    seed: int,
    confidence: float,
) -> tuple[float, float]:
    """Percentile interval of `statistic` over resamples of the rows (same rows for each column).

    `statistic` maps (resamples, n) arrays, one per column, to (resamples,) values.
    """
    _check(n_resamples, confidence)
    n = len(columns[0])
    rng = np.random.default_rng(seed)
    stats: list[Floats] = []
    for start in range(0, n_resamples, _ROWS_PER_BLOCK):
        rows = min(_ROWS_PER_BLOCK, n_resamples - start)
        index = rng.integers(0, n, size=(rows, n))  # (rows, n) resampled question indices
        stats.append(statistic(*(column[index] for column in columns)))
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(np.concatenate(stats), [tail, 1.0 - tail])
    return float(lo), float(hi)


def _mean_rows(values: Floats) -> Floats:
    return np.asarray(values.mean(axis=1), dtype=np.float64)


def mean_ci(
    values: Sequence[float] | Floats,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> Interval:
    """The mean of the non-NaN values with a percentile-bootstrap interval; all NaN when empty."""
    array = _as_floats(values)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    estimate = float(array.mean())
    if array.size < 2:
        return Interval(estimate, float("nan"), float("nan"))
    lo, hi = _bootstrap((array,), _mean_rows, n_resamples, seed, confidence)
    return Interval(estimate, lo, hi)


def paired_bootstrap(
    a: Sequence[float] | Floats,
    b: Sequence[float] | Floats,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> Interval:
    """mean(a - b) over the questions both arms scored, with a paired bootstrap interval.

    a[i] and b[i] are the same question under two arms; pairs where either is NaN are dropped,
    and each resample draws whole questions, so the interval reflects per-question pairing.
    """
    first, second = _as_floats(a), _as_floats(b)
    if first.shape != second.shape:
        raise ValueError(f"paired values differ in length: {first.size} vs {second.size}")
    keep = ~(np.isnan(first) | np.isnan(second))
    return mean_ci(first[keep] - second[keep], n_resamples, seed, confidence)


def _ratio_rows(numerators: Floats, denominators: Floats) -> Floats:
    totals = denominators.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = numerators.sum(axis=1) / totals
    return np.asarray(ratios[totals > 0], dtype=np.float64)  # drop resamples with no denominator


def ratio_ci(
    numerators: Sequence[float] | Floats,
    denominators: Sequence[float] | Floats,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> Interval:
    """sum(numerators) / sum(denominators) with a bootstrap over questions (e.g. citations:
    correct / total per question); NaN when the denominators sum to 0 (N/A)."""
    num, den = _as_floats(numerators), _as_floats(denominators)
    if num.shape != den.shape:
        raise ValueError(f"numerators and denominators differ in length: {num.size} vs {den.size}")
    if den.sum() <= 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    estimate = float(num.sum() / den.sum())
    if np.count_nonzero(den) < 2:
        return Interval(estimate, float("nan"), float("nan"))
    lo, hi = _bootstrap((num, den), _ratio_rows, n_resamples, seed, confidence)
    return Interval(estimate, lo, hi)
