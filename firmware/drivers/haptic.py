"""Haptic outputs and the hardware off-timer that backs up core/haptics.py's limits.

- ``PwmMotor`` (default): coin ERM driven from VBAT through a low-side logic-level N-MOSFET,
  gate on a PWM pin (20 kHz, above hearing), flyback Schottky across the motor. An LRA
  needs an AC drive at its resonance, which a single MOSFET cannot make: use the DRV2605L.
- ``Drv2605Motor`` (``drivers/drv2605.py``, imported only when settings choose it): TI DRV2605L
  over I2C.
- ``NullMotor``: haptics disabled or the configured driver missing.

All expose ``set_pct(pct)`` (0..100, PWM duty or drive amplitude) and ``off()``, and skip
bus writes when the level does not change.

``GuardedMotor`` applies the core's duty and arms a one-shot ``machine.Timer`` for the
core's ``off_by_ms``: if the control loop stalls (or a pulse end is reached between ticks)
the timer callback switches the motor off on time. On the ESP32 port machine.Timer callbacks
are soft (scheduled), so an I2C write in the callback is allowed. An 'off' the driver did not
take (an I2C error: ``level_pct`` is then not 0) re-arms the same timer until it does, after
``retry_ms`` and then twice as long each time up to ``_RETRY_MAX_MS`` (each try on a stuck bus
blocks for the I2C timeout): after a pattern's end nothing else would touch the motor again. If the interpreter itself
hangs, the hardware WDT resets the chip; the PWM runs on through a reset by software, and main.py's first
statement drives the motor pin low.
"""

from core.haptics import ticks_diff

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


_RETRY_MAX_MS = const(320)


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


class GuardedMotor:
    """A motor plus its off-timer. ``step(haptics, now_ms)`` is one control-loop tick."""

    def __init__(self, motor, timer, retry_ms=20):
        self.motor = motor
        self.timer = timer
        self.retry_ms = retry_ms
        self._retry_next_ms = retry_ms
        self.forced_off = 0
        self.off_retries = 0
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
            self._retry_if_on()

    def step(self, haptics, now_ms):
        """Tick the core, apply its duty with the guard; returns the next tick time (ms)."""
        duty = haptics.tick(now_ms)
        self.apply(duty, ticks_diff(haptics.off_by_ms(now_ms), now_ms))
        return haptics.deadline_ms(now_ms)

    def _force_off(self, _timer):
        self._armed = False
        if self.motor.level_pct > 0:
            self.forced_off += 1
        elif self.motor.level_pct < 0:
            self.off_retries += 1  # an 'off' that failed before: this is its retry
        self.motor.off()
        self._retry_if_on()

    def _retry_if_on(self):
        if self.motor.level_pct == 0:
            self._retry_next_ms = self.retry_ms
        elif not self._armed:
            # Each try on a stuck I2C bus blocks for its timeout (50 ms): retries back off, or they would take most
            # of the loop's time, sampling's included.
            period = self._retry_next_ms
            self.timer.init(mode=self.timer.ONE_SHOT, period=period, callback=self._cb)
            self._armed = True
            self._retry_next_ms = period * 2 if period < _RETRY_MAX_MS // 2 else _RETRY_MAX_MS
