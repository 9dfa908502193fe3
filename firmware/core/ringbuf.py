"""Lossless sample and event buffers: what the strap keeps for backfill after a disconnect.

Pure module (no machine, no bluetooth): runs unchanged, bit-identically, under MicroPython and
CPython. Storage is preallocated once; ``push`` allocates nothing.

Counters
--------
Every sample gets a *counter*: the first sample pushed is 0, then 1, 2, ... It is a u32 that
wraps modulo 2**32 (at 50 Hz after 994 days), matching a u32 on the wire. On the ESP32 small
ints stop at 2**30 (248 days at 50 Hz) and anything larger is a heap-allocated big int, so the
hot path never forms the full counter: the head is kept as two u16 halves, ``head_hi`` and
``head_lo`` (counter = head_hi * 65536 + head_lo). Only the backfill/streaming calls that take
or return a whole counter (``read_from``, ``cursor``, ``head``, ``rewind``) may build a big int,
a few times per second at most. Counters are compared modulo 2**32: a requested counter
more than 2**31 ahead of the head counts as "in the future".

Delivery cursor and overflow (precise definition)
-------------------------------------------------
The ring keeps a delivery cursor D: samples with counter < D count as delivered to the host.
The application moves it: ``commit(n)`` after a notification carrying the next n pending
samples went out, ``rewind(counter)`` when the host asks for backfill from ``counter``
(D moves back; the samples are re-sent from there). ``pending()`` = head - D.

``overflow`` counts samples that were overwritten while still pending (counter >= D), i.e.
samples the host can never get because it did not fetch them within ``capacity`` samples.
Each lost sample is counted exactly once: when it is overwritten, D moves past it. Samples
that were committed (D past them) but that the host later asks for again after they were
overwritten are *not* counted here: ``read_from``/``rewind`` then start at the oldest sample
still held and return its counter, so the host sees the gap itself (first > requested).
``overflow`` saturates at 2**30 - 1 so it stays a small int.

``EventRing`` does the same for detector events (fixed number of int fields each) with a plain
int sequence number: at most a few events per second, it would need 17 years to leave the
small-int range.
"""

from array import array

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


def mod32(value):
    """``value`` modulo 2**32, for counters. ``& 0xFFFFFFFF`` makes a big int on the ESP32 (small ints end at
    2**30) at every call; ``>> 32`` is 0 for every small int there, so this allocates only for a negative (a
    counter difference across a wrap) or huge value."""
    if value >> 32:
        return value & 0xFFFFFFFF
    return value


# Slot positions fit a u16, and array(t, range(n)) needs n <= 65536 on CPython.
MAX_CAPACITY = const(65535)
# Storage is split into chunks of 2**_CHUNK_SHIFT records: a 64 KB heap fragments after a few
# imports (largest free block ~13 KB measured), so one 30 KB array may not fit where 2 KB ones do.
_CHUNK_SHIFT = const(10)
_CHUNK = const(1024)
_CHUNK_MASK = const(1023)
_EV_SHIFT = const(6)  # events: 64 records per chunk (1.3 KB at 5 fields)
_EV_CHUNK = const(64)
_EV_MASK = const(63)
_U16 = const(0xFFFF)
_HALF = const(0x10000)
_FAR = const(0x3FFF)  # head_hi distance beyond which a counter is >= 2**30 samples old
_SAT = const(0x3FFFFFFF)


def _chunks(typecode, records, fields, per_chunk):
    out = []
    left = records
    while left > 0:
        n = per_chunk if left > per_chunk else left
        # range() has a length, so MicroPython allocates once with no temporary list.
        out.append(array(typecode, range(n * fields)))
        left -= n
    return out


class _Delivery:
    """What both rings share: how many records are held, how many are pending, and the cursor moves.

    Subclasses keep ``_filled`` (held, <= capacity) and ``_pending`` (not yet delivered, <= _filled)
    up to date in their own ``push`` (the hot path stays inline there)."""

    def available(self):
        """Number of records held (<= capacity)."""
        return self._filled

    def pending(self):
        """Records not yet delivered (head - delivery cursor)."""
        return self._pending

    def commit(self, count):
        """Mark the next ``count`` pending records as delivered."""
        if count >= self._pending:
            self._pending = 0
        elif count > 0:
            self._pending -= count

    def _rewind_back(self, back):
        """Make the newest ``back`` records pending again (clamped to what is held); returns the cursor."""
        if back < 0:
            back = 0
        if back > self._filled:
            back = self._filled
        self._pending = back
        return self.cursor()


class SampleRing(_Delivery):
    """Ring of u16 samples addressed by their u32 counter. See the module docstring."""

    def __init__(self, capacity):
        if capacity < 1 or capacity > MAX_CAPACITY:
            raise ValueError("capacity out of range")
        self.capacity = capacity
        self._chunks = _chunks("H", capacity, 1, _CHUNK)
        self.clear()

    def clear(self, start_counter=0):
        """Forget everything; the next sample gets ``start_counter`` (default 0)."""
        for c in self._chunks:
            i = 0
            while i < len(c):
                c[i] = 0
                i += 1
        self._ci = 0  # chunk of the next push
        self._cur = self._chunks[0]
        self._off = 0  # offset of the next push in that chunk
        self._filled = 0  # samples held, <= capacity
        self._pending = 0  # samples not yet delivered, <= _filled
        self.head_hi = (start_counter >> 16) & _U16  # next counter = head_hi * 65536 + head_lo
        self.head_lo = start_counter & _U16
        self.overflow = 0
        self.read_first = 0  # set by read_from

    # Hot path: few locals, so MicroPython keeps the frame on the C stack (no heap frame).
    def push(self, sample_u16):
        p = self._off
        self._cur[p] = sample_u16 & _U16
        p += 1
        if p == len(self._cur):
            self._next_chunk()
        else:
            self._off = p
        p = self.head_lo + 1
        if p == _HALF:
            p = 0
            self.head_hi = (self.head_hi + 1) & _U16
        self.head_lo = p
        if self._filled < self.capacity:
            self._filled += 1
        if self._pending < self.capacity:
            self._pending += 1
        elif self.overflow < _SAT:
            # The slot just overwritten held the oldest pending sample: lost for good.
            self.overflow += 1

    def _next_chunk(self):
        c = self._ci + 1
        if c == len(self._chunks):
            c = 0
        self._ci = c
        self._cur = self._chunks[c]
        self._off = 0

    def push_many(self, samples, count):
        """Push ``samples[0:count]`` (e.g. one chunk of the sampling task)."""
        i = 0
        while i < count:
            self.push(samples[i])
            i += 1

    # ---- counters (may allocate a big int past 2**30; not for the per-sample path) ----
    def head(self):
        """Counter the next sample will get (= number of samples pushed, modulo 2**32)."""
        return (self.head_hi << 16) | self.head_lo

    def oldest(self):
        """Counter of the oldest sample still held (== head() when empty)."""
        return mod32(self.head() - self._filled)

    def cursor(self):
        """The delivery cursor: counter of the oldest pending sample."""
        return mod32(self.head() - self._pending)

    def _back(self, counter):
        """head - counter modulo 2**32 without a big int: -1 if in the future, capped at 2**30."""
        c_hi = (counter >> 16) & _U16
        dhi = (self.head_hi - c_hi) & _U16
        if dhi >= 0x8000:
            return -1
        if dhi > _FAR:
            return _SAT
        back = (dhi << 16) + self.head_lo - (counter & _U16)
        return back if back >= 0 else -1

    # Reads (a few per second: notifications, detection) allocate nothing either: no tuple is returned, and each
    # function keeps at most ~11 locals and stack slots, past which MicroPython puts a call's frame on the heap.
    def read_from(self, counter, out, max_count):
        """Copy samples starting at ``counter`` into ``out``; returns how many, and sets ``read_first`` to the
        first one's counter.

        ``read_first`` > ``counter`` means the older ones were already overwritten (the host sees the gap); 0
        with ``read_first`` == head() means nothing newer is held. Does not move the delivery cursor.
        """
        back = self._back(counter)
        if back <= 0:
            self.read_first = self.head()
            return 0
        if back > self._filled:
            back = self._filled
        self.read_first = mod32(self.head() - back)
        return self._copy(back, out, max_count)

    def read_pending(self, out, max_count):
        """Copy up to ``max_count`` pending samples, oldest first; returns n (see cursor())."""
        return self._copy(self._pending, out, max_count)

    def _copy(self, back, out, n):
        """Copy at most ``n`` samples (and at most ``back``, ``len(out)``), from ``back`` behind the head."""
        if n > back:
            n = back
        if n > len(out):
            n = len(out)
        back = (self._ci << _CHUNK_SHIFT) + self._off - back  # now the first sample's slot
        if back < 0:
            back += self.capacity
        self._copy_run(back, out, n)
        return n

    def _copy_run(self, slot, out, n):
        i = 0
        while i < n:
            out[i] = self._chunks[slot >> _CHUNK_SHIFT][slot & _CHUNK_MASK]
            slot += 1
            if slot == self.capacity:
                slot = 0
            i += 1

    def rewind(self, counter):
        """Move the delivery cursor to ``counter`` (host backfill request); returns the cursor.

        A counter older than the oldest sample held lands on the oldest; one in the future
        lands on the head (nothing pending).
        """
        return self._rewind_back(self._back(counter))


class EventRing(_Delivery):
    """Ring of fixed-size int records (detector events) with a delivery cursor.

    Same semantics as ``SampleRing`` with a plain int sequence number (``head``) instead of a
    split counter; ``overflow`` counts events overwritten while pending. Records are stored in
    array('i') chunks, so fields must fit a signed 32-bit int.
    """

    def __init__(self, capacity, fields):
        if capacity < 1 or capacity > MAX_CAPACITY or fields < 1 or fields > 16:
            raise ValueError("capacity out of range")
        self.capacity = capacity
        self.fields = fields
        self._chunks = _chunks("i", capacity, fields, _EV_CHUNK)
        self.clear()

    def clear(self):
        for c in self._chunks:
            i = 0
            while i < len(c):
                c[i] = 0
                i += 1
        self._pos = 0  # record slot of the next push
        self._filled = 0
        self._pending = 0
        self.head = 0  # sequence number of the next event
        self.overflow = 0
        self.read_first = 0  # set by read_from

    def push(self, src, offset=0):
        """Copy one record from ``src[offset:offset + fields]`` (e.g. detector.events)."""
        f = self.fields
        chunk = self._chunks[self._pos >> _EV_SHIFT]
        base = (self._pos & _EV_MASK) * f
        i = 0
        while i < f:
            chunk[base + i] = src[offset + i]
            i += 1
        base = self._pos + 1
        if base == self.capacity:
            base = 0
        self._pos = base
        self.head += 1
        if self._filled < self.capacity:
            self._filled += 1
        if self._pending < self.capacity:
            self._pending += 1
        elif self.overflow < _SAT:
            self.overflow += 1

    def oldest(self):
        return self.head - self._filled

    def cursor(self):
        return self.head - self._pending

    def read_from(self, seq, out, max_count):
        """Copy records from sequence ``seq`` into ``out`` (fields ints each); returns how many, and sets
        ``read_first`` to the first one's sequence number (as ``SampleRing.read_from``)."""
        back = self.head - seq
        if back <= 0:
            self.read_first = self.head
            return 0
        if back > self._filled:
            back = self._filled
        self.read_first = self.head - back
        return self._copy(back, out, max_count)

    def read_pending(self, out, max_count):
        return self._copy(self._pending, out, max_count)

    def _copy(self, back, out, n):
        """Copy at most ``n`` records (and at most ``back``, what fits ``out``), from ``back`` behind the head."""
        if n > back:
            n = back
        if n * self.fields > len(out):
            n = len(out) // self.fields
        back = self._pos - back  # now the first record's slot
        if back < 0:
            back += self.capacity
        k = 0
        while k < n * self.fields:
            self._copy_record(back, out, k)
            k += self.fields
            back += 1
            if back == self.capacity:
                back = 0
        return n

    def _copy_record(self, slot, out, k):
        chunk = self._chunks[slot >> _EV_SHIFT]
        slot = (slot & _EV_MASK) * self.fields  # now the record's first field in its chunk
        end = k + self.fields
        while k < end:
            out[k] = chunk[slot]
            k += 1
            slot += 1

    def rewind(self, seq):
        return self._rewind_back(self.head - seq)
