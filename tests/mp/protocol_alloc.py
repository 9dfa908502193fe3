# MicroPython: the strap's hot-path encoders allocate nothing per packet.
#   micropython protocol_alloc.py            (MICROPYPATH = firmware:.frozen)
# For each hot-path call, prints "<name> <packets> <mem_total delta bytes>"; the calls run with
# the heap locked (an allocation raises MemoryError) and mem_total() also catches VM frames that
# the bytecode VM takes from the heap for functions with many locals, which heap_lock does not.
# Ends with "done"; any error goes to stderr with exit status 1.
#
# Every heap_lock() is paired with heap_unlock() in a ``finally``: the lock is a depth counter,
# and an unlock without a matching lock does not fail but wraps the counter round, which leaves
# the heap locked for good (the error report itself could then not be formatted, and every
# failure, even one outside the locked loops, would surface as "heap is locked").
import sys
from array import array

import micropython
from core import framing as FR
from core import packets as F

_ROUNDS = 200


def main():
    buf = bytearray(F.MAX_PAYLOAD_BYTES)
    wire = bytearray(F.MAX_PAYLOAD_BYTES + FR.FRAME_OVERHEAD_BYTES)
    # Sized from a range, not from a list: ``[0] * 1000`` is a temporary 8000-byte block that
    # a 64K heap cannot always find in one piece (it depends on the heap layout, i.e. on paths).
    ring = array("H", range(1000))
    for i in range(len(ring)):
        ring[i] = (i * 977) & 0xFFFF
    events = array("i", [1, 100000, 1500, 100, 100040, 2, 100050, 1400, 101, 100090])
    encode_samples = F.encode_samples
    encode_event = F.encode_event
    encode_frame = FR.encode_frame
    counter = 123456
    start = 990  # wraps the ring on every packet
    # Warm-up: first calls may intern or cache.
    encode_samples(buf, 0, counter, ring, start, F.MAX_SAMPLES)
    encode_event(buf, 0, events, 0)
    encode_frame(wire, F.CH_SAMPLES, buf, F.MAX_PAYLOAD_BYTES)

    seq = 0
    before = micropython.mem_total()
    micropython.heap_lock()
    try:
        while seq < _ROUNDS:
            encode_samples(buf, seq, counter, ring, start, F.MAX_SAMPLES)
            encode_samples(buf, seq, counter, ring, start, 7)
            seq += 1
    finally:
        micropython.heap_unlock()
    print("encode_samples", 2 * _ROUNDS, micropython.mem_total() - before)

    seq = 0
    before = micropython.mem_total()
    micropython.heap_lock()
    try:
        while seq < _ROUNDS:
            encode_event(buf, seq, events, 0)
            encode_event(buf, seq, events, 5)
            seq += 1
    finally:
        micropython.heap_unlock()
    print("encode_event", 2 * _ROUNDS, micropython.mem_total() - before)

    n = encode_samples(buf, 1, counter, ring, start, F.MAX_SAMPLES)
    seq = 0
    before = micropython.mem_total()
    micropython.heap_lock()
    try:
        while seq < _ROUNDS:
            encode_frame(wire, F.CH_SAMPLES, buf, n)
            seq += 1
    finally:
        micropython.heap_unlock()
    print("encode_frame", _ROUNDS, micropython.mem_total() - before)

    # Wired receive path: decode a command frame byte by byte.
    cmd = bytearray(b"\x19\x2a\x08\xef\xbe\xad\xde")
    k = encode_frame(wire, F.CH_CONTROL, cmd, len(cmd))
    reader = FR.FrameReader()
    push = reader.push
    good = 0
    seq = 0
    before = micropython.mem_total()
    micropython.heap_lock()
    try:
        while seq < _ROUNDS:
            i = 0
            while i < k:
                if push(wire[i]) > 0:
                    good += 1
                i += 1
            seq += 1
    finally:
        micropython.heap_unlock()
    print("frame_reader", good, micropython.mem_total() - before)
    print("done")


try:
    main()
except BaseException as exc:  # report on stderr, never on stdout
    # The heap is unlocked here (the ``finally`` blocks above): do not unlock it again.
    sys.stderr.write(f"protocol_alloc: {type(exc).__name__}: {exc}\n")
    sys.exit(1)
