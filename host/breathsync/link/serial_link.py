"""A strap in wired mode: the same packets over its USB serial port, COBS-framed with a CRC.

pyserial reads in a worker thread (serial ports have no portable asyncio API); frames are
decoded on the event loop and handed to the same ``StrapSession`` as BLE notifications, so
backfill, time mapping and statistics behave identically. A researcher can record without a
radio; the strap keeps streaming for as long as the cable is attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

import serial

from ..protocol import Channel, Deframer, Frame, HapticCommand, ResponsePacket
from ..roles import Role
from .session import LinkError, StrapSession, StrapSink
from .stream import StrapStream

BAUD_RATE = 115200


class SerialStrapLink:
    """Streams one strap from a serial port (``/dev/ttyACM0``, a pty in tests)."""

    def __init__(
        self,
        role: Role,
        port: str,
        sink: StrapSink,
        rate_hz: float = 25.0,
        clock: Callable[[], float] = time.monotonic,
        backfill_every_s: float = 1.0,
        session_rate_hz: int | None = None,
    ) -> None:
        self.role = role
        self.port = port
        self.sink = sink
        self.session = StrapSession(role, sink, rate_hz, clock, session_rate_hz)
        self.stats = self.session.stats
        self.deframer = Deframer()
        self._frame_errors: dict[str, int] = {}
        self.backfill_every_s = backfill_every_s
        self.connected = asyncio.Event()
        self._serial: serial.Serial | None = None
        self._closing = threading.Event()

    @property
    def address(self) -> str:
        return self.port

    @property
    def counters(self) -> StrapStream:
        return self.session.stream

    async def _write(self, channel: Channel, payload: bytes) -> None:
        port = self._serial
        if port is None:
            raise LinkError(f"{self.role}: serial port not open")
        data = bytes(Frame(channel, payload))
        try:
            await asyncio.to_thread(port.write, data)
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"{self.role}: serial write failed: {exc}") from None

    def _on_bytes(self, data: bytes, arrival_s: float) -> None:
        for frame in self.deframer.feed(data):
            self.session.handle(frame.channel, frame.payload, arrival_s)
        # Frame-level errors (COBS, length, CRC) are counted by the deframer: mirror them.
        for name, count in self.deframer.errors.items():
            new = count - self._frame_errors.get(name, 0)
            if new > 0:
                self.stats.bad_packets += new
                self.stats.bad_by_kind[name] = self.stats.bad_by_kind.get(name, 0) + new
                self._frame_errors[name] = count

    def _reader(self, loop: asyncio.AbstractEventLoop, port: serial.Serial) -> None:
        while not self._closing.is_set():
            try:
                data = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError):
                break
            if data:
                arrival = self.session.clock()
                loop.call_soon_threadsafe(self._on_bytes, data, arrival)
        loop.call_soon_threadsafe(self.connected.clear)

    async def run(self) -> None:
        """Open the port, start streaming, keep backfilling gaps, until ``close()``."""
        try:
            port = await asyncio.to_thread(serial.Serial, self.port, BAUD_RATE, timeout=0.1)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"{self.role}: cannot open {self.port}: {exc}") from None
        self._serial = port
        loop = asyncio.get_running_loop()
        reader = threading.Thread(target=self._reader, args=(loop, port), name=f"serial-{self.role}", daemon=True)
        reader.start()
        self.session.attach(self._write)
        self.connected.set()
        self.sink.on_link(self.role, "connected", self.port)
        try:
            while not self._closing.is_set() and reader.is_alive():
                # Until it streams, also after it restarted behind an open port (a review: silent for the session).
                await self.session.keep_streaming(asyncio.get_running_loop().time(), self.backfill_every_s)
                with contextlib.suppress(LinkError):
                    await self.session.request_backfill()
                    await self.session.ping()  # keep-alive: a strap aborts haptics after 5 s of silence
                await asyncio.sleep(self.backfill_every_s)
        finally:
            self._closing.set()
            self.session.detach("serial closed")
            await asyncio.to_thread(reader.join, 2.0)
            with contextlib.suppress(Exception):
                port.close()
            self._serial = None
            self.connected.clear()
            self.sink.on_link(self.role, "closed", self.port)

    async def haptic(self, pattern: HapticCommand, timeout_s: float = 3.0) -> ResponsePacket:
        return await self.session.haptic(pattern, timeout_s)

    async def close(self) -> None:
        self._closing.set()
