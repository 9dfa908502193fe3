"""Wired mode: the same packets over the USB serial port, framed (docs/protocol.md section 8).

``WiredLink(stdin, stdout, commands, flag)`` gets the byte streams from main.py
(``sys.stdin.buffer`` / ``sys.stdout.buffer`` on the device and on the unix port). As a link
for ``stream.Streamer`` it is always connected, has no MTU (119 samples per packet) and no pacing
(``min_interval_ms`` 0); the 300 ms batching deadline still applies. ``send`` frames the packet
with ``framing.encode_frame`` into a preallocated buffer and writes it; the Battery Level
pseudo channel has no wired form and is skipped.

``read_task()`` reassembles frames from stdin with ``framing.FrameReader``; good frames on
channels 8/9 go to the command queue (the control task validates and answers them exactly as
over BLE), frames on other channels are dropped without a response, bad frames are counted
(``reader.bad_frames``). At end of input (a closed pipe) it stops reading.

It reads ONE byte per ``readinto``: on the ESP32, ``sys.stdin.buffer.readinto(buf)`` waits until
``buf`` is full (MicroPython issue #8772; the unix port does the same on a blocking pipe), so a
larger buffer would freeze the event loop on the first short command. After the awaited byte,
whatever else has arrived (a poll with timeout 0 says so) is read in the same turn, up to
``_READ_BYTES``, then the loop yields.
"""

import asyncio
import select

from core.framing import MAX_ENCODED_BYTES, FrameReader, encode_frame
from core.packets import CH_CONTROL, CH_HAPTIC, MAX_SAMPLES

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


_READ_BYTES = const(64)  # bytes handled per turn of the event loop at most


class WiredLink:
    def __init__(self, stdin, stdout, commands, flag):
        self._in = stdin
        self._out = stdout
        self.commands = commands
        self.flag = flag
        self.connected = True
        self.spp = MAX_SAMPLES
        self.min_interval_ms = 0
        self.reader = FrameReader()
        self.frames_ignored = 0  # good frames on a channel the strap does not take
        self.eof = False
        self._frame = bytearray(MAX_ENCODED_BYTES + 1)
        self._rx = bytearray(1)  # one byte per read: a read never waits for more than is there
        self._pkt = bytearray(20)

    def start(self):
        self._write(b"\x00", 1)  # the strap sends one 0x00 when the port opens

    def _write(self, buf, n):
        # write(buf, offset, length): MicroPython's stream form, which allocates nothing (a memoryview slice per
        # frame did: 32 bytes).
        done = 0
        while done < n:
            k = self._out.write(buf, done, n - done)
            if k is None:
                k = 0
            done += k
        return True

    def send(self, channel, buf, n):
        if channel == 0:
            return True  # Battery Level: BLE only
        k = encode_frame(self._frame, channel, buf, n)
        return self._write(self._frame, k)

    def set_value(self, channel, buf, n):
        pass  # no readable characteristics over the wire

    def take_events(self):
        return 0

    async def read_task(self):
        src = self._in
        stream = asyncio.StreamReader(src)
        poller = select.poll()
        poller.register(src, select.POLLIN)
        reader = self.reader
        rx = self._rx
        while True:
            n = await stream.readinto(rx)  # waits until readable, then takes the 1 byte there
            i = 0
            while n:
                k = reader.push(rx[0])
                if k > 0:
                    self._frame_ready(k)
                i += 1
                if i >= _READ_BYTES or not _readable(poller):
                    break
                n = src.readinto(rx)
            if n == 0:  # end of input (None: nothing after all, on a non-blocking stream)
                self.eof = True
                return

    def _frame_ready(self, k):
        buf = self.reader.buf
        channel = buf[0]
        if channel != CH_HAPTIC and channel != CH_CONTROL:
            self.frames_ignored += 1  # section 8 rule 7: no response
            return
        n = k - 1
        if n > len(self._pkt):
            n = len(self._pkt)
        i = 0
        while i < n:
            self._pkt[i] = buf[1 + i]
            i += 1
        self.commands.put(channel, self._pkt, n)
        self.flag.set()


def _readable(poller):
    for _ in poller.ipoll(0):  # ipoll: no list allocated on the device
        return True
    return False
