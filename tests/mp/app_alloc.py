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


print("isr", per_call(isr))
print("sample_to_ring", per_call(sample_to_ring))
print("notify", per_call(notify, 100))
