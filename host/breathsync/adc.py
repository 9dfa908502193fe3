"""Simulate the strap's ADC on a recording: oversampled block averaging, then quantisation.

A real strap samples its sensor with an oversampling ADC: each reported sample is the mean of
the signal over one strap period. ``adc_resample`` integrates the input exactly over each
strap period (the input is treated as piecewise constant over its own periods), and
``adc_quantize`` maps the signal onto the counts the strap's sensor driver returns and clips like a
real converter. That driver (``firmware/drivers/sensors.py``, ``AnalogStretch``) averages four 12-bit
conversions per sample, scaled to u16 like ``ADC.read_u16()``: the converter's noise of a few counts
dithers them, so the mean carries two bits below the converter's 12, and the detector reads 14 bits
(``u16 >> 2``). The model quantises to those 14 bits. (Until session 22 it quantised to 12, with the
fitted range on a third of the scale.)

The gain and offset are fitted once, to the first ``FIT_S`` seconds of the recording (a strap's front
end is set up when it is put on, not from breaths it has not yet measured), with ``HEADROOM_SPANS`` of
that range left free on either side for deeper breaths, drift and steps of the level. So what the strap
reports at time t never depends on the recording after max(t, ``FIT_S``): ``replay`` on a recording cut short gives the
same outputs up to the cut. Two exceptions, for a strap not yet on a chest: a recording that begins flat is fitted
up to the end of the first FIT_S-long block in which it moves, and one that begins with sensor noise alone up to the
end of the first block of breathing within ``LEAD_IN_SEARCH_S`` after it (also a level step, within that time,
wider than the scale fitted so far: the breathing after it would clip).
(Until session 20 the gain came from the whole recording's range, and
cutting a file changed the counts, depths and now and then an event from the start on.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import InputError
from .quantiles import quantiles
from .recording import check_input_rate

SAMPLE_BITS = 14  # the mean of the driver's four 12-bit conversions per sample: what the detector reads (u16 >> 2)
SAMPLE_MAX_COUNTS = (1 << SAMPLE_BITS) - 1
FIT_S = 30.0  # the front end's gain and offset are fitted to this much signal at the start, then held
LEAD_IN_SEARCH_S = 120.0  # how far after a start of sensor noise alone the fit looks for the breathing
# x the fitted range left free below and above it: the fitted range is an eighth of full scale. The default strap's
# divider swings ~0.5 V from relaxed to a full inhalation within the ADC's ~2.3 V (hardware/wiring.md), so quiet
# breathing uses well under a tenth of the converter and a strap re-tightened or a change of posture moves the level
# by several breath depths without clipping. One range either side (until session 22) clipped such steps at the
# rail: an outside generator's gain and offset steps left a person without breaths for up to 135 s.
HEADROOM_SPANS = 3.5
OUTLIER_FENCE = 1.0  # samples further than this x the central span outside it are glitches, not breathing
# A signal whose bulk (not one glitch: those clip at the rail) lies beyond this is no respiration signal in any unit:
# past 2**53 (~9e15) a float no longer holds every integer, and the ADC model's sums overflow to inf.
MAX_SIGNAL_MAGNITUDE = 1e15
FRONT_END_FENCE = 100.0  # the input saturates this far outside the central span (x the span): 100x the rail's


@dataclass(frozen=True)
class StrapSignal:
    """What the strap's ADC delivers: u16 counts at ``rate_hz`` and where they sit in time.

    ``t0_s`` is the input time represented by sample 0 (the centre of its averaging window),
    so sample k sits at ``t0_s + k / rate_hz``.
    """

    counts_u16: npt.NDArray[np.int64]
    rate_hz: int
    t0_s: float
    units_per_count14: float  # input units per 14-bit count (what the detector reports)

    def time_s(self, index: int | float) -> float:
        return self.t0_s + float(index) / self.rate_hz


def adc_resample(
    signal: npt.NDArray[np.float64], sampling_rate: float, strap_rate_hz: float
) -> tuple[npt.NDArray[np.float64], float]:
    """Mean of ``signal`` over each strap period; returns (values, time of sample 0 in s)."""
    if strap_rate_hz <= 0:
        raise InputError("strap sampling rate must be > 0")
    n_in = len(signal)
    check_input_rate(sampling_rate, n_in)
    if not np.isfinite(signal).all():
        raise InputError("a respiration signal needs finite values (missing samples are filled in before this)")
    duration_s = n_in / sampling_rate
    n_out = int(np.floor(duration_s * strap_rate_hz + 1e-9))
    if n_out < 1:
        raise InputError("recording shorter than one strap sample")
    # Exact box integration of the piecewise-constant input via its cumulative sum. Wild samples are cut to a
    # wide fence first, as the sensor's front end saturates long before the converter's rail: one value of 1e300
    # in the sum would swamp every later difference (all breathing after it read as flat).
    cumulative = np.concatenate(([0.0], np.cumsum(_saturated(signal, sampling_rate), dtype=np.float64)))
    edges_in_samples = np.arange(n_out + 1, dtype=np.float64) * (sampling_rate / strap_rate_hz)
    integral = np.interp(edges_in_samples, np.arange(n_in + 1, dtype=np.float64), cumulative)
    values = np.diff(integral) / (sampling_rate / strap_rate_hz)
    # Input sample j stands for time j / sampling_rate, the start of its own period; the
    # window of strap sample 0 is [0, 1/rate) in input periods, centred half an input period early.
    t0_s = 0.5 / strap_rate_hz - 0.5 / sampling_rate
    return values, t0_s


def check_signal_magnitude(signal: npt.NDArray[np.float64]) -> None:
    """InputError when the bulk of ``signal`` lies beyond MAX_SIGNAL_MAGNITUDE (one wild sample is fine)."""
    if len(signal) == 0 or not np.isfinite(signal).all():
        raise InputError("a respiration signal needs finite values (missing samples are filled in before this)")
    p_lo, p_hi = quantiles(signal, (0.5 / 100, 99.5 / 100))
    if not max(abs(p_lo), abs(p_hi)) <= MAX_SIGNAL_MAGNITUDE:
        raise InputError(
            f"values reach {p_lo:.3g} .. {p_hi:.3g} (central 99 %): too large for a respiration "
            f"signal (beyond ±{MAX_SIGNAL_MAGNITUDE:.0e})"
        )


def _saturated(signal: npt.NDArray[np.float64], sampling_rate: float) -> npt.NDArray[np.float64]:
    """``signal`` with samples beyond FRONT_END_FENCE x the fitted central 99 % span outside it cut to that fence,
    far outside the converter's range: a strap sample averaging up to ~80 input samples (a 2 kHz input for a 25 Hz
    strap) that holds such a glitch still clips at the rail, and every other sample is unchanged."""
    check_signal_magnitude(signal)  # the model's sums would overflow (an input check: it sets no output)
    p_lo, p_hi = quantiles(_fit_window(signal, sampling_rate), (0.5 / 100, 99.5 / 100))
    fence = FRONT_END_FENCE * max(p_hi - p_lo, 1e-12 * max(abs(p_lo), abs(p_hi), 1.0))
    return np.clip(signal, p_lo - fence, p_hi + fence)


def _fit_window(values: npt.NDArray[np.float64], sampling_rate: float) -> npt.NDArray[np.float64]:
    """The start of ``values`` the front end is fitted to: the first FIT_S seconds, unless the strap is not yet on a
    chest there. Flat (a glitch or two do not count as movement): up to the end of the first FIT_S-long block in
    which it moves. Sensor noise: up to the end of the first FIT_S-long block within LEAD_IN_SEARCH_S after it whose
    bulk is wider than the whole scale fitted to the noise would be (that breathing would clip at the rails)."""
    step = max(1, round(FIT_S * sampling_rate))
    n = step
    while n < len(values) and _flat(values[:n]):
        n += step
    scale = _bulk_span(values[:n]) * (1 + 2 * HEADROOM_SPANS)
    search = round(LEAD_IN_SEARCH_S * sampling_rate)
    for end in range(n + step, n + search + 1, step):
        if end - step >= len(values):
            break
        if _bulk_span(values[end - step : end]) > scale:
            return values[:end]
    return values[:n]


def _bulk_span(values: npt.NDArray[np.float64]) -> float:
    """Where the middle 80 % of ``values`` lie: a movement burst of a few seconds in 30 s does not widen it (with
    the 0.5-99.5 % range, a review found a 3 s burst at 40 s taking the gain: half the later breaths were lost)."""
    p_lo, p_hi = quantiles(values, (0.1, 0.9))
    return p_hi - p_lo


def _flat(values: npt.NDArray[np.float64]) -> bool:
    """The central 99 % of ``values`` does not move beyond float rounding (a constant input's box means differ in the
    last bits; a few glitches on a flat line are left out as they are when the gain is set)."""
    p_lo, p_hi = quantiles(values, (0.5 / 100, 99.5 / 100))
    return bool(p_hi - p_lo <= 1e-9 * max(abs(p_lo), abs(p_hi), 1e-300))


def adc_quantize(values: npt.NDArray[np.float64], strap_rate_hz: float) -> tuple[npt.NDArray[np.int64], float]:
    """Map the fitted range (the first FIT_S seconds, glitches left out) plus headroom onto 14-bit counts, clip,
    scale to u16.

    Returns the counts and the input units per 14-bit count (the detector's internal scale).
    """
    window = _fit_window(values, strap_rate_hz)
    lo, hi = _working_range(window)
    span = hi - lo
    if _flat(window) or not span > 0:  # a constant input (box means differ in the last bits): no noise at full scale
        span = max(abs(lo), abs(hi), 1.0)
    full_lo = lo - HEADROOM_SPANS * span
    full_span = span * (1 + 2 * HEADROOM_SPANS)
    scaled = np.round((values - full_lo) / full_span * SAMPLE_MAX_COUNTS)
    counts14: npt.NDArray[np.int64] = np.clip(scaled, 0, SAMPLE_MAX_COUNTS).astype(np.int64)
    # read_u16() scales to 16 bits by bit replication (4095 -> 65535), and so does the mean of four: a rail stays a
    # rail, 16383 -> 65535.
    return (counts14 << 2) | (counts14 >> 12), full_span / SAMPLE_MAX_COUNTS


def _working_range(values: npt.NDArray[np.float64]) -> tuple[float, float]:
    """The range of ``values``, but a few wild samples (a glitch to zero, a spike of 1e4) do not set the gain:
    samples further than OUTLIER_FENCE x the central 99 % span outside it are left to clip at the rail, as on
    a real converter, and the range is that of the others."""
    p_lo, p_hi = quantiles(values, (0.5 / 100, 99.5 / 100))  # np.percentile(values, (0.5, 99.5))
    fence = OUTLIER_FENCE * (p_hi - p_lo)
    inside = values[(values >= p_lo - fence) & (values <= p_hi + fence)]
    return float(np.min(inside)), float(np.max(inside))


def simulate_adc(signal: npt.NDArray[np.float64], sampling_rate: float, strap_rate_hz: int) -> StrapSignal:
    """A recording sampled at ``sampling_rate`` Hz as a strap sampling at ``strap_rate_hz`` would report it."""
    values, t0_s = adc_resample(signal, sampling_rate, strap_rate_hz)
    counts, units_per_count14 = adc_quantize(values, strap_rate_hz)
    return StrapSignal(counts, strap_rate_hz, t0_s, units_per_count14)
