"""Test double of MicroPython's ``time`` module: the strap's clock on the virtual time of ``machine.sim``.

Put ``host/breathsync/mp/doubles`` first on MICROPYPATH and both the firmware *and* the frozen
``asyncio`` (which does ``from time import ticks_ms, ticks_diff, ticks_add``) read this clock.
The built-in stays reachable as ``utime``.

Virtual (default): ``ticks_ms()`` is ``BASE + machine.sim.now_ms()``; only the test (or the
select double, see ``select.py``) moves it. Blocking sleeps (``sleep``, ``sleep_ms``,
``sleep_us``) advance the virtual clock and run every machine Timer/WDT event that falls due
meanwhile, like a busy-wait on the device during which interrupts still fire. ``sleep_us``
accumulates sub-ms remainders so many short settle delays add up exactly.

Why ``BASE``: the unix port's C accelerator of asyncio (``_asyncio``, no Python fallback is
frozen) stamps a task that becomes runnable "now" (an Event/flag wake-up, create_task) with
the *real* ``mp_hal_ticks_ms()``. ``BASE`` = real ticks at import + 2**28 ms (3 days) puts the
virtual clock ahead of every real stamp a test run can produce, so such tasks are in the past,
i.e. run at once, and the C queue's ordering (real period 2**62) stays consistent with ours.
Consequently ticks do not wrap at 2**30 as on the ESP32; the firmware compares ticks modulo
2**30 itself (``core.haptics.ticks_diff``), which stays correct for any clock.

``use_real_time()`` switches to the built-in clock (for a bridge to another process that runs
in real time, e.g. a Bumble central); ``virtual`` tells which one is active.

Under CPython ``time`` is a built-in module, found before anything on ``sys.path``: this file is
never imported there.
"""

import machine as _m
import utime as _ut

BASE = _ut.ticks_add(_ut.ticks_ms(), 1 << 28)

virtual = True
_us_rest = 0


def use_real_time():
    global virtual
    virtual = False


def ticks_ms():
    if virtual:
        return _ut.ticks_add(BASE, _m.sim.now_ms())
    return _ut.ticks_ms()


def ticks_us():
    if virtual:
        return _ut.ticks_add(BASE * 1000, _m.sim.now_ms() * 1000 + _us_rest)
    return _ut.ticks_us()


ticks_cpu = ticks_us
ticks_diff = _ut.ticks_diff
ticks_add = _ut.ticks_add


def sleep_ms(ms):
    if virtual:
        if ms > 0:
            _m.sim.advance_ms(ms)
        return
    _ut.sleep_ms(ms)


def sleep_us(us):
    global _us_rest
    if virtual:
        _us_rest += us
        if _us_rest >= 1000:
            ms = _us_rest // 1000
            _us_rest -= ms * 1000
            _m.sim.advance_ms(ms)
        return
    _ut.sleep_us(us)


def sleep(s):
    if virtual:
        sleep_ms(int(s * 1000))
        return
    _ut.sleep(s)


def time():
    if virtual:
        return _m.sim.now_ms() // 1000
    return _ut.time()


def time_ns():
    if virtual:
        return _m.sim.now_ms() * 1000000
    return _ut.time_ns()


def gmtime(secs=None):
    return _ut.gmtime(time() if secs is None else secs)


localtime = gmtime


def mktime(t):
    return _ut.mktime(t)
