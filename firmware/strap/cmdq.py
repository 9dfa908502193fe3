"""Commands from the host, handed from the radio IRQ (or the serial reader) to the control task.

A fixed ring of ``slots`` x 20-byte buffers (a command is at most 19 bytes; the attribute buffer
is 20, docs/protocol.md 2.1), so the producer copies and never allocates. When the ring is full
the command is dropped and counted (``dropped``): the host sees no RESPONSE for its tag.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


SLOT_BYTES = const(20)


class CommandQueue:
    """Single producer (IRQ), single consumer (task): each side writes only its own index."""

    def __init__(self, slots=8):
        if 256 % slots:
            raise ValueError("slots must divide 256")
        self._slots = slots
        self._data = bytearray(SLOT_BYTES * slots)
        self._channel = bytearray(slots)
        self._len = bytearray(slots)
        self._w = 0  # commands put, mod 256 (producer)
        self._r = 0  # commands taken, mod 256 (consumer)
        self.dropped = 0

    def put(self, channel, data, n):
        """Copy ``data[:n]`` (truncated to SLOT_BYTES) for ``channel``; False if full."""
        w = self._w
        if ((w - self._r) & 0xFF) >= self._slots:
            self.dropped += 1
            return False
        slot = w % self._slots
        if n > SLOT_BYTES:
            n = SLOT_BYTES
        base = slot * SLOT_BYTES
        i = 0
        while i < n:
            self._data[base + i] = data[i]
            i += 1
        self._channel[slot] = channel
        self._len[slot] = n
        self._w = (w + 1) & 0xFF  # publish last
        return True

    def get(self, out):
        """Copy the oldest command into ``out`` (>= SLOT_BYTES); returns (channel, n) or (0, 0)."""
        r = self._r
        if r == self._w:
            return 0, 0
        slot = r % self._slots
        n = self._len[slot]
        base = slot * SLOT_BYTES
        i = 0
        while i < n:
            out[i] = self._data[base + i]
            i += 1
        ch = self._channel[slot]
        self._r = (r + 1) & 0xFF
        return ch, n

    def clear(self):
        """Forget every waiting command (consumer side: the host that sent them is gone)."""
        self._r = self._w

    def __len__(self):
        return (self._w - self._r) & 0xFF
