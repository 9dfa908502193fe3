# ruff: noqa: UP031  (%-formatting: these scripts also run under MicroPython)
# Driver checks against host/breathsync/mp/doubles/machine.py. Each check_* function is self-contained
# (it resets the simulated chip); tests/test_drivers.py runs them under CPython and runs this
# file under MicroPython (MICROPYPATH=host/breathsync/mp/doubles:firmware), which prints "ok NAME" per check.

import sys
from array import array

import config
import drivers
import machine
from core.haptics import Haptics
from drivers import FAULT_HAPTIC, FAULT_SENSOR, make_haptics, make_hardware
from drivers.battery import BatteryGauge
from drivers.haptic import GuardedMotor, PwmMotor
from drivers.lps22 import Lps22Bladder
from i2c_parts import Drv2605Sim, Lps22Sim
from settings import Settings

IMPORT_PINS = len(machine.sim.pins) + len(machine.sim._pwm) + len(machine.sim._timers)
MID = 32768


def fresh(**over):
    machine.sim.reset()
    s = Settings("/nonexistent/breathsync-settings.json", config)
    for k in over:
        assert s.set(k, over[k]) == 0, k
    return s


def check_nothing_touched_at_import():
    assert IMPORT_PINS == 0, IMPORT_PINS
    assert drivers.make_hardware is make_hardware


def check_stretch_default():
    s = fresh()
    samples = [1000, 20000, 40000, 65535, 0]
    reads = [0]

    def source():
        # Each sample is read 4 times (oversample_shift 2): jitter of +-2 averages out.
        i = reads[0]
        reads[0] += 1
        v = samples[i // 4]
        return v + (2 if i % 2 else -2) if 0 < v < 65535 else v

    machine.sim.set_adc_source(config.PIN_SENSOR_ADC, source)
    hw = make_hardware(machine, s, config)
    assert hw.faults == 0 and hw.sensor.kind == "stretch"
    assert hw.sensor._adc._atten == machine.ADC.ATTN_11DB
    got = [hw.sensor.read_u16() for _ in samples]
    assert got == samples, got
    # The divider is powered only while sampling.
    assert machine.sim.pins[config.PIN_SENSOR_POWER] == 0


def check_adc_from_file():
    machine.sim.reset()
    path = "/tmp/breathsync_hw_adc.txt"
    with open(path, "w") as f:
        f.write("# u16 counts\n100\n200\n300\n")
    machine.sim.adc_from_file(config.PIN_SENSOR_ADC, path)
    adc = machine.ADC(machine.Pin(config.PIN_SENSOR_ADC), atten=machine.ADC.ATTN_11DB)
    assert [adc.read_u16() for _ in range(5)] == [100, 200, 300, 300, 300]


def check_adc2_rejected():
    machine.sim.reset()
    try:
        machine.ADC(machine.Pin(11))
    except ValueError:
        return
    raise AssertionError("ADC2 pin accepted")


def breath_pressure(n, base, amp):
    # Triangle wave, 100 samples per breath: integer-only so both interpreters agree.
    out = []
    for i in range(n):
        ph = i % 100
        tri = ph if ph < 50 else 100 - ph
        out.append(base + amp * tri // 50)
    return out


def check_lps22_bladder():
    s = fresh(sensor="lps22", rate_hz=25)
    base = 1013 * 4096
    pressure = breath_pressure(400, base, 2048)  # 0.5 hPa (50 Pa) swing
    dev = Lps22Sim(pressure)
    machine.sim.attach_i2c(config.LPS22_ADDR, dev)
    hw = make_hardware(machine, s, config)
    assert hw.faults == 0 and hw.sensor.kind == "lps22"
    assert dev.odr_code() == 4 and dev.regs[0x10] & 0x0A == 0x0A and dev.resets == 1
    got = [hw.sensor.read_u16() for _ in range(400)]
    assert got[0] == MID
    # Rises with pressure (inhalation), 1 count per 1/4096 hPa, baseline barely moves.
    assert got[50] - got[0] > 1900 and got[100] - got[0] < 60, (got[50], got[100])
    assert all(0 <= v <= 65535 for v in got)
    s50 = fresh(sensor="lps22", rate_hz=50)
    dev = Lps22Sim(whoami=0xB3)
    machine.sim.attach_i2c(config.LPS22_ADDR, dev)
    make_hardware(machine, s50, config)
    assert dev.odr_code() == 5


def check_lps22_glitch_and_clip():
    s = fresh(sensor="lps22")
    values = [1000 * 4096, 1000 * 4096 + 100, 1000 * 4096 + 900000, 1000 * 4096 - 900000]
    machine.sim.attach_i2c(config.LPS22_ADDR, Lps22Sim(values))
    hw = make_hardware(machine, s, config)
    a = hw.sensor.read_u16()
    b = hw.sensor.read_u16()
    machine.sim.fail_i2c(config.LPS22_ADDR, 2)
    c = hw.sensor.read_u16()
    d = hw.sensor.read_u16()
    assert (a, b, c, d) == (MID, MID + 100, MID + 100, MID + 100) and hw.sensor.errors == 2
    assert hw.sensor.read_u16() == 65535 and hw.sensor.read_u16() == 0


def check_lps22_missing_or_wrong():
    s = fresh(sensor="lps22")
    hw = make_hardware(machine, s, config)
    assert hw.faults == FAULT_SENSOR and hw.sensor.kind == "none" and hw.sensor.read_u16() == MID
    s = fresh(sensor="lps22")
    machine.sim.attach_i2c(config.LPS22_ADDR, Lps22Sim(whoami=0x58))  # a BMP280 answering
    hw = make_hardware(machine, s, config)
    assert hw.faults == FAULT_SENSOR


def check_pwm_motor_default():
    s = fresh()
    hw = make_hardware(machine, s, config)
    assert hw.motor.kind == "erm_pwm"
    line = machine.sim.pwm_timeline(config.PIN_MOTOR_PWM)
    assert line == [(0, 0)], line
    hw.motor.set_pct(80)
    hw.motor.set_pct(80)  # unchanged: no extra write
    hw.motor.set_pct(150)
    hw.motor.off()
    assert [d for _, d in machine.sim.pwm_timeline(config.PIN_MOTOR_PWM)] == [0, 52428, 65535, 0]


def check_drv2605():
    s = fresh(haptic="drv2605")
    dev = Drv2605Sim()
    machine.sim.attach_i2c(config.DRV2605_ADDR, dev)
    hw = make_hardware(machine, s, config)
    assert hw.faults == 0 and hw.motor.kind == "drv2605" and hw.motor.device_id == 7
    assert dev.regs[0x17] == 3000000 // 21220  # overdrive clamp from the rated voltage
    assert dev.regs[0x1A] & 0x80 == 0 and dev.regs[0x1D] & 0x28 == 0x28
    assert dev.regs[0x01] == 0x45 and dev.level() == 0  # RTP mode, in standby
    machine.sim.advance_ms(10)
    hw.motor.set_pct(50)
    machine.sim.advance_ms(200)
    hw.motor.set_pct(0)
    assert dev.timeline[-2:] == [(10, 127), (210, 0)], dev.timeline
    assert dev.regs[0x01] & 0x40


def _drv2605_driving():
    """A DRV2605 strap whose guard switched the motor on at 100 ms (off-timer due at 500 ms)."""
    s = fresh(haptic="drv2605")
    dev = Drv2605Sim()
    machine.sim.attach_i2c(config.DRV2605_ADDR, dev)
    hw = make_hardware(machine, s, config)
    machine.sim.advance_to(100)
    hw.guard.apply(60, 400)
    assert dev.level() > 0
    return dev, hw


def check_drv2605_failed_off_write_is_retried():
    # The bus glitches on the 'off' write: the motor must not stay on (the pattern has ended, so the haptic
    # task no longer ticks); the guard keeps retrying until the driver is in standby.
    dev, hw = _drv2605_driving()
    machine.sim.fail_i2c(config.DRV2605_ADDR, 3)  # this write and the next two retries fail
    hw.guard.apply(0, 0)
    assert dev.level() > 0 and hw.motor.level_pct != 0
    retry = config.HAPTIC_OFF_RETRY_MS
    machine.sim.advance_to(100 + retry + 2 * retry + 4 * retry - 1)  # retries back off: 20, 40, 80 ms
    assert dev.level() > 0 and hw.guard.off_retries == 2
    machine.sim.advance_to(100 + 7 * retry)
    assert dev.level() == 0 and hw.motor.level_pct == 0, (dev.timeline, hw.motor.level_pct)
    assert hw.motor.errors == 3 and hw.guard.off_retries == 3
    assert dev.timeline[-1] == (100 + 7 * retry, 0), dev.timeline
    # The next failure starts again at the shortest retry.
    hw.guard.apply(60, 400)
    machine.sim.fail_i2c(config.DRV2605_ADDR, 1)
    hw.guard.apply(0, 0)
    machine.sim.advance_to(100 + 8 * retry)
    assert dev.level() == 0 and dev.timeline[-1] == (100 + 8 * retry, 0), dev.timeline


def check_drv2605_off_retries_on_a_stuck_bus_back_off():
    # A bus that never answers: each try blocks for the I2C timeout on the device, so the tries spread out (at most
    # one per 320 ms) instead of taking most of the loop's time; they never stop.
    dev, hw = _drv2605_driving()
    machine.sim.fail_i2c(config.DRV2605_ADDR, 10**6)
    hw.guard.apply(0, 0)
    machine.sim.advance_to(100 + 10_000)
    tries = hw.guard.off_retries
    assert 30 <= tries <= 40, tries  # ~10 s / 320 ms; a fixed 20 ms period made 500
    machine.sim.fail_i2c(config.DRV2605_ADDR, 0)  # the bus recovers: off within one period
    machine.sim.advance_to(100 + 10_000 + 320)
    assert dev.level() == 0 and hw.motor.level_pct == 0


def check_drv2605_failed_forced_off_is_retried():
    # The control loop stalls and the off-timer's own write fails: it re-arms until the motor is off.
    dev, hw = _drv2605_driving()
    machine.sim.advance_to(499)
    machine.sim.fail_i2c(config.DRV2605_ADDR, 1)
    machine.sim.advance_to(500)
    assert dev.level() > 0
    machine.sim.advance_to(500 + config.HAPTIC_OFF_RETRY_MS)
    assert dev.level() == 0 and hw.motor.level_pct == 0 and hw.guard.forced_off == 1, dev.timeline
    machine.sim.advance_to(5000)
    assert dev.timeline[-1] == (500 + config.HAPTIC_OFF_RETRY_MS, 0), dev.timeline


def check_drv2605_failed_wake_write_is_retried():
    # The bus glitches on the write that takes the driver out of standby: the level is unknown (-1), and the next
    # 'on' must wake it again, or the strap answers a nudge OK that nobody feels.
    s = fresh(haptic="drv2605")
    dev = Drv2605Sim()
    machine.sim.attach_i2c(config.DRV2605_ADDR, dev)
    hw = make_hardware(machine, s, config)
    machine.sim.fail_i2c(config.DRV2605_ADDR, 1)
    hw.motor.set_pct(60)
    assert hw.motor.level_pct == -1 and dev.level() == 0
    hw.motor.set_pct(70)
    assert hw.motor.level_pct == 70 and dev.level() == 70 * 255 // 100, (dev.regs[0x01], dev.timeline)


def check_drv2605_missing():
    s = fresh(haptic="drv2605")
    hw = make_hardware(machine, s, config)
    assert hw.faults == FAULT_HAPTIC and hw.motor.kind == "none"
    hw.guard.apply(50, 100)  # harmless


def check_haptics_disabled():
    s = fresh(haptic_enabled=False)
    hw = make_hardware(machine, s, config)
    assert hw.motor.kind == "none" and machine.sim.pwm_timeline(config.PIN_MOTOR_PWM) == []


def check_guard_stall():
    # The loop ticks once and stalls: the off-timer ends the pulse at exactly stall_ms.
    s = fresh()
    hw = make_hardware(machine, s, config)
    h = make_haptics(s, config)
    machine.sim.advance_to(1000)
    h.start(1000, 1, 800, 100, 60)
    hw.guard.step(h, 1000)
    machine.sim.advance_to(5000)
    line = machine.sim.pwm_timeline(config.PIN_MOTOR_PWM)
    assert line[-2:] == [(1000, 60 * 65535 // 100), (1000 + config.HAPTIC_STALL_MS, 0)], line
    assert hw.guard.forced_off == 1
    hw.guard.step(h, 5000)  # the loop resumes: the core saw the stall
    assert h.stalls == 1 and not h.active


def check_guard_host_silence():
    s = fresh()
    hw = make_hardware(machine, s, config)
    h = make_haptics(s, config)
    h.start(0, 10, 500, 500, 50)
    t = 0
    while t <= 8000:
        machine.sim.advance_to(t)
        hw.guard.step(h, t)
        t += config.HAPTIC_TICK_MS
    line = machine.sim.pwm_timeline(config.PIN_MOTOR_PWM)
    ons = [ts for ts, d in line if d]
    assert ons == [0, 1000, 2000, 3000, 4000], line  # the 6th pulse would start at 5000
    assert line[-1][1] == 0 and h.host_timeouts == 1


def check_settings_tighten_haptics():
    s = fresh(haptic_max_intensity_pct=40, haptic_max_on_ms=300, haptic_duty_max_pct=10)
    h = make_haptics(s, config)
    assert h.start(0, 1, 1000, 100, 100) == 2 | 8  # CLAMP_ON | CLAMP_INTENSITY
    assert h.max_intensity_pct == 40 and h.max_on_ms == 300 and h.window_on_ms == 1000
    assert h.tick(0) == 40


def check_timer_and_wdt():
    machine.sim.reset()
    fired = []
    machine.Timer(0, mode=machine.Timer.PERIODIC, period=40, callback=lambda t: fired.append(machine.sim.now_ms()))
    machine.sim.advance_ms(1000)
    assert len(fired) == 25 and fired[0] == 40 and fired[-1] == 1000
    pwm = machine.PWM(machine.Pin(4), freq=20000, duty_u16=30000)
    wdt = machine.WDT(timeout=config.WDT_TIMEOUT_MS)  # as main.py starts it
    machine.sim.advance_to(4000)
    wdt.feed()
    machine.sim.advance_to(8900)
    assert machine.sim.resets == []
    try:
        machine.sim.advance_to(10000)
    except machine.DeviceReset:
        pass
    else:
        raise AssertionError("watchdog did not fire")
    assert machine.sim.resets == [(4000 + config.WDT_TIMEOUT_MS, "wdt")]
    assert machine.reset_cause() == machine.WDT_RESET
    assert pwm.duty_u16() == 0 and machine.sim.pwm_timeline(4)[-1] == (9000, 0)
    assert machine.sim.wdt_feeds == [1000, 4000]


def check_records_keep_the_newest_entries():
    # A virtual strap runs for hours: its PWM timeline and WDT feeds grew without end, and the list's ever larger
    # block was no longer found in the strap's fragmented heap (MemoryError after ~20 min of nudges at 10x).
    machine.sim.reset()
    machine.RECORD_MAX = 256  # as host/breathsync/mp/virtual_strap.py sets it
    pwm = machine.PWM(machine.Pin(4), freq=20000, duty_u16=0)
    wdt = machine.WDT(timeout=config.WDT_TIMEOUT_MS)
    for i in range(1, 3 * machine.RECORD_MAX):
        machine.sim.advance_ms(1)
        pwm.duty_u16(i)
        wdt.feed()
    line = machine.sim.pwm_timeline(4)
    assert machine.RECORD_MAX // 2 <= len(line) <= machine.RECORD_MAX and line[-1] == (machine.sim.now_ms(), i)
    feeds = machine.sim.wdt_feeds
    assert machine.RECORD_MAX // 2 <= len(feeds) <= machine.RECORD_MAX and feeds[-1] == machine.sim.now_ms()
    machine.RECORD_MAX = None


def check_machine_misc():
    machine.sim.reset()
    assert len(machine.unique_id()) == 6
    machine.freq(config.CPU_FREQ_HZ)
    assert machine.freq() == 80000000
    assert machine.reset_cause() == machine.PWRON_RESET
    machine.idle()
    machine.lightsleep(25)
    assert machine.sim.now_ms() == 25


def check_battery():
    machine.sim.reset()
    g = BatteryGauge(machine.ADC(machine.Pin(config.PIN_BATTERY_ADC), atten=3), 2, 1)
    # 2.1 V at the pin -> 4.2 V
    machine.sim.set_adc_source(config.PIN_BATTERY_ADC, [(2100000 - 150000) * 65535 // 2300000 + 1])
    assert abs(g.read_mv() - 4200) <= 2, g.read_mv()
    pct = [g.percent(mv) for mv in range(3000, 4400, 50)]
    assert pct[0] == 0 and pct[-1] == 100 and all(pct[i] <= pct[i + 1] for i in range(len(pct) - 1))


def check_lps22_direct_no_alloc():
    # The LPS22 read path uses a preallocated buffer and small ints only (device hot path).
    machine.sim.reset()
    machine.sim.attach_i2c(0x5D, Lps22Sim())
    sensor = Lps22Bladder(machine.I2C(0), rate_hz=25)
    assert sensor.read_u16() == MID and sensor._base_q6 < (1 << 30)


def check_pwm_guard_core_types():
    machine.sim.reset()
    g = GuardedMotor(PwmMotor(machine.PWM(machine.Pin(4))), machine.Timer(1))
    h = Haptics()
    assert g.step(h, 0) == 0  # idle: no tick needed


class _TickTimer:
    PERIODIC = 1

    def init(self, **kw):
        pass

    def deinit(self):
        pass


class _TickSensor:
    """Each sample's value is its acquisition tick: a drained sample tells where it came from."""

    def __init__(self):
        self.tick = 0
        self.errors = 0

    def read_u16(self):
        return self.tick


class _NoFlag:
    def set(self):
        pass


def check_sampler_overrun_fillers_stay_in_place():
    # The sampling task starves: 127 samples stored, ticks 127-129 lost. It drains a chunk, the timer fires
    # (tick 130 stored), then it drains the rest: the three fillers must sit at 127-129, tick 130 at 130.
    from strap.sampler import Sampler

    sensor = _TickSensor()
    s = Sampler(_TickTimer(), sensor, _NoFlag())
    s.start(50)

    def fire():
        s._isr(None)
        sensor.tick += 1

    for _ in range(130):
        fire()
    assert s.overruns == 3 and s.unread() == 130
    out = array("H", bytes(64))
    got = []
    n = s.drain(out, 32)
    got += list(out[:n])
    fire()
    while True:
        n = s.drain(out, 32)
        if n == 0:
            break
        got += list(out[:n])
    assert len(got) == 131, len(got)
    assert got[:127] == list(range(127)) and got[127:130] == [126, 126, 126] and got[130] == 130, got[120:]


def check_sampler_overrun_fillers_in_a_partly_drained_ring():
    # The loss happens while the reader is mid-ring: fillers still follow the last sample stored before it.
    from strap.sampler import Sampler

    sensor = _TickSensor()
    s = Sampler(_TickTimer(), sensor, _NoFlag())
    s.start(25)
    out = array("H", bytes(256))

    def fire(k):
        for _ in range(k):
            s._isr(None)
            sensor.tick += 1

    fire(100)
    got = list(out[: s.drain(out, 60)])
    fire(90)  # 40 + 90 > 127: ticks 187-189 lost
    got += list(out[: s.drain(out, 10)])
    fire(5)  # stored after the loss: ticks 190-194
    while True:
        n = s.drain(out, 64)
        if n == 0:
            break
        got += list(out[:n])
    assert s.overruns == 3 and len(got) == 195, (s.overruns, len(got))
    assert got[:187] == list(range(187)) and got[187:190] == [186] * 3 and got[190:] == list(range(190, 195))


DAY_MS = 86_400_000
MASK_MS = 0x3FFFFFFF  # ticks_ms wraps at 2**30 ms on the ESP32 (12.4 days)


class _QuietLink:
    connected = True
    spp = 7
    min_interval_ms = 50

    def __init__(self):
        self.sent = 0

    def send(self, channel, buf, n):
        self.sent += 1
        return True


def check_stream_answers_at_once_after_days_quiet():
    # A wired strap on its charger sends nothing for days (not streaming, STATUS unchanged). The first answer
    # after 6.2+ days used to wait until a pacing deadline that the ticks wrap put days ahead: the stream task
    # slept, stopped feeding the watchdog, and the strap reset.
    from core.ringbuf import EventRing, SampleRing
    from strap.stream import Streamer

    for days in (1, 6, 6.3, 7, 10, 12.3, 13):
        s = Streamer(SampleRing(100), EventRing(8, 5), 25)
        link = _QuietLink()
        boot = 123_456
        s.attach(link, boot)
        now = int(boot + days * DAY_MS) & MASK_MS
        s.respond(bytes(13), 13)
        wait = s.pump(now)
        assert link.sent == 1 and 0 <= wait <= 50, (days, wait, link.sent)


CHECKS = [(name, obj) for name, obj in sorted(globals().items()) if name.startswith("check_")]


def main():
    bad = 0
    for name, fn in CHECKS:
        try:
            fn()
            print("ok", name)
        except Exception as e:
            print("FAIL", name, repr(e))
            bad += 1
    return bad


if __name__ == "__main__":
    try:
        status = main()
    except BaseException as e:
        sys.stderr.write("hw_drivers: %r\n" % (e,))
        status = 99
    sys.exit(1 if status else 0)
