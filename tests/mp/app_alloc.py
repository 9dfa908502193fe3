# ruff: noqa: UP031  (runs under MicroPython)
# Allocation per sample / per notification of the strap's hot path (MICROPYPATH=firmware:.frozen).
# Prints "NAME BYTES" per check: bytes allocated per call, from micropython.mem_total() deltas.
from array import array

import micropython
from core.ringbuf import EventRing, SampleRing
from drivers.sensors import AnalogStretch
from strap.sampler import Sampler
from strap.stream import Streamer


class Adc:
    def read_u16(self):
        return 1234


class Flag:
    def set(self):
        pass


class Timer:
    PERIODIC = 1

    def init(self, **kwargs):
        pass


class Link:
    connected = True
    spp = 7
    min_interval_ms = 0

    def send(self, channel, buf, n):
        return True


def per_call(fn, n=700):
    fn()
    a = micropython.mem_total()
    for _ in range(n):
        fn()
    return (micropython.mem_total() - a) // n


sampler = Sampler(Timer(), AnalogStretch(Adc()), Flag())
chunk = array("H", bytes(64))
ring = SampleRing(2000)
streamer = Streamer(ring, EventRing(16, 5), 25)
streamer.attach(Link(), 0)
streamer.start()
t = [0]


def isr():
    sampler._isr(None)
    if sampler.unread() > 60:
        sampler.drain(chunk, 32)


def sample_to_ring():
    sampler._isr(None)
    n = sampler.drain(chunk, 32)
    ring.push_many(chunk, n)


def notify():
    for _ in range(7):
        ring.push(1000)
    t[0] += 100
    streamer.pump(t[0])


events = streamer.evring
record = array("i", [1, 100, 120, 500, 4000])


def notify_event():
    events.push(record)
    t[0] += 100
    streamer.pump(t[0])


response = bytearray(b"\x14\x01\x09\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00")


def notify_response():
    streamer.respond(response, len(response))
    t[0] += 100
    streamer.pump(t[0])


def notify_status():
    streamer.status_due = True
    t[0] += 100
    streamer.pump(t[0])


def notify_backfill():  # one packet of a backfill over the whole ring (the host's gap after a drop-out)
    if not streamer.backfilling:
        streamer.backfill(ring.oldest(), ring.head())
    t[0] += 100
    streamer.pump(t[0])


def detect_read():  # what the detection task reads per wake
    ring.read_from(ring.head() - 3, chunk, 32)
    return ring.read_first


def event_read():  # a backfill looking for the events in its range
    events.read_from(events.head - 2, record, 1)
    return events.read_first


print("isr", per_call(isr))
print("sample_to_ring", per_call(sample_to_ring))
print("notify", per_call(notify, 100))
print("notify_event", per_call(notify_event, 100))
print("notify_response", per_call(notify_response, 100))
print("notify_status", per_call(notify_status, 100))
for _ in range(1500):
    ring.push(1000)
ring.commit(ring.pending())  # delivered live: what follows is backfill alone (live samples would go first)
sent = streamer.sent
print("notify_backfill", per_call(notify_backfill, 100))
print("backfill_packets", streamer.sent - sent if streamer.backfilling else 0)
print("detect_read", per_call(detect_read))
print("event_read", per_call(event_read))
