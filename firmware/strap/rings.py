"""The strap's two big buffers, allocated first at boot while the heap is still unfragmented.

``make_rings(rate_hz, cfg)`` returns (SampleRing, EventRing) holding ``cfg.RING_SECONDS`` of
samples at ``rate_hz`` (5 min: 7500 samples = 15 KB at 25 Hz, 30 KB at 50 Hz) and
``cfg.EVENT_RING_LEN`` events (5 int32 fields each, 10 KB). If the heap cannot hold that, both
shrink step by step (by a quarter each time) down to ``_MIN_RING_S``; ``ring.capacity //
rate_hz`` then tells how long a disconnect may last without loss. main.py calls this before
importing the rest of the firmware, so the rings get the large contiguous blocks; a
``reserve_bytes`` block is held meanwhile and freed after, so the rest of the firmware (code,
tasks, buffers) still finds room when the heap is small: the rings shrink instead.
"""

import gc

from core.ringbuf import MAX_CAPACITY, EventRing, SampleRing

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


_MIN_RING_S = const(60)
EVENT_FIELDS = const(5)  # core.detector.EVENT_FIELDS (not imported here: keep this module light)


_RESERVE_BYTES = const(12_288)  # room kept for the buffers and tasks allocated after the rings


def make_rings(rate_hz, cfg, reserve_bytes=_RESERVE_BYTES):
    seconds = cfg.RING_SECONDS
    gc.collect()
    try:
        reserve = bytearray(reserve_bytes)
    except MemoryError:
        reserve = None
    try:
        return _allocate(rate_hz, cfg, seconds)
    finally:
        reserve = None  # noqa: F841  (released for the code and buffers that come next)
        gc.collect()


def _allocate(rate_hz, cfg, seconds):
    while True:
        samples = seconds * rate_hz
        if samples > MAX_CAPACITY:
            samples = MAX_CAPACITY
        events = cfg.EVENT_RING_LEN * seconds // cfg.RING_SECONDS
        gc.collect()
        try:
            return SampleRing(samples), EventRing(events, EVENT_FIELDS)
        except MemoryError:
            if seconds <= _MIN_RING_S:
                raise
            seconds -= seconds >> 2
            if seconds < _MIN_RING_S:
                seconds = _MIN_RING_S
