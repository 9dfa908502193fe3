"""The strap application: one asyncio task per concern, joined with ``gather``.

Everything that touches hardware is passed in by main.py (the only place that creates
hardware objects); importing this module touches nothing.

Data flow::

    Timer ISR --(preallocated 128-sample buffer, flag every 100 ms)--> sample task
    sample task --> SampleRing (5 min)  --flag--> detect task --> BreathDetector --> EventRing
                                        --flag--> stream task --> Streamer --> link (BLE or wired)
    link IRQ / serial reader --> CommandQueue --flag--> control task --> RESPONSE, stream state,
                                                         haptics, settings
    haptic task: GuardedMotor.step() on the core's deadlines while a pattern plays
    status task (1 Hz): sensor state, battery, STATUS on change / every 10 s
    watchdog task (1 Hz): feeds the WDT only if every task made progress (or is idle-waiting)

Tasks:
- sampling: drains the ISR buffer into the ring; checks the ADC rails.
- detection: feeds new ring samples to the detector core; stores events with sample counters.
- streaming: ``Streamer.pump`` (pacing, ENOMEM retry, priorities, backfill).
- control: link events (connect / disconnect / MTU) and host commands, validated by
  ``packets.decode_command``; exactly one RESPONSE per command.
- haptics: the haptic core's control loop (GuardedMotor arms the off-timer each tick).
- status: STATUS and Battery Level.
- watchdog: see ``_watchdog_task``.
"""

import asyncio
import gc
from array import array
from time import ticks_ms

from core.detector import EV_CONFIRMED, EV_INDEX, EVENT_FIELDS, BreathDetector
from core.haptics import CLAMP_OFF, ticks_diff
from core.packets import (
    BAD_VALUE,
    BATTERY_UNKNOWN,
    BUSY,
    CH_HAPTIC,
    CH_RESPONSE,
    CH_STATUS,
    CMD_ARG0,
    CMD_ARG1,
    CMD_ARG2,
    CMD_ARG3,
    CMD_CHANNEL,
    CMD_FIELDS,
    CMD_OPCODE,
    CMD_TAG,
    FLAG_BACKFILLING,
    FLAG_HAPTIC_ACTIVE,
    FLAG_STREAMING,
    FLAG_WIRED,
    INTERNAL_ERROR,
    OK,
    OP_BACKFILL,
    OP_GET_STATUS,
    OP_IDENTIFY,
    OP_SET_NAME,
    OP_SET_RATE,
    OP_SET_ROLE,
    OP_START_STREAM,
    OP_STOP_STREAM,
    OP_TIME_SYNC,
    RESPONSE_BYTES,
    SENSOR_ABSENT,
    SENSOR_FAULT,
    SENSOR_OK,
    SENSOR_SATURATED,
    SENSOR_STARTING,
    STATUS_BYTES,
    decode_command,
    encode_response,
    encode_status,
)
from core.ringbuf import mod32

from .stream import CH_BATTERY, IDLE, Streamer

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


_CHUNK = const(32)  # samples per ring/detector batch
_T_SAMPLE = const(1)
_T_DETECT = const(2)
_T_STREAM = const(4)
_T_CONTROL = const(8)
_T_HAPTIC = const(16)
_T_STATUS = const(32)
_T_ALL = const(63)
WDT_FEED_MS = const(1000)
_STATUS_PERIOD_MS = const(1000)
_STATUS_EVERY_MS = const(10_000)  # STATUS while streaming, when nothing changed
_BATTERY_EVERY_MS = const(10_000)
_WARMUP_MS = const(2000)  # sensor STARTING after boot or a rate change
_RAIL_LO = const(16)
_RAIL_HI = const(65519)
# drivers' FAULT_* bits, not imported (main.py lets that package go after boot): tests/test_config.py keeps them equal
_FAULT_SENSOR = const(1)
_FAULT_HAPTIC = const(2)
# Identify pattern (docs/protocol.md 5.2): 3 x 100 ms on / 100 ms off at 60 %.
_IDENT_PULSES = const(3)
_IDENT_ON_MS = const(100)
_IDENT_OFF_MS = const(100)
_IDENT_PCT = const(60)
_ROLE_NAMES = ("unassigned", "therapist", "client")  # index = STATUS role code (packets.ROLE_*)


def _no_log(message):
    pass


class App:
    """The strap. ``rings`` = strap.rings.make_rings(); ``hw`` = drivers.Hardware; ``link`` = a
    BleLink or WiredLink (not started). Everything is built by main.py."""

    def __init__(self, cfg, settings, rings, hw, haptics, sample_timer, wdt, link, wired=False, log=None):
        self.cfg = cfg
        self.settings = settings
        self.hw = hw
        self.haptics = haptics
        self.guard = hw.guard
        self.wdt = wdt
        self.link = link
        self.wired = wired
        self.log = log if log is not None else _no_log
        self.fw_version = tuple(int(x) for x in cfg.FIRMWARE_VERSION.split("."))
        self.rate_hz = settings.get("rate_hz")
        self.role = _ROLE_NAMES.index(settings.get("role"))  # settings hold only these names
        # Flags: one waiter each.
        self._smp_flag = asyncio.ThreadSafeFlag()
        self._det_flag = asyncio.ThreadSafeFlag()
        self._str_flag = asyncio.ThreadSafeFlag()
        self._hap_flag = asyncio.ThreadSafeFlag()
        self.ctl_flag = link.flag
        self.commands = link.commands
        from .sampler import Sampler

        self.sampler = Sampler(sample_timer, hw.sensor, self._smp_flag)
        self._smp_chunk = array("H", bytes(2 * _CHUNK))
        self._det_chunk = array("H", bytes(2 * _CHUNK))
        self._rec = array("i", bytes(4 * EVENT_FIELDS))
        self._cmd = bytearray(20)
        self._out = [0] * CMD_FIELDS
        self._resp = bytearray(RESPONSE_BYTES)
        self._status_prev = bytearray(7)
        self.detector = BreathDetector(self.rate_hz, _CHUNK)
        self.ring, self.events = rings
        self.streamer = Streamer(self.ring, self.events, self.rate_hz)
        self._det_next = 0  # counter of the next sample for the detector
        self._det_base = 0  # counter of the detector's sample 0
        self._alive = 0
        self._idle = 0
        self.wdt_feeds = 0
        self.wdt_missed = 0
        self._rail_run = 0
        self._warm_until = 0  # while not 0: STARTING until then (0 once passed: kept for days, it would wrap ahead)
        self._sensor_errors = 0
        self._battery_pct = BATTERY_UNKNOWN
        self._battery_sent = -1
        self._battery_at = 0
        self._status_at = 0
        self._status_started = False
        self.settings_status = settings.load_status
        self.commands_handled = 0
        gc.collect()
        if hw.faults & _FAULT_HAPTIC:
            self.log("strap: haptic driver missing")
        elif hw.motor.kind == "none":
            self.log("strap: haptics off in the settings")
        self.log(
            "strap: %d Hz, ring %d samples (%d s), %d events, heap free %d"
            % (
                self.rate_hz,
                self.ring.capacity,
                self.ring.capacity // self.rate_hz,
                self.events.capacity,
                gc.mem_free() if hasattr(gc, "mem_free") else -1,
            )
        )

    # ---- entry ----
    def run(self):
        asyncio.run(self.main())

    async def main(self):
        now = ticks_ms()
        self._warm_until = (now + _WARMUP_MS) | 1
        self._battery_at = now
        self._status_at = now
        self.link.start()
        if self.wired:
            self.streamer.attach(self.link, now)
        self.sampler.start(self.rate_hz)
        tasks = [
            self._sample_task(),
            self._detect_task(),
            self._stream_task(),
            self._control_task(),
            self._haptic_task(),
            self._status_task(),
            self._watchdog_task(),
        ]
        if self.wired:
            tasks.append(self.link.read_task())
        await asyncio.gather(*tasks)

    # ---- sampling ----
    async def _sample_task(self):
        sampler = self.sampler
        ring = self.ring
        chunk = self._smp_chunk
        while True:
            await self._smp_flag.wait()
            while True:
                n = sampler.drain(chunk, _CHUNK)
                if n == 0:
                    break
                ring.push_many(chunk, n)
                self._check_rails(chunk, n)
            self._alive |= _T_SAMPLE
            self._det_flag.set()
            self._str_flag.set()

    def _check_rails(self, chunk, n):
        run = self._rail_run
        i = 0
        while i < n:
            v = chunk[i]
            if v <= _RAIL_LO or v >= _RAIL_HI:
                run += 1
            else:
                run = 0
            i += 1
        self._rail_run = run

    # ---- detection ----
    async def _detect_task(self):
        ring = self.ring
        chunk = self._det_chunk
        rec = self._rec
        while True:
            await self._det_flag.wait()
            found = 0
            while True:
                n = ring.read_from(self._det_next, chunk, _CHUNK)
                if n == 0:
                    break
                first = ring.read_first
                if first != self._det_next:
                    self._reset_detector(first)  # fell a whole ring behind: start over there
                det = self.detector
                k = det.feed(chunk, n)
                i = 0
                while i < k:
                    base = i * EVENT_FIELDS
                    j = 0
                    while j < EVENT_FIELDS:
                        rec[j] = det.events[base + j]
                        j += 1
                    rec[EV_INDEX] += self._det_base
                    rec[EV_CONFIRMED] += self._det_base
                    self.events.push(rec)
                    i += 1
                found += k
                self._det_next = mod32(first + n)
            self._alive |= _T_DETECT
            if found:
                self._str_flag.set()

    def _reset_detector(self, counter):
        self.detector = BreathDetector(self.rate_hz, _CHUNK)
        self._det_base = counter
        self._det_next = counter

    # ---- streaming ----
    async def _stream_task(self):
        streamer = self.streamer
        while True:
            wait = streamer.pump(ticks_ms())
            self._alive |= _T_STREAM
            if len(self.commands) and streamer.response_room():  # commands waited for a RESPONSE slot
                self.ctl_flag.set()
            if wait == IDLE:
                self._idle |= _T_STREAM
                await self._str_flag.wait()
                self._idle &= ~_T_STREAM
            else:
                await asyncio.sleep_ms(wait)

    # ---- control: link events and commands ----
    async def _control_task(self):
        link = self.link
        while True:
            self._idle |= _T_CONTROL
            await self.ctl_flag.wait()
            self._idle &= ~_T_CONTROL
            ev = link.take_events()
            if ev:
                self._link_events(ev)
            # One RESPONSE per command, so a command waits in the queue until its RESPONSE has room: executed
            # with its answer dropped, a nudge played would be recorded as failed (9 commands inside ~400 ms).
            while self.streamer.response_room():
                ch, n = self.commands.get(self._cmd)
                if ch == 0:
                    break
                self.handle_command(ch, self._cmd, n, ticks_ms())
            self._alive |= _T_CONTROL
            self._str_flag.set()

    def _link_events(self, ev):
        from .ble import EV_CONNECT, EV_DISCONNECT

        link = self.link
        if ev & EV_DISCONNECT:
            self.streamer.detach()
            # Commands waiting for a RESPONSE slot were the lost host's: run now, a HAPTIC would play unasked
            # and a SET_* be saved with no answer to anyone. None is a new host's: the radio stops advertising when
            # a host connects, and only this task starts it again (below, after the clear; or a SET_NAME's rename).
            self.commands.clear()
            if self.haptics.active:  # the pattern was the lost host's: do not play it to the limit
                now = ticks_ms()
                self.haptics.stop(now)
                self.guard.step(self.haptics, now)
            if not link.connected:
                link.advertise()
        if ev & EV_CONNECT and link.connected:
            self.streamer.attach(link, ticks_ms())

    def handle_command(self, channel, buf, n, now):
        """Validate and execute one command; queue exactly one RESPONSE. Never raises."""
        out = self._out
        self.haptics.host_seen(now)
        self.commands_handled += 1
        v0 = 0
        v1 = 0
        try:
            result = decode_command(channel, buf, 0, n, out)
            if result == OK:
                if channel == CH_HAPTIC:
                    result, v0, v1 = self._haptic_command(out, now)
                else:
                    result, v0, v1 = self._control_command(out, buf, now)
        except Exception as e:  # a bug must cost one command, not the strap
            self.log("command failed: %r" % (e,))
            result = INTERNAL_ERROR
            v0 = 0
            v1 = 0
        k = encode_response(self._resp, out[CMD_TAG], out[CMD_CHANNEL], out[CMD_OPCODE], result, v0, v1)
        if self.link.connected:
            self.link.set_value(CH_RESPONSE, self._resp, k)
        if self.streamer.link is not None:
            self.streamer.respond(self._resp, k)
        return result

    def _haptic_command(self, out, now):
        h = self.haptics
        pulses = out[CMD_ARG0]
        if pulses == 0:
            h.stop(now)
            self.guard.step(h, now)
            return OK, 0, 0
        # Nothing would vibrate (driver missing, or haptics off in the settings): answered OK, the host would
        # record a nudge delivered.
        if self.hw.motor.kind == "none":
            return INTERNAL_ERROR, 0, 0
        return self._play(now, pulses, out[CMD_ARG1], out[CMD_ARG2], out[CMD_ARG3])

    def _play(self, now, pulses, on_ms, off_ms, pct):
        h = self.haptics
        clamps = h.start(now, pulses, on_ms, off_ms, pct)
        self.guard.step(h, now)  # right after start(): the output follows at once
        if self.hw.motor.level_pct < 0:
            # The driver did not take the level (the DRV2605L's I2C failed): nothing may be felt, and an OK would
            # have the host record a nudge delivered. The guard keeps retrying 'off'.
            h.stop(now)
            self.guard.step(h, now)
            return INTERNAL_ERROR, 0, 0
        self._hap_flag.set()
        if pulses == 1:
            clamps &= ~CLAMP_OFF  # off_ms plays no part in a single pulse
        p = pulses if pulses <= h.max_pulses else h.max_pulses
        on = on_ms if on_ms >= h.min_on_ms else h.min_on_ms
        if on > h.max_on_ms:
            on = h.max_on_ms
        off = off_ms if off_ms >= h.min_off_ms else h.min_off_ms
        if off > h.max_off_ms:
            off = h.max_off_ms
        return OK, p * on + (p - 1) * off, clamps

    def _control_command(self, out, buf, now):
        op = out[CMD_OPCODE]
        s = self.streamer
        if op == OP_START_STREAM:
            s.start()
        elif op == OP_STOP_STREAM:
            s.stop()
        elif op == OP_SET_RATE:
            if s.streaming:
                return BUSY, 0, 0
            rate = out[CMD_ARG0]
            if self._persist("rate_hz", rate) != OK:  # not saved: not applied either (the answer says it failed)
                return INTERNAL_ERROR, 0, 0
            if rate != self.rate_hz:
                self._set_rate(rate)
            return OK, rate, 0
        elif op == OP_BACKFILL:
            return s.backfill(out[CMD_ARG0], out[CMD_ARG1])
        elif op == OP_IDENTIFY:
            if self.hw.motor.kind == "none":  # nothing would vibrate
                return INTERNAL_ERROR, 0, 0
            st, duration_ms, _ = self._play(now, _IDENT_PULSES, _IDENT_ON_MS, _IDENT_OFF_MS, _IDENT_PCT)
            if st != OK:
                return INTERNAL_ERROR, 0, 0
            return OK, duration_ms, 0  # as HAPTIC: a host that disconnects sooner ends the pattern
        elif op == OP_SET_ROLE:
            role = out[CMD_ARG0]  # decode_command allows 0..2 only: every one has a name
            if self._persist("role", _ROLE_NAMES[role]) != OK:
                return INTERNAL_ERROR, 0, 0
            self.role = role
        elif op == OP_SET_NAME:
            start = out[CMD_ARG0]
            name = bytes(buf[start : start + out[CMD_ARG1]]).decode()
            if self.settings.check("name", name) != OK:
                return BAD_VALUE, 0, 0
            if self._persist("name", name) != OK:
                return INTERNAL_ERROR, 0, 0
            if not self.wired:
                self.link.rename(name)
        elif op == OP_TIME_SYNC:
            return OK, out[CMD_ARG0], mod32(self.ring.head() + self.sampler.unread())
        elif op == OP_GET_STATUS:
            self._update_status(ticks_ms(), True)
        return OK, 0, 0

    def _persist(self, key, value):
        # A flash write blocks the interpreter for tens to hundreds of ms on the ESP32, the soft timer that ends a
        # pulse included: a pulse on now could outlast its limit. The motor goes off first (the host asked for a
        # setting; a nudge cut short is the safe side).
        h = self.haptics
        if h.active:
            now = ticks_ms()
            h.stop(now)
            self.guard.step(h, now)
        settings = self.settings
        old = settings.get(key)
        st = settings.set(key, value)
        if st == OK:
            st = settings.save()
            if st != OK:  # the file keeps the old value: so does memory (a later save would write this one)
                settings.set(key, old)
        if st != OK:
            self.log("settings: %s=%r not saved (status %d)" % (key, value, st))
        return st

    def _set_rate(self, rate):
        self.sampler.stop()
        chunk = self._smp_chunk
        while True:  # samples taken at the old rate stay in the ring
            n = self.sampler.drain(chunk, _CHUNK)
            if n == 0:
                break
            self.ring.push_many(chunk, n)
        set_sensor_rate = getattr(self.hw.sensor, "set_rate", None)  # a sensor with its own clock (LPS22 ODR)
        if set_sensor_rate is not None:
            set_sensor_rate(rate)
        self.rate_hz = rate
        self.streamer.set_rate(rate)
        self._reset_detector(self.ring.head())
        self._warm_until = (ticks_ms() + _WARMUP_MS) | 1
        self.sampler.start(rate)
        # The ring keeps its boot size (a 50 Hz ring for every boot costs 15 KB more: docs/firmware.md
        # "Memory"), so 25 -> 50 Hz halves the time it holds until the next boot sizes it anew.
        self.log("strap: %d Hz, ring %d s until reboot" % (rate, self.ring.capacity // rate))

    # ---- haptics ----
    async def _haptic_task(self):
        h = self.haptics
        guard = self.guard
        tick_ms = self.cfg.HAPTIC_TICK_MS
        while True:
            if not h.active:
                self._idle |= _T_HAPTIC
                await self._hap_flag.wait()
                self._idle &= ~_T_HAPTIC
            now = ticks_ms()
            nxt = guard.step(h, now)
            self._alive |= _T_HAPTIC
            if h.active:
                # The core's deadline, at most HAPTIC_TICK_MS away. A deadline of "now" (a pulse
                # deferred by the duty budget) means: poll again after one tick period.
                d = ticks_diff(nxt, now)
                await asyncio.sleep_ms(d if 0 < d < tick_ms else tick_ms)

    # ---- status and battery ----
    async def _status_task(self):
        while True:
            # Update first: the readable STATUS must hold a valid packet before any central reads it.
            self._update_status(ticks_ms(), False)
            self._alive |= _T_STATUS
            await asyncio.sleep_ms(_STATUS_PERIOD_MS)

    def sensor_state(self, now):
        if self.hw.faults & _FAULT_SENSOR:
            return SENSOR_ABSENT
        errors = self.hw.sensor.errors
        if errors != self._sensor_errors:
            self._sensor_errors = errors
            return SENSOR_FAULT
        if self._warm_until:
            if ticks_diff(self._warm_until, now) > 0:
                return SENSOR_STARTING
            self._warm_until = 0
        if self._rail_run > self.rate_hz:
            return SENSOR_SATURATED
        return SENSOR_OK

    def _flags(self):
        s = self.streamer
        f = 0
        if s.streaming:
            f |= FLAG_STREAMING
        if self.wired:
            f |= FLAG_WIRED
        if self.haptics.active:
            f |= FLAG_HAPTIC_ACTIVE
        if s.backfilling:
            f |= FLAG_BACKFILLING
        return f

    def _update_status(self, now, force):
        s = self.streamer
        # Not while a pattern plays (seconds at most): the motor's current sags the cell by tens of mV, a few % low.
        if ticks_diff(now, self._battery_at) >= 0 and not self.haptics.active:
            self._battery_at = now + _BATTERY_EVERY_MS
            try:
                self._battery_pct = self.hw.battery.percent()
            except OSError:
                self._battery_pct = BATTERY_UNKNOWN
            if self._battery_pct != self._battery_sent and self._battery_pct != BATTERY_UNKNOWN:
                s.battery[0] = self._battery_pct
                if not self.wired:  # readable before any connection (a host reads it while scanning)
                    self.link.set_value(CH_BATTERY, s.battery, 1)
                if self.link.connected:
                    s.battery_due = s.link is not None and not self.wired
                self._battery_sent = self._battery_pct
        dropped = self.ring.overflow + self.sampler.overruns + s.backfill_lost
        encode_status(
            s.status,
            self.fw_version,
            self.sensor_state(now),
            self.rate_hz,
            self.role,
            self._flags(),
            self._battery_pct,
            s.buffer_fill_pct(),
            dropped,
            s.retries,
        )
        changed = False
        i = 0
        while i < 7:
            if s.status[4 + i] != self._status_prev[i]:
                changed = True
                self._status_prev[i] = s.status[4 + i]
            i += 1
        if not self.wired:  # the attribute keeps the latest status, connected or not
            self.link.set_value(CH_STATUS, s.status, STATUS_BYTES)
        periodic = not self.wired and s.streaming and ticks_diff(now, self._status_at) >= _STATUS_EVERY_MS
        if s.link is not None and (force or changed or periodic):
            s.status_due = True
            self._status_at = now
            self._str_flag.set()

    # ---- watchdog ----
    async def _watchdog_task(self):
        """Feed the WDT only if every task made progress since the last feed, or is idle-waiting.

        Progress = a loop iteration (sampling and detection only iterate when the timer ISR
        delivers samples, so a dead sampling timer stops the feeding too). Event-driven tasks
        (control, stream, haptics) waiting for their flag count as healthy. A task stuck
        anywhere else for WDT_TIMEOUT_MS resets the chip; the motor gate's pull-down keeps it off.
        """
        while True:
            await asyncio.sleep_ms(WDT_FEED_MS)
            if (self._alive | self._idle) & _T_ALL == _T_ALL:
                self.wdt.feed()
                self.wdt_feeds += 1
                self._alive = 0
            else:
                self.wdt_missed += 1
