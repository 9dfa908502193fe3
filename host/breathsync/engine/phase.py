"""Breath-event phase, phase locking and its chance level: small pure numpy functions.

Phase comes from breath events, not from a Hilbert transform: between two end-inspiration peaks
a person's phase advances linearly by one cycle. That is robust to waveform shape (speech, sighs,
square-ish ICU traces) and needs no look-ahead beyond the bracketing peaks, which the engine only
uses once both have been reported.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# E|mean of N unit phasors| for independent uniform phases is sqrt(pi / (4 N)) ~ 0.886 / sqrt(N).
PLV_CHANCE_COEFF = float(np.sqrt(np.pi / 4.0))


def passing_level(surrogates: FloatArray, p_max: float) -> float:
    """The locking value a window must exceed for its surrogate p-value, (1 + #surrogates at least as locked) /
    (1 + n), to be at most ``p_max``: the (k+1)-th largest surrogate, k = floor((n + 1) p_max) - 1. 1.0 when no
    value can (too few surrogates). Reported as the window's chance level, so that a PLV above it is exactly a
    PLV the surrogate test passes (the surrogates' 90 % quantile was passed by PLVs whose p-value, from 16 to
    24 surrogates, still came out above 0.1: 'sync 0.94 (chance 0.93) no_lock')."""
    k = math.floor((len(surrogates) + 1) * p_max + 1e-9) - 1
    if k < 0 or len(surrogates) == 0:
        return 1.0
    ordered = sorted(surrogates.tolist(), reverse=True)
    return float(ordered[min(k, len(ordered) - 1)])


def phase_at(peaks_s: FloatArray, t_s: FloatArray, max_interval_s: float) -> FloatArray:
    """Phase (in cycles, 0..1) of a breather with end-inspiration ``peaks_s`` at times ``t_s``.

    NaN where ``t_s`` is not bracketed by two known peaks, or where the bracketing interval is
    longer than ``max_interval_s`` (a drop-out or an apnoea: phase is unknown there).
    """
    out = np.full(len(t_s), np.nan)
    if len(peaks_s) < 2 or len(t_s) == 0:
        return out
    j = peaks_s.searchsorted(t_s, side="right") - 1
    ok = (j >= 0) & (j < len(peaks_s) - 1)
    jj = j[ok]
    start = peaks_s[jj]
    interval = peaks_s[jj + 1] - start
    frac = (t_s[ok] - start) / interval
    frac[interval > max_interval_s] = np.nan
    out[ok] = frac
    return out


def track_phase_at(events_s: FloatArray, phases: FloatArray, t_s: FloatArray, max_interval_s: float) -> FloatArray:
    """Unwrapped phase (cycles) at ``t_s`` by linear interpolation between a person's breath events.

    ``events_s``/``phases`` come from ``PersonTracker.phase_track`` (peaks on whole cycles,
    troughs in between). NaN where ``t_s`` is not bracketed by two known events, or where the
    bracketing interval is longer than ``max_interval_s`` (a drop-out or apnoea).
    """
    out = np.full(np.shape(t_s), np.nan)
    if len(events_s) < 2 or np.size(t_s) == 0:
        return out
    n = len(events_s)
    j = events_s.searchsorted(t_s, side="right") - 1
    ok = (j >= 0) & (j < n - 1)
    jj = j[ok]
    start = events_s[jj]
    interval = events_s[jj + 1] - start
    frac = phases[jj] + (t_s[ok] - start) / interval * (phases[jj + 1] - phases[jj])
    frac[interval > max_interval_s] = np.nan
    out[ok] = frac
    out[t_s == events_s[-1]] = phases[-1]  # exactly on the newest event: known without its successor
    return out


def phase_locking_value(phases_cycles: FloatArray, trim: float = 0.0) -> float:
    """Mean resultant length of the phase differences (1 = perfectly locked, ~0 = none).

    ``trim`` > 0 gives the trimmed version (``locking_values``): robust to a missed or spurious breath.
    """
    if len(phases_cycles) == 0:
        return 0.0
    if trim > 0.0:
        return float(locking_values(np.asarray(phases_cycles, dtype=np.float64)[None, :], trim)[0])
    z = np.exp(2j * np.pi * phases_cycles)
    return float(np.abs(np.add.reduce(z) / len(z)))


def locking_values(phases_cycles: FloatArray, trim: float) -> FloatArray:
    """Trimmed phase locking of each row: mean cosine of the deviations from the row's mean direction,
    leaving out the ``trim`` share of anchors that deviate most.

    One spurious or missed breath event shifts a person's interpolated phase for a whole cycle (2-4
    anchors of a 16-anchor window), which costs the plain PLV ~0.3; trimming them keeps a locked pair
    locked. The chance level is computed with the same statistic (surrogates), so it stays honest.
    """
    z = np.exp(2j * np.pi * phases_cycles)
    mean = np.add.reduce(z, axis=1, keepdims=True) / z.shape[1]  # np.mean's arithmetic without its overhead (hot path)
    mean_dir = mean / np.maximum(np.abs(mean), 1e-12)
    cos_dev = np.real(z * np.conj(mean_dir))
    n = phases_cycles.shape[1]
    keep = max(1, n - int(trim * n))
    top = -np.sort(-cos_dev, axis=1)[:, :keep]
    return np.asarray(np.add.reduce(top, axis=1) / keep, dtype=np.float64)


def circular_mean_cycles(phases_cycles: FloatArray) -> float:
    """Mean direction in cycles (0..1)."""
    z = np.add.reduce(np.exp(2j * np.pi * phases_cycles)) / len(phases_cycles)
    return float((np.angle(z) / (2 * np.pi)) % 1.0)


def plv_chance_level(n_breaths: int) -> float:
    """Expected PLV of ``n_breaths`` independent uniform phases: ~0.89/sqrt(N), the mean resultant length of
    N uniform angles."""
    return PLV_CHANCE_COEFF / float(np.sqrt(max(n_breaths, 1)))


def surrogate_plvs(
    anchors_s: FloatArray,
    partner_peaks_s: FloatArray,
    shifts_s: FloatArray,
    max_interval_s: float,
) -> FloatArray:
    """PLV of the anchors against the partner's own past, shifted back by each of ``shifts_s``.

    A shifted partner keeps its rate, rate variability and waveform but loses any real alignment,
    so two independent people at similar rates (slow beat drift) score as high on the surrogates
    as on the real pair: that is the null the window must beat (segment-shuffled pseudo-pairs,
    as in SUSY). Shifts whose window is not covered by the partner's history give NaN.
    """
    if len(shifts_s) == 0:
        return np.zeros(0)
    times = anchors_s[None, :] - shifts_s[:, None]
    ph = phase_at(partner_peaks_s, times.ravel(), max_interval_s).reshape(times.shape)
    z = np.exp(2j * np.pi * ph)
    plv = np.abs(np.mean(z, axis=1))
    plv[np.logical_or.reduce(np.isnan(ph), axis=1)] = np.nan
    return np.asarray(plv, dtype=np.float64)


def shifted_plvs(
    anchors_s: FloatArray,
    own_phase: FloatArray,
    partner_events_s: FloatArray,
    partner_phases: FloatArray,
    shifts_s: FloatArray,
    max_interval_s: float,
    trim: float = 0.0,
) -> FloatArray:
    """PLV of the relative phase with the partner's own past shifted back by each of ``shifts_s``.

    The event-anchored version of ``surrogate_plvs``: ``own_phase`` is one person's phase at the
    anchors, the partner's phase is read at ``anchor - shift``. A shifted partner keeps its rate,
    variability and waveform but loses any real alignment (segment surrogates, as in SUSY).
    Shifts not covered by the partner's history give NaN.
    """
    if len(shifts_s) == 0 or len(anchors_s) == 0:
        return np.zeros(0)
    rel, missing = _shifted_relative_phases(
        anchors_s, own_phase, partner_events_s, partner_phases, shifts_s, max_interval_s
    )
    plv = locking_values(rel, trim) if trim > 0.0 else np.abs(np.mean(np.exp(2j * np.pi * rel), axis=1))
    plv[missing] = np.nan
    return np.asarray(plv, dtype=np.float64)


def locking_and_shifted(
    phases_cycles: FloatArray,
    anchors_s: FloatArray,
    own_phase: FloatArray,
    partner_events_s: FloatArray,
    partner_phases: FloatArray,
    shifts_s: FloatArray,
    max_interval_s: float,
    trim: float,
) -> tuple[float, FloatArray]:
    """``phase_locking_value(phases_cycles, trim)`` and ``shifted_plvs(...)`` of the same anchors, the same values
    bit for bit; trimmed, in one pass (each row's value does not depend on the others: one numpy pass less per
    update, which is most of what a small window costs)."""
    if trim <= 0.0 or len(shifts_s) == 0 or len(anchors_s) == 0:
        args = (anchors_s, own_phase, partner_events_s, partner_phases, shifts_s, max_interval_s, trim)
        return phase_locking_value(phases_cycles, trim), shifted_plvs(*args)
    rel, missing = _shifted_relative_phases(
        anchors_s, own_phase, partner_events_s, partner_phases, shifts_s, max_interval_s
    )
    lock, shifted = trimmed_locking_and_rows(phases_cycles, rel, trim)
    shifted[missing] = np.nan
    return lock, shifted


def trimmed_locking_and_rows(values: FloatArray, rows: FloatArray, trim: float) -> tuple[float, FloatArray]:
    """``phase_locking_value(values, trim)`` and ``locking_values(rows, trim)``, in one pass when trimmed (the same
    values bit for bit: each row's value does not depend on the others)."""
    if trim <= 0.0:
        return phase_locking_value(values, trim), locking_values(rows, trim)
    both = locking_values(np.concatenate((values[None, :], rows)), trim)
    return float(both[0]), both[1:]


def _shifted_relative_phases(
    anchors_s: FloatArray,
    own_phase: FloatArray,
    partner_events_s: FloatArray,
    partner_phases: FloatArray,
    shifts_s: FloatArray,
    max_interval_s: float,
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """The partner's phase at each anchor minus the shift, minus ``own_phase`` (one row per shift; 0 where unknown),
    and which rows had an unknown phase."""
    times = anchors_s[None, :] - shifts_s[:, None]
    ph = track_phase_at(partner_events_s, partner_phases, times, max_interval_s)
    unknown = np.isnan(ph)
    rel = np.where(unknown, 0.0, ph - own_phase[None, :])
    return rel, np.logical_or.reduce(unknown, axis=1)


def time_lag_cycles(
    own_events_s: FloatArray,
    partner_same_kind_s: FloatArray,
    partner_period_s: float,
    max_interval_s: float,
    shifts_s: FloatArray | None = None,
) -> FloatArray:
    """Time from the partner's most recent breath event of the same kind to each of ``own_events_s``,
    in cycles of the partner's current period: one row, or one row per shift of the partner's history.

    A follower who breathes a fixed *time* after the leader (a reaction delay) keeps this constant even
    when the leader's breaths are irregular, while the interpolated relative phase divides the same delay
    by each cycle's own length and scatters. NaN where the partner had no event within ``max_interval_s``
    before. With ``shifts_s``, the partner's history is moved later by each shift (segment surrogates).
    """
    if len(partner_same_kind_s) == 0 or len(own_events_s) == 0 or not partner_period_s > 0:
        return np.full((1 if shifts_s is None else len(shifts_s), len(own_events_s)), np.nan)
    # Shifting the partner later by s is looking up each own event s earlier in the partner's history:
    # one searchsorted for all shifts at once. This runs ~6 times per update on a few dozen values, where
    # each numpy call costs more than its arithmetic: as few calls as possible.
    when = own_events_s[None, :] if shifts_s is None else own_events_s[None, :] - shifts_s[:, None]
    j = partner_same_kind_s.searchsorted(when, side="right") - 1
    delay = when - partner_same_kind_s[np.maximum(j, 0)]
    out = delay / partner_period_s
    out[(j < 0) | (delay > max_interval_s)] = np.nan  # no partner event before, or too long before
    return out


def period_response(
    periods_s: FloatArray,
    partner_phase_cycles: FloatArray,
) -> float:
    """How strongly a breather's next period answers the partner's phase lead (a follower's signature).

    For each of a person's breaths: the partner's phase at that peak (how far the partner is ahead)
    and the person's following period. A follower shortens the next breath when the partner is
    further ahead than usual and lengthens it when behind (a phase-response, as in
    Rosenblum-Pikovsky directionality); a leader's periods ignore the partner. Returned as minus
    the correlation of period and sin(phase lead - mean lead): > 0 means 'responds to partner'.
    """
    ok = ~(np.isnan(periods_s) | np.isnan(partner_phase_cycles))
    if np.count_nonzero(ok) < 4:
        return 0.0
    p = periods_s[ok]
    ph = partner_phase_cycles[ok]
    x = np.sin(2 * np.pi * (ph - circular_mean_cycles(ph)))
    return -_corr(p, x)


def _corr(a: FloatArray, b: FloatArray) -> float:
    a = a - np.add.reduce(a) / len(a)
    b = b - np.add.reduce(b) / len(b)
    den = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b) / den) if den > 1e-12 else 0.0


def lagged_period_dependency(
    own_peaks_s: FloatArray,
    partner_peaks_s: FloatArray,
    n_breaths: int,
    max_interval_s: float,
) -> float:
    """Correlation of a person's breath periods with the partner's most recent completed period.

    The partner's period is the one that ended at or before the end of the person's breath, less
    than one of the person's breaths earlier (over longer lags two breathing rhythms' correlations cancel
    and can flip sign).
    A follower copies the leader's period changes with that short lag; the leader, looked at the
    same way, only matches the follower's previous breath. Returns 0 when too few pairs exist.
    """
    if len(own_peaks_s) < 3 or len(partner_peaks_s) < 3:
        return 0.0
    ends = own_peaks_s[-n_breaths:]
    starts_idx = own_peaks_s.searchsorted(ends) - 1
    ok = starts_idx >= 0
    ends = ends[ok]
    own_period = ends - own_peaks_s[starts_idx[ok]]
    j = partner_peaks_s.searchsorted(ends, side="right") - 1
    ok2 = j >= 1
    jj = j[ok2]
    partner_period = partner_peaks_s[jj] - partner_peaks_s[jj - 1]
    own_period = own_period[ok2]
    lag = ends[ok2] - partner_peaks_s[jj]
    keep = (lag < own_period) & (own_period <= max_interval_s) & (partner_period <= max_interval_s)
    if np.count_nonzero(keep) < 4:
        return 0.0
    return _corr(own_period[keep], partner_period[keep])
