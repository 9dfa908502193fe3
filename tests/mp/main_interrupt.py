# ruff: noqa: UP031  (runs under MicroPython)
# firmware/main.py (BLE mode, doubles) interrupted by Ctrl-C as mpremote does before a deploy; then 30 s at the
# REPL while files are copied. Prints one JSON line: what the chip did meanwhile.
#   MICROPYPATH=host/breathsync/mp/doubles:firmware micropython main_interrupt.py
import json

import config
import machine
from ble_central import _At

config.SETTINGS_PATH = "/nonexistent/breathsync-settings.json"
machine.sim.set_adc_source(config.PIN_SENSOR_ADC, lambda: 30000)


def interrupt():
    raise KeyboardInterrupt


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
print(
    json.dumps(
        {
            "t_ms": t,
            "escaped": escaped,
            "resets": len(machine.sim.resets),
            "feeds_after": len(machine.sim.wdt_feeds) - feeds,
            "motor": line[-1][1] if line else 0,
        }
    )
)
