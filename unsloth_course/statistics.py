"""Intervals for the course's measurements: every rate and mean is reported with its 95% interval.

- `wilson_interval(k, n)`: a rate (k successes of n), the Wilson score interval: unlike the textbook
  p ± 1.96·sqrt(p(1-p)/n) it stays inside [0, 1] and is not empty at 0/n or n/n.
- `bootstrap_interval(values, weights)`: a mean over rows (weighted: sum(w·v) / sum(w), e.g. a loss per token
  with the rows' token counts as weights), the percentile interval of the mean over rows resampled with
  replacement. Seeded, so a notebook prints the same interval on every run.
- paired intervals, for one measurement before and after training **on the same rows**: each row is its own
  control, so the interval of the change is narrower than two separate intervals suggest.
  `paired_proportion_interval` (Newcombe's method 10, from the two Wilson intervals and the correlation of
  the pairs) for a change in a rate; `paired_bootstrap_interval` (the same rows resampled for both) for a
  change in a mean.

`Estimate` holds a value, its interval and n, and prints the way the notebooks show it:
`45.0% (95% CI 38.3-51.9%, n=200)`, `1.234 (95% CI 1.180-1.291, n=200)`, `+5.0 points (95% CI -2.1 to +12.0,
n=200)`. With a few rows (a quick run) the intervals are wide: that is the measurement, not a defect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 3407


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be between 0 and 1 (0.95 for a 95% interval)")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of the rate k/n."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    z = _z(confidence)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _as_array(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of numbers, got {len(array)} values")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds a NaN or infinite value at row {int(np.argmin(np.isfinite(array)))}")
    return array


def _weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    array = _as_array(weights, "weights")
    if len(array) != n:
        raise ValueError(f"weights has {len(array)} values for {n} rows")
    if (array < 0).any() or array.sum() <= 0:
        raise ValueError("weights must be >= 0 with a positive sum")
    return array


def weighted_mean(values: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """sum(w·v) / sum(w) (the plain mean without weights)."""
    array = _as_array(values, "values")
    w = _weights(weights, len(array))
    return float((w * array).sum() / w.sum())


def _resampled_means(columns: Sequence[np.ndarray], w: np.ndarray, seed: int, n_resamples: int) -> list:
    if n_resamples < 100:
        raise ValueError(f"n_resamples={n_resamples}: use at least 100 (2000 by default)")
    rng = np.random.default_rng(seed)
    n = len(w)
    means = [np.empty(n_resamples) for _ in columns]
    step = max(1, 2_000_000 // n)  # resamples per chunk: bounded memory for many rows
    for start in range(0, n_resamples, step):
        rows = rng.integers(0, n, size=(min(step, n_resamples - start), n))
        total = w[rows].sum(axis=1)
        total[total == 0] = np.nan  # a resample of zero-weight rows only has no mean
        for out, values in zip(means, columns):
            out[start:start + len(rows)] = (w[rows] * values[rows]).sum(axis=1) / total
    return means


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    _z(confidence)
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(values: Sequence[float], weights: Sequence[float] | None = None, seed: int = SEED,
                       n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the (weighted) mean of `values`, rows resampled with replacement."""
    array = _as_array(values, "values")
    (means,) = _resampled_means([array], _weights(weights, len(array)), seed, n_resamples)
    return _percentiles(means, confidence)


def paired_bootstrap_interval(before: Sequence[float], after: Sequence[float],
                              weights: Sequence[float] | None = None, seed: int = SEED,
                              n_resamples: int = N_RESAMPLES,
                              confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Bootstrap interval of mean(after) - mean(before) on the same rows: each resample draws rows, and both
    means are taken over those rows (weighted by `weights`, the same for both)."""
    a, b = _as_array(before, "before"), _as_array(after, "after")
    if len(a) != len(b):
        raise ValueError(f"a paired interval needs the same rows: {len(a)} before, {len(b)} after")
    mean_before, mean_after = _resampled_means([a, b], _weights(weights, len(a)), seed, n_resamples)
    return _percentiles(mean_after - mean_before, confidence)


def paired_proportion_interval(before: Sequence[bool], after: Sequence[bool],
                               confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Interval of rate(after) - rate(before) for two yes/no outcomes on the same rows: Newcombe (1998),
    "Improved confidence intervals for the difference between binomial proportions based on paired data",
    method 10 (Wilson score intervals of both rates, combined with the phi correlation of the pairs)."""
    if len(before) != len(after) or not before:
        raise ValueError(f"a paired interval needs the same, non-empty rows: {len(before)} before, "
                         f"{len(after)} after")
    pairs = list(zip(map(bool, before), map(bool, after)))
    n = len(pairs)
    both = sum(b and a for b, a in pairs)  # right before and after
    lost = sum(b and not a for b, a in pairs)
    gained = sum(a and not b for b, a in pairs)
    neither = n - both - lost - gained
    p1, p2 = (both + lost) / n, (both + gained) / n
    l1, u1 = wilson_interval(both + lost, n, confidence)
    l2, u2 = wilson_interval(both + gained, n, confidence)
    margins = (both + lost) * (gained + neither) * (both + gained) * (lost + neither)
    phi = 0.0
    if margins:
        cross = both * neither - lost * gained
        corrected = max(cross - n / 2, 0) if cross > 0 else cross  # Newcombe's phi*, as in method 10
        phi = corrected / math.sqrt(margins)
    change = p2 - p1
    low = change - math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    high = change + math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return max(-1.0, low), min(1.0, high)


# ---------------------------------------------------------------- estimates that print themselves


@dataclass(frozen=True)
class Estimate:
    """A measured value with its interval and the number of rows it comes from.

    percent: a rate, shown as a percentage (a difference of rates in percentage points). signed: a change,
    shown with its sign. unit: printed after a value that is not a percentage ("nats/token").
    value None: the measurement is not defined here, `note` says why (printed "n/a").
    """

    value: float | None
    low: float | None
    high: float | None
    n: int
    method: str = ""
    percent: bool = False
    signed: bool = False
    decimals: int = 3
    confidence: float = CONFIDENCE
    note: str = ""
    unit: str = ""

    def _number(self, x: float, sign: bool) -> str:
        scaled = 100 * x if self.percent else x
        decimals = 1 if self.percent else self.decimals
        return f"{scaled:+.{decimals}f}" if sign else f"{scaled:.{decimals}f}"

    def __str__(self) -> str:
        if self.value is None:
            return f"n/a ({self.note})" if self.note else "n/a"
        level = f"{round(self.confidence * 100):d}% CI"
        unit = (" points" if self.signed else "%") if self.percent else (f" {self.unit}" if self.unit else "")
        value = self._number(self.value, self.signed) + unit
        if self.low is None or self.high is None:
            return f"{value} (n={self.n:,})"
        if self.signed or min(self.low, self.high) < 0:
            bounds = f"{self._number(self.low, self.signed)} to {self._number(self.high, self.signed)}"
        else:
            bounds = f"{self._number(self.low, False)}-{self._number(self.high, False)}"
        bounds += "%" if self.percent and not self.signed else ""
        return f"{value} ({level} {bounds}, n={self.n:,})"

    __repr__ = __str__

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)

    def excludes_zero(self) -> bool:
        """True when the interval lies entirely above or below 0: a change the rows' noise cannot explain."""
        return self.interval is not None and (self.low > 0 or self.high < 0)

    def to_record(self, digits: int = 6) -> dict:
        """{"value", "ci": [low, high], "confidence", "n"} with floats rounded; "note" when undefined."""
        record = {"value": round_float(self.value, digits),
                  "ci": None if self.interval is None else [round_float(x, digits) for x in self.interval],
                  "confidence": self.confidence, "n": self.n}
        if self.method:
            record["method"] = self.method
        if self.note:
            record["note"] = self.note
        return record


def round_float(x: float | None, digits: int = 6) -> float | None:
    """`x` rounded to `digits` significant digits; None for None, NaN and infinities (not valid JSON)."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def rate(k: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """k of n as a rate with its Wilson interval: `45.0% (95% CI 38.3-51.9%, n=200)`."""
    low, high = wilson_interval(k, n, confidence)
    return Estimate(k / n, low, high, n, "Wilson", percent=True, confidence=confidence)


def rate_of(flags: Sequence[bool], confidence: float = CONFIDENCE) -> Estimate:
    """The share of true values in `flags`, with its Wilson interval."""
    return rate(sum(map(bool, flags)), len(flags), confidence)


def mean(values: Sequence[float], weights: Sequence[float] | None = None, decimals: int = 3, seed: int = SEED,
         n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, unit: str = "") -> Estimate:
    """The (weighted) mean of `values` over rows, with its bootstrap interval."""
    low, high = bootstrap_interval(values, weights, seed, n_resamples, confidence)
    return Estimate(weighted_mean(values, weights), low, high, len(values), "bootstrap", decimals=decimals,
                    confidence=confidence, unit=unit)


def rate_change(before: Sequence[bool], after: Sequence[bool], confidence: float = CONFIDENCE) -> Estimate:
    """rate(after) - rate(before) on the same rows, in percentage points, with Newcombe's paired interval."""
    low, high = paired_proportion_interval(before, after, confidence)
    change = (sum(map(bool, after)) - sum(map(bool, before))) / len(before)
    return Estimate(change, low, high, len(before), "Newcombe paired", percent=True, signed=True,
                    confidence=confidence)


def mean_change(before: Sequence[float], after: Sequence[float], weights: Sequence[float] | None = None,
                decimals: int = 3, seed: int = SEED, n_resamples: int = N_RESAMPLES,
                confidence: float = CONFIDENCE, unit: str = "") -> Estimate:
    """mean(after) - mean(before) on the same rows, with the paired bootstrap interval."""
    low, high = paired_bootstrap_interval(before, after, weights, seed, n_resamples, confidence)
    change = weighted_mean(after, weights) - weighted_mean(before, weights)
    return Estimate(change, low, high, len(before), "paired bootstrap", signed=True, decimals=decimals,
                    confidence=confidence, unit=unit)


def format_rate(k: int, n: int, confidence: float = CONFIDENCE) -> str:
    """`45.0% (95% CI 38.3-51.9%, n=200)`."""
    return str(rate(k, n, confidence))


def format_mean(values: Sequence[float], weights: Sequence[float] | None = None, decimals: int = 3) -> str:
    """`1.234 (95% CI 1.180-1.291, n=200)`."""
    return str(mean(values, weights, decimals))
