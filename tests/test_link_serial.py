"""Wired mode on the host: pyserial on a pseudo-terminal, COBS+CRC frames, commands answered."""

from __future__ import annotations

import asyncio
import os
import pty
import threading
import tty

import numpy as np

from breathsync.link.serial_link import SerialStrapLink
from breathsync.link.stream import SampleBlock, StrapEvent
from breathsync.protocol import (
    Channel,
    ControlCommand,
    Deframer,
    Frame,
    ResponsePacket,
    ResultCode,
    Role,
    SamplesPacket,
    SensorState,
    StatusFlag,
    StatusPacket,
    TimeSync,
)


class Sink:
    def __init__(self) -> None:
        self.values: dict[int, int] = {}
        self.statuses: list[StatusPacket] = []

    def on_samples(self, block: SampleBlock) -> None:
        for c, v in zip(block.counters, block.values, strict=True):
            assert int(c) not in self.values
            self.values[int(c)] = int(v)

    def on_event(self, event: StrapEvent) -> None:
        pass

    def on_status(self, role: str, status: StatusPacket) -> None:
        self.statuses.append(status)

    def on_link(self, role: str, kind: str, detail: str) -> None:
        pass


class PtyStrap:
    """The strap end of a pty: streams framed SAMPLES (some corrupted), answers commands."""

    def __init__(self, values: list[int], corrupt_every: int = 0) -> None:
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave
        self.values = values
        self.corrupt_every = corrupt_every
        self.commands: list[ControlCommand] = []
        self.acquired = 0  # the strap's sample counter (TIME_SYNC answers it)
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._stream, daemon=True)
        self._reader = threading.Thread(target=self._answer, daemon=True)

    def start(self) -> PtyStrap:
        self._reader.start()
        return self

    def _stream(self) -> None:
        for n, start in enumerate(range(0, len(self.values), 7)):
            # Counted when acquired, before it is sent (as on the strap): counted after the write, a TIME_SYNC
            # answered in between (this thread preempted under load) said the counter was behind what the host
            # already held, and the host took it for a reboot (clean-clone CI, once).
            self.acquired = start + len(self.values[start : start + 7])
            frame = bytearray(bytes(Frame.of(SamplesPacket(n & 0xFF, start, tuple(self.values[start : start + 7])))))
            if self.corrupt_every and n % self.corrupt_every == 3:
                frame[3] ^= 0x40  # a flipped bit on the cable: the CRC catches it
                os.write(self.master, bytes(frame))
                os.write(
                    self.master, bytes(Frame.of(SamplesPacket(n & 0xFF, start, tuple(self.values[start : start + 7]))))
                )
            else:
                os.write(self.master, bytes(frame))
            if self._stop.wait(0.002):
                return

    def _answer(self) -> None:
        deframer = Deframer()
        while not self._stop.is_set():
            try:
                data = os.read(self.master, 256)
            except OSError:
                return
            for frame in deframer.feed(data):
                command = ControlCommand.from_bytes(frame.payload)
                self.commands.append(command)
                values = (command.token, self.acquired) if isinstance(command, TimeSync) else (0, 0)
                response = ResponsePacket(command.tag, Channel.CONTROL, command.OPCODE, ResultCode.OK, *values)
                os.write(self.master, bytes(Frame.of(response)))
                if command.OPCODE.name == "START_STREAM" and not self._writer.is_alive():
                    self._writer.start()  # like the strap: stream once asked to
                if command.OPCODE.name == "GET_STATUS":
                    status = StatusPacket(
                        (0, 1, 0), SensorState.OK, 50, Role.THERAPIST, StatusFlag.WIRED, None, 3, 0, 0
                    )
                    os.write(self.master, bytes(Frame.of(status)))

    def close(self) -> None:
        self._stop.set()
        os.close(self._slave)
        os.close(self.master)


def test_wired_stream_with_corruption_loses_nothing() -> None:
    values = [int(v) for v in np.random.default_rng(5).integers(0, 65536, 50 * 20)]
    strap = PtyStrap(values, corrupt_every=10).start()
    sink = Sink()

    async def go() -> SerialStrapLink:
        link = SerialStrapLink("therapist", strap.path, sink, rate_hz=50, backfill_every_s=0.2)
        task = asyncio.create_task(link.run())
        deadline = asyncio.get_running_loop().time() + 20
        while len(sink.values) < len(values) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await link.close()
        await asyncio.wait_for(task, 10)
        return link

    link = asyncio.run(go())
    strap.close()
    assert sink.values == dict(enumerate(values))
    assert link.stats.bad_by_kind.get("BadCrc", 0) + link.stats.bad_by_kind.get("BadFrame", 0) >= 10
    assert [c.OPCODE.name for c in strap.commands[:2]] == ["GET_STATUS", "START_STREAM"]
    assert sink.statuses and sink.statuses[0].sample_rate_hz == 50 and sink.statuses[0].battery_pct is None


def test_missing_port_is_a_one_line_link_error() -> None:
    from breathsync.link.session import LinkError

    async def go() -> None:
        await SerialStrapLink("client", "/dev/does-not-exist", Sink()).run()

    try:
        asyncio.run(go())
    except LinkError as exc:
        assert "cannot open /dev/does-not-exist" in str(exc)
    else:
        raise AssertionError("expected LinkError")
