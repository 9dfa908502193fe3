# Runs INSIDE the MicroPython unix port (not CPython): the strap's detector on samples from stdin.
#
#   micropython detector_runner.py PACKAGE RATE_HZ fast|portable  < samples.u16le  > events.txt
#
# stdin: little-endian u16 samples; stdout: one line per event, "kind index depth interval
# confirmed". Any error goes to stderr with exit status 1 (MicroPython prints uncaught errors
# to stdout, which would be mistaken for events).
import sys

_CHUNK = 32


def _read_full(stream, buf):
    got = 0
    view = memoryview(buf)
    while got < len(buf):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def main():
    from array import array

    package = sys.argv[1]
    rate_hz = int(sys.argv[2])
    fast = sys.argv[3] == "fast"
    detector_module = __import__(package + ".detector", None, None, ("detector",))
    det = detector_module.BreathDetector(rate_hz, _CHUNK, fast)
    if fast and not det.fast:
        raise RuntimeError("viper path unavailable")
    samples = array("H", [0] * _CHUNK)
    raw = bytearray(2 * _CHUNK)
    events = det.events
    stdin = sys.stdin.buffer
    write = sys.stdout.write
    while True:
        got = _read_full(stdin, raw)
        count = got // 2
        for i in range(count):
            samples[i] = raw[2 * i] | (raw[2 * i + 1] << 8)
        if count:
            k = det.feed(samples, count)
            for e in range(k):
                b = e * 5
                write("%d %d %d %d %d\n" % (events[b], events[b + 1], events[b + 2], events[b + 3], events[b + 4]))
        if got < len(raw):
            break


try:
    main()
except BaseException as exc:  # noqa: BLE001 - report, never print to stdout
    sys.stderr.write("micropython runner: %s: %s\n" % (type(exc).__name__, exc))
    sys.exit(1)
