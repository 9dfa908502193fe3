"""Haptic outputs and the hardware off-timer that backs up core/haptics.py's limits.

- ``PwmMotor`` (default): coin ERM driven from VBAT through a low-side logic-level N-MOSFET,
  gate on a PWM pin (20 kHz, above hearing), flyback Schottky across the motor. An LRA
  needs an AC drive at its resonance, which a single MOSFET cannot make: use the DRV2605L.
- ``Drv2605Motor``: TI DRV2605L over I2C in real-time-playback (RTP) mode, ERM open loop;
  its overdrive clamp is set from the motor's rated voltage, a hardware intensity ceiling
  independent of the firmware. In standby between pulses (a few uA).
- ``NullMotor``: haptics disabled or the configured driver missing.

All expose ``set_pct(pct)`` (0..100, PWM duty or drive amplitude) and ``off()``, and skip
bus writes when the level does not change.

``GuardedMotor`` applies the core's duty and arms a one-shot ``machine.Timer`` for the
core's ``off_by_ms``: if the control loop stalls (or a pulse end is reached between ticks)
the timer callback switches the motor off on time. On the ESP32 port machine.Timer callbacks
are soft (scheduled), so an I2C write in the callback is allowed. If the interpreter itself
hangs, the hardware WDT resets the chip and the gate pull-down keeps the MOSFET off.
"""

from core.haptics import ticks_diff

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


class NullMotor:
    kind = "none"

    def __init__(self):
        self.level_pct = 0

    def set_pct(self, pct):
        self.level_pct = 0

    def off(self):
        self.level_pct = 0


class PwmMotor:
    kind = "erm_pwm"

    def __init__(self, pwm):
        self._pwm = pwm
        self.level_pct = -1
        self.off()

    def set_pct(self, pct):
        if pct < 0:
            pct = 0
        elif pct > 100:
            pct = 100
        if pct != self.level_pct:
            self.level_pct = pct
            self._pwm.duty_u16(pct * 65535 // 100)

    def off(self):
        self.set_pct(0)


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
                if self.level_pct == 0:
                    self._write(_MODE, _MODE_RTP)
                self._write(_RTP_INPUT, pct * 255 // 100)
            self.level_pct = pct
        except OSError:
            self.errors += 1  # retried on the next change; the level stays unknown
            self.level_pct = -1

    def off(self):
        self.set_pct(0)


class GuardedMotor:
    """A motor plus its off-timer. ``step(haptics, now_ms)`` is one control-loop tick."""

    def __init__(self, motor, timer):
        self.motor = motor
        self.timer = timer
        self.forced_off = 0
        self._armed = False
        self._cb = self._force_off  # bound once: no allocation when arming

    def apply(self, duty_pct, guard_ms):
        """Set ``duty_pct``; if on, the timer forces it off after ``guard_ms``."""
        if duty_pct > 0 and guard_ms > 0:
            self.timer.init(mode=self.timer.ONE_SHOT, period=guard_ms, callback=self._cb)
            self._armed = True
            self.motor.set_pct(duty_pct)
        else:
            if self._armed:
                self.timer.deinit()
                self._armed = False
            self.motor.set_pct(0)

    def step(self, haptics, now_ms):
        """Tick the core, apply its duty with the guard; returns the next tick time (ms)."""
        duty = haptics.tick(now_ms)
        self.apply(duty, ticks_diff(haptics.off_by_ms(now_ms), now_ms))
        return haptics.deadline_ms(now_ms)

    def _force_off(self, _timer):
        self._armed = False
        if self.motor.level_pct != 0:
            self.forced_off += 1
        self.motor.off()
