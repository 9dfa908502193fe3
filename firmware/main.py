"""breathsync strap entry point: the one place that creates hardware objects.

Builds, in order: the settings from flash, the board's drivers (sensor, motor + off-timer,
battery gauge), the radio or the serial port, the sampling timer and the hardware watchdog;
hands them to ``strap.app.App`` and runs it. No other module touches a pin or the radio when
imported. Tests run this file unmodified under the MicroPython unix port with doubles of
``machine``, ``bluetooth``, ``time`` and ``select`` on MICROPYPATH.

Wired mode (settings ``"wired": true``): packets go framed over the USB serial port instead of
BLE; the console's Ctrl-C is disabled (a frame may contain 0x03), so to get the REPL back press
RESET, release it, then press and hold BOOT (``config.BOOT_BUTTON_GPIO``) for two seconds: wired
mode is skipped for that boot. (BOOT held *during* the reset starts the ROM bootloader instead:
GPIO0 is a strapping pin.)
"""

import gc
import sys

import config
import machine
from micropython import const
from settings import Settings

_SAMPLE_TIMER_ID = const(0)  # HAPTIC_TIMER_ID (1) is the motor's off-timer
_DRV2605_MODE = const(0x01)  # the DRV2605L's mode register: 0x40 is standby
_DRV2605_STANDBY = b"\x40"


_frames_on_the_port = [False]  # known once the settings say wired (and BOOT was not held)


def _log(message):
    sys.stderr.write(message + "\n")


def _motor_off():
    """First of all. A reset by software (machine.reset, the watchdog's panic, a brown-out) restarts the CPU only: the
    PWM block and the pin's routing run on, so a pulse playing then went on through the boot until the motor's
    driver was made, seconds later (a hardware review). The pin to 0 at once; and a DRV2605L, which keeps its last
    level through any reset of the ESP32, to standby whatever the settings say (a strap whose settings now say PWM,
    or no haptics, never spoke to it again)."""
    machine.Pin(config.PIN_MOTOR_PWM, machine.Pin.OUT, value=0)
    try:
        i2c = machine.I2C(
            config.I2C_ID,
            scl=machine.Pin(config.PIN_I2C_SCL),
            sda=machine.Pin(config.PIN_I2C_SDA),
            freq=config.I2C_FREQ_HZ,
        )
        i2c.writeto_mem(config.DRV2605_ADDR, _DRV2605_MODE, _DRV2605_STANDBY)
    except OSError:
        pass  # no DRV2605L on this strap


def main():
    _motor_off()
    gc.collect()  # its bus and pins are garbage now: the rings find the heap as before (188 KB needed without this)
    try:
        parts = _boot()
    except Exception as e:  # noqa: BLE001  (no strap without its parts: say why, then start again)
        _boot_failed(e)
    else:
        _run(*parts)


def _boot_failed(error):
    """The motor is off (``_motor_off``, and nothing has driven it since); a reset is the one way back to a strap
    that advertises. Ctrl-C during the pause reaches the REPL (the stack is the developer's)."""
    if not _frames_on_the_port[0]:  # wired: the port carries frames only (docs/protocol.md 8)
        _log("breathsync: start-up failed, restarting in %d ms" % config.BOOT_RETRY_MS)
        sys.print_exception(error, sys.stderr)
    import time

    time.sleep_ms(config.BOOT_RETRY_MS)
    machine.reset()


def _boot():
    """Every part the App needs, built in order; any failure is a failed start-up (``_boot_failed``)."""
    settings = Settings(config.SETTINGS_PATH, config)
    settings.load()
    from strap.rings import make_rings

    rings = make_rings(settings.get("rate_hz"), config)  # first: the heap is still in one piece
    wired = settings.get("wired")
    if wired:
        from strap.console import boot_button_pressed

        wired = not boot_button_pressed(machine, config, _log)
    log = None if wired else _log
    _frames_on_the_port[0] = bool(wired)
    if log is not None and settings.load_status != 0:  # wired: the port carries frames only (docs/protocol.md 8)
        log(settings.load_message())
    from drivers import make_haptics, make_hardware

    try:
        machine.freq(config.CPU_FREQ_HZ)
    except ValueError:
        pass
    import time

    hw = make_hardware(machine, settings, config, sleep_us=time.sleep_us)
    haptics = make_haptics(settings, config)
    # Boot-only code: nothing built refers back to the drivers package's constructors, so their heap is freed.
    del make_haptics, make_hardware
    del sys.modules["drivers"]
    import asyncio

    from strap.cmdq import CommandQueue

    commands = CommandQueue()
    flag = asyncio.ThreadSafeFlag()
    if wired:
        import micropython
        from strap.wired import WiredLink

        micropython.kbd_intr(-1)
        link = WiredLink(sys.stdin.buffer, sys.stdout.buffer, commands, flag)
    else:
        import bluetooth
        from strap.ble import BleLink

        ble = bluetooth.BLE()
        ble.active(True)  # NimBLE: config("mac") raises OSError(ENODEV) while the radio is off
        mac = ble.config("mac")[1]
        serial = "".join("%02x" % b for b in mac)
        name = settings.get("name") or config.BLE_NAME_PREFIX
        info = ("breathsync", "BS-1", serial, config.BOARD, config.FIRMWARE_VERSION, "1.0")
        link = BleLink(
            bluetooth,
            ble,
            commands,
            flag,
            name,
            info,
            adv_interval_us=config.BLE_ADV_INTERVAL_MS * 1000,
            mtu=config.BLE_MTU_PREFERRED,
        )
    return settings, rings, hw, haptics, link, wired, log


def _run(settings, rings, hw, haptics, link, wired, log):
    from strap.app import App

    timer = machine.Timer(_SAMPLE_TIMER_ID)
    wdt = None
    try:  # the WDT starts in here: a Ctrl-C from the moment it runs must leave it fed
        wdt = machine.WDT(timeout=config.WDT_TIMEOUT_MS)
        App(config, settings, rings, hw, haptics, timer, wdt, link, wired=wired, log=log).run()
    except KeyboardInterrupt:  # Ctrl-C (mpremote before a deploy): motor and sampling off, back to the REPL
        hw.guard.apply(0, 0)
        from strap.console import feed_watchdog_at_the_repl

        feed_watchdog_at_the_repl(machine, timer, wdt, config, _log)
    except Exception as e:  # a crash: motor off, say why (not in wired mode), restart clean
        hw.guard.apply(0, 0)
        if log is not None:
            sys.print_exception(e, sys.stderr)
        machine.reset()


main()
