"""The developer at the console: leaving wired mode at boot, and Ctrl-C. Imported only when needed (heap).

- Wired mode disables Ctrl-C (a frame may contain 0x03). BOOT pressed at any moment of the first
  BOOT_BUTTON_WINDOW_MS keeps the REPL instead: read once, a press right after the reset would have to be
  timed to the millisecond, and held *through* the reset GPIO0 (a strapping pin) starts the ROM bootloader.
- Ctrl-C (mpremote before a deploy) stops the firmware. The hardware WDT cannot be stopped: it is fed from
  the sampling timer from then on, or it would reset the chip in the middle of the file copy.
"""

import time


def boot_button_pressed(machine, config, log):
    pin = machine.Pin(config.BOOT_BUTTON_GPIO, machine.Pin.IN, machine.Pin.PULL_UP)
    start = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), start) < config.BOOT_BUTTON_WINDOW_MS:
        if pin.value() == 0:
            log("BOOT pressed: not wired")
            return True
        time.sleep_ms(20)
    return False


def feed_watchdog_at_the_repl(machine, timer, wdt, config, log):
    """``timer`` (the sampler's) stops sampling and feeds ``wdt`` from now on (None: it never started)."""
    if wdt is None:
        timer.deinit()
    else:
        timer.init(mode=machine.Timer.PERIODIC, period=config.WDT_TIMEOUT_MS // 4, callback=lambda t: wdt.feed())
    log("Ctrl-C: stopped; WDT fed until reset")
