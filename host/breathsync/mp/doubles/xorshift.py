"""A tiny seeded xorshift32 generator, identical under MicroPython and CPython.

The doubles and the firmware test scripts need reproducible random choices that give the same
sequence on both interpreters (``random`` differs between them); this is the one copy.
"""


class Rng:
    def __init__(self, seed, salt=7):
        self.s = (seed * 2654435761 + salt) & 0xFFFFFFFF or 1

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def below(self, n):
        return self.next() % n

    def between(self, a, b):
        return a + self.below(b - a + 1)
