"""``np.quantile`` and ``np.median`` bit for bit, without what they cost a replay.

np.quantile and np.percentile call np.unique, which in numpy 2.4 (its hash-table version) imports numpy.ma
on first use: ~7 ms of CPU time, once per process, in a `breathsync replay` that needs nothing else from it
(a 300 s dyad replays in ~0.25 s). Below is numpy's default ('linear') method step by step: the same
partition (which also decides where -0.0 and 0.0 land among equal values) and the same interpolation from
the nearer end. tests/test_quantiles.py holds the two equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def quantiles(values: npt.NDArray[np.float64], qs: Sequence[float]) -> list[float]:
    """``np.quantile(values, qs)`` of a non-empty 1-D float array, as floats (a NaN anywhere: all NaN)."""
    last = len(values) - 1
    plan: list[tuple[int, int, float]] = []  # neighbours and weight of each quantile, as numpy finds them
    for q in qs:
        virtual = last * q
        if virtual >= last:  # numpy takes the last value on both sides, weighted by virtual + 1
            plan.append((-1, -1, virtual + 1))
        else:
            below = math.floor(virtual)
            plan.append((below, below + 1, virtual - below))
    ordered = np.partition(values, sorted({0, -1, *(i for p in plan for i in p[:2])}))
    if math.isnan(ordered[-1]):  # NaN sorts last
        return [math.nan] * len(qs)
    out: list[float] = []
    for below, above, t in plan:
        a, b = float(ordered[below]), float(ordered[above])
        out.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)
    return out


def small_median(values: npt.NDArray[np.float64]) -> float:
    """``np.median`` of a few thousand (NaN-free) values at most, bit for bit, without its overhead (np.median also
    imports numpy.ma on first use, as np.quantile does)."""
    ordered = sorted(values.tolist())
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
