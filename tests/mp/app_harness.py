# ruff: noqa: UP031  (%-formatting: this runs under MicroPython)
# Runs firmware/main.py UNMODIFIED on the doubles (machine, bluetooth + TestCentral, time, select)
# under the MicroPython unix port, driven by a JSON plan that tests/test_firmware_app.py writes.
#
#   MICROPYPATH=host/breathsync/mp/doubles:firmware:tests/mp:.frozen micropython app_ble.py PLAN.json
#
# Plan keys: "counts" (file of u16 little-endian ADC counts, one per strap sample), "log" (binary
# record file, see ble_central.FileLog), "settings" (path main.py reads as its flash settings file),
# "actions" ([kind, t_ms, ...] in time order), "host" (reactive host logic on: START_STREAM on
# connect, then BACKFILL of every gap), "end_ms", "central" (TestCentral keyword arguments),
# "failed_activations" (the radio's first n active(True) calls raise OSError).
# Action kinds: connect [mtu], drop, disconnect, write [channel, hex], refuse [n], refuse_pct [pct],
# stall_sampler, block [ms], battery_mv [mv], note [text]. "boot_button_ms": BOOT pressed from then on.
#
# Nothing is printed on stdout except by the firmware in wired mode; errors go to stderr with exit 1.

import gc
import json
import struct
import sys

import bluetooth
import config
import machine
from ble_central import K_NOTE, FileLog, TestCentral

# Harness record kinds (beyond ble_central's 1..11).
K_WDT_FEED = 20
K_RESET = 21
K_SUMMARY = 22  # JSON
K_PWM = 23  # handle = gpio, data = <II time, duty_u16
K_MEM = 24  # handle = 0, data = <I gc.mem_free()
K_HOST = 25  # host logic decisions (text)

_REPORT_RESERVE = 3072  # bytes held during the run for the final summary (see run())
OVERSAMPLE = 4  # drivers.sensors.AnalogStretch default: 2**2 ADC reads per sample
U32 = 0xFFFFFFFF


class SimulationDone(SystemExit):
    """The plan's end: leaves asyncio.run and main.py like a power-off."""


class FeedLog:
    """Stands in for machine.sim.wdt_feeds (a list that would grow without bound)."""

    def __init__(self, log):
        self.log = log
        self.n = 0
        self.last = None

    def append(self, t_ms):
        self.n += 1
        self.last = t_ms
        self.log(K_WDT_FEED, t_ms, 0, b"")

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.last


def feed_adc(path, gpio):
    """ADC source streaming u16 counts from ``path``: OVERSAMPLE reads per sample see one value."""
    f = open(path, "rb")
    buf = bytearray(2)
    state = [0, 0, 0]  # reads, value, samples

    def source():
        if state[0] % OVERSAMPLE == 0:
            if f.readinto(buf) < 2:
                raise SimulationDone("recording exhausted")
            state[1] = buf[0] | (buf[1] << 8)
            state[2] += 1
        state[0] += 1
        return state[1]

    machine.sim.set_adc_source(gpio, source)
    return state


class Host:
    """The host's link logic, reduced to what the tests need (mirrors breathsync.link.stream).

    Tracks the highest live counter, the gaps below it and the last event index; on connect writes
    START_STREAM and then BACKFILLs every gap (and the events a link loss may have swallowed).
    """

    def __init__(self, central, log):
        self.c = central
        self.log = log
        r = central.radio
        base = "1291%04x-77c0-430f-a41b-024a72fc885e"
        self.h_samples = r.handle_of(base % 0x1001)
        self.h_event = r.handle_of(base % 0x1002)
        self.h_resp = r.handle_of(base % 0x1004)
        self.h_control = r.handle_of(base % 0x1009)
        self.s_end = 0
        self.gaps = []
        self.e_last = -1
        self.ev_recover = None
        self.tag = 0
        self.awaiting = None  # (tag, lo, hi) of a BACKFILL without its RESPONSE yet
        self.last_bf_ms = -10_000
        self.started = False
        self.lost = 0
        central.on_packet = self.packet
        central.on_disconnected = self.disconnected

    def note(self, text):
        self.log(K_HOST, self.c.now_ms(), 0, text.encode())

    def next_tag(self):
        self.tag = (self.tag + 1) & 0xFF
        return self.tag

    def connected(self):
        self.started = True
        self.awaiting = None
        self.c.write(self.h_control, bytes((0x19, self.next_tag(), 0x01)))
        if self.e_last >= 0 and self.e_last + 1 < self.s_end:
            self.ev_recover = (self.e_last + 1, self.s_end)
        self.c.after(100, self.tick)

    def disconnected(self, t):
        self.started = False
        self.awaiting = None

    def tick(self):
        if self.c.conn is None:
            return
        self.maybe_backfill()
        self.c.after(500, self.tick)

    def maybe_backfill(self):
        if not self.started or self.awaiting is not None or not self.c.link_up:
            return
        now = self.c.now_ms()
        if now - self.last_bf_ms < 500:
            return  # backfill data still arriving: the strap would answer BUSY
        if self.ev_recover is not None:
            lo, hi = self.ev_recover
        elif self.gaps:
            lo, hi = self.gaps[0]
        else:
            return
        tag = self.next_tag()
        self.awaiting = (tag, lo, hi)
        self.last_bf_ms = now
        self.c.write(self.h_control, struct.pack("<BBBII", 0x19, tag, 0x04, lo, hi))

    def fill(self, lo, hi):
        out = []
        for g in self.gaps:
            if hi <= g[0] or lo >= g[1]:
                out.append(g)
                continue
            if g[0] < lo:
                out.append([g[0], lo])
            if hi < g[1]:
                out.append([hi, g[1]])
        self.gaps = out

    def packet(self, t, handle, data):
        if handle == self.h_samples:
            c = struct.unpack_from("<I", data, 2)[0]
            n = (len(data) - 6) >> 1
            if c >= self.s_end:
                if c > self.s_end:
                    self.gaps.append([self.s_end, c])
                self.s_end = c + n
            else:
                self.last_bf_ms = t
                self.fill(c, c + n)
        elif handle == self.h_event:
            idx = struct.unpack_from("<I", data, 3)[0]
            if idx > self.e_last and idx < 0x80000000:
                self.e_last = idx
        elif handle == self.h_resp and self.awaiting is not None and data[1] == self.awaiting[0]:
            tag, lo, hi = self.awaiting
            self.awaiting = None
            result = data[4]
            if result == 0:
                v0, v1 = struct.unpack_from("<II", data, 5)
                if self.ev_recover is not None and lo == self.ev_recover[0]:
                    self.ev_recover = None
                if v0 > lo:
                    self.lost += v0 - lo
                    self.fill(lo, v0)  # overwritten on the strap: gone for good
            self.c.after(0, self.maybe_backfill)


def run(plan_path):
    plan = json.load(open(plan_path))
    log = FileLog(plan["log"])
    config.SETTINGS_PATH = plan["settings"]
    machine.sim.wdt_feeds = FeedLog(log)
    feed_adc(plan["counts"], config.PIN_SENSOR_ADC)
    if "battery_mv" in plan:
        set_battery(plan["battery_mv"])
    central = None
    if not plan.get("wired"):
        central = bluetooth.radio.attach(TestCentral(log=log, **plan.get("central", {})))
        bluetooth.radio.failed_activations = plan.get("failed_activations", 0)
    state = {"host": None, "app": None, "mem_min": None, "mem_start": None}

    # Capture the App and its heap at start (a test seam only: main.py is not changed).
    import strap.app

    original_run = strap.app.App.run

    def run_app(app):
        state["app"] = app
        gc.collect()
        state["mem_start"] = gc.mem_free()
        log(K_MEM, machine.sim.now_ms(), 0, struct.pack("<I", state["mem_start"]))
        original_run(app)

    strap.app.App.run = run_app

    def at(t, fn):
        if central is not None:
            central.at(t, fn)
        else:
            from ble_central import _At

            machine.sim._timers.append(_At(t, fn))

    def sample_mem():
        gc.collect()
        free = gc.mem_free()
        if state["mem_min"] is None or free < state["mem_min"]:
            state["mem_min"] = free
        at(machine.sim.now_ms() + 5000, sample_mem)

    at(2500, sample_mem)

    def end():
        raise SimulationDone("end")

    for action in plan.get("actions", []):
        at(action[1], make_action(action, central, plan, state, log))
    at(plan["end_ms"], end)
    if "boot_button_ms" in plan:  # the BOOT button pressed (and held) from this moment
        at(plan["boot_button_ms"], lambda: machine.sim.pins.__setitem__(config.BOOT_BUTTON_GPIO, 0))

    # The summary below (a dict of ~30 entries, its JSON) needs a few contiguous blocks once the
    # run is over, when a small heap is fragmented: keep them aside from the start (the firmware
    # runs with this much less heap, never more).
    reserve = bytearray(_REPORT_RESERVE)
    outcome = "done"
    try:
        import main  # noqa: F401  (runs the firmware)
    except SimulationDone:
        outcome = "done"
    except machine.DeviceReset as e:
        outcome = "reset"
        log(K_RESET, machine.sim.now_ms(), 0, str(e).encode())
    reserve = None  # noqa: F841
    gc.collect()
    summary = {"outcome": outcome, "t_ms": machine.sim.now_ms()}
    for gpio in (config.PIN_MOTOR_PWM,):
        for t, duty in machine.sim.pwm_timeline(gpio):
            log(K_PWM, t, gpio, struct.pack("<II", t, duty))
    app = state["app"]
    if app is not None:
        s = app.streamer
        summary.update(
            {
                "mem_start": state["mem_start"],
                "mem_min": state["mem_min"],
                "heap_total": gc.mem_free() + gc.mem_alloc(),
                "ring_capacity": app.ring.capacity,
                "event_capacity": app.events.capacity,
                "head": app.ring.head(),
                "overflow": app.ring.overflow,
                "retries": s.retries,
                "sent": s.sent,
                "responses_dropped": s.responses_dropped,
                "commands_dropped": app.commands.dropped,
                "commands_handled": app.commands_handled,
                "settings_status": app.settings_status,
                "rate_hz": app.rate_hz,
                "wdt_feeds": app.wdt_feeds,
                "wdt_missed": app.wdt_missed,
                "stalls": app.haptics.stalls,
                "host_timeouts": app.haptics.host_timeouts,
                "deferrals": app.haptics.deferrals,
                "forced_off": app.guard.forced_off,
                "sampler_overruns": app.sampler.overruns,
            }
        )
        if app.wired:
            summary["bad_frames"] = app.link.reader.bad_frames
            summary["frames_ignored"] = app.link.frames_ignored
    if central is not None:
        summary.update(
            {
                "accepted": central.accepted,
                "delivered": central.delivered,
                "lost": central.lost,
                "refused": central.refused,
            }
        )
    host = state["host"]
    if host is not None:
        summary["host_gaps"] = host.gaps
        summary["host_lost"] = host.lost
        summary["host_s_end"] = host.s_end
    log(K_SUMMARY, machine.sim.now_ms(), 0, json.dumps(summary).encode())
    log.close()


def set_battery(mv):
    # VBAT through the 1:2 divider; the ADC double maps u16 linearly onto 150..2450 mV.
    pin_mv = mv * config.BATTERY_DIVIDER_DEN // config.BATTERY_DIVIDER_NUM
    machine.sim.set_adc_source(config.PIN_BATTERY_ADC, [(pin_mv - 150) * 65535 // 2300])


def make_action(action, central, plan, state, log):
    kind = action[0]

    def act():
        t = machine.sim.now_ms()
        if kind == "connect":
            if central.connect(mtu=action[2] if len(action) > 2 else 23):
                if plan.get("host", True):
                    if state["host"] is None:
                        state["host"] = Host(central, log)
                    state["host"].connected()
            else:
                log(K_NOTE, t, 0, b"connect failed")
        elif kind == "drop":
            central.drop_link()
        elif kind == "disconnect":
            central.disconnect()
        elif kind == "write":
            central.write(
                central.radio.handle_of("1291%04x-77c0-430f-a41b-024a72fc885e" % (0x1000 | action[2])),
                bytes.fromhex(action[3]),
            )
        elif kind == "refuse":
            central.refuse(action[2])
        elif kind == "refuse_pct":
            central.refuse_pct = action[2]
        elif kind == "stall_sampler":
            for tm in list(machine.sim._timers):
                if getattr(tm, "id", None) == 0:
                    tm.deinit()
            log(K_NOTE, t, 0, b"sampling timer stopped")
        elif kind == "block":
            import time

            log(K_NOTE, t, 0, b"interpreter blocked")
            time.sleep_ms(action[2])
        elif kind == "battery_mv":
            set_battery(action[2])
        elif kind == "note":
            log(K_NOTE, t, 0, action[2].encode())

    return act


def main_entry():
    try:
        run(sys.argv[1])
    except BaseException as e:  # noqa: BLE001  (stdout may carry frames: report on stderr)
        sys.stderr.write("app_harness: %r\n" % (e,))
        sys.print_exception(e, sys.stderr)
        sys.exit(1)
