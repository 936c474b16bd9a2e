"""unsloth_course.statistics: Wilson, bootstrap and paired intervals, and how estimates print."""

import random

import numpy as np
import pytest

from unsloth_course import statistics as stats
from unsloth_course.statistics import Estimate


@pytest.mark.parametrize("k, n, low, high", [
    (81, 263, 0.2553, 0.3662),  # Newcombe (1998), "Two-sided confidence intervals for the single
    (15, 148, 0.0624, 0.1605),  # proportion", method 3 (Wilson score), the paper's four examples
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_published_values(k, n, low, high):
    assert stats.wilson_interval(k, n) == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_stays_in_range_and_checks_arguments():
    assert stats.wilson_interval(20, 20)[1] == 1.0 and stats.wilson_interval(20, 20)[0] < 1
    assert stats.wilson_interval(3, 10, confidence=0.99)[0] < stats.wilson_interval(3, 10)[0]
    for k, n in ((1, 0), (-1, 5), (6, 5)):
        with pytest.raises(ValueError, match="0 <= k <= n and n >= 1"):
            stats.wilson_interval(k, n)
    with pytest.raises(ValueError, match="confidence=1.5 must be between 0 and 1"):
        stats.wilson_interval(1, 2, confidence=1.5)


def test_rate_prints_like_the_notebooks():
    assert str(stats.rate(90, 200)) == "45.0% (95% CI 38.3-51.9%, n=200)"
    assert stats.format_rate(90, 200) == "45.0% (95% CI 38.3-51.9%, n=200)"
    assert str(stats.rate_of([True, False, True, True])) == "75.0% (95% CI 30.1-95.4%, n=4)"
    assert str(stats.rate(2, 1500)) == "0.1% (95% CI 0.0-0.5%, n=1,500)"


def test_bootstrap_is_seeded_weighted_and_contains_the_mean():
    rng = random.Random(0)
    values = [rng.gauss(2.0, 1.0) for _ in range(200)]
    interval = stats.bootstrap_interval(values)
    assert interval == stats.bootstrap_interval(values)  # the same seed, the same interval
    assert interval != stats.bootstrap_interval(values, seed=1)
    low, high = interval
    assert low < np.mean(values) < high
    assert high - low == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.2)  # about the normal-theory width
    # weighted: the mean per token of rows with different token counts is sum(w * v) / sum(w)
    per_token, tokens = [1.0, 3.0], [3, 1]
    assert stats.weighted_mean(per_token, tokens) == pytest.approx(1.5)
    one_heavy = stats.mean([1.0, 1.0, 5.0], weights=[1, 1, 0])
    assert one_heavy.value == 1.0 and one_heavy.interval == (1.0, 1.0)


def test_bootstrap_checks_its_input():
    with pytest.raises(ValueError, match="non-empty"):
        stats.bootstrap_interval([])
    with pytest.raises(ValueError, match="NaN or infinite value at row 1"):
        stats.bootstrap_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="weights has 1 values for 2 rows"):
        stats.bootstrap_interval([1.0, 2.0], weights=[1])
    with pytest.raises(ValueError, match="n_resamples=10"):
        stats.bootstrap_interval([1.0, 2.0], n_resamples=10)


def test_a_paired_interval_is_narrower_than_two_separate_ones():
    rng = np.random.default_rng(0)
    rows = rng.normal(0, 3, size=150)  # rows differ a lot from each other ...
    before, after = rows, rows - 0.2 + rng.normal(0, 0.1, size=150)  # ... and each improves a little
    change = stats.mean_change(before, after)
    assert change.value == pytest.approx(np.mean(after) - np.mean(before))
    assert change.high < 0  # a small but consistent improvement is seen
    separate = stats.bootstrap_interval(after)[1] - stats.bootstrap_interval(after)[0]
    assert change.high - change.low < separate / 10
    assert str(change).startswith("-0.2") and "(95% CI -0." in str(change) and " to -0." in str(change)
    with pytest.raises(ValueError, match="same rows: 2 before, 1 after"):
        stats.paired_bootstrap_interval([1.0, 2.0], [1.0])


def test_newcombe_paired_interval():
    # Newcombe (1998), "Improved confidence intervals for the difference between binomial proportions based
    # on paired data", example (a): 36 pairs right both times, 12 right only first, 2 only second, 0 neither.
    first = [True] * 48 + [False] * 2
    second = [True] * 36 + [False] * 12 + [True] * 2
    assert stats.paired_proportion_interval(second, first) == pytest.approx((0.0569, 0.3404), abs=5e-5)
    low, high = stats.paired_proportion_interval(first, second)  # swapped: the interval of the opposite sign
    assert (low, high) == pytest.approx((-0.3404, -0.0569), abs=5e-5)
    change = stats.rate_change(first, second)
    assert change.value == pytest.approx(-0.2) and str(change) == "-20.0 points (95% CI -34.0 to -5.7, n=50)"
    same = stats.rate_change([True, False] * 10, [True, False] * 10)
    assert same.value == 0 and same.low < 0 < same.high
    all_right = stats.paired_proportion_interval([True] * 5, [True] * 5)
    assert all_right == pytest.approx((-0.4345, 0.4345), abs=1e-4)


def test_newcombe_paired_interval_covers_the_true_change():
    """Coverage in repeated samples: close to 95% (Newcombe's method 10 is slightly conservative)."""
    rng = np.random.default_rng(1)
    n, trials, covered = 60, 800, 0
    p_before, p_gain, p_loss = 0.4, 0.25, 0.05  # after = before, plus gains, minus losses
    true_change = (1 - p_before) * p_gain - p_before * p_loss
    for _ in range(trials):
        before = rng.random(n) < p_before
        after = np.where(before, rng.random(n) >= p_loss, rng.random(n) < p_gain)
        low, high = stats.paired_proportion_interval(before.tolist(), after.tolist())
        covered += low <= true_change <= high
    assert 0.93 <= covered / trials <= 0.99


def test_estimate_formats_undefined_and_signed_values_and_records():
    undefined = Estimate(None, None, None, 12, percent=True, note="policy = reference")
    assert str(undefined) == "n/a (policy = reference)" and not undefined.excludes_zero()
    assert undefined.to_record() == {"value": None, "ci": None, "confidence": 0.95, "n": 12,
                                     "note": "policy = reference"}
    loss = Estimate(1.23456789, 1.1, 1.3, 200, "bootstrap", unit="nats/token")
    assert str(loss) == "1.235 nats/token (95% CI 1.100-1.300, n=200)"
    assert loss.to_record(digits=4) == {"value": 1.235, "ci": [1.1, 1.3], "confidence": 0.95, "n": 200,
                                        "method": "bootstrap"}
    points = Estimate(0.05, -0.021, 0.12, 200, percent=True, signed=True)
    assert str(points) == "+5.0 points (95% CI -2.1 to +12.0, n=200)" and not points.excludes_zero()
    negative_mean = Estimate(-14.79, -33.99, -2.12, 8, decimals=2)
    assert str(negative_mean) == "-14.79 (95% CI -33.99 to -2.12, n=8)" and negative_mean.excludes_zero()
    assert stats.round_float(float("nan")) is None and stats.round_float(1 / 3, 3) == 0.333
