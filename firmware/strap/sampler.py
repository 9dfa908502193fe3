"""Timer-driven sampling: the ISR reads the sensor into a preallocated ring and signals a flag.

The callback runs at the configured rate from a ``machine.Timer`` (soft IRQ on the ESP32, so
an I2C sensor read is allowed; nothing here allocates, so it would also be safe as a hard IRQ
or from ``micropython.schedule``). It only: reads one sample, stores it, counts, and sets the
ThreadSafeFlag every ``wake_every`` samples (100 ms of data: fewer task switches, less power)
for the sampling task, which moves the samples into the big ring (``drain``).

If the task falls more than ``capacity`` samples behind (it would have to be starved for
seconds, which the watchdog catches first), the ISR counts ``overruns`` instead of storing, and
``drain`` inserts that many copies of the last sample before it was lost, where the loss was
(after the samples stored before it, before any stored after it), so sample counters stay equal
to acquisition time (the loss is reported in STATUS ``dropped_samples``). A second loss before
the first one's fillers were drained joins the first one's fillers.
"""

from array import array

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


_CAPACITY = const(128)  # power of two; 2.5 s at 50 Hz
_MASK = const(127)
_WAKES_PER_S = const(10)


class Sampler:
    def __init__(self, timer, sensor, flag):
        self._timer = timer
        self._read = sensor.read_u16  # bound once: the ISR must not allocate a bound method
        self.flag = flag
        self._buf = array("H", bytes(2 * _CAPACITY))
        self._w = 0  # next write slot (ISR)
        self._r = 0  # next read slot (task)
        self._k = 0  # samples since the last wake-up
        self._wake_every = 1
        self.overruns = 0  # samples the ISR could not store
        self._fill = 0  # overruns not yet replaced by fillers
        self._fill_at = 0  # ...which belong before the sample in this slot (the first one stored after them)
        self._last = 0
        self.rate_hz = 0
        self._cb = self._isr  # bound once

    def start(self, rate_hz):
        self.rate_hz = rate_hz
        w = rate_hz // _WAKES_PER_S
        self._wake_every = w if w > 0 else 1
        self._k = 0
        self._timer.init(mode=self._timer.PERIODIC, period=1000 // rate_hz, callback=self._cb)

    def stop(self):
        self._timer.deinit()

    def _isr(self, _timer):
        w = self._w
        nxt = (w + 1) & _MASK
        if nxt == self._r:
            self.overruns += 1
            if self._fill == 0:
                self._fill_at = w
            self._fill += 1
        else:
            self._buf[w] = self._read()
            self._w = nxt
        self._k += 1
        if self._k >= self._wake_every:
            self._k = 0
            self.flag.set()

    def unread(self):
        """Samples acquired but not yet drained (for an exact sample counter)."""
        return ((self._w - self._r) & _MASK) + self._fill

    def drain(self, out, max_count):
        """Move up to ``max_count`` samples into ``out`` (array('H')); returns how many."""
        n = 0
        r = self._r
        while n < max_count:
            if self._fill > 0 and r == self._fill_at:
                # Samples lost to an overrun, in their place: keep the counter aligned with time.
                out[n] = self._last
                self._fill -= 1
                n += 1
            elif r != self._w:
                v = self._buf[r]
                out[n] = v
                self._last = v
                r = (r + 1) & _MASK
                n += 1
            else:
                break
        self._r = r
        return n
