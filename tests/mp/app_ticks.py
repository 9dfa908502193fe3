# ruff: noqa: UP031  (%-formatting: this script runs under MicroPython)
# The strap app's tick arithmetic over days of uptime. strap.app imports MicroPython's time.ticks_ms, so this runs
# under the MicroPython unix port only (tests/test_firmware_app.py); prints "ok" when every check passes.

import sys

DAY_MS = 86_400_000
MASK_MS = 0x3FFFFFFF  # ticks_ms wraps at 2**30 ms on the ESP32 (12.4 days)


class _Box:
    pass


def check_sensor_state_after_days_of_uptime():
    # The 2 s warm-up after boot came back for 6.2 days out of every 12.4 (its deadline, compared across the ticks
    # wrap, read as ahead), and hid a railed sensor (SATURATED) as STARTING.
    from core.packets import SENSOR_OK, SENSOR_SATURATED, SENSOR_STARTING
    from strap.app import App

    strap = _Box()
    strap.hw = _Box()
    strap.hw.faults = 0
    strap.hw.sensor = _Box()
    strap.hw.sensor.errors = 0
    strap._sensor_errors = 0
    strap.rate_hz = 25
    boot = 5000
    strap._warm_until = (boot + 2000) | 1  # as App.main sets it
    strap._rail_run = 0
    assert App.sensor_state(strap, boot + 1000) == SENSOR_STARTING
    for days in (0, 0.5, 3, 6, 6.3, 9, 12, 12.5, 18.7):
        now = int(boot + 2001 + days * DAY_MS) & MASK_MS
        strap._rail_run = 0
        assert App.sensor_state(strap, now) == SENSOR_OK, days
        strap._rail_run = 100  # 4 s at an ADC rail: the cord unplugged or broken
        assert App.sensor_state(strap, now) == SENSOR_SATURATED, days


if __name__ == "__main__":
    try:
        check_sensor_state_after_days_of_uptime()
    except BaseException as e:
        sys.stderr.write("app_ticks: %r\n" % (e,))
        sys.exit(1)
    print("ok")
