"""Baseline for comparison: online windowed cross-lagged correlation (SUSY-like) on the raw signals.

Both straps' samples are averaged into 0.2 s bins; every second the last ``window_s`` of both are
correlated at lags within +-``max_lag_s``, shorter than one breath: over longer lags the
correlations of two breathing rhythms cancel and can flip sign. The largest correlation and its
lag are reported; a positive lag means the therapist's signal trails the client's (therapist
follows). This is what a careful generic synchrony tool would do; the
benchmark runs it through the same replay and nudge policy as the engine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..roles import Role
from .config import PolicyConfig
from .decision import LockTimer
from .policy import NudgePolicy
from .stream import Mute, NudgeUndelivered, StrapBlock, StrapBreath, StreamItem

BIN_S = 0.2
MAX_BEHIND_BINS = 5  # a strap's newest whole bin this far behind the clock: its data stopped (blocks come ~0.4 s late)


@dataclass(frozen=True)
class WclcState:
    t_s: float
    r: float | None  # max correlation over the lag range; None while paused / filling
    lag_s: float | None  # lag of that maximum; > 0: therapist trails the client


class WindowedCrossLag:
    """Consumer for ``run_engine``: emits one ``WclcState`` per second of host time."""

    def __init__(self, window_s: float = 30.0, max_lag_s: float = 2.0, step_s: float = 1.0) -> None:
        self.window_bins = round(window_s / BIN_S)
        self.max_lag_bins = round(max_lag_s / BIN_S)
        self.step_s = step_s
        self._sum: dict[Role, list[float]] = {"therapist": [], "client": []}
        self._cnt: dict[Role, list[int]] = {"therapist": [], "client": []}
        self._next_eval_s = step_s

    def feed(self, item: StreamItem) -> list[WclcState]:
        if not isinstance(item, StrapBlock | StrapBreath | Mute | NudgeUndelivered):
            raise TypeError(f"not a stream item: {item!r}")
        # A second is evaluated once everything that arrived by then is in: at the first item that arrived after it.
        # (Evaluated at the first item at or after it, the therapist's block, fed first, came before the client's
        # block of the same moment: the client's last bin was missing and 37 % of seconds had no value, which reset
        # any hold. An outside review.)
        out: list[WclcState] = []
        now = item.arrival_t_s if isinstance(item, StrapBlock) else None
        while now is not None and now > self._next_eval_s:
            out.append(self._evaluate(self._next_eval_s))
            self._next_eval_s += self.step_s
        if not isinstance(item, StrapBlock):
            return out
        s, c = self._sum[item.role], self._cnt[item.role]
        values = item.counts.astype(np.float64)
        bins = np.floor((item.first_t_s + np.arange(len(values)) * item.period_s) / BIN_S).astype(np.int64)
        top = int(bins[-1])
        if top >= len(s):
            s.extend([0.0] * (top + 1 - len(s)))
            c.extend([0] * (top + 1 - len(c)))
        for b, v in zip(bins.tolist(), values.tolist(), strict=True):
            s[b] += v
            c[b] += 1
        return out

    def _evaluate(self, now_s: float) -> WclcState:
        # The newest bin both straps' samples have filled (a block arrives after its last sample, and may end inside
        # a bin: the one before its last is whole), at most the last one closed by now.
        closed = math.floor(now_s / BIN_S) - 1
        end = min(closed + 1, len(self._cnt["therapist"]) - 1, len(self._cnt["client"]) - 1) - 1
        n = self.window_bins + 2 * self.max_lag_bins
        start = end - n + 1
        if start < 0 or closed - end > MAX_BEHIND_BINS:  # a strap's data stopped (a drop-out): no value, not an old one
            return WclcState(now_s, None, None)
        series = []
        for role in ("therapist", "client"):
            s, c = self._sum[role], self._cnt[role]
            if end >= len(s):
                return WclcState(now_s, None, None)
            cnt = np.asarray(c[start : end + 1], dtype=np.float64)
            if np.any(cnt == 0):
                return WclcState(now_s, None, None)
            series.append(np.asarray(s[start : end + 1]) / cnt)
        t, cl = series
        m = self.max_lag_bins
        seg_t = t[m : m + self.window_bins]
        seg_t = seg_t - seg_t.mean()
        norm_t = float(np.sqrt(np.dot(seg_t, seg_t)))
        best_r, best_lag = -2.0, 0
        for lag in range(-m, m + 1):
            seg_c = cl[m - lag : m - lag + self.window_bins]
            seg_c = seg_c - seg_c.mean()
            den = norm_t * float(np.sqrt(np.dot(seg_c, seg_c)))
            r = float(np.dot(seg_t, seg_c) / den) if den > 1e-12 else 0.0
            if r > best_r:
                best_r, best_lag = r, lag
        return WclcState(now_s, best_r, best_lag * BIN_S)


def wclc_nudges(states: Iterable[WclcState], r_min: float, min_locked_s: float, policy: PolicyConfig) -> list[float]:
    """Nudges of the baseline: r >= r_min with the therapist trailing, sustained, through the same policy."""
    timer = LockTimer()
    pol = NudgePolicy(policy)
    out: list[float] = []
    for s in states:
        following = s.r is not None and s.lag_s is not None and s.r >= r_min and s.lag_s > 0
        locked_for = timer.update(s.t_s, following)
        if following and locked_for >= min_locked_s:
            nudged = pol.check(s.t_s).allowed
            if nudged:
                pol.record(s.t_s)
                out.append(s.t_s)
            timer.settle(min_locked_s, nudged)  # as the engine's timer
        # Apart (the episode's nudge count may start again): no correlation at r_min, either way round.
        pol.observe(s.t_s, apart=s.r is not None and s.r < r_min)
    return out
