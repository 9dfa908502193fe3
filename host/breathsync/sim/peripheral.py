"""Virtual BLE peripherals on Bumble, built from a declarative description, with fault switches.

A :class:`VirtualPeripheral` is a Bumble ``Device`` (GATT server) on its own virtual controller,
attached to a ``LocalLink``.  A central reaches it either from the same process (a
:class:`~breathsync.link.bumble_backend.BumbleBench` on the same link) or from another process
through an :class:`HciServer`: a second virtual controller on the link whose HCI is served on a
loopback TCP port, which the other process opens as ``tcp-client:127.0.0.1:PORT``.

Fault switches: :meth:`VirtualPeripheral.drop_link` (link loss, on both controllers),
:meth:`VirtualPeripheral.power_off` (stop advertising and vanish, optionally back after N s),
:meth:`VirtualPeripheral.stall_notifications` (connected but silent; drop or hold the values).

Bumble facts this module accounts for (measured with bumble 0.0.236): its controller has no scan request/response
exchange (a scanner's "scan response" repeats the advertising PDU), so the scan response data is
folded into the advertising PDU after both parts are checked against the 31-byte legacy limit; and
writes are not permission-checked, so a write handler validates and raises
:class:`WriteRejected` to answer with an ATT error.

Run ``python -m breathsync.sim.peripheral --help`` for a demo peripheral served over HCI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import inspect
import ipaddress
import logging
import math
import os
import struct
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from bumble import att, gatt, hci
from bumble.controller import Controller
from bumble.device import Connection, Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink, PacketParser

from ..link.bumble_backend import VirtualController, bleak_uuid, bumble_uuid, drop_le_connections, new_link

__all__ = [
    "DEMO_COUNTER_UUID",
    "DEMO_ECHO_UUID",
    "DEMO_SERVICE_UUID",
    "CharacteristicSpec",
    "DescriptorSpec",
    "HciServer",
    "PeripheralSpec",
    "PropertyName",
    "ServiceSpec",
    "VirtualPeripheral",
    "WriteRejected",
    "build_advertising_data",
    "demo_spec",
    "main",
    "static_address_for",
    "stream_counter",
]

logger = logging.getLogger(__name__)

PropertyName = Literal["read", "write", "write-without-response", "notify", "indicate"]
WriteHandler = Callable[[bytes], Awaitable[None] | None]

_PROPERTY_BITS: dict[str, gatt.Characteristic.Properties] = {
    "read": gatt.Characteristic.Properties.READ,
    "write": gatt.Characteristic.Properties.WRITE,
    "write-without-response": gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
    "notify": gatt.Characteristic.Properties.NOTIFY,
    "indicate": gatt.Characteristic.Properties.INDICATE,
}
_LEGACY_AD_MAX_BYTES = 31
_AD_FLAGS_LE_GENERAL_NO_BREDR = 0x06
_BLUETOOTH_BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"
_LOOPBACK_NAMES = ("localhost",)
_REMOTE_USER_TERMINATED = hci.HCI_ErrorCode.REMOTE_USER_TERMINATED_CONNECTION_ERROR
_CONNECTION_TIMEOUT = hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR
_CCCD_NOTIFY = 0x01
_CCCD_INDICATE = 0x02


class WriteRejected(Exception):
    """Raised by a write handler to answer the central with an ATT error (default: Value Not Allowed)."""

    def __init__(self, error_code: int = att.ErrorCode.VALUE_NOT_ALLOWED, message: str = "") -> None:
        super().__init__(message or f"write rejected with ATT error 0x{error_code:02X}")
        self.error_code = error_code


@dataclass(frozen=True)
class DescriptorSpec:
    """A characteristic descriptor (the CCCD of notify/indicate characteristics is added for you)."""

    uuid: str
    value: bytes = b""
    writable: bool = False


@dataclass(frozen=True)
class CharacteristicSpec:
    """A characteristic: reads return ``on_read()`` if given, else the last value written or set.

    ``on_write`` receives every written value (with or without response); it may be a coroutine
    function, and may raise :class:`WriteRejected`, in which case the value is not stored.  Reads
    and writes the properties do not allow are answered with Read/Write Not Permitted.
    """

    uuid: str
    properties: tuple[PropertyName, ...]
    value: bytes = b""
    on_read: Callable[[], bytes] | None = None
    on_write: WriteHandler | None = None
    descriptors: tuple[DescriptorSpec, ...] = ()


@dataclass(frozen=True)
class ServiceSpec:
    uuid: str
    characteristics: tuple[CharacteristicSpec, ...]


@dataclass(frozen=True)
class PeripheralSpec:
    """What a virtual peripheral serves and advertises.

    ``address`` is a random static address (default: derived from ``name``, so it is stable).
    ``advertised_service_uuids`` defaults to every service.  Advertising fields are packed in this
    order, the advertising PDU first then the scan response, 31 bytes each: flags, service UUIDs,
    name, TX power, service data, manufacturer data.
    """

    name: str
    services: tuple[ServiceSpec, ...]
    address: str | None = None
    advertised_service_uuids: tuple[str, ...] | None = None
    manufacturer_data: Mapping[int, bytes] = field(default_factory=dict)
    service_data: Mapping[str, bytes] = field(default_factory=dict)
    tx_power_dbm: int | None = None
    advertising_interval_ms: float = 20.0
    max_mtu: int = 247


def static_address_for(name: str) -> str:
    """A stable random static address for ``name`` (top two bits set, as the spec requires)."""
    raw = bytearray(hashlib.sha256(name.encode("utf-8")).digest()[:6])
    raw[0] |= 0xC0
    return ":".join(f"{b:02X}" for b in raw)


def _is_16_bit(uuid: str) -> bool:
    return uuid.startswith("0000") and uuid.endswith(_BLUETOOTH_BASE_UUID_TAIL)


def _uuid_le(uuid: str) -> bytes:
    """A normalised UUID as advertised: 2 bytes if it is a SIG 16-bit UUID, else 16, little-endian."""
    return bytes.fromhex(uuid[4:8] if _is_16_bit(uuid) else uuid.replace("-", ""))[::-1]


def _ad(ad_type: int, payload: bytes) -> bytes:
    if len(payload) > 254:
        raise ValueError(f"advertising field 0x{ad_type:02X} too long ({len(payload)} bytes)")
    return bytes((len(payload) + 1, ad_type)) + payload


def build_advertising_data(spec: PeripheralSpec) -> tuple[bytes, bytes]:
    """Pack ``spec``'s advertising fields into (advertising data, scan response), 31 bytes each.

    Raises ``ValueError`` when they do not fit, naming the field: a real strap has the same limit.
    """
    uuids = [bleak_uuid(u) for u in (spec.advertised_service_uuids or [s.uuid for s in spec.services])]
    short = [u for u in uuids if _is_16_bit(u)]
    long = [u for u in uuids if not _is_16_bit(u)]
    fields: list[tuple[str, bytes]] = [("flags", _ad(0x01, bytes((_AD_FLAGS_LE_GENERAL_NO_BREDR,))))]
    if short:
        fields.append(("16-bit UUIDs", _ad(0x03, b"".join(_uuid_le(u) for u in short))))
    if long:
        fields.append(("128-bit UUIDs", _ad(0x07, b"".join(_uuid_le(u) for u in long))))
    fields.append(("name", _ad(0x09, spec.name.encode("utf-8"))))
    if spec.tx_power_dbm is not None:
        fields.append(("tx power", _ad(0x0A, struct.pack("<b", spec.tx_power_dbm))))
    for uuid, data in spec.service_data.items():
        ad_type = 0x16 if _is_16_bit(bleak_uuid(uuid)) else 0x21
        fields.append((f"service data {uuid}", _ad(ad_type, _uuid_le(bleak_uuid(uuid)) + data)))
    for company_id, data in spec.manufacturer_data.items():
        fields.append((f"manufacturer data 0x{company_id:04X}", _ad(0xFF, struct.pack("<H", company_id) + data)))
    parts = [b"", b""]
    part = 0
    for label, encoded in fields:
        while part < 2 and len(parts[part]) + len(encoded) > _LEGACY_AD_MAX_BYTES:
            part += 1
        if part == 2:
            raise ValueError(f"{spec.name}: {label} does not fit in 31-byte advertising data + scan response")
        parts[part] += encoded
    return parts[0], parts[1]


def _require_loopback(host: str) -> None:
    if host in _LOOPBACK_NAMES:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"virtual controllers are served on loopback addresses only, not {host!r}")


class VirtualPeripheral:
    """A GATT peripheral on its own virtual controller; start it with :meth:`start`.

    It advertises whenever it is powered and not connected (one central at a time, like a strap),
    and counts what it did: ``notifications_sent``, ``notifications_dropped`` (powered off,
    stalled without hold, or nobody subscribed), ``writes``, ``connections``.
    """

    def __init__(self, spec: PeripheralSpec, link: LocalLink, controller: Controller, device: Device) -> None:
        self.spec = spec
        self.link = link
        self.controller = controller
        self.device = device
        self.address = spec.address or static_address_for(spec.name)
        self.powered = False
        self.notifications_sent = 0
        self.notifications_dropped = 0
        self.writes = 0
        self.connections = 0
        self._characteristics: dict[str, gatt.Characteristic[bytes]] = {}
        self._values: dict[str, bytes] = {}
        self._connected: list[Connection] = []
        self._stalled = False
        self._hold = False
        self._held: list[tuple[str, bytes]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._advertising_lock = asyncio.Lock()
        self._closed = False
        self._advertising_data = b"".join(build_advertising_data(spec))

    @classmethod
    async def start(cls, spec: PeripheralSpec, link: LocalLink) -> VirtualPeripheral:
        """Create the controller and device on ``link``, serve ``spec``'s GATT database, advertise."""
        address = spec.address or static_address_for(spec.name)
        controller = VirtualController(f"{spec.name}-controller", link=link)
        device = Device(name=spec.name, address=hci.Address(address), host=Host(controller, AsyncPipeSink(controller)))
        device.gatt_server.max_mtu = spec.max_mtu
        peripheral = cls(spec, link, controller, device)
        device.add_services([peripheral._build_service(service) for service in spec.services])
        device.on(device.EVENT_CONNECTION, peripheral._on_connection)
        device.on("characteristic_subscription", peripheral._on_subscription)
        try:
            await device.power_on()
            await peripheral.power_on()
        except BaseException:
            await peripheral.close()
            raise
        return peripheral

    async def __aenter__(self) -> VirtualPeripheral:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- GATT database

    def _build_service(self, spec: ServiceSpec) -> gatt.Service:
        return gatt.Service(bumble_uuid(spec.uuid), [self._build_characteristic(c) for c in spec.characteristics])

    def _build_characteristic(self, spec: CharacteristicSpec) -> gatt.Characteristic[bytes]:
        key = bleak_uuid(spec.uuid)
        if key in self._characteristics:
            raise ValueError(f"{self.spec.name}: characteristic {key} declared twice")
        properties = gatt.Characteristic.Properties(0)
        for name in spec.properties:
            properties |= _PROPERTY_BITS[name]
        permissions = att.Attribute.Permissions(0)
        if "read" in spec.properties:
            permissions |= att.Attribute.Permissions.READABLE
        if {"write", "write-without-response"} & set(spec.properties):
            permissions |= att.Attribute.Permissions.WRITEABLE
        self._values[key] = bytes(spec.value)
        readable = "read" in spec.properties
        writable = bool({"write", "write-without-response"} & set(spec.properties))

        # Bumble's server checks neither read nor write permissions: the properties are enforced here.
        def read(connection: Connection) -> bytes:
            del connection
            if not readable:
                raise att.ATT_Error(att.ErrorCode.READ_NOT_PERMITTED)
            return spec.on_read() if spec.on_read is not None else self._values[key]

        async def write(connection: Connection, value: bytes) -> None:
            del connection
            if not writable:
                raise att.ATT_Error(att.ErrorCode.WRITE_NOT_PERMITTED)
            await self._on_write(key, spec, bytes(value))

        descriptors = [self._build_descriptor(d) for d in spec.descriptors]
        value = gatt.CharacteristicValue(read=read, write=write)
        characteristic: gatt.Characteristic[bytes] = gatt.Characteristic(
            bumble_uuid(spec.uuid), properties, permissions, value, descriptors
        )
        self._characteristics[key] = characteristic
        return characteristic

    @staticmethod
    def _build_descriptor(spec: DescriptorSpec) -> gatt.Descriptor:
        stored = [bytes(spec.value)]

        def read(connection: Connection) -> bytes:
            del connection
            return stored[0]

        def write(connection: Connection, value: bytes) -> None:
            del connection
            if not spec.writable:
                raise att.ATT_Error(att.ErrorCode.WRITE_NOT_PERMITTED)
            stored[0] = bytes(value)

        permissions = att.Attribute.Permissions.READABLE
        if spec.writable:
            permissions |= att.Attribute.Permissions.WRITEABLE
        return gatt.Descriptor(bumble_uuid(spec.uuid), permissions, att.AttributeValue(read=read, write=write))

    async def _on_write(self, key: str, spec: CharacteristicSpec, value: bytes) -> None:
        self.writes += 1
        try:
            if spec.on_write is not None:
                result = spec.on_write(value)
                if inspect.isawaitable(result):
                    await result
        except WriteRejected as rejection:
            raise att.ATT_Error(rejection.error_code, message=str(rejection)) from rejection
        self._values[key] = value
        self._signal()

    def value(self, uuid: str) -> bytes:
        """The characteristic's stored value (initial, set, or last written)."""
        return self._values[self._key(uuid)]

    def set_value(self, uuid: str, value: bytes) -> None:
        """Change what reads of the characteristic return (without notifying)."""
        self._values[self._key(uuid)] = bytes(value)

    def _key(self, uuid: str) -> str:
        key = bleak_uuid(uuid)
        if key not in self._characteristics:
            raise KeyError(f"{self.spec.name} has no characteristic {key}")
        return key

    # ---- connections and subscriptions

    @property
    def is_connected(self) -> bool:
        return bool(self._connected)

    @property
    def connection(self) -> Connection | None:
        """The current central's connection, if any."""
        return self._connected[0] if self._connected else None

    def is_subscribed(self, uuid: str) -> bool:
        """Whether a connected central enabled notifications or indications of the characteristic."""
        handle = self._characteristics[self._key(uuid)].handle
        return any(self._cccd(connection, handle) & (_CCCD_NOTIFY | _CCCD_INDICATE) for connection in self._connected)

    def _cccd(self, connection: Connection, handle: int) -> int:
        value = self.device.gatt_server.subscribers.get(connection, {}).get(handle, b"")
        return value[0] if len(value) == 2 else 0

    def _on_connection(self, connection: Connection) -> None:
        if connection.role != hci.Role.PERIPHERAL:
            return
        self._connected.append(connection)
        self.connections += 1
        connection.on(connection.EVENT_DISCONNECTION, functools.partial(self._on_disconnection, connection))
        self._signal()

    def _on_disconnection(self, connection: Connection, reason: int) -> None:
        del reason
        if connection in self._connected:
            self._connected.remove(connection)
        if self.powered and not self._closed and not self._connected:
            self._spawn(self._advertise)
        self._signal()

    def _on_subscription(self, *args: object) -> None:
        del args
        self._signal()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Wait until ``predicate()`` holds, re-checked on each connection/subscription/write change."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await self._changed.wait()

    async def wait_connected(self, timeout_s: float = 5.0) -> None:
        await self.wait_until(lambda: self.is_connected, timeout_s)

    async def wait_disconnected(self, timeout_s: float = 5.0) -> None:
        await self.wait_until(lambda: not self.is_connected, timeout_s)

    async def wait_subscribed(self, uuid: str, timeout_s: float = 5.0) -> None:
        await self.wait_until(lambda: self.is_subscribed(uuid), timeout_s)

    # ---- notifications

    async def notify(self, uuid: str, value: bytes) -> int:
        """Notify (or indicate) ``value`` to subscribed centrals; returns how many received it.

        While powered off, or stalled without hold, the value is dropped; stalled with hold, it
        is queued and sent, in order, by :meth:`resume_notifications`.
        """
        key = self._key(uuid)
        if not self.powered:
            self.notifications_dropped += 1
            return 0
        if self._stalled:
            if self._hold:
                self._held.append((key, bytes(value)))
            else:
                self.notifications_dropped += 1
            return 0
        return await self._send(key, bytes(value))

    async def _send(self, key: str, value: bytes) -> int:
        characteristic = self._characteristics[key]
        server = self.device.gatt_server
        sent = 0
        for connection in list(self._connected):
            cccd = self._cccd(connection, characteristic.handle)
            if cccd & _CCCD_NOTIFY:
                await server.notify_subscriber(connection, characteristic, value)
            elif cccd & _CCCD_INDICATE:
                await server.indicate_subscriber(connection, characteristic, value)
            else:
                continue
            sent += 1
        if sent:
            self.notifications_sent += 1
        else:
            self.notifications_dropped += 1
        return sent

    def stall_notifications(self, duration_s: float | None = None, *, hold: bool = False) -> None:
        """Stay connected but stop notifying (``hold`` queues the values instead of dropping them).

        With ``duration_s``, notifications resume by themselves after that long.
        """
        self._stalled = True
        self._hold = hold
        if duration_s is not None:
            self._after(duration_s, self.resume_notifications)

    async def resume_notifications(self) -> int:
        """End a stall; held values go out first, in order. Returns how many held values were sent."""
        self._stalled = False
        held, self._held = self._held, []
        sent = 0
        for key, value in held:
            if await self._send(key, value):
                sent += 1
        return sent

    @property
    def notifications_stalled(self) -> bool:
        return self._stalled

    # ---- faults and power

    def drop_link(self) -> int:
        """Lose the radio link now: both ends see a connection timeout (0x08); we re-advertise.

        Returns the number of links dropped.
        """
        return drop_le_connections(self.controller, reason=_CONNECTION_TIMEOUT)

    async def disconnect(self, reason: int = _REMOTE_USER_TERMINATED) -> None:
        """Peripheral-initiated disconnect (the central sees ``reason``); we re-advertise."""
        for connection in list(self._connected):
            with contextlib.suppress(Exception):
                await connection.disconnect(reason)

    async def power_off(self, duration_s: float | None = None) -> None:
        """Vanish: stop advertising and lose the link (the central sees a connection timeout).

        Notifications are dropped while off.  With ``duration_s`` the peripheral powers on again by
        itself after that long (this call returns once it is off).
        """
        self.powered = False
        async with self._advertising_lock:
            await self.device.stop_advertising()
        self.drop_link()
        self._signal()
        if duration_s is not None:
            self._after(duration_s, self.power_on)

    async def power_on(self) -> None:
        """Come back: advertise again (no-op if already powered)."""
        if self.powered or self._closed:
            return
        self.powered = True
        self._signal()
        if not self._connected:
            await self._advertise()

    async def _advertise(self) -> None:
        async with self._advertising_lock:  # power_on and a disconnection may both ask at once
            if not self.powered or self._closed or self._connected:
                return
            await self.device.start_advertising(
                advertising_data=self._advertising_data,
                scan_response_data=b"",
                advertising_interval_min=self.spec.advertising_interval_ms,
                advertising_interval_max=self.spec.advertising_interval_ms,
            )

    def _after(self, duration_s: float, action: Callable[[], Awaitable[object]]) -> None:
        """End a timed fault: run ``action`` in the background once ``duration_s`` has passed."""

        async def later() -> None:
            await asyncio.sleep(duration_s)
            await action()

        self._spawn(later)

    def _spawn(self, job: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: background task failed", self.spec.name)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop background tasks, lose any link, and detach the controller from the link."""
        if self._closed:
            return
        self._closed = True
        self.powered = False
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.device.stop_advertising()
        self.drop_link()
        with contextlib.suppress(Exception):
            await self.device.power_off()
        if self.controller in self.link.controllers:
            self.link.remove_controller(self.controller)


# --------------------------------------------------------------------------- HCI over loopback TCP


class _SocketSink:
    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def on_packet(self, packet: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(packet)


TAKEOVER_GRACE_S = 1.0  # how long a new host waits for the attached one's socket to close (a restart after a crash)
EARLY_HCI_BYTES = 65536  # what a waiting host may send before it attaches (a reset and a few commands)


def _command_opcodes(stream: bytes) -> list[int]:
    """Opcodes of the whole HCI command packets (H4: type 0x01, opcode, length, parameters) at the start of
    ``stream``; parsing stops at anything else."""
    opcodes, i = [], 0
    while i + 4 <= len(stream) and stream[i] == hci.HCI_COMMAND_PACKET:
        end = i + 4 + stream[i + 3]
        if end > len(stream):
            break
        opcodes.append(int.from_bytes(stream[i + 1 : i + 3], "little"))
        i = end
    return opcodes


class _HciProtocol(asyncio.Protocol):
    def __init__(self, server: HciServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = PacketParser(server.controller)
        self.early = bytearray()  # what a host sent while waiting to attach (its HCI reset): fed on attaching

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._attach(self)

    def data_received(self, data: bytes) -> None:
        if self.server._client is self:
            self.parser.feed_data(data)
        elif len(self.early) + len(data) <= EARLY_HCI_BYTES:
            self.early += data

    def connection_lost(self, exc: Exception | None) -> None:
        del exc
        self.server._detach(self)


class HciServer:
    """A virtual controller on ``link`` whose HCI is served on loopback TCP, one host at a time.

    Another process opens it with ``BumbleBench.open(server.host_moniker)``.  When that host goes
    away its links are lost (the peripherals see a connection timeout and re-advertise) and the next
    host may attach. A second host while one is attached is refused (its connection closed): taking
    over would cut a live session's straps off for a ``breathsync scan`` or a refused second run.
    A host restarted after a crash can arrive before the old socket's close is seen, so a newcomer
    waits up to ``TAKEOVER_GRACE_S`` for the attached host to go before it is refused.
    """

    def __init__(self, link: LocalLink, controller: VirtualController) -> None:
        self.link = link
        self.controller = controller
        self.port = 0
        self.host_address = "127.0.0.1"
        self._server: asyncio.Server | None = None
        self._client: _HciProtocol | None = None
        self._waiting: list[_HciProtocol] = []  # hosts that arrived while one was attached
        self._closing = False
        self._attached = asyncio.Event()

    @classmethod
    async def start(cls, link: LocalLink, moniker: str = "tcp-server:127.0.0.1:0") -> HciServer:
        """Serve on ``tcp-server:HOST:PORT`` (HOST must be loopback; PORT 0 picks a free one)."""
        scheme, _, spec = moniker.partition(":")
        host, _, port_text = spec.rpartition(":")
        if scheme != "tcp-server" or not host or not port_text.isdigit():
            raise ValueError(f"expected tcp-server:HOST:PORT, got {moniker!r}")
        host = host.strip("[]")
        _require_loopback(host)
        server = cls(link, VirtualController("hci-server-controller", link=link))
        loop = asyncio.get_running_loop()
        try:
            server._server = await loop.create_server(lambda: _HciProtocol(server), host, int(port_text))
        except BaseException:
            link.remove_controller(server.controller)
            raise
        sockname = server._server.sockets[0].getsockname()
        server.host_address, server.port = str(sockname[0]), int(sockname[1])
        return server

    @property
    def host_moniker(self) -> str:
        """The transport moniker a host process opens to reach this controller."""
        # As Bumble reads it: the port after the last ':', the host before it unbracketed ('::1', not '[::1]':
        # an input review found the bracketed form printed by `sim --host ::1` and unusable).
        return f"tcp-client:{self.host_address}:{self.port}"

    async def wait_for_host(self, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self._attached.wait()

    def _attach(self, client: _HciProtocol) -> None:
        if self._client is None:
            self._adopt(client)
        else:
            self._waiting.append(client)
            asyncio.get_running_loop().call_later(TAKEOVER_GRACE_S, self._refuse_if_waiting, client)

    def _refuse_if_waiting(self, client: _HciProtocol) -> None:
        if client not in self._waiting:
            return  # attached meanwhile, or gone
        self._waiting.remove(client)
        if client.transport is None or client.transport.is_closing():
            return
        logger.warning(
            "HCI server on port %d: refused a second host (one is attached; a virtual controller serves one host "
            "at a time)",
            self.port,
        )
        # Answer what it sent (its HCI reset) with 'command disallowed', as a busy controller would: the host then
        # fails with an HCI error it can report, not a lost transport.
        for opcode in _command_opcodes(bytes(client.early)):
            # H4 event packet: Command Complete (0x0E), 4 parameter bytes: 1 command credit, the opcode, the status.
            complete = bytes([hci.HCI_EVENT_PACKET, hci.HCI_COMMAND_COMPLETE_EVENT, 4, 1])
            client.transport.write(complete + opcode.to_bytes(2, "little") + bytes([hci.HCI_COMMAND_DISALLOWED_ERROR]))
        client.transport.close()

    def _adopt(self, client: _HciProtocol) -> None:
        assert client.transport is not None
        self._client = client
        self.controller.host = _SocketSink(client.transport)
        self._attached.set()
        early, client.early = bytes(client.early), bytearray()
        if early:
            client.parser.feed_data(early)

    def _detach(self, client: _HciProtocol) -> None:
        if client in self._waiting:
            self._waiting.remove(client)
        if self._client is not client:
            return
        self._client = None
        self._attached.clear()
        self.controller.host = None
        # The host is gone: its links drop (peers see a timeout), its scan and connect attempt end.
        drop_le_connections(self.controller, notify_host=False)
        self.controller.pending_le_connection = None
        self.controller.le_scan_enable = False
        while self._waiting and not self._closing:  # a host that arrived as this one left (a restart) takes over
            waiting = self._waiting.pop(0)
            if waiting.transport is not None and not waiting.transport.is_closing():
                self._adopt(waiting)
                break

    async def close(self) -> None:
        if self._server is not None:
            self._closing = True  # a waiting host must not take the controller over on the way out
            self._server.close()
            for client in [self._client, *self._waiting]:
                if client is not None and client.transport is not None:
                    client.transport.close()
            self._waiting.clear()
            await self._server.wait_closed()
            self._server = None
        drop_le_connections(self.controller, notify_host=False)
        if self.controller in self.link.controllers:
            self.link.remove_controller(self.controller)

    async def __aenter__(self) -> HciServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


# --------------------------------------------------------------------------- demo CLI

DEMO_SERVICE_UUID = "7e570000-5eb1-4c1a-9d6e-8b2f0a1c3d4e"
DEMO_COUNTER_UUID = "7e570001-5eb1-4c1a-9d6e-8b2f0a1c3d4e"
"""Notify + read: a little-endian uint32 counter, one per notification."""
DEMO_ECHO_UUID = "7e570002-5eb1-4c1a-9d6e-8b2f0a1c3d4e"
"""Read + write (with and without response): reads return the last value written."""


def demo_spec(name: str = "Virtual-Strap", *, manufacturer_data: Mapping[int, bytes] | None = None) -> PeripheralSpec:
    """A small generic peripheral: a counter to stream and an echo to write."""
    return PeripheralSpec(
        name=name,
        services=(
            ServiceSpec(
                DEMO_SERVICE_UUID,
                (
                    CharacteristicSpec(DEMO_COUNTER_UUID, ("read", "notify"), value=struct.pack("<I", 0)),
                    CharacteristicSpec(DEMO_ECHO_UUID, ("read", "write", "write-without-response")),
                ),
            ),
        ),
        manufacturer_data=manufacturer_data or {},
    )


async def stream_counter(peripheral: VirtualPeripheral, rate_hz: float, *, uuid: str = DEMO_COUNTER_UUID) -> None:
    """Notify an incrementing uint32 at ``rate_hz`` while a central is subscribed.

    The count pauses while nobody is subscribed; values lost to a stall or a power-off still use
    their count, so the central sees the gap.  Ticks are scheduled on absolute times, so the rate
    does not drift with the loop's latency.
    """
    loop = asyncio.get_running_loop()
    period_s = 1.0 / rate_hz
    next_s = loop.time()
    counter = 0
    while True:
        next_s += period_s
        await asyncio.sleep(max(0.0, next_s - loop.time()))
        if peripheral.is_subscribed(uuid):
            value = struct.pack("<I", counter)
            peripheral.set_value(uuid, value)
            await peripheral.notify(uuid, value)
            counter += 1


async def _serve(args: argparse.Namespace) -> None:
    link = new_link()
    server = await HciServer.start(link, args.hci)
    peripheral = await VirtualPeripheral.start(demo_spec(args.name), link)
    print(f"ready {server.host_moniker} {peripheral.address}", flush=True)
    parent_pid = os.getppid()
    streamer = asyncio.create_task(stream_counter(peripheral, args.rate_hz))
    try:
        loop = asyncio.get_running_loop()
        end_s = None if args.seconds is None else loop.time() + args.seconds
        # Leave when the time is up or when the parent that started us is gone.
        while (end_s is None or loop.time() < end_s) and os.getppid() == parent_pid:
            await asyncio.sleep(0.2)
    finally:
        streamer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await streamer
        await peripheral.close()
        await server.close()


def main(argv: list[str] | None = None) -> int:
    """Serve a demo peripheral's link over HCI on loopback for a host in another process."""
    parser = argparse.ArgumentParser(
        prog="python -m breathsync.sim.peripheral",
        description="Serve a virtual BLE peripheral through a virtual controller on loopback TCP. "
        "Prints 'ready tcp-client:HOST:PORT ADDRESS' once a host can attach.",
    )
    parser.add_argument("--hci", default="tcp-server:127.0.0.1:0", help="tcp-server:HOST:PORT, loopback only")
    parser.add_argument("--name", default="Virtual-Strap", help="advertised local name")
    parser.add_argument("--rate-hz", type=float, default=50.0, help="counter notifications per second")
    parser.add_argument("--seconds", type=float, default=None, help="exit after this long (default: run until killed)")
    args = parser.parse_args(argv)
    # nan passes a plain "<= 0" test and would stop the streamer or the deadline at once.
    if not (math.isfinite(args.rate_hz) and args.rate_hz > 0):
        parser.error("--rate-hz must be a finite number > 0")
    if args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0):
        parser.error("--seconds must be a finite number > 0")
    try:
        asyncio.run(_serve(args))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
