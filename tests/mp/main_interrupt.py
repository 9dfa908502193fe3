# ruff: noqa: UP031  (runs under MicroPython)
# firmware/main.py (BLE mode, doubles) interrupted by Ctrl-C as mpremote does before a deploy; then 30 s at the
# REPL while files are copied. Prints one JSON line: what the chip did meanwhile.
#   MICROPYPATH=host/breathsync/mp/doubles:firmware micropython main_interrupt.py
import json
import time

import config
import machine
from ble_central import _At

config.SETTINGS_PATH = "/nonexistent/breathsync-settings.json"
machine.sim.set_adc_source(config.PIN_SENSOR_ADC, lambda: 30000)


def interrupt():
    raise KeyboardInterrupt


# A nudge is playing when Ctrl-C comes: a 1 s pulse from 2900 ms (the App captured as it starts, a test seam).
import strap.app  # noqa: E402

_run = strap.app.App.run
app = []


def capture(self):
    app.append(self)
    _run(self)


strap.app.App.run = capture


def play():
    pulse = bytes.fromhex("1801" + "01" + "e803" + "0000" + "32")  # 1 pulse, 1000 ms on, 50 %
    app[0].handle_command(8, pulse, len(pulse), time.ticks_ms())  # the firmware's clock (the time double)


machine.sim._timers.append(_At(2900, play))
machine.sim._timers.append(_At(3000, interrupt))
escaped = False
try:
    import main  # noqa: F401  (runs the firmware until the interrupt; then it returns as to the REPL)
except KeyboardInterrupt:
    escaped = True  # the REPL gets it: the firmware left everything as it was
t = machine.sim.now_ms()
feeds = len(machine.sim.wdt_feeds)
machine.sim.raise_on_reset = False
machine.sim.advance_ms(30_000)
line = machine.sim.pwm_timeline(config.PIN_MOTOR_PWM)
on = [t for t, duty in line if duty > 0]
print(
    json.dumps(
        {
            "t_ms": t,
            "escaped": escaped,
            "resets": len(machine.sim.resets),
            "feeds_after": len(machine.sim.wdt_feeds) - feeds,
            "motor_on_ms": on[0] if on else None,
            "motor_off_ms": line[-1][0] if line and line[-1][1] == 0 else None,
        }
    )
)
