# ruff: noqa: UP031  (%-formatting: this runs under MicroPython)
"""A virtual strap: firmware/main.py, UNMODIFIED, in real time on the doubles, bridged to a parent.

    MICROPYPATH=host/breathsync/mp/doubles:firmware:.frozen \\
        micropython -X heapsize=512K host/breathsync/mp/virtual_strap.py CONFIG.json

Started by ``breathsync.sim.VirtualStrap`` (BLE, through ``bridge_link.py`` on stdin/stdout) or by
a test (wired mode: stdin/stdout are a pseudo-terminal, the firmware frames packets itself; blocking
or not: like the device, whose stdin readinto() waits until its whole buffer is full (MicroPython
#8772), the firmware reads one byte per call).

CONFIG (JSON) keys:
  counts       file of u16 little-endian ADC counts, one per strap sample (required)
  loop         true: start the file again when it ends (default); false: hold the last value
  settings     path of the firmware's settings file (the parent writes role, name, rate, wired)
  drift_ppm    the sampling clock's error (> 0: faster than nominal); default 0
  battery_mv   battery voltage seen by the gauge (default 3900)
  feed_start   the feed's first count (a reboot of a strap whose wearer breathed on meanwhile); default 0
  feed_rate_hz the rate the counts were made for: a strap set to another rate (SET_RATE) holds or skips counts
               so that the wearer breathes at the same pace; default 0: one count per sample at any rate
  mac          12 hex digits: the radio's MAC (serial number, Bumble address); default the double's
  tx_slots, enomem_pct, seed   the bridge link's transmit queue (see bridge_link.py)
  wired        true: no bridge (the settings file must also say "wired": true: main.py decides)
  seconds      stop after this long (real time); default: until the parent says quit or goes away
  report       path: a JSON summary is written there at exit (also sent as the bridge's ``Z``)

Timing model (realtime.py): everything runs on the real monotonic clock. The machine double's
sampling Timer fires from the asyncio poll loop at exact multiples of its period scaled by
``drift_ppm`` (late by at most one scheduler step, never skipped); the ADC is fed one value of
``counts`` per sample (4 oversampled reads of the same value), so sample counter i carries
counts[i mod len] exactly, whatever the timing, while the strap samples at the feed's rate. At another
rate each sample takes the count due at its time (counts held at a faster rate, skipped at a slower).
asyncio sleeps and ticks_ms() are the host's real clock (not drifted): only the sample clock carries
the crystal error, which is what a host sees through the sample counters.

Stdout carries binary frames (BLE mode) or wired frames: nothing else may be printed there. Every
uncaught error is written to stderr and the exit status is 1. A watchdog reset (or machine.reset()
after a crash) ends the run with outcome "reset: ..."; a reboot is the parent's job
(``VirtualStrap.reboot()`` starts this script again on the same radio).
"""

import json
import sys

import machine
import realtime

OVERSAMPLE = 4  # drivers.sensors.AnalogStretch default: 2**2 ADC reads per sample
# A virtual strap runs for hours: the machine double keeps only the newest PWM changes and WDT feeds (a list
# grown without end needed ever larger blocks of this heap: a MemoryError after ~20 min of nudges at 10x).
machine.RECORD_MAX = 256


class StrapDone(SystemExit):
    """The configured run time is over."""


class _End:
    """A one-shot event in machine.sim's queue (real time) that ends the run."""

    def __init__(self, due_us):
        self._due_us = due_us
        self._due_ms = due_us // 1000

    def _fire(self):
        raise StrapDone("time is up")


def feed_adc(path, gpio, loop, start=0, feed_rate_hz=0, rate_now=None):
    """ADC source streaming u16 counts from ``path`` from count ``start`` on; OVERSAMPLE reads per sample see one
    value. With ``feed_rate_hz`` and ``rate_now()`` (the strap's sampling rate) the counts play at their own pace
    whatever the strap's rate: owed counts accrue ``feed_rate_hz`` per sample, one count per ``rate_now()``."""
    f = open(path, "rb")
    f.seek(2 * start)
    buf = bytearray(512)
    state = {"reads": 0, "value": 32768, "samples": 0, "pos": 0, "n": 0, "wraps": 0, "fed": 0, "owed": 0}

    def refill():
        n = f.readinto(buf)
        if not n and loop:
            f.seek(0)
            state["wraps"] += 1
            n = f.readinto(buf)
        state["n"] = n or 0
        state["pos"] = 0

    def take():
        if state["pos"] + 1 >= state["n"]:
            refill()
        if state["pos"] + 1 < state["n"]:
            i = state["pos"]
            state["value"] = buf[i] | (buf[i + 1] << 8)
            state["pos"] = i + 2
            state["fed"] += 1

    def source():
        if state["reads"] % OVERSAMPLE == 0:
            rate = rate_now() if rate_now is not None else 0
            if not feed_rate_hz or not rate or rate == feed_rate_hz or not state["samples"]:
                take()  # (the first sample takes the first count, whatever the rates)
            else:
                state["owed"] += feed_rate_hz
                while state["owed"] >= rate:
                    take()
                    state["owed"] -= rate
            state["samples"] += 1
        state["reads"] += 1
        return state["value"]

    machine.sim.set_adc_source(gpio, source)
    return state


def set_battery(cfg, mv):
    # VBAT through the divider; the ADC double maps u16 linearly onto 150..2450 mV.
    pin_mv = mv * cfg.BATTERY_DIVIDER_DEN // cfg.BATTERY_DIVIDER_NUM
    machine.sim.set_adc_source(cfg.PIN_BATTERY_ADC, [max(0, min(65535, (pin_mv - 150) * 65535 // 2300))])


def run(conf):
    realtime.use_real_time(conf.get("drift_ppm", 0))
    import config

    if "settings" in conf:
        config.SETTINGS_PATH = conf["settings"]
    state = {"app": None}
    feed = feed_adc(
        conf["counts"],
        config.PIN_SENSOR_ADC,
        conf.get("loop", True),
        conf.get("feed_start", 0),
        conf.get("feed_rate_hz", 0),
        lambda: state["app"].rate_hz if state["app"] is not None else 0,
    )
    set_battery(config, conf.get("battery_mv", 3900))
    import bluetooth

    if conf.get("mac"):
        bluetooth.radio.mac = bytes(int(conf["mac"][i : i + 2], 16) for i in range(0, 12, 2))
    link = None
    if not conf.get("wired"):
        from bridge_link import BridgeLink

        link = BridgeLink(
            sys.stdin.buffer,
            sys.stdout.buffer,
            tx_slots=conf.get("tx_slots", 4),
            enomem_pct=conf.get("enomem_pct", 0),
            seed=conf.get("seed", 1),
            info=lambda: summary(state, feed, link, "running"),
            on_battery=lambda mv: set_battery(config, mv),
        )
        bluetooth.radio.attach(link)

    # Live PWM changes (the haptic motor) go to the parent; the machine double keeps its timeline.
    record = machine.PWM._record

    def record_live(pwm, duty):
        realtime.sync()
        changed = pwm._duty != duty
        record(pwm, duty)
        if link is not None and changed:
            link.send_pwm(pwm.gpio, machine.sim.now_ms(), duty)

    machine.PWM._record = record_live

    # Capture the App for the summary (a seam of this script only: main.py is not changed).
    import strap.app

    original_run = strap.app.App.run

    def run_app(app):
        state["app"] = app
        original_run(app)

    strap.app.App.run = run_app
    if conf.get("seconds"):
        machine.sim._timers.append(_End(realtime.real_us() + int(conf["seconds"] * 1_000_000)))

    outcome = "done"
    try:
        import main  # noqa: F401  (runs the firmware until something ends it)
    except StrapDone:
        outcome = "done"
    except machine.DeviceReset as e:
        outcome = "reset: %s" % (e,)
    except SystemExit as e:  # BridgeQuit: the parent said quit or went away
        outcome = "quit" if "quit" in str(e) else "eof"
    report = summary(state, feed, link, outcome)
    text = json.dumps(report)
    if conf.get("report"):
        with open(conf["report"], "w") as f:
            f.write(text)
    if link is not None and outcome != "eof":
        try:
            link.send(ord("Z"), text.encode())
        except OSError:
            pass


def summary(state, feed, link, outcome):
    out = {"outcome": outcome, "t_ms": machine.sim.now_ms(), "fed": feed["fed"], "samples": feed["samples"]}
    out["wraps"] = feed["wraps"]
    app = state["app"]
    if app is not None:
        s = app.streamer
        out.update(
            {
                "head": app.ring.head(),
                "unread": app.sampler.unread(),
                "overflow": app.ring.overflow,
                "retries": s.retries,
                "sent": s.sent,
                "commands": app.commands_handled,
                "rate_hz": app.rate_hz,
                "overruns": app.sampler.overruns,
                "wdt_missed": app.wdt_missed,
                "haptic_stalls": app.haptics.stalls,
                "drift_ppm": machine.sim.drift_ppm,
            }
        )
    if link is not None:
        out.update(link.stats())
    import config

    out["pwm"] = machine.sim.pwm_timeline(config.PIN_MOTOR_PWM)
    return out


def main_entry():
    try:
        with open(sys.argv[1]) as f:
            conf = json.load(f)
        run(conf)
    except BaseException as e:  # noqa: BLE001  (stdout carries frames: report on stderr)
        sys.stderr.write("virtual_strap: %r\n" % (e,))
        sys.print_exception(e, sys.stderr)
        sys.exit(1)


main_entry()
