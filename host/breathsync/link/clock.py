"""Map a strap's sample counter to host time: offset and drift, robust to arrival jitter.

A strap stamps nothing but its sample counter; packets arrive after a radio and OS latency
that is never negative and varies by tens of milliseconds. Arrival time is therefore an upper
bound of the true sampling time plus the minimum latency. The best line under all
(counter, arrival) points — the lower convex hull's edge over the points' mean counter, which
minimises the total gap to the points while staying below all of them — estimates offset and
rate together; outliers can only be late, never early, so they cannot pull it (NTP-style
minimum-delay filtering, generalised to a slope).

Never from arrival times alone: each sample's host time comes from its counter through the
fitted line, so samples in one packet keep their exact spacing and backfilled samples land
where they were taken.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_DRIFT_PPM = 500.0  # crystals are within ~50 ppm; anything beyond is a fit artefact


def steady_wall_clock() -> Callable[[], float]:
    """Unix time that never steps: the wall clock read once, then moved on by the monotonic clock.

    Host times are stored as Unix time (a session lines up with other loggers' files, and a crashed run's resume
    dates its packets on the same scale). Read live, the wall clock steps when NTP corrects it or someone sets it:
    an outside review's +30 s step mid-session made both straps' TIME_SYNC counters look 30 s behind the clock fit,
    so both were taken for rebooted, their rings fetched and stored again dated 125 s back, and the engine paused.
    """
    wall_s, steady_s = time.time(), _steady()
    return lambda: wall_s + (_steady() - steady_s)


def _steady() -> float:
    """Seconds that never step and go on while the machine sleeps (Linux CLOCK_BOOTTIME): a laptop suspended
    mid-session wakes to straps that kept counting, and a clock stopped meanwhile (CLOCK_MONOTONIC) would date
    everything after it that much early. Elsewhere the monotonic clock."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


@dataclass(frozen=True)
class ClockFit:
    """host_time_s = offset_s + counter * period_s (period_s = 1 / effective rate)."""

    offset_s: float
    period_s: float
    nominal_rate_hz: float
    n_points: int

    @property
    def drift_ppm(self) -> float:
        """Strap clock error: positive when the strap samples faster than nominal."""
        return (1.0 / (self.period_s * self.nominal_rate_hz) - 1.0) * 1e6

    def host_time_s(self, counter: int | float) -> float:
        return self.offset_s + float(counter) * self.period_s


def lower_hull(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of points sorted by x (Andrew's monotone chain)."""
    hull: list[int] = []
    for i in range(len(x)):
        while len(hull) >= 2:
            i0, i1 = hull[-2], hull[-1]
            cross = (x[i1] - x[i0]) * (y[i] - y[i0]) - (y[i1] - y[i0]) * (x[i] - x[i0])
            if cross <= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


class CounterClock:
    """Online estimate of one strap's counter-to-host-time mapping.

    Feed ``observe(counter_of_last_sample, arrival_s)`` for every *live* packet (not for
    backfill, whose arrival says nothing about when it was sampled). ``fit`` is refreshed at
    most every ``refit_s`` of arrivals over a sliding window of ``window_s``.
    """

    def __init__(
        self, nominal_rate_hz: float, window_s: float = 600.0, refit_s: float = 1.0, bucket_s: float = 2.0
    ) -> None:
        if nominal_rate_hz <= 0:
            raise ValueError("nominal_rate_hz must be > 0")
        self.nominal_rate_hz = nominal_rate_hz
        self.window_s = window_s
        self.refit_s = refit_s
        # Only the earliest arrival (relative to the nominal line) per bucket of counters can be
        # on the lower hull's useful part; keeping one point per bucket bounds the fit's cost.
        self._bucket_counts = max(1, round(bucket_s * nominal_rate_hz))
        self._points: deque[tuple[int, float]] = deque()
        self._last_refit_s = -np.inf
        self.fit: ClockFit | None = None

    def reset(self) -> None:
        """Forget everything (the strap rebooted: its counter restarted)."""
        self._points.clear()
        self._last_refit_s = -np.inf
        self.fit = None

    def observe(self, counter: int, arrival_s: float) -> None:
        if self._points and counter < self._points[-1][0]:
            self.reset()
        if self._points and counter // self._bucket_counts == self._points[-1][0] // self._bucket_counts:
            last_counter, last_arrival_s = self._points[-1]
            nominal_period_s = 1.0 / self.nominal_rate_hz
            if arrival_s - counter * nominal_period_s < last_arrival_s - last_counter * nominal_period_s:
                self._points[-1] = (counter, arrival_s)
        else:
            self._points.append((counter, arrival_s))
        horizon = arrival_s - self.window_s
        while len(self._points) > 2 and self._points[0][1] < horizon:
            self._points.popleft()
        if self.fit is None or arrival_s - self._last_refit_s >= self.refit_s:
            self._refit()
            self._last_refit_s = arrival_s

    def host_time_s(self, counter: int | float) -> float:
        if self.fit is None:
            raise LookupError("no packet observed yet")
        return self.fit.host_time_s(counter)

    def _refit(self) -> None:
        n = len(self._points)
        counters = np.fromiter((p[0] for p in self._points), dtype=np.float64, count=n)
        arrivals = np.fromiter((p[1] for p in self._points), dtype=np.float64, count=n)
        nominal_period_s = 1.0 / self.nominal_rate_hz
        # Work on residuals from the nominal line, relative to the first counter: well conditioned.
        c0 = float(counters[0])
        x = counters - c0
        residual = arrivals - counters * nominal_period_s
        slope = 0.0
        if n >= 2 and float(np.ptp(x)) > 0:
            order = np.argsort(x, kind="stable")
            xs, rs = x[order], residual[order]
            hull = lower_hull(xs, rs)
            mean_x = float(np.mean(xs))
            for a, b in itertools.pairwise(hull):
                if xs[a] <= mean_x <= xs[b] and xs[b] > xs[a]:
                    slope = float((rs[b] - rs[a]) / (xs[b] - xs[a]))
                    break
            limit = MAX_DRIFT_PPM * 1e-6 * nominal_period_s
            slope = float(np.clip(slope, -limit, limit))
        # The line with this slope that touches the lowest point: every arrival is on or above it.
        intercept = float(np.min(residual - slope * x))
        self.fit = ClockFit(
            offset_s=intercept - slope * c0,
            period_s=nominal_period_s + slope,
            nominal_rate_hz=self.nominal_rate_hz,
            n_points=n,
        )
