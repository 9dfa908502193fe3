# ruff: noqa: UP031  (%-formatting: these scripts also run under MicroPython)
# Ring buffer model check, run under MicroPython (script) and imported by tests/test_ringbuf.py
# under CPython: random operations (xorshift32, identical on both) against a plain-list
# reference model with unbounded counters; prints one digest line per seed, which the CPython
# test compares. "alloc" checks zero allocation per push (MicroPython only).
#
# Usage: micropython hw_ringbuf.py SEED... | alloc[:CAPACITY]     (MICROPYPATH=firmware)

import sys
from array import array

from core.ringbuf import EventRing, SampleRing
from xorshift import Rng

U32 = 0xFFFFFFFF


class Model:
    """Reference: unbounded counters, every sample kept."""

    def __init__(self, cap, base):
        self.cap = cap
        self.base = base  # counter of sample 0 (unbounded)
        self.data = []
        self.d = base  # delivery cursor
        self.overflow = 0

    def head(self):
        return self.base + len(self.data)

    def oldest(self):
        return max(self.base, self.head() - self.cap)

    def push(self, v):
        if self.head() - self.d == self.cap:
            self.overflow += 1
            self.d += 1
        self.data.append(v)

    def commit(self, k):
        self.d = min(self.head(), self.d + max(0, k))

    def rewind(self, c):
        self.d = min(self.head(), max(self.oldest(), c))
        return self.d

    def read(self, c, max_count, out_len):
        if c >= self.head():
            return [], self.head()
        start = max(c, self.oldest())
        n = min(self.head() - start, max_count, out_len)
        i = start - self.base
        return self.data[i : i + n], start


def read_from(ring, start, out, max_count):
    """(n, first): ``ring.read_from`` and the ``read_first`` it sets."""
    n = ring.read_from(start, out, max_count)
    return n, ring.read_first


def fuzz(seed, ops=3000):
    rng = Rng(seed)
    cap = rng.between(1, 3000)
    # Start anywhere, often just below the 2**32 (and the 2**30 small-int) boundary.
    choice = rng.below(4)
    base = (0, (1 << 32) - rng.between(1, 4000), (1 << 30) - rng.between(1, 4000), rng.next())[choice]
    ring = SampleRing(cap)
    ring.clear(base)
    model = Model(cap, base)
    out = array("H", range(500))
    digest = 0
    for _ in range(ops):
        op = rng.below(100)
        if op < 55:
            for _ in range(rng.between(1, 60)):
                v = rng.below(65536)
                ring.push(v)
                model.push(v)
        elif op < 70:
            k = rng.between(-5, 200)
            ring.commit(k)
            model.commit(k)
        elif op < 80:
            c = model.head() + rng.between(-2 * cap - 10, 10)
            got = ring.rewind(c & U32)
            want = model.rewind(c)
            if got != want & U32:
                return "seed=%d FAIL rewind(%d) -> %d, want %d" % (seed, c, got, want & U32)
        elif op < 92:
            c = model.head() + rng.between(-2 * cap - 10, 10)
            mx = rng.between(0, 600)
            n, first = read_from(ring, c & U32, out, mx)
            want, wfirst = model.read(c, mx, len(out))
            if first != wfirst & U32 or n != len(want) or list(out[:n]) != want:
                return "seed=%d FAIL read_from(%d, %d): n=%d first=%d want n=%d first=%d" % (
                    seed,
                    c,
                    mx,
                    n,
                    first,
                    len(want),
                    wfirst & U32,
                )
            for i in range(n):
                digest = (digest * 33 + out[i]) & 0xFFFFFFF
        else:
            mx = rng.between(0, 600)
            n = ring.read_pending(out, mx)
            want, wfirst = model.read(model.d, mx, len(out))
            if ring.cursor() != model.d & U32 or n != len(want) or list(out[:n]) != want:
                return "seed=%d FAIL read_pending n=%d cursor=%d want n=%d cursor=%d" % (
                    seed,
                    n,
                    ring.cursor(),
                    len(want),
                    model.d & U32,
                )
        if (
            ring.overflow != model.overflow
            or ring.pending() != model.head() - model.d
            or ring.head() != model.head() & U32
            or ring.oldest() != model.oldest() & U32
            or ring.available() != model.head() - model.oldest()
        ):
            return "seed=%d FAIL state: overflow %d/%d pending %d/%d head %d/%d" % (
                seed,
                ring.overflow,
                model.overflow,
                ring.pending(),
                model.head() - model.d,
                ring.head(),
                model.head() & U32,
            )
        digest = (digest * 31 + ring.overflow + ring.pending()) & 0xFFFFFFF
    return "seed=%d ok cap=%d head=%d overflow=%d digest=%d" % (seed, cap, ring.head(), ring.overflow, digest)


def fuzz_events(seed, ops=2000):
    rng = Rng(seed)
    cap = rng.between(1, 300)
    f = rng.between(1, 6)
    ring = EventRing(cap, f)
    records = []
    d = 0
    overflow = 0
    out = array("i", range(6 * 64))
    rec = array("i", range(f))
    for _ in range(ops):
        op = rng.below(20)
        if op < 13:
            for i in range(f):
                rec[i] = rng.next() - (1 << 31)
            if len(records) - d == cap:
                overflow += 1
                d += 1
            records.append(list(rec))
            ring.push(rec, 0)
        elif op < 15:
            k = rng.between(0, 12)
            ring.commit(k)
            d = min(len(records), d + k)
        else:
            seq = len(records) + rng.between(-2 * cap, 3)
            oldest = max(0, len(records) - cap)
            mx = rng.between(0, 70)
            n, first = read_from(ring, seq, out, mx)
            if seq >= len(records):
                want, wfirst = [], len(records)
            else:
                wfirst = max(seq, oldest)
                want = records[wfirst : wfirst + min(mx, len(out) // f)]
            got = [list(out[i * f : (i + 1) * f]) for i in range(n)]
            if first != wfirst or got != want:
                return "seed=%d FAIL events read_from(%d) n=%d first=%d want %d/%d" % (
                    seed,
                    seq,
                    n,
                    first,
                    len(want),
                    wfirst,
                )
        if ring.overflow != overflow or ring.pending() != len(records) - d or ring.head != len(records):
            return "seed=%d FAIL events state" % seed
    return "seed=%d ok events cap=%d fields=%d overflow=%d" % (seed, cap, f, overflow)


def alloc(capacity=15000):
    """Zero allocation per push: heap locked, and mem_total (sees VM frames too) unchanged."""
    import gc

    import micropython

    ring = SampleRing(capacity)
    ring.clear((1 << 32) - 7000)  # the head crosses 2**30-free split counters and 2**32
    events = EventRing(512, 5)
    ev = array("i", [1, 2, 3, 4, 5])
    chunk = array("H", range(25))
    gc.collect()
    t0 = micropython.mem_total()
    micropython.heap_lock()
    try:
        i = 0
        while i < 20000:
            ring.push(i)
            i += 1
        i = 0
        while i < 400:
            ring.push_many(chunk, 25)
            events.push(ev, 0)
            i += 1
    finally:
        micropython.heap_unlock()
    delta = micropython.mem_total() - t0
    return "alloc delta=%d head=%d overflow=%d" % (delta, ring.head(), ring.overflow)


if __name__ == "__main__":
    bad = 0
    try:
        for arg in sys.argv[1:]:
            if arg.startswith("alloc"):
                line = alloc(int(arg[6:]) if arg.startswith("alloc:") else 15000)
                bad += not line.startswith("alloc delta=0 ")
            else:
                line = fuzz(int(arg))
                bad += " FAIL " in line
                print(line)
                line = fuzz_events(int(arg))
                bad += " FAIL " in line
            print(line)
    except BaseException as e:  # uncaught errors would go to stdout: say so and fail
        sys.stderr.write("hw_ringbuf: %r\n" % (e,))
        bad = 99
    sys.exit(1 if bad else 0)
