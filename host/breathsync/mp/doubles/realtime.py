"""Real time for the doubles (``machine``, ``time``, ``select``): the virtual strap's clock.

The doubles run on the virtual clock of ``machine.sim`` by default (deterministic tests). A strap
bridged to another process (``virtual_strap.py`` + ``bridge_link.py``) must run in real time;
``use_real_time(drift_ppm)`` switches all three. It is a separate module, installed by patching
the doubles' classes, so the virtual-time tests (which run at a tight ``-X heapsize``) load none
of this code.

After ``use_real_time``:

- ``time``: ``ticks_ms``/``ticks_us`` and sleeps are the built-in clock (``time.use_real_time()``).
- ``machine.sim.now_ms()``: real ms since the switch (PWM and WDT stamps stay small), brought up
  to date by ``run_due()`` and ``sync()`` (the PWM wrapper of virtual_strap.py calls it).
- ``machine.Timer``: expiry k after ``init`` is at ``k * period / (1 + drift_ppm * 1e-6)``, exact
  in integer microseconds: the strap's crystal runs ``drift_ppm`` fast (> 0: samples come faster
  than nominal). ``set_drift_ppm`` changes it from the next expiry on. Timers and the WDT fire in
  ``run_due()``, in time order; a late call fires every missed period (a hardware timer keeps
  counting: no sample is skipped, some are read late).
- ``select.poll().ipoll(dt)`` (asyncio's only wait): calls ``run_due()``, returns the flags
  (ThreadSafeFlag) that are set, else sleeps in the built-in poller on the real descriptors (asyncio's
  and the *sources* below) until a descriptor is ready, the next Timer expiry (rounded up to the
  next ms) or ``dt``. The timer callbacks thus run between asyncio task steps, like a soft IRQ
  scheduled on the ESP32; an idle strap costs a few wake-ups per sample period, no busy waiting.
- ``add_source(stream, callback)``: every real-time poll also watches ``stream`` and, when it is
  readable, calls ``callback()`` right there, before asyncio resumes any task. This is how the
  bridge link receives the parent's frames without a task of its own and without blocking the
  firmware's loop (with asyncio's ``dt`` = 0, i.e. a task is runnable, it costs one non-blocking
  ``poll`` per scheduler step).

Drift applies to the machine Timers only (the sampling clock, which is what a host sees through
the sample counters); ``ticks_ms`` stays the host's clock, because the C part of asyncio stamps
tasks with the real clock and the two must agree.
"""

import select as _s
import time as _t

import machine as _m
import uselect as _us
import utime as _ut

_MP_STREAM_POLL = 3
_sources = []  # (stream, callback)
_t0 = 0
enabled = False


def add_source(stream, callback):
    _sources.append((stream, callback))


def remove_source(stream):
    for i in range(len(_sources)):
        if _sources[i][0] is stream:
            del _sources[i]
            return


def real_us():
    return _ut.ticks_diff(_ut.ticks_us(), _t0)


def sync():
    """Bring ``machine.sim.now_ms()`` up to the real clock."""
    _m.sim._now_ms = real_us() // 1000


def _due_us(obj):
    d = getattr(obj, "_due_us", None)
    return obj._due_ms * 1000 if d is None else d


def next_due_us():
    """Real-time µs of the earliest Timer/WDT expiry, or None."""
    sim = _m.sim
    best = None
    for t in sim._timers:
        d = _due_us(t)
        if best is None or d < best:
            best = d
    w = sim.wdt
    if w is not None and w._armed:
        d = (w._last_ms + w.timeout_ms) * 1000
        if best is None or d < best:
            best = d
    return best


def run_due():
    """Fire every Timer (and the WDT) due by now on the real clock, in time order."""
    sim = _m.sim
    now = real_us()
    while True:
        best = None
        obj = None
        for t in sim._timers:
            d = _due_us(t)
            if d <= now and (best is None or d < best):
                best = d
                obj = t
        w = sim.wdt
        if w is not None and w._armed:
            d = (w._last_ms + w.timeout_ms) * 1000
            if d <= now and (best is None or d <= best):
                sim._now_ms = d // 1000
                sim._chip_reset("wdt")
                return
        if obj is None:
            break
        sim._now_ms = best // 1000
        obj._fire()
    sim._now_ms = now // 1000


# ---- machine.Timer in real time ----
def _rebase(timer, base_us):
    timer._base_us = base_us
    timer._k = 0
    timer._due_us = base_us


def _advance(timer):
    timer._k += 1
    num = (timer.period_ms if timer.period_ms > 0 else 1) * 1_000_000_000
    timer._due_us = timer._base_us + timer._k * num // (1_000_000 + _m.sim.drift_ppm)
    timer._due_ms = timer._due_us // 1000


_timer_init = _m.Timer.init
_wdt_feed = _m.WDT.feed


def _init_rt(self, mode=1, period=-1, freq=-1, callback=None):
    _timer_init(self, mode=mode, period=period, freq=freq, callback=callback)
    _rebase(self, real_us())
    _advance(self)


def _fire_rt(self):
    if self.mode == _m.Timer.PERIODIC:
        _advance(self)
    else:
        self.deinit()
    self.fired += 1
    if self.callback is not None:
        self.callback(self)


def _feed_rt(self):
    sync()
    _wdt_feed(self)


def set_drift_ppm(ppm):
    """The Timers' clock error from now on (each timer's next expiry stays where it is)."""
    _m.sim.drift_ppm = ppm
    for t in _m.sim._timers:
        if getattr(t, "_base_us", None) is not None:
            _rebase(t, t._due_us)


# ---- select: asyncio's poll in real time ----
def _ready_objs(poll):
    out = []
    for e in poll._objs.values():
        ev = e[0].ioctl(_MP_STREAM_POLL, e[1])
        if ev:
            out.append((e[0], ev))
    return out


def _ipoll_rt(self, timeout=-1, flags=0):
    deadline = None if timeout < 0 else _ut.ticks_add(_ut.ticks_ms(), timeout)
    srcs = getattr(self, "_srcs", None)
    if srcs is None:
        srcs = self._srcs = []
    for src in _sources:  # register new sources with this poller (once)
        if src not in srcs:
            self._fd.register(src[0], _us.POLLIN)
            srcs.append(src)
    while True:
        run_due()
        ready = _ready_objs(self)
        if ready:
            return ready
        wait = -1 if deadline is None else max(0, _ut.ticks_diff(deadline, _ut.ticks_ms()))
        nxt = next_due_us()
        if nxt is not None:
            d = (nxt - real_us() + 999) // 1000
            d = 0 if d < 0 else d
            if wait < 0 or d < wait:
                wait = d
        if wait < 0 or wait > 100:
            wait = 100  # only timers and sources can set a flag: look again now and then
        if self._nfd or srcs:
            events = self._fd.poll(wait)
        else:
            _ut.sleep_ms(wait)
            events = ()
        out = []
        serviced = False
        for ev in events:
            cb = None
            for src in srcs:
                if src[0] is ev[0]:
                    cb = src[1]
            if cb is None:
                out.append(ev)
            else:
                cb()
                serviced = True
        if out:
            return out
        if not serviced and deadline is not None and _ut.ticks_diff(deadline, _ut.ticks_ms()) <= 0:
            run_due()
            return _ready_objs(self)


def use_real_time(drift_ppm=0):
    """Switch ``time``, ``machine`` and ``select`` to the real clock (see the module docstring)."""
    global _t0, enabled
    sim = _m.sim
    _t0 = _ut.ticks_add(_ut.ticks_us(), -sim._now_ms * 1000)  # continuous with the virtual clock
    sim.drift_ppm = drift_ppm
    _t.use_real_time()
    _m.Timer.init = _init_rt
    _m.Timer._fire = _fire_rt
    _m.WDT.feed = _feed_rt
    _s._Poll.ipoll = _ipoll_rt
    for t in sim._timers:
        if hasattr(t, "period_ms"):
            _rebase(t, t._due_ms * 1000)
    enabled = True
