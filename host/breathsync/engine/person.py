"""One breather as the host sees them: breath history, current rate/depth, data presence, baseline."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .state import Baseline

FloatArray = npt.NDArray[np.float64]

MIN_BASELINE_BREATHS = 6
RATE_SD_FLOOR_BPM = 0.5


class PersonTracker:
    """Peaks (end of inspiration) as reported, kept for ``keep_s`` seconds of history.

    Arrays grow by doubling so appends stay O(1) and the engine can take numpy views.
    """

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._t = np.zeros(64)
        self._depth = np.zeros(64)
        self._n = 0
        self._start = 0
        self.last_sample_s: float | None = None
        self.last_event_reported_s: float | None = None
        self.first_sample_s: float | None = None

    def add_samples(self, last_t_s: float, first_t_s: float) -> None:
        if self.first_sample_s is None:
            self.first_sample_s = first_t_s
        self.last_sample_s = last_t_s

    def add_peak(self, t_s: float, reported_t_s: float, depth: float) -> None:
        if self._n == len(self._t):
            live = self._n - self._start
            size = max(64, 2 * live)
            t = np.zeros(size)
            d = np.zeros(size)
            t[:live] = self._t[self._start : self._n]
            d[:live] = self._depth[self._start : self._n]
            self._t, self._depth, self._n, self._start = t, d, live, 0
        self._t[self._n] = t_s
        self._depth[self._n] = depth
        self._n += 1
        self.last_event_reported_s = reported_t_s
        while self._start < self._n and self._t[self._start] < t_s - self.keep_s:
            self._start += 1

    def add_event(self, reported_t_s: float) -> None:
        """A trough: not used for phase, but proves the strap is alive and seeing breaths."""
        self.last_event_reported_s = reported_t_s

    @property
    def peaks_s(self) -> FloatArray:
        return self._t[self._start : self._n]

    @property
    def depths(self) -> FloatArray:
        return self._depth[self._start : self._n]

    def intervals_s(self, n: int, max_interval_s: float) -> FloatArray:
        iv = np.diff(self.peaks_s[-(n + 1) :])
        return iv[iv <= max_interval_s]

    def rate_bpm(self, n: int, max_interval_s: float) -> float | None:
        iv = self.intervals_s(n, max_interval_s)
        return 60.0 / float(np.median(iv)) if len(iv) else None

    def period_s(self, n: int, max_interval_s: float) -> float | None:
        iv = self.intervals_s(n, max_interval_s)
        return float(np.median(iv)) if len(iv) else None

    def depth(self, n: int) -> float | None:
        d = self.depths[-n:]
        return float(np.median(d)) if len(d) else None


def learn_baseline(peaks_s: FloatArray, depths: FloatArray, max_interval_s: float) -> Baseline | None:
    """Rate (median), rate variability (robust SD of breath-by-breath rate) and depth (median).

    Usable for the first minutes of a session or for a pre-session calibration recording.
    None when fewer than MIN_BASELINE_BREATHS breaths are available.
    """
    iv = np.diff(peaks_s)
    iv = iv[iv <= max_interval_s]
    if len(iv) < MIN_BASELINE_BREATHS - 1:
        return None
    rates = 60.0 / iv
    rate = 60.0 / float(np.median(iv))
    sd = 1.4826 * float(np.median(np.abs(rates - np.median(rates))))
    return Baseline(
        rate_bpm=rate,
        rate_sd_bpm=max(sd, RATE_SD_FLOOR_BPM),
        depth=float(np.median(depths)) if len(depths) else 0.0,
        n_breaths=len(iv) + 1,
    )
