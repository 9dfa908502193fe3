"""One breather as the host sees them: breath history, current rate/depth, data presence, baseline.

Both kinds of breath event are kept: end-inspiration peaks (phase 0 of a cycle) and end-expiration
troughs (phase ``trough_fraction``, the person's own typical share of the cycle spent exhaling).
With both, a person's phase is anchored twice per breath instead of once, which halves the time
until a partner's phase at a given moment is known and doubles the samples of relative phase.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import numpy.typing as npt

from ..detector import Kind
from ..quantiles import small_median
from .polarity import MIN_POLARITY_S, looks_inverted
from .state import Baseline

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MIN_BASELINE_BREATHS = 6
RATE_SD_FLOOR_BPM = 0.5
# Speech breathing: a quick inhalation (0.3-0.8 s) before a long, controlled exhalation (2-8 s). A cycle whose
# inhalation takes less than this share of it is speech-like. Quiet breathing spends ~0.35-0.6 of a cycle
# inhaling as the strap sees it: below 0.25 in 0-6 % of the cycles of 28 of the 29 upright recordings we have
# (BIDMC, belt, NeuroKit), 11 % in bidmc_26.
SPEECH_INHALE_SHARE = 0.25
GAP_S = 1.0  # samples this far apart (a strap's blocks come every ~0.3 s): its data had a drop-out between them
SPEECH_SHARE_TALKING = 0.15  # speech-like cycles beyond this share of a baseline period: the person talked
TROUGH_FRACTION_BREATHS = 12
TROUGH_FRACTION_RANGE = (0.25, 0.75)
POLARITY_BLOCKS = 2048  # the newest ~11 min (25 Hz) of 8-sample blocks: a strap alone for hours stays bounded
# A detector that has just started (strap boot, reboot) knows no breath size yet, and its first extrema are often
# ripples of a few % of a breath: after a reboot, 133 and 202 counts against 2,700-4,100, 1.4-1.9 s apart (22/min
# on the status line for 4 s, true 17.8/min). Once running, its hysteresis (0.3 of its breath amplitude) lets
# nothing that small through: on the 26 BIDMC records 5 of 7,032 events are under 0.2 of the median of the 8
# before them. Such an event is left out; the median is over every event reported, kept or not, so breathing that
# really has become that shallow is taken after ~4 of its events.
WIGGLE_SHARE = 0.2
WIGGLE_EVENTS = 8


class _Series:
    """Append-only float columns with O(1) amortised appends and trimming of old rows."""

    def __init__(self, columns: int) -> None:
        self._data = np.zeros((64, columns))
        self._n = 0
        self._start = 0

    def append(self, *values: float) -> None:
        if self._n == len(self._data):
            live = self._n - self._start
            data = np.zeros((max(64, 2 * live), self._data.shape[1]))
            data[:live] = self._data[self._start : self._n]
            self._data, self._n, self._start = data, live, 0
        self._data[self._n] = values
        self._n += 1

    def trim_before(self, t_s: float) -> None:
        while self._start < self._n and self._data[self._start, 0] < t_s:
            self._start += 1

    def column(self, i: int) -> FloatArray:
        return self._data[self._start : self._n, i]

    def __len__(self) -> int:
        return self._n - self._start


class PersonTracker:
    """Peaks and troughs as reported, kept for ``keep_s`` seconds of history.

    ``rate_n`` / ``max_interval_s`` fix how the current rate is estimated (running median of the
    last ``rate_n`` peak-to-peak and trough-to-trough intervals, both kinds, so the estimate moves
    every half breath); it is cached per event because the engine asks for it on every sample block.
    """

    def __init__(self, keep_s: float, rate_n: int = 4, max_interval_s: float = 20.0) -> None:
        self.keep_s = keep_s
        self.rate_n = rate_n
        self.max_interval_s = max_interval_s
        self._peaks = _Series(2)  # t_s, depth
        self._troughs = _Series(2)  # t_s, depth (kept: if the signal turns out inverted, these are the peaks)
        self._events = _Series(2)  # t_s, kind (0 peak, 1 trough)
        self.last_sample_s: float | None = None
        self.last_event_reported_s: float | None = None
        self.first_sample_s: float | None = None
        self._period: float | None = None
        self.breaks_s: list[tuple[float, float]] = []  # drop-outs (last sample, next one): no interval spans one
        self._trough_fraction = 0.5
        self._full_track: tuple[FloatArray, FloatArray] | None = None  # phase_track(-inf), until the next event
        self.inverted = False  # the strap's signal is upside down: its peaks are end-expirations
        self._signal: deque[IntArray] | None = deque(maxlen=POLARITY_BLOCKS)  # sample blocks until the verdict
        self._signal_period_s = 0.0
        self._signal_samples = 0
        self._reported_depths: deque[float] = deque(maxlen=WIGGLE_EVENTS)  # every event's, kept or not

    def add_samples(self, last_t_s: float, first_t_s: float) -> None:
        if self.last_sample_s is not None and last_t_s <= self.last_sample_s:
            return  # had already (sent live again after a quick restart): the data does not go back in time
        if self.first_sample_s is None:
            self.first_sample_s = first_t_s
        elif self.last_sample_s is not None and first_t_s - self.last_sample_s > GAP_S:
            self.breaks_s.append((self.last_sample_s, first_t_s))  # breaths on either side of it are no interval
            while self.breaks_s[0][1] < first_t_s - self.keep_s:
                self.breaks_s.pop(0)
            self._period = self._compute_period()  # a breath reported before this block may already span it
        self.last_sample_s = last_t_s

    @property
    def polarity_pending(self) -> bool:
        """Samples are still being kept for the polarity verdict."""
        return self._signal is not None

    def skip_polarity(self) -> None:
        """Take the signal as it comes (no verdict, nothing kept)."""
        self._signal = None

    def keep_signal(self, counts: IntArray, period_s: float) -> None:
        """Hold a sample block for the polarity verdict (only until ``judge_polarity`` gives one)."""
        signal = self._signal
        if signal is None:
            return
        if len(signal) == signal.maxlen:
            self._signal_samples -= len(signal[0])  # the oldest block is about to go
        signal.append(counts)
        self._signal_samples += len(counts)
        self._signal_period_s = period_s

    def polarity_ready(self) -> bool:
        """Enough signal kept for a verdict (drop-outs can leave less than the baseline period's worth)."""
        return self._signal is not None and self._signal_samples * self._signal_period_s >= MIN_POLARITY_S

    def judge_polarity(self) -> bool | None:
        """Decide from the samples kept whether the signal is upside down; if so, read every breath event so far
        and from now on the other way round. None (and the samples kept) while there is too little signal for a
        verdict; once given, the samples are let go."""
        if not self.polarity_ready():
            return None
        signal, self._signal = self._signal, None
        assert signal is not None
        if looks_inverted(np.concatenate(signal), 1.0 / self._signal_period_s):
            self.invert()
        return self.inverted

    def invert(self) -> None:
        """The signal is upside down: peaks were end-expirations and troughs end-inspirations."""
        self.inverted = not self.inverted
        self._peaks, self._troughs = self._troughs, self._peaks
        kind = self._events.column(1)
        kind[:] = 1.0 - kind
        if len(self._events):
            self._after_event(float(self._events.column(0)[-1]))

    def add_breath(self, kind: Kind, t_s: float, reported_t_s: float, depth: float) -> bool:
        """A strap event: 'peak' / 'trough' as the strap saw them (swapped when the signal is inverted). False, and
        left out, when it is not after the last one: the host's clock for this strap stepped back (its first fit came
        from packets a stalled radio had held up), and a breath 'before' the last one would make a negative interval.
        False too for a restarted detector's ripple (WIGGLE_SHARE)."""
        if len(self._events) and t_s <= self._events.column(0)[-1]:
            return False
        recent = self._reported_depths
        typical = None
        if len(recent) == WIGGLE_EVENTS:  # their median (np.median's, of an even count)
            ordered = sorted(recent)
            typical = (ordered[WIGGLE_EVENTS // 2 - 1] + ordered[WIGGLE_EVENTS // 2]) / 2.0
        recent.append(depth)
        if typical is not None and depth < WIGGLE_SHARE * typical:
            return False
        if (kind == "peak") != self.inverted:
            self.add_peak(t_s, reported_t_s, depth)
        else:
            self.add_trough(t_s, reported_t_s, depth)
        return True

    def add_peak(self, t_s: float, reported_t_s: float, depth: float) -> None:
        self._peaks.append(t_s, depth)
        self._events.append(t_s, 0.0)
        self.last_event_reported_s = reported_t_s
        self._after_event(t_s)

    def add_trough(self, t_s: float, reported_t_s: float, depth: float = 0.0) -> None:
        self._troughs.append(t_s, depth)
        self._events.append(t_s, 1.0)
        self.last_event_reported_s = reported_t_s
        self._after_event(t_s)

    def _after_event(self, t_s: float) -> None:
        for series in (self._peaks, self._troughs, self._events):
            series.trim_before(t_s - self.keep_s)
        self._period = self._compute_period()
        self._trough_fraction = self._compute_trough_fraction()
        self._full_track = None

    def _compute_period(self) -> float | None:
        n = self.rate_n
        peaks, troughs = self.peaks_s[-(n + 1) :], self.troughs_s[-(n + 1) :]
        iv = np.concatenate((peaks[1:] - peaks[:-1], troughs[1:] - troughs[:-1]))  # np.diff, minus its overhead
        keep = iv <= self.max_interval_s
        if self.breaks_s:  # not across a drop-out: the breaths it hid would make one long 'breath' (15 s: 3.9/min)
            starts = np.concatenate((peaks[:-1], troughs[:-1]))
            oldest = float(np.min(starts)) if len(starts) else math.inf
            for a, b in reversed(self.breaks_s):
                if b < oldest:
                    break
                keep &= ~((starts <= b) & (starts + iv >= a))
        iv = iv[keep]
        return small_median(iv) if len(iv) else None

    @property
    def peaks_s(self) -> FloatArray:
        return self._peaks.column(0)

    @property
    def depths(self) -> FloatArray:
        return self._peaks.column(1)

    @property
    def troughs_s(self) -> FloatArray:
        return self._troughs.column(0)

    def period_s(self) -> float | None:
        """Current breath period: median of the recent peak-to-peak and trough-to-trough intervals."""
        return self._period

    def rate_bpm(self) -> float | None:
        return None if self._period is None else 60.0 / self._period

    def depth(self, n: int) -> float | None:
        d = self.depths[-n:]
        return small_median(d) if len(d) else None

    def trough_fraction(self) -> float:
        """Typical share of the cycle from end-inspiration to end-expiration (median of recent cycles)."""
        return self._trough_fraction

    def _compute_trough_fraction(self) -> float:
        peaks, troughs = self.peaks_s[-(TROUGH_FRACTION_BREATHS + 1) :], self.troughs_s
        if len(peaks) < 2 or len(troughs) == 0:
            return 0.5
        j = troughs.searchsorted(peaks[:-1], side="right")
        ok = j < len(troughs)
        start, end = peaks[:-1][ok], peaks[1:][ok]
        tr = troughs[j[ok]]
        inside = (tr < end) & (end - start <= self.max_interval_s)
        if not np.any(inside):
            return 0.5
        frac = (tr[inside] - start[inside]) / (end[inside] - start[inside])
        lo, hi = TROUGH_FRACTION_RANGE
        return min(max(small_median(frac), lo), hi)  # np.clip on one float: ~15x dearer

    def phase_track(self, since_s: float) -> tuple[FloatArray, FloatArray]:
        """Event times and their unwrapped phase (cycles) since ``since_s``: peaks on whole cycles,
        troughs ``trough_fraction`` later; events that would not advance the phase are dropped.
        The arrays are shared (the whole history is asked for at every update): do not modify them."""
        if since_s == -math.inf and self._full_track is not None:
            return self._full_track
        track = self._track(since_s)
        if since_s == -math.inf:
            self._full_track = track
        return track

    def _track(self, since_s: float) -> tuple[FloatArray, FloatArray]:
        t = self._events.column(0)
        kind = self._events.column(1)
        first = t.searchsorted(since_s)  # the times are sorted: a slice, not a mask
        t, kind = t[first:], kind[first:]
        if len(t) == 0:
            return t, t
        trough = kind > 0.5
        cycle = np.cumsum(~trough) - 1.0
        phase = np.asarray(cycle + np.where(trough, self.trough_fraction(), 0.0), dtype=np.float64)
        keep = np.ones(len(t), dtype=bool)
        keep[1:] = (phase[1:] > phase[:-1]) & (t[1:] > t[:-1])
        return t[keep], phase[keep]


def speech_like(peaks_s: FloatArray, troughs_s: FloatArray) -> npt.NDArray[np.bool_]:
    """Per peak-to-peak cycle: its inhalation (from the cycle's one trough to its closing peak) took less than
    SPEECH_INHALE_SHARE of it. Cycles with no trough or several inside (a missed or spurious event) are not."""
    if len(peaks_s) < 2:
        return np.zeros(0, dtype=bool)
    first = np.searchsorted(troughs_s, peaks_s[:-1], side="right")
    after = np.searchsorted(troughs_s, peaks_s[1:], side="left")
    one = (after - first) == 1
    trough = troughs_s[np.minimum(first, len(troughs_s) - 1)] if len(troughs_s) else np.zeros(len(first))
    inhale_s = peaks_s[1:] - trough
    speech: npt.NDArray[np.bool_] = one & (inhale_s < SPEECH_INHALE_SHARE * (peaks_s[1:] - peaks_s[:-1]))
    return speech


def learn_baseline(
    peaks_s: FloatArray,
    depths: FloatArray,
    max_interval_s: float,
    breaks_s: tuple[tuple[float, float], ...] = (),
    troughs_s: FloatArray | None = None,
    quiet_breaths: int = MIN_BASELINE_BREATHS,
) -> Baseline | None:
    """Rate (median), rate variability (robust SD of breath-by-breath rate) and depth (median).

    Usable for the first minutes of a session or for a pre-session calibration recording.
    None when fewer than MIN_BASELINE_BREATHS breaths are available. No interval spanning one of ``breaks_s``
    (a recording's drop-outs: the breaths inside them are unknown) counts. With the end-expirations
    (``troughs_s``), speech-like cycles do not count either, and when the person talked
    (SPEECH_SHARE_TALKING) ``quiet_breaths`` are needed: a therapist who talks through the first minutes would
    otherwise get their speech rhythm (often half their quiet rate) as their own, and the engine would take
    their quiet breathing afterwards for a move toward the client; a few breaths between phrases would be as
    misleading.
    """
    iv = np.diff(peaks_s)
    keep = iv <= max_interval_s
    for a, b in breaks_s:
        keep &= ~((peaks_s[:-1] <= b) & (peaks_s[1:] >= a))
    needed = MIN_BASELINE_BREATHS
    if troughs_s is not None and len(peaks_s) >= 2:
        speech = speech_like(peaks_s, troughs_s)
        # A speech-like cycle now and then is how some people breathe (up to 11 % of an upright recording's):
        # only a person who talked waits for quiet breaths.
        talked = np.count_nonzero(speech) >= max(2.0, SPEECH_SHARE_TALKING * len(speech))
        if talked:
            needed = max(needed, quiet_breaths)
        # The breaths on either side of speech are not quiet either: a long pause before the first words, a
        # deep recovery breath after the last. For someone who talked, two on each side: short phrases between
        # long ones can breathe in as slowly as quiet breathing's fastest (~0.3 of the cycle), and an outside
        # review's talkers got 13 such 'quiet' breaths in 120 s, a baseline of their speaking rhythm.
        near = speech.copy()
        for k in range(1, 3 if talked else 2):
            near[k:] |= speech[:-k]
            near[:-k] |= speech[k:]
        keep &= ~near
        if len(depths) != len(peaks_s):
            raise ValueError("one depth per end-inspiration expected")
        depths = depths[np.concatenate(([True], ~near))]
    iv = iv[keep]
    if len(iv) < needed - 1:
        return None
    # small_median: np.median bit for bit on these NaN-free values, without importing numpy.ma on first use
    # (~7 ms of a replay's CPU time, once per process; breathsync.quantiles says more).
    rates = 60.0 / iv
    rate = 60.0 / small_median(iv)
    sd = 1.4826 * small_median(np.abs(rates - small_median(rates)))
    return Baseline(
        rate_bpm=rate,
        rate_sd_bpm=max(sd, RATE_SD_FLOOR_BPM),
        depth=small_median(depths) if len(depths) else 0.0,
        n_breaths=len(iv) + 1,
    )
