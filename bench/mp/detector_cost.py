# Runs INSIDE the MicroPython unix port (not CPython): the workload whose cost bench/callgrind.py measures.
#
#   micropython [-X emit=...] detector_cost.py SAMPLES.u16le RATE_HZ fast|portable|null CHUNK N_CHUNKS
#
# Reads the whole recording into an array('H') and splits it into CHUNK-sample arrays (the same
# work in every run, so it cancels in a long-minus-short difference), then feeds the first
# N_CHUNKS chunks to the strap's BreathDetector ("fast": viper path, "portable": generator path)
# or, for "null", to a do-nothing feed() that measures this script's own loop and call overhead.
# Prints "events=<n> alloc=<bytes allocated while feeding>". Errors go to stderr with exit
# status 1 (MicroPython prints uncaught exceptions to stdout).
import gc
import sys
from array import array

import micropython


class NullDetector:
    fast = False

    def feed(self, samples, count):
        return 0


def read_samples(path):
    # array('H', bytes) takes the raw little-endian bytes (the unix port runs on x86-64).
    with open(path, "rb") as handle:
        return array("H", handle.read())


def split(samples, chunk):
    return [samples[start : start + chunk] for start in range(0, len(samples) - chunk + 1, chunk)]


def make_detector(kind, rate_hz, chunk):
    if kind == "null":
        return NullDetector()
    if kind not in ("fast", "portable"):
        raise ValueError(f"unknown path {kind!r}")
    from core.detector import BreathDetector

    detector = BreathDetector(rate_hz, chunk, kind == "fast")
    if (kind == "fast") != detector.fast:
        raise RuntimeError(f"requested path {kind} unavailable")
    return detector


def feed_all(detector, chunks, n_chunks, chunk):
    events = 0
    feed = detector.feed
    for i in range(n_chunks):
        events += feed(chunks[i], chunk)
    return events


def main():
    path, kind = sys.argv[1], sys.argv[3]
    rate_hz, chunk, n_chunks = int(sys.argv[2]), int(sys.argv[4]), int(sys.argv[5])
    chunks = split(read_samples(path), chunk)
    if n_chunks > len(chunks):
        raise ValueError(f"recording has only {len(chunks)} chunks of {chunk}")
    detector = make_detector(kind, rate_hz, chunk)
    gc.collect()
    allocated_before = micropython.mem_total()
    events = feed_all(detector, chunks, n_chunks, chunk)
    allocated = micropython.mem_total() - allocated_before
    print(f"events={events} alloc={allocated}")


try:
    main()
except BaseException as exc:  # report on stderr, never on stdout
    sys.stderr.write(f"detector_cost: {type(exc).__name__}: {exc}\n")
    sys.exit(1)
