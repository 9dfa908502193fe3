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
"""

import asyncio

from core.framing import MAX_ENCODED_BYTES, FrameReader, encode_frame
from core.packets import CH_CONTROL, CH_HAPTIC, MAX_SAMPLES

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


_READ_BYTES = const(64)


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
        self._frame_mv = memoryview(self._frame)
        self._rx = bytearray(_READ_BYTES)
        self._pkt = bytearray(20)

    def start(self):
        self._write(b"\x00", 1)  # the strap sends one 0x00 when the port opens

    def _write(self, buf, n):
        mv = memoryview(buf) if buf is not self._frame else self._frame_mv
        done = 0
        while done < n:
            k = self._out.write(mv[done:n])
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
        stream = asyncio.StreamReader(self._in)
        reader = self.reader
        rx = self._rx
        while True:
            n = await stream.readinto(rx)
            if not n:
                self.eof = True
                return
            i = 0
            while i < n:
                k = reader.push(rx[i])
                if k > 0:
                    self._frame_ready(k)
                i += 1

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
