"""Viper implementation of the breath detector (the device's fast path).

Bit-for-bit the algorithm of ``detector._portable``; read that first, this file only mirrors it
with machine-word locals and the state in an ``array('i')``. Importing this module fails on
CPython (no ``micropython``), and ``BreathDetector`` then uses the portable path.

Viper loads from ``ptr32`` zero-extend on 64-bit ports and sign-extend on the 32-bit ESP32;
``(v ^ sign) - sign`` with ``sign`` = 2**31 (built at run time) sign-extends correctly on both, with no
constant larger than a small int.
"""

import micropython
from micropython import const

# State words (STATE_WORDS in detector.py must cover them).
_X1 = const(0)
_X2 = const(1)
_Y1 = const(2)
_Y2 = const(3)
_ERR = const(4)
_BASE_Q8 = const(5)
_N = const(6)
_SEEK_PEAK = const(7)
_EXT_D = const(8)
_EXT_N = const(9)
_LAST_PEAK_N = const(10)
_LAST_TROUGH_N = const(11)
_LAST_PEAK_D = const(12)
_LAST_TROUGH_D = const(13)
_AMP = const(14)
_LAST_EVENT_N = const(15)
_STARTED = const(16)
_EXT_Y = const(17)
_BASE_WARM_SHIFT = const(18)
STATE_USED = const(19)

_PEAK = const(1)
_TROUGH = const(2)
_EVENT_FIELDS = const(5)


def reset(state):
    for i in range(len(state)):
        state[i] = 0


@micropython.viper
def feed(state: ptr32, coeffs: ptr32, samples: ptr16, count: int, events: ptr32) -> int:
    # Two statements: the compiler would fold `1 << 31` into a big-int object on 32-bit targets.
    sign = 1
    sign <<= 31
    b0 = (coeffs[0] ^ sign) - sign
    b1 = (coeffs[1] ^ sign) - sign
    b2 = (coeffs[2] ^ sign) - sign
    a1 = (coeffs[3] ^ sign) - sign
    a2 = (coeffs[4] ^ sign) - sign
    base_shift = coeffs[5]
    delay = coeffs[6]
    min_interval = coeffs[7]
    decay_after = coeffs[8]
    decay_shift = coeffs[9]
    h_fraction_q8 = coeffs[10]
    h_min = coeffs[11]
    amp_shift = coeffs[12]
    if count > coeffs[13]:  # never write past the event buffer
        count = coeffs[13]

    if state[_STARTED] == 0 and count > 0:
        xc = (samples[0] >> 2) - 8192
        state[_X1] = xc
        state[_X2] = xc
        state[_Y1] = xc
        state[_Y2] = xc
        state[_ERR] = 0
        state[_BASE_Q8] = xc << 8
        state[_N] = 0
        state[_SEEK_PEAK] = 1
        state[_EXT_D] = 0
        state[_EXT_N] = 0
        state[_EXT_Y] = xc
        state[_BASE_WARM_SHIFT] = 1
        state[_LAST_PEAK_N] = -1
        state[_LAST_TROUGH_N] = -1
        state[_LAST_PEAK_D] = 0
        state[_LAST_TROUGH_D] = 0
        state[_AMP] = 0
        state[_LAST_EVENT_N] = 0
        state[_STARTED] = 1

    x1 = (state[_X1] ^ sign) - sign
    x2 = (state[_X2] ^ sign) - sign
    y1 = (state[_Y1] ^ sign) - sign
    y2 = (state[_Y2] ^ sign) - sign
    err = (state[_ERR] ^ sign) - sign
    base_q8 = (state[_BASE_Q8] ^ sign) - sign
    n = (state[_N] ^ sign) - sign
    seek_peak = state[_SEEK_PEAK]
    ext_d = (state[_EXT_D] ^ sign) - sign
    ext_n = (state[_EXT_N] ^ sign) - sign
    ext_y = (state[_EXT_Y] ^ sign) - sign
    base_warm_shift = state[_BASE_WARM_SHIFT]
    last_peak_n = (state[_LAST_PEAK_N] ^ sign) - sign
    last_trough_n = (state[_LAST_TROUGH_N] ^ sign) - sign
    last_peak_d = (state[_LAST_PEAK_D] ^ sign) - sign
    last_trough_d = (state[_LAST_TROUGH_D] ^ sign) - sign
    amp = (state[_AMP] ^ sign) - sign
    last_event_n = (state[_LAST_EVENT_N] ^ sign) - sign

    written = 0
    i = 0
    while i < count:
        xc = (samples[i] >> 2) - 8192
        acc = b0 * xc + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2 + err
        y = acc >> 14
        err = acc - (y << 14)
        x2 = x1
        x1 = xc
        y2 = y1
        y1 = y
        if base_warm_shift < base_shift and n >= (1 << base_warm_shift):
            base_warm_shift += 1
        base_q8 += ((y << 8) - base_q8) >> base_warm_shift
        d = y - (base_q8 >> 8)

        if n - last_event_n > decay_after:
            amp -= amp >> decay_shift
        h = (amp * h_fraction_q8) >> 8
        if h < h_min:
            h = h_min

        depth = -1
        kind = 0
        interval = 0
        idx = 0
        if seek_peak:
            if y > ext_y:
                ext_y = y
                ext_n = n
            if d > ext_d:
                ext_d = d
            elif ext_d - d >= h:
                idx = ext_n - delay
                if ext_d > 0 and (last_peak_n < 0 or idx - last_peak_n >= min_interval):
                    depth = ext_d - last_trough_d
                    kind = _PEAK
                    if last_peak_n >= 0:
                        interval = idx - last_peak_n
                    last_peak_n = idx
                    last_peak_d = ext_d
                    seek_peak = 0
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
                if ext_d < 0:
                    depth = last_peak_d - ext_d
                    kind = _TROUGH
                    if last_trough_n >= 0:
                        interval = idx - last_trough_n
                    last_trough_n = idx
                    last_trough_d = ext_d
                    seek_peak = 1
                ext_d = d
                ext_y = y
                ext_n = n
        if depth >= 0:
            base = written * _EVENT_FIELDS
            events[base] = kind
            events[base + 1] = idx
            events[base + 2] = depth
            events[base + 3] = interval
            events[base + 4] = n
            written += 1
            last_event_n = n
            if amp == 0:
                amp = depth
            elif depth > (amp >> 1):
                if depth > (amp << 1):
                    depth = amp << 1
                amp += (depth - amp) >> amp_shift
        n += 1
        i += 1

    state[_X1] = x1
    state[_X2] = x2
    state[_Y1] = y1
    state[_Y2] = y2
    state[_ERR] = err
    state[_BASE_Q8] = base_q8
    state[_N] = n
    state[_SEEK_PEAK] = seek_peak
    state[_EXT_D] = ext_d
    state[_EXT_N] = ext_n
    state[_EXT_Y] = ext_y
    state[_BASE_WARM_SHIFT] = base_warm_shift
    state[_LAST_PEAK_N] = last_peak_n
    state[_LAST_TROUGH_N] = last_trough_n
    state[_LAST_PEAK_D] = last_peak_d
    state[_LAST_TROUGH_D] = last_trough_d
    state[_AMP] = amp
    state[_LAST_EVENT_N] = last_event_n
    return written
