# ruff: noqa: UP031  (%-formatting: these scripts also run under MicroPython)
# Haptic safety fuzz: core/haptics.py + drivers/haptic.py GuardedMotor + the machine double's
# PWM and Timer, on the double's virtual clock. Runs under MicroPython (script, prints one
# line per seed) and is imported by tests/test_haptics.py under CPython, which compares the
# lines: same integer code, same PRNG (xorshift32, not `random`), same PWM timeline digest.
#
# Usage: micropython hw_haptics_fuzz.py SEED [SEED...]  (MICROPYPATH=host/breathsync/mp/doubles:firmware)
# Prints "seed=S ok pulses=.. stalls=.. silences=.. deferrals=.. clamps=.. digest=.." or
# "seed=S FAIL reason"; exit status 1 on any failure.

import sys

import machine
from core.haptics import Haptics
from drivers.haptic import GuardedMotor, PwmMotor
from xorshift import Rng as _XorShift

MASK = 0x3FFFFFFF
PIN = 4
MAX_INTENSITY_PCT = 80
MAX_ON_MS = 1000
WINDOW_MS = 10000
WINDOW_ON_MS = 3000
STALL_MS = 100
HOST_SILENT_MS = 5000
TICK_MS = 20


def Rng(seed):
    return _XorShift(seed, 12345)


def on_intervals(timeline):
    """[(start, end)] where duty > 0; touching intervals merged (a re-arm at the same ms)."""
    out = []
    start = None
    for t, d in timeline:
        if d > 0 and start is None:
            start = out.pop()[0] if out and out[-1][1] == t else t
        elif d == 0 and start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, 1 << 62))
    return out


def overlap(intervals, a, b):
    total = 0
    for s, e in intervals:
        lo = s if s > a else a
        hi = e if e < b else b
        if hi > lo:
            total += hi - lo
    return total


def check(timeline, host_times, stalls):
    ivs = on_intervals(timeline)
    limit_u16 = MAX_INTENSITY_PCT * 65535 // 100
    for t, d in timeline:
        if d > limit_u16:
            return "duty %d > %d at %d" % (d, limit_u16, t)
    for s, e in ivs:
        if e - s > MAX_ON_MS:
            return "pulse %d..%d longer than %d ms" % (s, e, MAX_ON_MS)
    for s, e in ivs:
        for a, b in ((s, s + WINDOW_MS), (e - WINDOW_MS, e)):
            used = overlap(ivs, a, b)
            if used > WINDOW_ON_MS:
                return "window %d..%d has %d ms on" % (a, b, used)
    # Host silence: while on, never >= HOST_SILENT_MS since the last host contact.
    hi = 0
    for s, e in ivs:
        while hi + 1 < len(host_times) and host_times[hi + 1] <= s:
            hi += 1
        prev = host_times[hi]
        if prev > s:
            return "motor on at %d before any host contact" % s
        k = hi + 1
        while k < len(host_times) and host_times[k] < e:
            if host_times[k] - prev > HOST_SILENT_MS:
                return "on through host silence %d..%d" % (prev, host_times[k])
            prev = host_times[k]
            k += 1
        if e - prev > HOST_SILENT_MS:
            return "on at %d, host silent since %d" % (e, prev)
    # Stalls: off from last tick + STALL_MS until the loop ticks again.
    for t0, t1 in stalls:
        if overlap(ivs, t0 + STALL_MS, t1) > 0:
            return "on during stall %d..%d" % (t0, t1)
    return None


def run(seed, duration_ms=600000, start_ms=None, tamper=None):
    """One fuzz run; ``tamper(haptics)`` may loosen the core (tests check the checker)."""
    rng = Rng(seed)
    if start_ms is None:
        start_ms = MASK + 1 - rng.between(0, 2 * duration_ms)  # often crosses the 2**30 wrap
    sim = machine.sim
    sim.reset(start_ms)
    haptics = Haptics()
    if tamper is not None:
        tamper(haptics)
    pwm = machine.PWM(machine.Pin(PIN, machine.Pin.OUT, value=0), freq=20000, duty_u16=0)
    guard = GuardedMotor(PwmMotor(pwm), machine.Timer(1))
    host_times = []
    stalls = []
    t = start_ms
    end = start_ms + duration_ms
    next_tick = t
    next_host = t + rng.between(0, 2000)
    clamps = 0
    while t < end:
        t = next_tick if next_tick < next_host else next_host
        sim.advance_to(t)
        now = t & MASK
        if t == next_host:
            host_times.append(t)
            r = rng.below(100)
            if r < 35:
                # Mostly legal patterns, some wild ones (negative, huge, zero).
                if rng.below(4) == 0:
                    p = (rng.between(-3, 40), rng.between(-500, 5000), rng.between(-100, 9000), rng.between(-20, 250))
                else:
                    p = (rng.between(1, 10), rng.between(20, 1000), rng.between(50, 2000), rng.between(10, 100))
                if haptics.start(now, p[0], p[1], p[2], p[3]):
                    clamps += 1
                if not stalls or stalls[-1][1] <= t:
                    guard.step(haptics, now)  # the control loop applies a command at once
            else:
                haptics.host_seen(now)
            gap = rng.below(100)
            if gap < 15:
                next_host = t + rng.between(HOST_SILENT_MS - 200, 3 * HOST_SILENT_MS)  # silence
            else:
                next_host = t + rng.between(1, 2500)
        if t == next_tick:
            dl = guard.step(haptics, now)
            r = rng.below(1000)
            if r < 6:
                gap = rng.between(STALL_MS + 1, 3000)  # the control loop stalls
                stalls.append((t, t + gap))
                next_tick = t + gap
            else:
                wait = (dl - now) & MASK  # the core's deadline: exact timing
                if not haptics.active:
                    wait = TICK_MS
                elif wait == 0:
                    wait = 1
                if r < 100:
                    wait = rng.between(1, STALL_MS)  # punctual enough, not at the deadline
                next_tick = t + wait
    # The loop stops for good: the off-timer alone must leave the motor off.
    last_tick = t
    stalls.append((last_tick, end + 3 * HOST_SILENT_MS))
    sim.advance_to(end + 3 * HOST_SILENT_MS)
    timeline = sim.pwm_timeline(PIN)
    err = check(timeline, host_times, stalls)
    digest = 0
    for ts, d in timeline:
        digest = (digest * 31 + (ts - start_ms) * 7 + d) & 0xFFFFFFF
    if err is not None:
        return "seed=%d FAIL %s" % (seed, err)
    if haptics.pulses_done == 0:
        return "seed=%d FAIL no pulse was played" % seed
    return "seed=%d ok pulses=%d stalls=%d silences=%d deferrals=%d clamps=%d forced=%d digest=%d" % (
        seed,
        haptics.pulses_done,
        haptics.stalls,
        haptics.host_timeouts,
        haptics.deferrals,
        clamps,
        guard.forced_off,
        digest,
    )


def main(argv):
    bad = 0
    for arg in argv:
        line = run(int(arg))
        print(line)
        if " FAIL " in line:
            bad += 1
    return bad


if __name__ == "__main__":
    try:
        status = main(sys.argv[1:])
    except BaseException as e:  # uncaught errors would go to stdout: say so and fail
        sys.stderr.write("hw_haptics_fuzz: %r\n" % (e,))
        status = 2
    sys.exit(1 if status else 0)
