"""Which way up a respiration signal is: does inspiration point up, as the engine assumes?

A strap's detector reports end-inspiration peaks and end-expiration troughs of whatever it measures.
A sensor mounted or wired the other way round (or a recording from a device whose convention is
'inspiration down') swaps them: the person's phase is then off by their exhale share of a breath, the
phase lead and the time-lag cues point the wrong way, and a client who follows can look like a
therapist who follows (docs/engine.md, sessions 7-8).

The cue is the waveform's shape. Breathing at rest has a flat end-expiratory pause and a sharper
end-inspiration, so an upright signal spends more time near its bottom than near its top: its
distribution is skewed positive. Measured over 120 s windows of the strap's counts, band-passed to the
breathing band, in 29 upright recordings (26 BIDMC, a BITalino belt in 5-min pieces, two NeuroKit
examples): the quantile skewness (5 % / 50 % / 95 %) reaches -0.29 in bidmc_26 only, the moment
skewness dips lower only where one artefact dominates a window (a cough, a strap knock). A signal is
called inverted only when both are clearly negative and its top is not clipped; 55 % of windows of an
upside-down signal are, and 0.22 % of upright ones (all of them bidmc_26's: docs/engine.md). A signal
that is not clearly inverted is taken as it comes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..quantiles import quantiles

BAND_HZ = (0.05, 1.0)  # breathing band: slower wander and faster ripple do not shape the cycle
TAIL_QUANTILE = 0.05
INVERTED_BELOW = -0.25  # both skewness measures must be below this
MIN_POLARITY_S = 60.0  # less signal than this (drop-outs): no verdict yet
CLIPPED_SHARE = 0.08  # 8 % of samples at one value: clipped (unclipped, a handful sit at the maximum)


def breathing_band(values: npt.NDArray[np.float64], sampling_rate: float) -> npt.NDArray[np.float64]:
    """``values`` band-passed to BAND_HZ (zero-phase, whole stretch at once: the verdict comes after it)."""
    spectrum = np.fft.rfft(values - values.mean())
    freq_hz = np.fft.rfftfreq(len(values), 1.0 / sampling_rate)
    spectrum[(freq_hz < BAND_HZ[0]) | (freq_hz > BAND_HZ[1])] = 0.0
    return np.fft.irfft(spectrum, len(values))


def skewness(values: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(moment skewness, quantile skewness at TAIL_QUANTILE) of ``values``; 0.0 for a flat signal."""
    centred = values - values.mean()
    sd = float(np.sqrt(np.mean(centred * centred)))
    low, mid, high = quantiles(values, (TAIL_QUANTILE, 0.5, 1.0 - TAIL_QUANTILE))
    if sd == 0.0 or high == low:
        return 0.0, 0.0
    moment = float(np.mean(centred**3)) / sd**3
    quantile = float((high + low - 2.0 * mid) / (high - low))
    return moment, quantile


def clipped_at_top(counts: npt.NDArray[np.float64]) -> bool:
    """More than CLIPPED_SHARE of the samples sit at the stretch's highest value: a sensor held at its rail, a
    saturated amplifier (several BIDMC records are clipped at one end). Flat tops dwell at the top just as the
    pauses of an upside-down signal do, so such a signal gives no verdict (clipped bottoms only make an upright
    signal look more upright)."""
    return bool(np.count_nonzero(counts == counts.max()) > CLIPPED_SHARE * len(counts))


def looks_inverted(counts: npt.NDArray[np.float64], sampling_rate: float) -> bool:
    """True when ``counts`` (a person's strap signal, at least MIN_POLARITY_S of it) is clearly upside down.
    A signal clipped at its top is taken as it comes: its shape says more about the clipping than the breathing."""
    counts = np.asarray(counts, dtype=np.float64)
    if len(counts) < MIN_POLARITY_S * sampling_rate or clipped_at_top(counts):
        return False
    moment, quantile = skewness(breathing_band(counts, sampling_rate))
    return moment < INVERTED_BELOW and quantile < INVERTED_BELOW
