# MicroPython: prove the detector allocates nothing per sample in steady state.
#   micropython detector_alloc.py SAMPLES_FILE fast|portable RATE_HZ
# Prints "ok <samples> <mem_total delta bytes> <heap_lock chunks>" or raises (exit != 0).
import sys
from array import array

import micropython
from core.detector import BreathDetector

_CHUNK = 25


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    # Sized in one allocation from the bytes (MicroPython copies them raw), not from a list:
    # ``[0] * n`` would be a temporary block of 8 bytes per sample (576 KB at 72k samples) that
    # needs a contiguous hole in the heap. The loop decodes little-endian whatever the host order.
    samples = array("H", raw)
    for i in range(len(samples)):
        samples[i] = raw[2 * i] | (raw[2 * i + 1] << 8)
    return samples


def feed_range(det, source, buf, start, stop):
    # Copy chunk by chunk into the strap's preallocated buffer, as the sampling task does.
    pos = start
    while pos < stop:
        count = stop - pos
        if count > _CHUNK:
            count = _CHUNK
        j = 0
        while j < count:
            buf[j] = source[pos + j]
            j += 1
        det.feed(buf, count)
        pos += count


def main():
    source = load(sys.argv[1])
    fast = sys.argv[2] == "fast"
    det = BreathDetector(int(sys.argv[3]), _CHUNK, fast)
    if det.fast != fast:
        raise RuntimeError("requested path not available")
    buf = array("H", [0] * _CHUNK)
    warm = 2000
    feed_range(det, source, buf, 0, warm)  # warm up: caches, first events
    # The measured loop is inline: calling a helper with many locals would itself allocate a
    # VM frame on the heap (the bytecode VM keeps only small frames on the C stack).
    stop = len(source) - 500
    pos = warm
    before = micropython.mem_total()
    while pos < stop:
        count = stop - pos
        if count > _CHUNK:
            count = _CHUNK
        j = 0
        while j < count:
            buf[j] = source[pos + j]
            j += 1
        det.feed(buf, count)
        pos += count
    delta = micropython.mem_total() - before
    # And a final stretch with the heap locked: any allocation raises MemoryError.
    locked = 0
    pos = len(source) - 500
    while pos + _CHUNK <= len(source):
        j = 0
        while j < _CHUNK:
            buf[j] = source[pos + j]
            j += 1
        micropython.heap_lock()
        try:
            det.feed(buf, _CHUNK)
        finally:
            micropython.heap_unlock()
        locked += 1
        pos += _CHUNK
    print("ok", len(source) - 500 - warm, delta, locked)


try:
    main()
except BaseException as exc:
    sys.stderr.write("%s: %s\n" % (type(exc).__name__, exc))
    sys.exit(1)
