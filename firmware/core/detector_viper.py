"""Viper implementation of the breath detector (the device's fast path).

Bit for bit the algorithm of ``detector._portable``; read that first, this file only mirrors it
with machine-word locals. One ``array('i')`` holds the coefficients (copied in once), the state
and the event buffer, so a call converts only two buffers; everything per sample stays in
registers or the native stack frame.

Viper loads from ``ptr32`` zero-extend on 64-bit ports and sign-extend on the 32-bit ESP32;
``(v ^ sign) - sign`` with ``sign`` = 2**31 (built at run time) sign-extends correctly on both.
Importing this module fails on CPython (no ``micropython``); ``BreathDetector`` then uses the
portable path.
"""

import micropython
from micropython import const

_PEAK = const(1)
_TROUGH = const(2)
_EVENT_FIELDS = const(5)

# Words 0..12: the coefficient tuple (detector_coeffs FIELDS), 13: event capacity (max chunk).
COEFFS_AT = const(0)
CAPACITY_AT = const(13)
# State words.
_STARTED = const(14)
_X1 = const(15)
_X2 = const(16)
_Y1 = const(17)
_Y2 = const(18)
_ERR = const(19)
_BASE_Q8 = const(20)
_BASE_WARM_SHIFT = const(21)
_N = const(22)
_SEEK_PEAK = const(23)
_EXT_D = const(24)
_EXT_N = const(25)
_EXT_Y = const(26)
_LAST_PEAK_N = const(27)
_LAST_TROUGH_N = const(28)
_LAST_PEAK_D = const(29)
_LAST_TROUGH_D = const(30)
_AMP = const(31)
_H = const(32)
_DECAY_AT = const(33)
EVENTS_AT = const(34)  # then the event buffer: capacity x EVENT_FIELDS words


def words(capacity):
    """Length of the array ``feed`` works in, for a chunk capacity."""
    return EVENTS_AT + capacity * _EVENT_FIELDS


@micropython.viper
def feed(mem: ptr32, samples: ptr16, count: int) -> int:
    sign = 1
    sign <<= 31  # two statements: `1 << 31` would be folded into a big-int object on 32-bit targets
    b0_q14 = mem[0]  # == mem[2]: the Butterworth numerator is symmetric
    b1_q14 = mem[1]
    a1_q14 = (mem[3] ^ sign) - sign
    a2_q14 = mem[4]
    base_shift = mem[5]
    delay = mem[6]
    min_interval = mem[7]
    decay_after = mem[8]
    decay_shift = mem[9]
    h_fraction_q8 = mem[10]
    h_min = mem[11]
    amp_shift = mem[12]
    if count > mem[CAPACITY_AT]:  # never write past the event buffer
        count = mem[CAPACITY_AT]

    if mem[_STARTED] == 0:
        if count <= 0:
            return 0
        xc = (samples[0] >> 2) - 8192
        mem[_X1] = xc
        mem[_X2] = xc
        mem[_Y1] = xc
        mem[_Y2] = xc
        mem[_ERR] = 0
        mem[_BASE_Q8] = xc << 8
        mem[_BASE_WARM_SHIFT] = 1
        mem[_N] = 0
        mem[_SEEK_PEAK] = 1
        mem[_EXT_D] = 0
        mem[_EXT_N] = 0
        mem[_EXT_Y] = xc
        mem[_LAST_PEAK_N] = -1
        mem[_LAST_TROUGH_N] = -1
        mem[_LAST_PEAK_D] = 0
        mem[_LAST_TROUGH_D] = 0
        mem[_AMP] = 0
        mem[_H] = h_min
        mem[_DECAY_AT] = decay_after
        mem[_STARTED] = 1

    x1 = (mem[_X1] ^ sign) - sign
    x2 = (mem[_X2] ^ sign) - sign
    y1 = (mem[_Y1] ^ sign) - sign
    y2 = (mem[_Y2] ^ sign) - sign
    err = mem[_ERR]
    base_q8 = (mem[_BASE_Q8] ^ sign) - sign
    base_warm_shift = mem[_BASE_WARM_SHIFT]
    n = mem[_N]
    seek_peak = mem[_SEEK_PEAK]
    ext_d = (mem[_EXT_D] ^ sign) - sign
    ext_n = mem[_EXT_N]
    ext_y = (mem[_EXT_Y] ^ sign) - sign
    last_peak_n = (mem[_LAST_PEAK_N] ^ sign) - sign
    last_trough_n = (mem[_LAST_TROUGH_N] ^ sign) - sign
    last_peak_d = (mem[_LAST_PEAK_D] ^ sign) - sign
    last_trough_d = (mem[_LAST_TROUGH_D] ^ sign) - sign
    amp = mem[_AMP]
    h = mem[_H]
    decay_at = mem[_DECAY_AT]

    events = ptr32(uint(mem) + EVENTS_AT * 4)
    written = 0
    i = 0
    while i < count:
        xc = (samples[i] >> 2) - 8192
        i += 1
        acc = b0_q14 * (xc + x2) + b1_q14 * x1 - a1_q14 * y1 - a2_q14 * y2 + err
        y = acc >> 14
        err = acc & 16383
        x2 = x1
        x1 = xc
        y2 = y1
        y1 = y
        if base_warm_shift < base_shift:
            if n >= (1 << base_warm_shift):
                base_warm_shift += 1
        base_q8 += ((y << 8) - base_q8) >> base_warm_shift
        d = y - (base_q8 >> 8)
        if n > decay_at:
            amp -= amp >> decay_shift
            h = (amp * h_fraction_q8) >> 8
            if h < h_min:
                h = h_min

        if seek_peak:
            if y > ext_y:
                ext_y = y
                ext_n = n
            if d > ext_d:
                ext_d = d
            elif ext_d - d >= h:
                idx = ext_n - delay
                # Above the baseline or the last breath's midpoint, as in the portable path.
                above = ext_d > 0
                if last_trough_n >= 0:
                    if ext_d > ((last_peak_d + last_trough_d) >> 1):
                        above = True
                if above and idx >= 0 and (last_peak_n < 0 or idx - last_peak_n >= min_interval):
                    depth = ext_d - last_trough_d
                    base = written * _EVENT_FIELDS
                    events[base] = _PEAK
                    events[base + 1] = idx
                    events[base + 2] = depth
                    events[base + 3] = 0
                    if last_peak_n >= 0:
                        events[base + 3] = idx - last_peak_n
                    events[base + 4] = n
                    last_peak_n = idx
                    last_peak_d = ext_d
                    seek_peak = 0
                    written += 1
                    decay_at = n + decay_after
                    if amp == 0:  # track_amplitude() and hysteresis(), inline
                        amp = depth
                    elif depth > (amp >> 1):
                        if depth > (amp << 1):
                            depth = amp << 1
                        amp += (depth - amp) >> amp_shift
                    h = (amp * h_fraction_q8) >> 8
                    if h < h_min:
                        h = h_min
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
                below = ext_d < 0
                if last_trough_n >= 0:
                    if ext_d < ((last_peak_d + last_trough_d) >> 1):
                        below = True
                if below and idx >= 0:
                    depth = last_peak_d - ext_d
                    base = written * _EVENT_FIELDS
                    events[base] = _TROUGH
                    events[base + 1] = idx
                    events[base + 2] = depth
                    events[base + 3] = 0
                    if last_trough_n >= 0:
                        events[base + 3] = idx - last_trough_n
                    events[base + 4] = n
                    last_trough_n = idx
                    last_trough_d = ext_d
                    seek_peak = 1
                    written += 1
                    decay_at = n + decay_after
                    if amp == 0:  # track_amplitude() and hysteresis(), inline
                        amp = depth
                    elif depth > (amp >> 1):
                        if depth > (amp << 1):
                            depth = amp << 1
                        amp += (depth - amp) >> amp_shift
                    h = (amp * h_fraction_q8) >> 8
                    if h < h_min:
                        h = h_min
                ext_d = d
                ext_y = y
                ext_n = n
        n += 1

    mem[_X1] = x1
    mem[_X2] = x2
    mem[_Y1] = y1
    mem[_Y2] = y2
    mem[_ERR] = err
    mem[_BASE_Q8] = base_q8
    mem[_BASE_WARM_SHIFT] = base_warm_shift
    mem[_N] = n
    mem[_SEEK_PEAK] = seek_peak
    mem[_EXT_D] = ext_d
    mem[_EXT_N] = ext_n
    mem[_EXT_Y] = ext_y
    mem[_LAST_PEAK_N] = last_peak_n
    mem[_LAST_TROUGH_N] = last_trough_n
    mem[_LAST_PEAK_D] = last_peak_d
    mem[_LAST_TROUGH_D] = last_trough_d
    mem[_AMP] = amp
    mem[_H] = h
    mem[_DECAY_AT] = decay_at
    return written
