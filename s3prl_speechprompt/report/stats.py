"""The statistics behind the report's intervals and paired tests (Wilson, bootstrap, paired bootstrap, exact
McNemar, Holm): pure functions on arrays, no I/O.

Every corpus metric the report shows is a ratio of per-utterance sums, ``sum(num) / sum(den)`` (accuracy:
correct / 1; WER: word edits / reference words; slot-type F1: per-utterance F1 / 1; see
``Task.utterance_scores``), so resampling utterances means resampling rows of ``(num, den)``. Draws come from
``numpy.random.default_rng(seed)`` only, in fixed-size chunks: a result is a function of (data, resamples, seed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

RESAMPLES = 1000        # default bootstrap resamples (the report's --resamples)
SEED = 0                # default bootstrap seed (the report's --bootstrap-seed)
CONFIDENCE = 0.95
_CHUNK = 100            # resamples drawn at once: bounds memory at _CHUNK x n indices


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> Tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials, as fractions (scipy's binomtest)."""
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError(f"wilson_interval: n must be > 0, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval: k must be in [0, n={n}], got {k}")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _arrays(num, den) -> Tuple[np.ndarray, np.ndarray]:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"num and den must be 1-D of the same length, got {num.shape} and {den.shape}")
    if num.size == 0:
        raise ValueError("no utterances to resample")
    return num, den


def ratio(num, den) -> float:
    """The corpus metric ``sum(num) / sum(den)`` (nan when the denominator is 0)."""
    num, den = _arrays(num, den)
    d = den.sum()
    return float(num.sum() / d) if d else float("nan")


def resample_indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap index matrices ``(chunk, n)`` (rows: resamples, with replacement), deterministic in ``seed``."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        m = min(_CHUNK, resamples - done)
        yield rng.integers(0, n, size=(m, n))
        done += m


def _resampled_ratios(arrays: Sequence[Tuple[np.ndarray, np.ndarray]], resamples: int, seed: int) -> np.ndarray:
    """``(resamples, len(arrays))`` ratio metrics, every array pair resampled with the same indices."""
    n = arrays[0][0].size
    out = []
    for idx in resample_indices(n, resamples, seed):
        cols = []
        for num, den in arrays:
            d = den[idx].sum(axis=1)                                   # (chunk,)
            with np.errstate(invalid="ignore", divide="ignore"):
                cols.append(np.where(d > 0, num[idx].sum(axis=1) / np.where(d > 0, d, 1), np.nan))
        out.append(np.stack(cols, axis=1))
    return np.concatenate(out, axis=0)


def _percentiles(values: np.ndarray, confidence: float) -> Tuple[float, float]:
    alpha = 1.0 - confidence
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_interval(num, den, resamples: int = RESAMPLES, seed: int = SEED,
                       confidence: float = CONFIDENCE) -> Tuple[float, float]:
    """Percentile bootstrap interval of ``sum(num) / sum(den)`` over utterances (fractions)."""
    num, den = _arrays(num, den)
    return _percentiles(_resampled_ratios([(num, den)], resamples, seed)[:, 0], confidence)


@dataclass
class PairedResult:
    """``a - b`` of a ratio metric on the same utterances, with its interval and two-sided p-value."""

    diff: float
    low: float
    high: float
    p: float
    resamples: int


def paired_bootstrap(num_a, den_a, num_b, den_b, resamples: int = RESAMPLES, seed: int = SEED,
                     confidence: float = CONFIDENCE) -> PairedResult:
    """Paired bootstrap of ``metric(a) - metric(b)``; row i of both runs must be the same utterance.

    Each resample draws utterances with replacement and recomputes both corpus metrics on the *same* draw.
    Interval: percentiles of the resampled differences. p-value: twice the smaller tail of the resampled
    differences beyond 0, ``2 * min(#(d <= 0) + 1, #(d >= 0) + 1) / (resamples + 1)``, capped at 1 (the +1
    keeps it from being reported as exactly 0 with finitely many resamples); p < 1 - confidence exactly when
    the interval excludes 0, up to that +1. Identical runs give differences all 0: interval [0, 0], p = 1.
    """
    num_a, den_a = _arrays(num_a, den_a)
    num_b, den_b = _arrays(num_b, den_b)
    if num_a.size != num_b.size:
        raise ValueError(f"paired runs must cover the same utterances: {num_a.size} vs {num_b.size}")
    r = _resampled_ratios([(num_a, den_a), (num_b, den_b)], resamples, seed)
    d = r[:, 0] - r[:, 1]
    d = d[~np.isnan(d)]
    lo, hi = _percentiles(d, confidence)
    m = d.size
    p = min(1.0, 2 * min(np.sum(d <= 0) + 1, np.sum(d >= 0) + 1) / (m + 1)) if m else float("nan")
    return PairedResult(ratio(num_a, den_a) - ratio(num_b, den_b), lo, hi, float(p), resamples)


@dataclass
class McNemarResult:
    only_a: int        # utterances run A got right and run B wrong
    only_b: int        # the reverse
    p: float


def mcnemar_exact(correct_a, correct_b) -> McNemarResult:
    """Exact McNemar test: under "A and B are equally accurate" each discordant utterance is A's with
    probability 1/2, so ``only_a ~ Binomial(only_a + only_b, 1/2)``; two-sided p from scipy's binomtest
    (1 when there are no discordant pairs)."""
    from scipy.stats import binomtest

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired runs must cover the same utterances: {a.size} vs {b.size}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)
    return McNemarResult(only_a, only_b, p)


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm's step-down adjusted p-values (family-wise error over the pairs tested together)."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float], int]:
    """Mean, sample standard deviation (ddof=1; None for one value) and count."""
    v = np.asarray([x for x in values if x is not None and not np.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), None, 0
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None), int(v.size)
