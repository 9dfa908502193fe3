"""Hardware drivers and the one place that constructs them.

Nothing here touches a pin at import time. ``make_hardware(machine, settings, cfg)`` builds
every hardware object from config (pins) and settings (which sensor / motor) and returns them
in a ``Hardware`` record that the application passes on. ``machine`` is passed in too, so
tests hand in tests/doubles/machine.py and the firmware code runs unmodified.

A configured I2C part that does not answer is not fatal: the strap runs with a NullSensor /
NullMotor and reports the fault bits (FAULT_*) in its status. The I2C parts' drivers
(``lps22``, ``drv2605``) are imported only when the settings choose them.
"""

from core.haptics import Haptics

from .battery import BatteryGauge
from .haptic import GuardedMotor, NullMotor, PwmMotor
from .sensors import AnalogStretch, NullSensor

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


FAULT_SENSOR = const(1)  # configured sensor missing: NullSensor in use
FAULT_HAPTIC = const(2)  # configured haptic driver missing: NullMotor in use


class Hardware:
    """Everything the application needs from the board, created once.

    Defaults as class attributes, no methods: nothing in it refers back to this module, so main.py can let
    the constructors below go once the strap is built (their code is ~2 KB of heap)."""

    i2c = None
    sensor = None
    motor = None
    guard = None
    battery = None
    faults = 0


def make_i2c(machine, cfg):
    return machine.I2C(
        cfg.I2C_ID, scl=machine.Pin(cfg.PIN_I2C_SCL), sda=machine.Pin(cfg.PIN_I2C_SDA), freq=cfg.I2C_FREQ_HZ
    )


def make_sensor(machine, settings, cfg, i2c=None, sleep_us=None):
    """(sensor, fault bits) for settings 'sensor'."""
    kind = settings.get("sensor")
    if kind == "lps22":
        from .lps22 import Lps22Bladder  # on demand: a stretch-cord strap never loads it

        try:
            if i2c is None:
                i2c = make_i2c(machine, cfg)
            return (
                Lps22Bladder(
                    i2c,
                    addr=settings.get("lps22_addr"),
                    rate_hz=settings.get("rate_hz"),
                    gain_shift=settings.get("lps22_gain_shift"),
                    baseline_shift=cfg.LPS22_BASELINE_SHIFT,
                ),
                0,
            )
        except OSError:
            return NullSensor(), FAULT_SENSOR
    adc = machine.ADC(machine.Pin(cfg.PIN_SENSOR_ADC), atten=cfg.ADC_ATTEN_11DB)
    power = None
    if cfg.PIN_SENSOR_POWER >= 0:
        power = machine.Pin(cfg.PIN_SENSOR_POWER, machine.Pin.OUT, value=0)
    return AnalogStretch(adc, power_pin=power, sleep_us=sleep_us, settle_us=cfg.SENSOR_SETTLE_US), 0


def make_motor(machine, settings, cfg, i2c=None):
    """(motor, fault bits) for settings 'haptic' / 'haptic_enabled' / 'haptic_max_intensity_pct' (0: off too)."""
    if not settings.get("haptic_enabled") or not settings.get("haptic_max_intensity_pct"):
        return NullMotor(), 0
    if settings.get("haptic") == "drv2605":
        from .drv2605 import Drv2605Motor  # on demand, like the LPS22

        try:
            if i2c is None:
                i2c = make_i2c(machine, cfg)
            return Drv2605Motor(i2c, addr=cfg.DRV2605_ADDR, rated_mv=cfg.DRV2605_RATED_MV), 0
        except OSError:
            return NullMotor(), FAULT_HAPTIC
    pwm = machine.PWM(machine.Pin(cfg.PIN_MOTOR_PWM, machine.Pin.OUT, value=0), freq=cfg.MOTOR_PWM_FREQ_HZ, duty_u16=0)
    return PwmMotor(pwm), 0


def make_haptics(settings, cfg):
    """The pure haptic core with config limits, tightened by settings."""
    return Haptics(
        max_on_ms=settings.get("haptic_max_on_ms"),
        min_on_ms=cfg.HAPTIC_MIN_ON_MS,
        min_off_ms=cfg.HAPTIC_MIN_OFF_MS,
        max_off_ms=cfg.HAPTIC_MAX_OFF_MS,
        max_pulses=cfg.HAPTIC_MAX_PULSES,
        max_intensity_pct=settings.get("haptic_max_intensity_pct"),
        duty_window_ms=cfg.HAPTIC_DUTY_WINDOW_MS,
        duty_max_pct=settings.get("haptic_duty_max_pct"),
        stall_ms=cfg.HAPTIC_STALL_MS,
        host_silent_ms=settings.get("haptic_host_silent_ms"),
    )


def make_hardware(machine, settings, cfg, sleep_us=None):
    """Construct every hardware object (the WDT is left to the application: starting it is a decision)."""
    hw = Hardware()
    if settings.get("sensor") == "lps22" or (settings.get("haptic_enabled") and settings.get("haptic") == "drv2605"):
        hw.i2c = make_i2c(machine, cfg)
    hw.sensor, fault = make_sensor(machine, settings, cfg, i2c=hw.i2c, sleep_us=sleep_us)
    hw.faults |= fault
    hw.motor, fault = make_motor(machine, settings, cfg, i2c=hw.i2c)
    hw.faults |= fault
    hw.guard = GuardedMotor(hw.motor, machine.Timer(cfg.HAPTIC_TIMER_ID), cfg.HAPTIC_OFF_RETRY_MS)
    adc = machine.ADC(machine.Pin(cfg.PIN_BATTERY_ADC), atten=cfg.ADC_ATTEN_11DB)
    hw.battery = BatteryGauge(adc, cfg.BATTERY_DIVIDER_NUM, cfg.BATTERY_DIVIDER_DEN)
    return hw
