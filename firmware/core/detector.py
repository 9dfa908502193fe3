"""Causal fixed-point breath detector: the heart of the strap.

Pipeline per sample (integers only; every intermediate stays below 2**30 in magnitude, so it is
a small int on the ESP32 and never allocates):

1. ``xc = (adc_u16 >> 2) - 8192``: 16-bit counts to a centred 14-bit value.
2. Low-pass biquad (Q14, 2nd-order Butterworth, designed on the host by
   ``tools/design_filters.py``) with error feedback, so it has no dead band or limit cycle.
3. Baseline removal: ``d = y - EMA(y)``, a first-order high-pass well below 4 breaths/min.
4. Hysteresis extremum tracking: a peak (end of inhalation) is confirmed once ``d`` has
   fallen ``h`` below its running maximum, a trough (end of exhalation) once it has risen
   ``h`` above its running minimum. The extremum's time is the arg-max (arg-min) of the
   low-passed ``y`` over the same stretch: ``y``'s phase delay is nearly constant over the
   breathing band, whereas the high-pass's phase lead would pull slow breaths early. ``h`` is
   a fraction of the tracked breath amplitude, so the detector adapts to shallow or deep
   breathing and to any sensor gain. A peak must lie above the baseline or above the last
   breath's midpoint (half-way between its peak and trough), a trough below one of them: this
   rejects cardiac ripple riding on one flank, and the midpoint keeps the breaths that slow
   baseline wander has carried to the wrong side of the baseline.
5. Physiologic limits: a peak closer than the minimum breath interval to the previous one is
   discarded; while no breath is confirmed the amplitude estimate decays, so breathing that
   resumes shallower is found again. Outlier depths are clamped before they update it.

Events carry the sample index of the extremum itself (the low-pass phase delay is subtracted),
not the index at which it was confirmed; the confirming index is stored beside it.

The same integer algorithm exists twice: the portable generator below (its state lives in
locals allocated once, so the bytecode VM allocates nothing per sample, and CPython runs it
unchanged) and ``detector_viper`` for the device. Tests assert bit-identical events.
Sample indices are plain ints: at 50 Hz they leave the ESP32 small-int range after 248 days.
"""

from array import array

from .detector_coeffs import coeffs_for

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


# One event = EVENT_FIELDS ints in the output array.
EVENT_FIELDS = const(5)
EV_KIND = const(0)  # PEAK or TROUGH
EV_INDEX = const(1)  # sample index of the extremum
EV_DEPTH = const(2)  # 14-bit counts from the previous extremum (inhalation / exhalation depth)
EV_INTERVAL = const(3)  # samples since the previous event of the same kind, 0 for the first
EV_CONFIRMED = const(4)  # sample index at which the event was confirmed (emitted)

PEAK = const(1)
TROUGH = const(2)

# Coefficient tuple fields (tools/design_filters.py FIELDS).
COEFF_FIELDS = const(13)


def track_amplitude(amp, depth, amp_shift):
    """New amplitude estimate after a confirmed half-breath of ``depth`` counts.

    The first depth sets it; later ones below half of it are ignored (ripple) and ones above
    twice it are clamped (movement artefact) before a 1/2**amp_shift EMA step.
    """
    if amp == 0:
        return depth
    if depth > amp >> 1:
        if depth > amp << 1:
            depth = amp << 1
        amp += (depth - amp) >> amp_shift
    return amp


def hysteresis(amp, h_fraction_q8, h_min):
    h = (amp * h_fraction_q8) >> 8
    return h if h > h_min else h_min


def _portable(ctx):
    """Generator holding the detector state in its locals (allocated once, when created).

    ``ctx`` is ``[coeffs, events, io]``. Protocol: put the sample array in ``io[0]``,
    ``send(count)``; the generator processes ``io[0][0:count]``, writes events to ``events``
    (EVENT_FIELDS ints each) and yields how many it wrote. The chunk loop runs inside the
    generator, so nothing is allocated per call or per sample on MicroPython's bytecode VM.
    Work per sample is kept to the minimum: the hysteresis is recomputed only when the
    amplitude changes, and events are written in the (rare) branch that confirms them.
    """
    # The bytecode VM reaches locals 0-15 with one-byte opcodes and later ones with a longer
    # form: the per-sample variables are therefore named first, in order of use.
    y = 0
    x1 = 0
    x2 = 0
    y1 = 0
    y2 = 0
    xc = 0
    acc = 0
    base_q8 = 0
    d = 0
    n = 0
    err = 0
    ext_y = 0
    ext_d = 0
    i = 0
    samples = None
    coeffs = ctx[0]
    events = ctx[1]
    io = ctx[2]
    b0_q14 = coeffs[0]  # == coeffs[2]: a Butterworth low-pass numerator is symmetric
    b1_q14 = coeffs[1]
    a1_q14 = coeffs[3]
    a2_q14 = coeffs[4]
    base_shift = coeffs[5]
    delay = coeffs[6]
    min_interval = coeffs[7]
    decay_after = coeffs[8]
    decay_shift = coeffs[9]
    h_fraction_q8 = coeffs[10]
    h_min = coeffs[11]
    amp_shift = coeffs[12]

    count = yield 0
    while count <= 0:
        count = yield 0
    samples = io[0]
    # Start in steady state on the first sample: no filter transient, no false first breath.
    xc = (samples[0] >> 2) - 8192
    x1 = xc
    x2 = xc
    y1 = xc
    y2 = xc
    err = 0
    base_q8 = xc << 8
    base_warm_shift = 1
    n = 0
    seek_peak = 1
    ext_d = 0
    ext_n = 0
    ext_y = xc
    last_peak_n = -1
    last_trough_n = -1
    last_peak_d = 0
    last_trough_d = 0
    amp = 0
    h = h_min
    decay_at = decay_after
    written = 0
    while True:
        for i in range(count):
            xc = (samples[i] >> 2) - 8192
            acc = b0_q14 * (xc + x2) + b1_q14 * x1 - a1_q14 * y1 - a2_q14 * y2 + err
            y = acc >> 14
            err = acc & 16383  # error feedback: the truncated Q14 fraction goes into the next sample
            x2 = x1
            x1 = xc
            y2 = y1
            y1 = y
            # Warm-up: the EMA starts short and lengthens to base_shift (a running mean at first),
            # so the baseline settles within one breath instead of one time constant.
            if base_warm_shift < base_shift and n >= 1 << base_warm_shift:
                base_warm_shift += 1
            base_q8 += ((y << 8) - base_q8) >> base_warm_shift
            d = y - (base_q8 >> 8)
            if n > decay_at:  # no breath for a while: let the amplitude estimate shrink
                amp -= amp >> decay_shift
                h = hysteresis(amp, h_fraction_q8, h_min)

            if seek_peak:
                if y > ext_y:
                    ext_y = y
                    ext_n = n
                if d > ext_d:
                    ext_d = d
                elif ext_d - d >= h:
                    idx = ext_n - delay
                    # Above the baseline, or above the last breath's midpoint once there is one:
                    # wander the baseline has not followed can carry a whole breath below it.
                    # An extremum before the first sample (the delay reaches back past it) is the record's edge.
                    if (
                        idx >= 0
                        and (ext_d > 0 or (last_trough_n >= 0 and ext_d > (last_peak_d + last_trough_d) >> 1))
                        and (last_peak_n < 0 or idx - last_peak_n >= min_interval)
                    ):
                        depth = ext_d - last_trough_d
                        base = written * EVENT_FIELDS
                        events[base] = PEAK
                        events[base + 1] = idx
                        events[base + 2] = depth
                        events[base + 3] = idx - last_peak_n if last_peak_n >= 0 else 0
                        events[base + 4] = n
                        written += 1
                        last_peak_n = idx
                        last_peak_d = ext_d
                        seek_peak = 0
                        decay_at = n + decay_after
                        amp = track_amplitude(amp, depth, amp_shift)
                        h = hysteresis(amp, h_fraction_q8, h_min)
                    ext_d = d
                    ext_y = y
                    ext_n = n
            else:
                if y < ext_y:
                    ext_y = y
                    ext_n = n
                if d < ext_d:
                    ext_d = d
                elif d - ext_d >= h:
                    idx = ext_n - delay
                    # Below the baseline, or below the last breath's midpoint (as for peaks).
                    if idx >= 0 and (ext_d < 0 or (last_trough_n >= 0 and ext_d < (last_peak_d + last_trough_d) >> 1)):
                        depth = last_peak_d - ext_d
                        base = written * EVENT_FIELDS
                        events[base] = TROUGH
                        events[base + 1] = idx
                        events[base + 2] = depth
                        events[base + 3] = idx - last_trough_n if last_trough_n >= 0 else 0
                        events[base + 4] = n
                        written += 1
                        last_trough_n = idx
                        last_trough_d = ext_d
                        seek_peak = 1
                        decay_at = n + decay_after
                        amp = track_amplitude(amp, depth, amp_shift)
                        h = hysteresis(amp, h_fraction_q8, h_min)
                    ext_d = d
                    ext_y = y
                    ext_n = n
            n += 1
        count = yield written
        samples = io[0]
        written = 0


class BreathDetector:
    """The strap's breath detector, for one sensor at ``rate_hz`` (25 or 50).

    ``feed(samples, count)`` processes ``count`` u16 samples of the preallocated ``samples``
    array (``array('H')``) and returns how many events it wrote to ``self.events``,
    EVENT_FIELDS ints each; read them before the next ``feed``. One sample confirms at most one
    event, so ``max_chunk`` bounds ``count`` and sizes the event buffer once.

    ``fast=True`` uses the viper implementation where the port has one (the device), else the
    portable one (CPython, or ``fast=False``).
    """

    def __init__(self, rate_hz=25, max_chunk=32, fast=True):
        self.rate_hz = rate_hz
        self.max_chunk = max_chunk
        self.coeffs = coeffs_for(rate_hz)
        viper = None
        if fast:
            try:
                from . import detector_viper as viper
            except (ImportError, ValueError):  # CPython, a port without the native emitter, or an .mpy for another
                viper = None  # chip or MicroPython ('incompatible .mpy'): the portable one, not a reset at every boot
        self.fast = viper is not None
        if viper is not None:
            # One array: coefficients, the chunk capacity (the viper loop clamps to it, so a
            # wrong count can never write past the events), the state, then the event buffer.
            mem = array("i", [0] * viper.words(max_chunk))
            for k in range(COEFF_FIELDS):
                mem[k] = self.coeffs[k]
            mem[COEFF_FIELDS] = max_chunk
            self._mem = mem
            self.events = memoryview(mem)[viper.EVENTS_AT :]
            self._viper_feed = viper.feed
            # Bound once here; the small method keeps the VM frame on the C stack (no heap).
            self.feed = self._feed_viper
        else:
            self.events = array("i", [0] * (EVENT_FIELDS * max_chunk))
            self._io = [None]
            self._gen = _portable([self.coeffs, self.events, self._io])
            self._gen.send(None)
            self._send = self._gen.send

    def _feed_viper(self, samples, count):
        # As the portable path: samples past max_chunk would otherwise be skipped without a word.
        if count > self.max_chunk:
            raise ValueError("chunk larger than max_chunk")
        return self._viper_feed(self._mem, samples, count)

    def feed(self, samples, count):
        if count > self.max_chunk:
            raise ValueError("chunk larger than max_chunk")
        self._io[0] = samples
        return self._send(count)
