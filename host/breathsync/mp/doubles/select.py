"""Test double of ``select``: lets MicroPython's asyncio run on the virtual clock of ``machine.sim``.

Why: asyncio's scheduler sleeps in ``poll.ipoll(dt)`` (dt = ms until the next timed task, -1 =
wait for I/O). With a virtual clock nothing would ever advance it, and the loop hangs.

How: ``poll`` wraps the built-in poller (``uselect.poll``, which also polls Python stream objects
such as ``asyncio.ThreadSafeFlag``). ``ipoll(dt)`` on virtual time:

1. asks the real poller with timeout 0: real file descriptors (the wired-mode stdin pipe) and
   flags set so far are reported at once;
2. otherwise steps ``machine.sim`` to its next due event (a machine.Timer callback such as the
   sampling ISR, the WDT deadline, or an action of the bluetooth double's test central), runs
   it at its exact time, and polls again, until something is ready or ``dt`` has elapsed;
3. with ``dt`` = -1 and no event left, raises ``VirtualTimeDeadlock`` (the program would sleep
   forever on the device).

So the firmware's tasks wake at the exact virtual times their interrupts or sleeps say, and the
run is deterministic and as fast as the interpreter. When ``time.virtual`` is False (real time,
for a bridge to another process) every call goes straight to the built-in poller.

Under CPython this file must never shadow the real ``select`` (pytest puts the doubles folder on
``sys.path``): if imported there it loads the standard module and replaces itself with it.
"""

import sys

if sys.implementation.name != "micropython":  # CPython: hand over to the real module
    import importlib

    _here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    _saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if p.rstrip("/") != _here.rstrip("/")]
    del sys.modules[__name__]
    try:
        sys.modules[__name__] = importlib.import_module("select")
    finally:
        sys.path[:] = _saved
else:
    import time as _t

    import machine as _m
    import uselect as _us

    POLLIN = _us.POLLIN
    POLLOUT = _us.POLLOUT
    POLLERR = _us.POLLERR
    POLLHUP = _us.POLLHUP

    class VirtualTimeDeadlock(RuntimeError):
        """asyncio waits for I/O forever and no virtual event is left: the device would hang."""

    def _next_due_ms():
        # The machine double's event queue (timers, WDT, central actions): earliest due time.
        due, kind, _obj = _m.sim._next_event()
        return None if kind is None else due

    _MP_STREAM_POLL = 3

    class _Poll:
        """Python stream objects (ThreadSafeFlag) are asked through ``ioctl`` directly; objects
        with a file descriptor go to the built-in poller. (The unix port's poller sleeps 1 ms
        per call when it has only non-fd objects, even with timeout 0: too slow here.)"""

        def __init__(self):
            self._objs = {}  # id -> [obj, mask] for objects without a file descriptor
            self._fd = _us.poll()
            self._nfd = 0

        def register(self, obj, eventmask=POLLIN | POLLOUT):
            if hasattr(obj, "fileno"):
                self._fd.register(obj, eventmask)
                self._nfd += 1
            else:
                self._objs[id(obj)] = [obj, eventmask]

        def unregister(self, obj):
            if id(obj) in self._objs:
                del self._objs[id(obj)]
            elif hasattr(obj, "fileno"):
                self._fd.unregister(obj)
                self._nfd -= 1

        def modify(self, obj, eventmask):
            e = self._objs.get(id(obj))
            if e is not None:
                e[1] = eventmask
            else:
                self._fd.modify(obj, eventmask)

        def _ready(self, timeout):
            out = []
            for e in self._objs.values():
                ev = e[0].ioctl(_MP_STREAM_POLL, e[1])
                if ev:
                    out.append((e[0], ev))
            if self._nfd and not out:
                return self._fd.poll(timeout)
            return out

        def poll(self, timeout=-1):
            return list(self.ipoll(timeout))

        def ipoll(self, timeout=-1, flags=0):
            if not _t.virtual:
                if not self._objs:
                    return self._fd.ipoll(timeout, flags)
                # Mixed objects in real time: poll in short real sleeps.
                deadline = None if timeout < 0 else _t.ticks_add(_t.ticks_ms(), timeout)
                while True:
                    late = deadline is not None and _t.ticks_diff(deadline, _t.ticks_ms()) <= 0
                    ready = self._ready(0 if late else 1)
                    if ready or late:
                        return ready
            sim = _m.sim
            deadline = None if timeout < 0 else sim.now_ms() + timeout
            while True:
                ready = self._ready(0)
                if ready or timeout == 0:
                    return ready
                due = _next_due_ms()
                if due is None:
                    if deadline is None:
                        raise VirtualTimeDeadlock("asyncio waits forever and no virtual event is left")
                    sim.advance_to(deadline)
                    return self._ready(0)
                if deadline is not None and due > deadline:
                    sim.advance_to(deadline)
                    return self._ready(0)
                sim.advance_to(due if due > sim.now_ms() else sim.now_ms())

    def poll():
        return _Poll()

    def select(rlist, wlist, xlist, timeout=None):
        return _us.select(rlist, wlist, xlist, 0 if timeout is None and _t.virtual else timeout)
