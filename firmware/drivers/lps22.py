"""``Lps22Bladder``: the I2C pressure-bladder alternative to the stretch cord (settings ``"sensor": "lps22"``).

ST LPS22HB/HH barometric sensor reading a small sealed air bladder under the strap (a pneumatic
belt, as used in psychophysiology labs). Why this part: it outputs compensated pressure directly
(24-bit, 4096 counts/hPa), so no 64-bit compensation maths (a BMP280 needs it: big ints on the
device); it has ODRs of 25/50/75 Hz and an on-chip low-pass; it draws ~12 uA; and unlike an
accelerometer it does not pick up the strap's own vibration motor, posture or speech as strongly.
See hardware/README.md. A module of its own so that a strap with the default stretch cord never
loads it (``drivers.make_sensor`` imports it on demand): code on the heap is the firmware's
largest cost after the rings.
"""

from .sensors import MID_COUNTS

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


# LPS22HB/HH registers (datasheet DocID027083 / DS12503).
_WHO_AM_I = const(0x0F)
_CTRL_REG1 = const(0x10)
_CTRL_REG2 = const(0x11)
_PRESS_OUT_XL = const(0x28)
_LPS22HB_ID = const(0xB1)
_LPS22HH_ID = const(0xB3)
_SWRESET = const(0x04)
_IF_ADD_INC = const(0x10)
_EN_LPFP = const(0x08)  # on-chip low-pass at ODR/9: anti-aliasing for our sampling
_BDU = const(0x02)  # block data update: the 3 pressure bytes come from one conversion
_ODR_50HZ = const(4)
_ODR_75HZ = const(5)


class Lps22Bladder:
    """LPS22 pressure in an air bladder, as u16 counts centred on a slow baseline.

    counts = 32768 + (p - baseline) >> gain_shift, clipped to 0..65535, with p in hPa/4096
    (1 count = 0.024 Pa at gain_shift 0: +-8 hPa of range, far more than a bladder swing).
    The baseline is an EMA over 2**baseline_shift samples at 25 Hz (82 s; one more bit at 50 Hz, the
    same time): it follows the weather and bladder creep, not breaths. The sensor runs at the next ODR
    above the strap rate (50 Hz for 25, 75 Hz for 50) so each read gets a fresh conversion; ``set_rate``
    follows a SET_RATE.
    """

    kind = "lps22"

    def __init__(self, i2c, addr=0x5D, rate_hz=25, gain_shift=0, baseline_shift=11):
        self._i2c = i2c
        self._addr = addr
        self._gain_shift = gain_shift
        self._base_shift_25hz = baseline_shift
        self._base_shift = baseline_shift
        self._buf = bytearray(3)
        self.errors = 0
        self._last = MID_COUNTS
        self._base_q6 = -1
        who = i2c.readfrom_mem(addr, _WHO_AM_I, 1)[0]
        if who != _LPS22HB_ID and who != _LPS22HH_ID:
            raise OSError(19)  # ENODEV: something else answers at this address
        self.whoami = who
        i2c.writeto_mem(addr, _CTRL_REG2, bytes((_IF_ADD_INC | _SWRESET,)))
        self._configure(rate_hz)

    def set_rate(self, rate_hz):
        """Sample at ``rate_hz`` from now (a SET_RATE); an I2C error counts in ``errors`` (STATUS: SENSOR_FAULT)."""
        try:
            self._configure(rate_hz)
        except OSError:
            self.errors += 1

    def _configure(self, rate_hz):
        # The ODR above the rate, and the baseline's time constant kept in seconds.
        odr = _ODR_50HZ if rate_hz <= 25 else _ODR_75HZ
        self._i2c.writeto_mem(self._addr, _CTRL_REG1, bytes(((odr << 4) | _EN_LPFP | _BDU,)))
        self._base_shift = self._base_shift_25hz + (0 if rate_hz <= 25 else 1)

    def read_u16(self):
        try:
            self._i2c.readfrom_mem_into(self._addr, _PRESS_OUT_XL, self._buf)
        except OSError:
            self.errors += 1
            return self._last
        b = self._buf
        p = b[0] | (b[1] << 8) | (b[2] << 16)
        if p & 0x800000:
            p -= 0x1000000
        # p < 2**23, so p << 6 < 2**29: a small int on the ESP32.
        if self._base_q6 < 0:
            self._base_q6 = p << 6
        else:
            self._base_q6 += ((p << 6) - self._base_q6) >> self._base_shift
        v = MID_COUNTS + ((p - (self._base_q6 >> 6)) >> self._gain_shift)
        if v < 0:
            v = 0
        elif v > 0xFFFF:
            v = 0xFFFF
        self._last = v
        return v
