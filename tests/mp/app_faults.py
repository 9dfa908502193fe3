# ruff: noqa: UP031  (runs under MicroPython)
# firmware/main.py as app_ble.py runs it, plus the parts and faults a plan asks for (kept out of app_harness.py,
# whose size counts in bench/bench_firmware.py's heap figures):
#   "flash_ms": each settings write blocks the interpreter this long, timers included (littlefs on an ESP32);
#   "drv2605_fails_at_ms": a DRV2605L on the bus whose I2C fails from then on (a loose connector);
#   "lps22": an LPS22 on the bus; its ODR code and the driver's baseline shift are said on stderr at the end;
#   "sagging_battery_mv": [[t_ms, mV], ...] with "battery_sag_mv": the cell reads that much lower while the motor pin
#   is driven.
#   micropython app_faults.py PLAN.json
import json
import sys

import config
import machine
from app_harness import main_entry

plan = json.load(open(sys.argv[1]))

if plan.get("flash_ms"):
    import settings

    _save = settings.Settings.save

    def _blocking_save(self):
        machine.sim._now_ms += plan["flash_ms"]  # nothing scheduled runs meanwhile
        return _save(self)

    settings.Settings.save = _blocking_save

if "drv2605_fails_at_ms" in plan:
    from ble_central import _At
    from i2c_parts import Drv2605Sim

    machine.sim.attach_i2c(config.DRV2605_ADDR, Drv2605Sim())
    machine.sim._timers.append(
        _At(plan["drv2605_fails_at_ms"], lambda: machine.sim.fail_i2c(config.DRV2605_ADDR, 10**9))
    )

left_on = None
if plan.get("motor_left_on"):
    # A reset by software left a DRV2605L playing at its last level (it keeps it through any reset of the ESP32).
    from i2c_parts import Drv2605Sim

    left_on = Drv2605Sim()
    left_on.write(Drv2605Sim.MODE, b"\x05")  # out of standby, real-time playback
    left_on.write(Drv2605Sim.CONTROL3, b"\xa8")  # unsigned levels
    left_on.write(Drv2605Sim.RTP_INPUT, b"\xc8")
    machine.sim.attach_i2c(config.DRV2605_ADDR, left_on)

if "sagging_battery_mv" in plan:
    import battery_sag  # only when asked: this script's own code shares the heap with the firmware's

    battery_sag.install(plan["sagging_battery_mv"], plan["battery_sag_mv"])

lps22 = None
if plan.get("lps22"):
    from i2c_parts import Lps22Sim

    lps22 = Lps22Sim()
    machine.sim.attach_i2c(config.LPS22_ADDR, lps22)

import strap.app  # noqa: E402

apps = []
_run = strap.app.App.run


def _keep(app):
    apps.append(app)
    _run(app)


strap.app.App.run = _keep
main_entry()
if left_on is not None:
    sys.stderr.write("drv2605 timeline %r\n" % (left_on.timeline,))
if lps22 is not None:
    sys.stderr.write("lps22: odr code %d, baseline shift %d\n" % (lps22.odr_code(), apps[0].hw.sensor._base_shift))
