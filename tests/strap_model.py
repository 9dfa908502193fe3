"""A small CPython model of a strap's BLE behaviour, for fast link-layer tests.

It speaks docs/protocol.md through the host's own encoders on a Bumble VirtualPeripheral: a
sample source with an unbounded buffer, live streaming from a delivery cursor, BACKFILL,
TIME_SYNC and HAPTIC answered with RESPONSE. It is a test double for link behaviour only; the
real strap firmware runs inside MicroPython in the virtual-strap tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from breathsync.protocol import (
    Backfill,
    Channel,
    ControlCommand,
    HapticCommand,
    ResponsePacket,
    ResultCode,
    Role,
    SamplesPacket,
    SensorState,
    SetRate,
    StatusFlag,
    StatusPacket,
    TimeSync,
)
from breathsync.protocol.uuids import CHARACTERISTIC_UUIDS, SERVICE_UUID
from breathsync.sim.peripheral import CharacteristicSpec, PeripheralSpec, ServiceSpec, VirtualPeripheral

PER_PACKET = 7


@dataclass
class ModelStrap:
    name: str
    values: list[int]
    rate_hz: float = 25.0
    speed: float = 10.0  # samples produced this many times faster than real time
    loss: float = 0.0  # probability that a live notification is lost in the air
    seed: int = 0
    role: Role = Role.CLIENT
    produced: int = 0
    sent_upto: int = 0
    streaming: bool = False
    boot_at: int = 0  # index of ``values`` where the current boot's counter 0 is (see reboot)
    haptics: list[HapticCommand] = field(default_factory=list)
    controls: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, opcode name) as received
    answers_haptics: bool = True  # False: it plays a pattern but its RESPONSE is lost (the link drops meanwhile)
    lost_commands: list[str] = field(default_factory=list)  # opcode names whose next write is lost in the air (once)
    busy_commands: list[str] = field(default_factory=list)  # opcode names whose next write is answered BUSY (once)
    refused_commands: set[str] = field(default_factory=set)  # opcode names always answered INTERNAL_ERROR (not done)
    peripheral: VirtualPeripheral | None = None

    def spec(self) -> PeripheralSpec:
        def chan(channel: Channel, props: tuple[str, ...], **kw: object) -> CharacteristicSpec:
            return CharacteristicSpec(CHARACTERISTIC_UUIDS[channel], props, **kw)  # type: ignore[arg-type]

        return PeripheralSpec(
            self.name,
            (
                ServiceSpec(
                    SERVICE_UUID,
                    (
                        chan(Channel.SAMPLES, ("notify",)),
                        chan(Channel.EVENT, ("notify",)),
                        chan(Channel.STATUS, ("read", "notify"), on_read=self.status_bytes),
                        chan(Channel.RESPONSE, ("read", "notify")),
                        chan(Channel.HAPTIC, ("write",), on_write=self.on_haptic),
                        chan(Channel.CONTROL, ("write",), on_write=self.on_control),
                    ),
                ),
            ),
        )

    def status_bytes(self) -> bytes:
        return bytes(
            StatusPacket(
                (0, 1, 0),
                SensorState.OK,
                int(self.rate_hz),
                self.role,
                StatusFlag.STREAMING if self.streaming else StatusFlag(0),
                90,
                0,
                0,
                0,
            )
        )

    async def start(self, link: object) -> ModelStrap:
        self.peripheral = await VirtualPeripheral.start(self.spec(), link)  # type: ignore[arg-type]
        self._rng = random.Random(self.seed)
        self._task = asyncio.create_task(self._produce())
        self._backfills: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self._backfill_task = asyncio.create_task(self._serve_backfills())
        return self

    async def close(self) -> None:
        for task in (self._task, self._backfill_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert self.peripheral is not None
        await self.peripheral.close()

    async def _notify(self, channel: Channel, payload: bytes) -> bool:
        assert self.peripheral is not None
        return bool(await self.peripheral.notify(CHARACTERISTIC_UUIDS[channel], payload))

    def _packet(self, start: int, end: int) -> bytes:
        counter = start - self.boot_at
        return bytes(SamplesPacket(counter // PER_PACKET & 0xFF, counter, tuple(self.values[start:end])))

    def reboot(self) -> None:
        """Restart: the counter begins again at 0 and everything buffered is gone (RAM)."""
        self.boot_at = self.sent_upto = self.produced
        self.streaming = False

    async def _produce(self) -> None:
        while self.produced < len(self.values):
            await asyncio.sleep(PER_PACKET / self.rate_hz / self.speed)  # SET_RATE changes it
            self.produced = min(len(self.values), self.produced + PER_PACKET)
            while self.streaming and self.sent_upto < self.produced:
                end = min(self.sent_upto + PER_PACKET, self.produced)
                if self._rng.random() < self.loss:
                    self.sent_upto = end  # sent, but lost in the air
                    continue
                if not await self._notify(Channel.SAMPLES, self._packet(self.sent_upto, end)):
                    break  # nobody listening: stays pending in the buffer
                self.sent_upto = end

    async def _serve_backfills(self) -> None:
        while True:
            start, end = await self._backfills.get()
            pos = start
            while pos < end:
                stop = min(pos + PER_PACKET, end)
                if await self._notify(Channel.SAMPLES, self._packet(pos, stop)):
                    pos = stop
                else:
                    await asyncio.sleep(0.05)

    async def _respond(
        self,
        tag: int,
        channel: Channel,
        opcode: int,
        value0: int = 0,
        value1: int = 0,
        result: ResultCode = ResultCode.OK,
    ) -> None:
        payload = bytes(ResponsePacket(tag, channel, opcode, result, value0, value1))
        assert self.peripheral is not None
        self.peripheral.set_value(CHARACTERISTIC_UUIDS[Channel.RESPONSE], payload)
        await self._notify(Channel.RESPONSE, payload)

    async def on_haptic(self, value: bytes) -> None:
        command = HapticCommand.from_bytes(value)
        self.haptics.append(command)
        if self.answers_haptics:
            await self._respond(command.tag, Channel.HAPTIC, 0, 0, 0)

    async def on_control(self, value: bytes) -> None:
        command = ControlCommand.from_bytes(value)
        if command.OPCODE.name in self.lost_commands:
            self.lost_commands.remove(command.OPCODE.name)
            return
        self.controls.append((time.monotonic(), command.OPCODE.name))
        if command.OPCODE.name in self.refused_commands:  # e.g. SET_RATE on a strap that cannot save its settings
            await self._respond(command.tag, Channel.CONTROL, command.OPCODE, result=ResultCode.INTERNAL_ERROR)
            return
        if command.OPCODE.name in self.busy_commands:
            self.busy_commands.remove(command.OPCODE.name)
            await self._respond(command.tag, Channel.CONTROL, command.OPCODE, result=ResultCode.BUSY)
            return
        value0 = value1 = 0
        if isinstance(command, Backfill):
            to = self.produced if command.to_counter is None else command.to_counter + self.boot_at
            start = max(command.from_counter + self.boot_at, self.boot_at)
            end = max(start, min(to, self.produced))
            value0, value1 = start - self.boot_at, end - self.boot_at
            self._backfills.put_nowait((start, end))
        elif isinstance(command, TimeSync):
            value0, value1 = command.token, self.produced - self.boot_at
        elif command.OPCODE.name == "START_STREAM":
            self.streaming = True
        elif command.OPCODE.name == "STOP_STREAM":
            self.streaming = False
        elif isinstance(command, SetRate):
            self.rate_hz = float(command.rate_hz)
        await self._respond(command.tag, Channel.CONTROL, command.OPCODE, value0, value1)
        if command.OPCODE.name == "GET_STATUS":  # as the firmware: its STATUS after the answer
            await self._notify(Channel.STATUS, self.status_bytes())


@contextlib.contextmanager
def served(make: Callable[[object], Awaitable[dict[str, ModelStrap]]]) -> Iterator[tuple[str, dict[str, ModelStrap]]]:
    """Model straps on a virtual link whose controller is served on loopback HCI by another thread.

    ``make(link)`` starts the straps; yields (``bumble:tcp-client:127.0.0.1:PORT``, straps), the
    adapter moniker another process (or this one) opens to reach them.
    """
    from breathsync.link.bumble_backend import new_link
    from breathsync.sim.peripheral import HciServer

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        link = new_link()
        straps = await make(link)
        server = await HciServer.start(link, "tcp-server:127.0.0.1:0")
        holder.update(straps=straps, moniker=server.host_moniker)
        ready.set()
        while not holder.get("stop"):
            await asyncio.sleep(0.05)
        await server.close()
        for strap in straps.values():
            await strap.close()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert ready.wait(20), "virtual straps did not start"
    try:
        yield f"bumble:{holder['moniker']}", holder["straps"]  # type: ignore[misc]
    finally:
        holder["stop"] = True
        thread.join(20)
        loop.close()
