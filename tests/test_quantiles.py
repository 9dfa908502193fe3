"""``breathsync.quantiles`` against numpy, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from breathsync.quantiles import quantiles, small_median

QS = (0.0, 0.005, 0.05, 0.25, 0.5, 0.95, 0.995, 1.0)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 200, 201, 7500])
def test_quantiles_equal_numpys_bit_for_bit(n: int) -> None:
    rng = np.random.default_rng(n)
    for values in (
        rng.normal(0.0, 1.0, n),
        rng.standard_cauchy(n) * 1e6 + 3e8,
        np.round(rng.normal(0.0, 3.0, n)),  # ties
        np.full(n, -0.0),
        np.full(n, 0.25),
    ):
        expected = np.quantile(values, QS)
        assert np.array(quantiles(values, QS)).tobytes() == expected.tobytes()
        # np.percentile divides by 100 first; so must its callers
        percentiles = np.array(quantiles(values, (0.5 / 100, 99.5 / 100)))
        assert percentiles.tobytes() == np.percentile(values, (0.5, 99.5)).tobytes()


def test_a_nan_makes_every_quantile_nan() -> None:
    values = np.array([1.0, np.nan, 2.0])
    assert np.isnan(quantiles(values, (0.05, 0.5))).all()
    assert np.isnan(np.quantile(values, (0.05, 0.5))).all()


def test_small_median_equals_numpys_bit_for_bit() -> None:
    """It replaces np.median in the engine and the time grid (decisions depend on it): odd and even counts, ties,
    signed zeros, a time column's 1000 steps."""
    rng = np.random.default_rng(5)
    for n in [*range(1, 30), 999, 1000]:
        values = rng.normal(4.0, 1.0, n)
        assert small_median(values) == float(np.median(values))
        rounded = np.round(values, 1)  # ties
        assert small_median(rounded) == float(np.median(rounded))
    zeros = np.array([0.0, -0.0, 0.0, -0.0])
    assert np.signbit(small_median(zeros)) == np.signbit(np.median(zeros))
    steps = np.full(1000, 0.001) + rng.normal(0.0, 1e-6, 1000)
    assert small_median(steps) == float(np.median(steps))
