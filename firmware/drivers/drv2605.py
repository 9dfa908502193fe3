"""``Drv2605Motor``: the I2C haptic-driver alternative to the PWM motor (settings ``"haptic": "drv2605"``).

TI DRV2605L in real-time-playback (RTP) mode, ERM open loop; its overdrive clamp is set from the
motor's rated voltage, a hardware intensity ceiling independent of the firmware. In standby
between pulses (a few uA). Same interface as ``drivers.haptic.PwmMotor`` (``set_pct``, ``off``;
bus writes skipped when the level does not change). A module of its own so that a strap with the
default PWM motor never loads it (``drivers.make_motor`` imports it on demand).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


# DRV2605L registers (TI SLOS854).
_STATUS = const(0x00)
_MODE = const(0x01)
_RTP_INPUT = const(0x02)
_LIBRARY = const(0x03)
_OD_CLAMP = const(0x17)
_FEEDBACK = const(0x1A)
_CONTROL3 = const(0x1D)
_MODE_RTP = const(0x05)
_STANDBY = const(0x40)
_N_ERM_LRA = const(0x80)
_ERM_OPEN_LOOP = const(0x20)
_RTP_UNSIGNED = const(0x08)
_DRV_IDS = (3, 4, 6, 7)  # DRV2605, DRV2604, DRV2604L, DRV2605L
_OD_CLAMP_UV_PER_LSB = const(21220)  # ERM open loop: V = OD_CLAMP * 21.22 mV


class Drv2605Motor:
    kind = "drv2605"

    def __init__(self, i2c, addr=0x5A, rated_mv=3000):
        self._i2c = i2c
        self._addr = addr
        self._one = bytearray(1)
        dev = i2c.readfrom_mem(addr, _STATUS, 1)[0] >> 5
        if dev not in _DRV_IDS:
            raise OSError(19)  # ENODEV
        self.device_id = dev
        self._write(_MODE, 0x00)  # out of standby, internal trigger
        self._write(_FEEDBACK, i2c.readfrom_mem(addr, _FEEDBACK, 1)[0] & ~_N_ERM_LRA & 0xFF)
        self._write(_CONTROL3, i2c.readfrom_mem(addr, _CONTROL3, 1)[0] | _ERM_OPEN_LOOP | _RTP_UNSIGNED)
        clamp = rated_mv * 1000 // _OD_CLAMP_UV_PER_LSB
        self._write(_OD_CLAMP, clamp if clamp < 255 else 255)
        self._write(_LIBRARY, 1)
        self._write(_RTP_INPUT, 0)
        self._write(_MODE, _STANDBY | _MODE_RTP)
        self.errors = 0
        self.level_pct = 0

    def _write(self, reg, value):
        self._one[0] = value
        self._i2c.writeto_mem(self._addr, reg, self._one)

    def set_pct(self, pct):
        if pct < 0:
            pct = 0
        elif pct > 100:
            pct = 100
        if pct == self.level_pct:
            return
        try:
            if pct == 0:
                self._write(_RTP_INPUT, 0)
                self._write(_MODE, _STANDBY | _MODE_RTP)
            else:
                if self.level_pct <= 0:  # in standby, or unknown after a failed write: wake it
                    self._write(_MODE, _MODE_RTP)
                self._write(_RTP_INPUT, pct * 255 // 100)
            self.level_pct = pct
        except OSError:
            self.errors += 1  # retried on the next change; the level stays unknown
            self.level_pct = -1

    def off(self):
        self.set_pct(0)
