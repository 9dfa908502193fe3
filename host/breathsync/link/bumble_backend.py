"""A bleak backend on the Bumble Bluetooth stack: the link code runs unchanged on virtual straps.

bleak builds backend objects itself (``BleakScanner(backend=cls)``, ``BleakClient(..., backend=cls)``),
so a backend class cannot be handed the Bumble device in its constructor.  A :class:`BumbleBench`
owns the Bumble host side (``Device`` + ``Host`` and either an in-memory controller on a
``LocalLink`` or an HCI transport such as ``tcp-client:127.0.0.1:PORT``) and hands out backend
classes bound to it::

    async with await BumbleBench.open(link) as bench:
        strap = await BleakScanner.find_device_by_name("Strap-A", backend=bench.scanner_backend)
        async with BleakClient(strap, backend=bench.client_backend) as client:
            await client.start_notify(DATA_UUID, on_data)

Bumble behaviours absorbed here (measured with bumble 0.0.236):

* only one pending LE connect per device: the bench serialises connects;
* the virtual controller acknowledges *LE Create Connection Cancel* but never ends the pending
  connection, so a connect timeout hangs: :class:`VirtualController` completes the cancel the way
  a real controller does, and the bench bounds the wait in case a foreign controller does not;
* scan responses repeat the advertising data: UUID lists are de-duplicated;
* UUIDs are normalised to bleak's lowercase 128-bit strings, or bleak's filters fail silently;
* a GATT request cut by a disconnect surfaces in Bumble as ``CancelledError``: it becomes a
  ``BleakError`` here unless the caller's task is really being cancelled;
* like bleak's platform backends, the disconnected callback also fires on our own ``disconnect()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import selectors
import uuid as std_uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bleak.uuids import normalize_uuid_16, normalize_uuid_32, normalize_uuid_str
from bumble import att, core, hci
from bumble.controller import Controller
from bumble.device import Advertisement, Connection, Device
from bumble.gatt_client import CharacteristicProxy
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

from ..errors import BreathsyncError
from .ble import AdapterGone, BleOptions

__all__ = [
    "DEFAULT_HOST_ADDRESS",
    "BumbleBench",
    "BumbleBenchError",
    "BumbleClient",
    "BumbleDeviceDetails",
    "BumbleScanner",
    "ParsedAdvertisement",
    "VirtualController",
    "bleak_uuid",
    "bumble_uuid",
    "drop_le_connections",
    "new_link",
    "parse_advertising_data",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_HOST_ADDRESS = "F0:F0:F0:F0:F0:F0"
"""Random static address of the bench's host device (the two top bits of a static address are 1)."""

POWER_ON_TIMEOUT_S = 10.0  # an HCI transport to something that is not a controller never answers
_DEFAULT_MTU = 247  # what NimBLE on the strap accepts; Bumble's server allows up to 517
_ATT_DEFAULT_MTU = 23
_CANCEL_BUDGET_S = 0.02  # part of a connect's timeout kept for cancelling the attempt
_CANCEL_GRACE_S = 2.0  # bound on a controller completing a connect cancel
_DISCONNECT_TIMEOUT_S = 2.0  # bound on a controller completing our own disconnect
_MIN_SETUP_S = 1.0  # time left for MTU exchange and discovery after a late connect

_CONNECTION_TIMEOUT = hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR
_LOCAL_HOST_TERMINATED = hci.HCI_ErrorCode.CONNECTION_TERMINATED_BY_LOCAL_HOST_ERROR
_GAP_DEVICE_NAME_UUID = normalize_uuid_16(0x2A00)

# Characteristic property bits (Core Vol 3, Part G, 3.3.1.1) in bleak's names.
_PROPERTY_NAMES: tuple[tuple[int, CharacteristicPropertyName], ...] = (
    (0x01, "broadcast"),
    (0x02, "read"),
    (0x04, "write-without-response"),
    (0x08, "write"),
    (0x10, "notify"),
    (0x20, "indicate"),
    (0x40, "authenticated-signed-writes"),
    (0x80, "extended-properties"),
)

# Advertising data types (Bluetooth Assigned Numbers, 2.3).
_AD_UUID16 = (0x02, 0x03)
_AD_UUID32 = (0x04, 0x05)
_AD_UUID128 = (0x06, 0x07)
_AD_SHORT_NAME = 0x08
_AD_COMPLETE_NAME = 0x09
_AD_TX_POWER = 0x0A
_AD_SERVICE_DATA = {0x16: 2, 0x20: 4, 0x21: 16}  # type -> UUID length in bytes
_AD_MANUFACTURER = 0xFF


class BumbleBenchError(BreathsyncError, BleakError):
    """The bench cannot reach its controller (transport refused or lost, bench closed)."""


def _check_file_transport(via: str) -> None:
    """Refuse a ``file:PATH`` transport the event loop cannot wait on (a regular file, /dev/zero): Bumble opens it
    and asyncio fails inside a callback, which prints a traceback and leaves power-on to time out 10 s later."""
    scheme, _, path = via.partition(":")
    if scheme != "file" or not path or path.startswith("["):  # Bumble's '[key=value]' options: its own parsing
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY)  # as Bumble opens it, without blocking on a FIFO
    except OSError as error:
        raise BumbleBenchError(f"cannot open Bumble transport {via!r}: {error.strerror or error}") from None
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
    except (OSError, ValueError):
        raise BumbleBenchError(
            f"cannot open Bumble transport {via!r}: {path} cannot be waited on for data (a serial port, a pty or a "
            "pipe to an HCI controller is needed)"
        ) from None
    finally:
        os.close(fd)


class BumbleTransportLost(BumbleBenchError, AdapterGone):
    """The bench's HCI transport ended (the virtual straps' process stopped): this bench reaches nothing again."""


# --------------------------------------------------------------------------- UUIDs and advertising


def bleak_uuid(value: core.UUID | str | int) -> str:
    """Normalise a Bumble UUID, a UUID string (16/32/128-bit) or an integer to bleak's form."""
    if isinstance(value, core.UUID):
        return str(std_uuid.UUID(bytes=value.to_bytes(force_128=True)[::-1]))
    if isinstance(value, int):
        return normalize_uuid_16(value) if value <= 0xFFFF else normalize_uuid_32(value)
    return normalize_uuid_str(value)


def bumble_uuid(value: str | int) -> core.UUID:
    """The Bumble UUID of a UUID string (any length, any case) or a 16/32-bit integer."""
    return core.UUID(bleak_uuid(value))


def _uuid_from_le(data: bytes) -> str:
    if len(data) == 16:
        return str(std_uuid.UUID(bytes=data[::-1]))
    return bleak_uuid(int.from_bytes(data, "little"))


@dataclass(frozen=True)
class ParsedAdvertisement:
    """The advertising fields bleak reports, in bleak's conventions (UUIDs normalised, no repeats)."""

    local_name: str | None
    service_uuids: list[str]
    manufacturer_data: dict[int, bytes]
    service_data: dict[str, bytes]
    tx_power: int | None


def parse_advertising_data(structures: Iterable[tuple[int, bytes]]) -> ParsedAdvertisement:
    """Parse (AD type, payload) structures; later repeats of a field do not duplicate it.

    Malformed structures (a UUID list whose length is not a multiple of the UUID size, a service
    data field shorter than its UUID) are skipped, like a platform stack does.
    """
    complete_name: str | None = None
    short_name: str | None = None
    uuids: list[str] = []
    manufacturer: dict[int, bytes] = {}
    service_data: dict[str, bytes] = {}
    tx_power: int | None = None
    for ad_type, payload in structures:
        size = 2 if ad_type in _AD_UUID16 else 4 if ad_type in _AD_UUID32 else 16 if ad_type in _AD_UUID128 else 0
        if size:
            if len(payload) % size == 0:
                for start in range(0, len(payload), size):
                    value = _uuid_from_le(payload[start : start + size])
                    if value not in uuids:
                        uuids.append(value)
        elif ad_type in (_AD_COMPLETE_NAME, _AD_SHORT_NAME):
            name = payload.decode("utf-8", errors="replace")
            if ad_type == _AD_COMPLETE_NAME:
                complete_name = name
            else:
                short_name = name
        elif ad_type == _AD_TX_POWER and len(payload) == 1:
            tx_power = int.from_bytes(payload, "little", signed=True)
        elif ad_type == _AD_MANUFACTURER and len(payload) >= 2:
            manufacturer[int.from_bytes(payload[:2], "little")] = bytes(payload[2:])
        elif ad_type in _AD_SERVICE_DATA and len(payload) >= _AD_SERVICE_DATA[ad_type]:
            size = _AD_SERVICE_DATA[ad_type]
            service_data[_uuid_from_le(payload[:size])] = bytes(payload[size:])
    return ParsedAdvertisement(
        local_name=complete_name if complete_name is not None else short_name,
        service_uuids=uuids,
        manufacturer_data=manufacturer,
        service_data=service_data,
        tx_power=tx_power,
    )


class _UnsubscribedNotification(logging.Filter):
    """Drops Bumble's warning about a notification that arrives before the host has subscribed. A strap notifies
    as soon as a central is connected (MicroPython's ``gatts_notify`` does not look at the CCCD), so after a
    reconnect its first packets can beat the host's subscription; the host backfills what they carried, and the
    warning ('!!! received notification with no subscriber') was bare noise on the user's terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("!!! received notification with no subscriber")


logging.getLogger("bumble.gatt_client").addFilter(_UnsubscribedNotification())


class _PacketForAGoneConnection(logging.Filter):
    """Drops the virtual controller's warning about a packet for a connection that has just gone (a virtual strap
    rebooting, or dropped by a scripted step, while the other side still sends): on a real radio the packet is
    simply lost, and the link layer above reports the disconnection. Under ``breathsync sim`` the warning ('!!! no
    connection for ED:97:...') was bare noise on the developer's terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("!!! no connection for")


logging.getLogger("bumble.controller").addFilter(_PacketForAGoneConnection())

_quieted: dict[str, tuple[int, int]] = {}  # logger name -> (blocks inside, level before the first)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Only errors from logger ``name`` while in this block (its warnings repeat an error raised to the caller).
    Blocks may overlap (two benches opening at once): the level comes back when the last one ends."""
    log = logging.getLogger(name)
    inside, level = _quieted.get(name, (0, log.level))
    _quieted[name] = (inside + 1, level)
    log.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        inside, level = _quieted.pop(name)
        if inside > 1:
            _quieted[name] = (inside - 1, level)
        else:
            log.setLevel(level)


def new_link() -> LocalLink:
    """A fresh in-memory link for virtual controllers (create it inside the running loop)."""
    return LocalLink()  # type: ignore[no-untyped-call]  # Bumble leaves LocalLink.__init__ unannotated


def _address_text(address: hci.Address) -> str:
    return address.to_string(with_type_qualifier=False)


# --------------------------------------------------------------------------- virtual controller


def drop_le_connections(
    controller: Controller,
    *,
    peer: hci.Address | str | None = None,
    reason: int = _CONNECTION_TIMEOUT,
    notify_host: bool = True,
) -> int:
    """Lose LE links of ``controller`` as a radio would: both ends see a disconnection, no terminate PDU.

    Bumble's LocalLink has no notion of link loss, so it is injected on both controllers: each
    host gets a Disconnection Complete with ``reason`` (default: connection timeout, what a
    supervision timeout reports).  ``peer`` limits it to one peer; ``notify_host=False`` removes our
    side silently (used on an HCI reset, when our host has forgotten the connections anyway).
    Returns the number of links dropped.
    """
    peer_text = None if peer is None else (peer if isinstance(peer, str) else _address_text(peer)).upper()
    dropped = 0
    for peer_address, connection in list(controller.le_connections.items()):
        if peer_text is not None and _address_text(peer_address).upper() != peer_text:
            continue
        other = controller.link.find_le_controller(peer_address) if controller.link else None
        if other is not None and other is not controller:
            other_connection = other.le_connections.get(connection.self_address)
            if other_connection is not None:
                other.on_le_disconnected(other_connection, reason)
        if notify_host:
            controller.on_le_disconnected(connection, reason)
        else:
            del controller.le_connections[peer_address]
        dropped += 1
    return dropped


class VirtualController(Controller):
    """Bumble's virtual controller with the repairs a bench needs.

    * *LE Create Connection Cancel*: Bumble acknowledges it but keeps the connect pending, so
      ``Device.connect_le(timeout=...)`` waits forever and every later connect is refused with
      Command Disallowed.  Here the cancel ends the attempt the way the spec says: an LE Connection
      Complete event with status Unknown Connection Identifier, after the command's completion.
    * *HCI Reset*: Bumble keeps connections, scanning, advertising and a pending connect across a
      reset.  A host attaching over HCI (``tcp-server``) resets first, so here a reset forgets them
      (the peers see a supervision timeout).
    * *Disconnect* of a handle that is already gone (the link dropped while the host was asking):
      Bumble reports it pending forever; here it fails with Unknown Connection Identifier.
    """

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        del command
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        event = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # The Command Complete for this command is sent when we return: the event must follow it.
        asyncio.get_running_loop().call_soon(self.send_hci_packet, event)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def on_hci_disconnect_command(self, command: hci.HCI_Disconnect_Command) -> None:
        # Bumble answers "pending" even for a handle it no longer knows (a link lost a moment
        # ago), and then never completes: the spec's answer is Unknown Connection Identifier.
        handle = command.connection_handle
        if (
            self.find_connection_by_handle(handle) is None
            and self.find_classic_sco_link_by_handle(handle) is None
            and self.find_iso_link_by_handle(handle) is None
        ):
            self._send_hci_command_status(hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR, command.op_code)
            return
        super().on_hci_disconnect_command(command)

    def on_hci_reset_command(self, command: hci.HCI_Reset_Command) -> hci.HCI_StatusReturnParameters:
        drop_le_connections(self, notify_host=False)
        self.pending_le_connection = None
        self.le_scan_enable = False
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        self.advertising_sets.clear()
        return super().on_hci_reset_command(command)


# --------------------------------------------------------------------------- the bench


@dataclass(frozen=True)
class BumbleDeviceDetails:
    """``BLEDevice.details`` of a device seen by :class:`BumbleScanner`: its typed address and bench."""

    address: hci.Address
    bench: BumbleBench


class BumbleBench:
    """The Bumble host side of the virtual link, and the bleak backend classes bound to it.

    Create it with :meth:`open` inside a running event loop (Bumble's controller and transports
    bind to the loop at construction).  ``scanner_backend`` and ``client_backend`` are the classes
    to pass as ``backend=`` to ``BleakScanner`` and ``BleakClient``.
    """

    scanner_backend: type[BumbleScanner]
    client_backend: type[BumbleClient]

    def __init__(
        self,
        *,
        device: Device,
        link: LocalLink | None,
        controller: Controller | None,
        transport: Transport | None,
        mtu: int,
    ) -> None:
        self.device = device
        self.link = link
        self.controller = controller
        self.transport = transport
        self.mtu = mtu
        self._connect_lock = asyncio.Lock()
        self._scan_lock = asyncio.Lock()
        self._scan_users = 0
        self._scanners: set[BumbleScanner] = set()
        self._clients: set[BumbleClient] = set()
        self._names: dict[str, str] = {}
        self._addresses: dict[str, hci.Address] = {}
        self._closed = False
        self._transport_lost = False
        self._watch_task: asyncio.Task[None] | None = None
        self.scanner_backend, self.client_backend = self._bind_backends()
        device.on(device.EVENT_ADVERTISEMENT, self._on_advertisement)

    def ble_options(self, timings: BleOptions | None = None) -> BleOptions:
        """``timings`` (default: BleOptions') with a scanner and client that reach the straps through this bench."""
        options = timings or BleOptions()
        return dataclasses.replace(options, scanner_backend=self.scanner_backend, client_backend=self.client_backend)

    @classmethod
    async def open(
        cls,
        via: LocalLink | str | None = None,
        *,
        address: str = DEFAULT_HOST_ADDRESS,
        name: str = "breathsync-host",
        mtu: int = _DEFAULT_MTU,
    ) -> BumbleBench:
        """Power on a Bumble host.

        ``via`` is a ``LocalLink`` shared with virtual peripherals in this process, ``None`` for a
        fresh link (``bench.link``), or an HCI transport moniker (``"tcp-client:127.0.0.1:PORT"``)
        reaching a controller served by another process.  ``mtu`` is the ATT MTU requested on every
        connection (23 skips the exchange).
        """
        if not _ATT_DEFAULT_MTU <= mtu <= 517:
            raise ValueError(f"mtu must be within 23..517, got {mtu}")
        asyncio.get_running_loop()  # Bumble binds to the running loop: fail early outside one
        bumble_address = hci.Address(address)
        if isinstance(via, str):
            _check_file_transport(via)
            try:
                transport = await open_transport(via)
            except Exception as error:  # the moniker is user input: any failure (bad port, missing driver) is its fault
                reason = error or type(error).__name__
                raise BumbleBenchError(f"cannot open Bumble transport {via!r}: {reason}") from error
            device = Device.with_hci(name, bumble_address, transport.source, transport.sink)
            bench = cls(device=device, link=None, controller=None, transport=transport, mtu=mtu)
        else:
            link = via if via is not None else new_link()
            controller = VirtualController(f"{name}-controller", link=link)
            host = Host(controller, AsyncPipeSink(controller))
            device = Device(name=name, address=bumble_address, host=host)
            bench = cls(device=device, link=link, controller=controller, transport=None, mtu=mtu)
        try:
            # A command the controller refuses is our error below; Bumble's own warning line would only repeat it.
            with _quiet_logger("bumble.host") if isinstance(via, str) else contextlib.nullcontext():
                async with asyncio.timeout(POWER_ON_TIMEOUT_S if isinstance(via, str) else None):
                    await device.power_on()
        except TimeoutError:  # before OSError, its base class
            await bench.close()
            raise BumbleBenchError(f"no HCI controller answered on {via!r} within {POWER_ON_TIMEOUT_S:.0f} s") from None
        except hci.HCI_Error as error:
            await bench.close()
            if error.error_code == hci.HCI_COMMAND_DISALLOWED_ERROR and str(via).startswith("tcp-client:"):
                raise BumbleBenchError(
                    f"the HCI controller on {via!r} is in use by another host (a virtual controller serves one host "
                    "at a time: is another breathsync run, scan or stream connected to it?)"
                ) from error
            raise BumbleBenchError(f"cannot power on the Bumble host via {via!r}: {error}") from error
        except (core.BaseBumbleError, OSError) as error:
            await bench.close()
            raise BumbleBenchError(f"cannot power on the Bumble host via {via!r}: {error}") from error
        except BaseException:
            await bench.close()
            raise
        if bench.transport is not None:
            bench._watch_task = asyncio.create_task(bench._watch_transport(bench.transport.source.terminated))
        return bench

    async def __aenter__(self) -> BumbleBench:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def address(self) -> str:
        """The host device's own address."""
        return _address_text(self.device.random_address)

    @property
    def is_open(self) -> bool:
        return not self._closed and not self._lost_transport()

    def _lost_transport(self) -> bool:
        # The transport's future is set before Bumble flushes the host (which ends every connection,
        # firing callbacks that may reconnect at once), and before our watcher task runs.
        if self.transport is not None and self.transport.source.terminated.done():
            self._transport_lost = True
        return self._transport_lost

    async def close(self) -> None:
        """Disconnect every client (their callbacks fire), stop scanning, release the controller."""
        if self._closed:
            return
        for client in list(self._clients):
            with contextlib.suppress(Exception):
                await client.disconnect()
        self._closed = True
        self._scanners.clear()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        if not self._lost_transport():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_DISCONNECT_TIMEOUT_S):
                    if self.device.is_scanning:
                        await self.device.stop_scanning()
                    await self.device.power_off()
        if self.transport is not None:
            await self.transport.close()
        if self.link is not None and self.controller is not None and self.controller in self.link.controllers:
            drop_le_connections(self.controller, notify_host=False)
            self.link.remove_controller(self.controller)

    # ---- used by the backends

    def _bind_backends(self) -> tuple[type[BumbleScanner], type[BumbleClient]]:
        bench = self

        class BoundScanner(BumbleScanner):
            _bound_bench = bench

        class BoundClient(BumbleClient):
            _bound_bench = bench

        # bleak reports backend.__name__ as the backend id.
        BoundScanner.__name__ = BoundScanner.__qualname__ = BumbleScanner.__name__
        BoundClient.__name__ = BoundClient.__qualname__ = BumbleClient.__name__
        return BoundScanner, BoundClient

    def _require_open(self) -> None:
        if self._closed:
            raise BumbleBenchError("the Bumble bench is closed")
        if self._lost_transport():
            raise BumbleTransportLost("the Bumble bench lost its HCI transport (did the virtual straps' process end?)")

    def _address_of(self, text: str) -> hci.Address:
        known = self._addresses.get(text.upper())
        return known if known is not None else hci.Address(text)  # Bumble's default: a random address

    def _name_of(self, address: str) -> str | None:
        return self._names.get(address.upper())

    async def _watch_transport(self, terminated: asyncio.Future[None]) -> None:
        await asyncio.wait({terminated})  # never cancels the transport's own future
        if self._closed:
            return
        logger.warning("lost the Bumble HCI transport (did the virtual straps' process end?): straps disconnected")
        self._transport_lost = True
        for client in list(self._clients):
            client._on_lost(client.connection, _CONNECTION_TIMEOUT)

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        parsed = parse_advertising_data(advertisement.data.ad_structures)
        key = _address_text(advertisement.address).upper()
        self._addresses[key] = advertisement.address
        if parsed.local_name is not None:
            self._names[key] = parsed.local_name
        for scanner in list(self._scanners):
            scanner._on_advertisement(advertisement, parsed)

    async def _start_scan(self, scanner: BumbleScanner, *, active: bool) -> None:
        self._require_open()
        async with self._scan_lock:
            self._scanners.add(scanner)
            self._scan_users += 1
            if self._scan_users == 1:
                try:
                    await self.device.start_scanning(active=active, filter_duplicates=False)
                except BaseException:
                    self._scan_users -= 1
                    self._scanners.discard(scanner)
                    raise

    async def _stop_scan(self, scanner: BumbleScanner) -> None:
        async with self._scan_lock:
            self._scanners.discard(scanner)
            self._scan_users -= 1
            if self._scan_users == 0 and self.is_open and self.device.is_scanning:
                await self.device.stop_scanning()

    async def _connect(self, peer: hci.Address, deadline: float) -> Connection:
        """Connect by ``deadline`` (loop time); one attempt at a time, as Bumble requires."""
        self._require_open()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                await self._connect_lock.acquire()
        except TimeoutError:
            raise TimeoutError(f"connect to {_address_text(peer)}: timed out behind another connect") from None
        try:
            # Keep a little time for the cancel round trip, so the attempt ends by the deadline.
            remaining_s = deadline - loop.time()
            attempt_s = remaining_s - min(_CANCEL_BUDGET_S, remaining_s / 10)
            if attempt_s <= 0:
                raise TimeoutError(f"connect to {_address_text(peer)} timed out")
            try:
                # The grace bounds a controller that never completes the cancel (Bumble's own).
                async with asyncio.timeout(remaining_s + _CANCEL_GRACE_S):
                    return await self.device.connect_le(peer, timeout=attempt_s)
            except (TimeoutError, core.TimeoutError) as error:
                raise TimeoutError(f"connect to {_address_text(peer)} timed out after {remaining_s:.2f} s") from error
            except (core.BaseBumbleError, hci.HCI_Error) as error:
                raise BleakError(f"connect to {_address_text(peer)} failed: {error}") from error
        finally:
            self._connect_lock.release()


# --------------------------------------------------------------------------- scanner


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend on a :class:`BumbleBench` (use ``bench.scanner_backend``).

    An unbound ``BumbleScanner`` also works with ``bumble_bench=bench`` passed to ``BleakScanner``.
    RSSI is whatever the virtual controller reports (a constant -50 dBm for Bumble's).
    """

    _bound_bench: ClassVar[BumbleBench | None] = None

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        **kwargs: Any,
    ) -> None:
        bench = kwargs.pop("bumble_bench", None) or self._bound_bench
        if not isinstance(bench, BumbleBench):
            raise BleakError("BumbleScanner needs a bench: use backend=bench.scanner_backend")
        super().__init__(
            detection_callback,
            None if service_uuids is None else [bleak_uuid(u) for u in service_uuids],
        )
        self._bench = bench
        self._active = scanning_mode != "passive"
        self._scanning = False

    async def start(self) -> None:
        if self._scanning:
            return
        self.seen_devices = {}
        await self._bench._start_scan(self, active=self._active)
        self._scanning = True

    async def stop(self) -> None:
        if not self._scanning:
            return
        self._scanning = False
        await self._bench._stop_scan(self)

    def _on_advertisement(self, advertisement: Advertisement, parsed: ParsedAdvertisement) -> None:
        if not self.is_allowed_uuid(parsed.service_uuids):
            return
        address = _address_text(advertisement.address)
        previous = self.seen_devices.get(address)
        # Platform stacks remember a name across advertisements that omit it; so do we.
        name = parsed.local_name if parsed.local_name is not None else (previous[1].local_name if previous else None)
        data = AdvertisementData(
            local_name=name,
            manufacturer_data=parsed.manufacturer_data,
            service_data=parsed.service_data,
            service_uuids=parsed.service_uuids,
            tx_power=parsed.tx_power,  # as platform stacks do: only from the advertised field
            rssi=advertisement.rssi,
            platform_data=(advertisement,),
        )
        details = BumbleDeviceDetails(advertisement.address, self._bench)
        device = self.create_or_update_device(address, address, name, details, data)
        self.call_detection_callbacks(device, data)


# --------------------------------------------------------------------------- client


def _property_names(properties: int) -> list[CharacteristicPropertyName]:
    return [name for bit, name in _PROPERTY_NAMES if properties & bit]


class BumbleClient(BaseBleakClient):
    """bleak client backend on a :class:`BumbleBench` (use ``bench.client_backend``).

    An unbound ``BumbleClient`` also works with a ``BLEDevice`` from :class:`BumbleScanner`, or with
    ``bumble_bench=bench`` passed to ``BleakClient``.  ``connect()`` also exchanges the ATT MTU
    (``bench.mtu``) and discovers all services (or only ``services=`` given to ``BleakClient``).
    The disconnected callback fires once per established connection, for every cause: our own
    ``disconnect()``, the peripheral's, a lost link, a lost HCI transport.
    """

    _bound_bench: ClassVar[BumbleBench | None] = None

    def __init__(self, address_or_ble_device: BLEDevice | str, services: set[str] | None = None, **kwargs: Any) -> None:
        details = address_or_ble_device.details if isinstance(address_or_ble_device, BLEDevice) else None
        bench = kwargs.pop("bumble_bench", None) or self._bound_bench
        if bench is None and isinstance(details, BumbleDeviceDetails):
            bench = details.bench
        if not isinstance(bench, BumbleBench):
            raise BleakError("BumbleClient needs a bench: use backend=bench.client_backend")
        for platform_args in ("bluez", "winrt", "cb"):
            kwargs.pop(platform_args, None)
        super().__init__(address_or_ble_device, **kwargs)
        self._bench = bench
        if isinstance(details, BumbleDeviceDetails):
            self._peer = details.address
        else:
            self._peer = bench._address_of(self.address)
        self._advertised_name = address_or_ble_device.name if isinstance(address_or_ble_device, BLEDevice) else None
        self._gap_name: str | None = None
        self._service_filter = None if services is None else sorted(bleak_uuid(u) for u in services)
        self._connection: Connection | None = None
        self._established = False
        self._subscriptions: dict[int, Callable[[bytes], None]] = {}
        self.last_disconnect_reason: int | None = None
        """HCI reason of the last disconnection (0x08 link lost, 0x13 remote user, 0x16 local host)."""

    # ---- connection

    @property
    def name(self) -> str:
        return self._advertised_name or self._bench._name_of(self.address) or self._gap_name or self.address

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else _ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    @property
    def connection(self) -> Connection | None:
        """The Bumble connection while connected (for fault injection and inspection in tests)."""
        return self._connection

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if self._connection is not None:
            return
        timeout_s = float(kwargs.get("timeout", self._timeout))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        connection = await self._bench._connect(self._peer, deadline)
        self._connection = connection
        self._established = False
        connection.on(connection.EVENT_DISCONNECTION, functools.partial(self._on_lost, connection))
        try:
            async with asyncio.timeout(max(deadline - loop.time(), _MIN_SETUP_S)):
                await self._set_up(connection, pair)
        except BaseException:
            await self._abandon(connection)
            raise
        if self._connection is not connection:  # lost between the last request and here
            raise BleakError(f"{self.address} disconnected while connecting")
        self._established = True
        self._bench._clients.add(self)

    async def _set_up(self, connection: Connection, pair: bool) -> None:
        client = connection.gatt_client
        if self._bench.mtu > _ATT_DEFAULT_MTU:
            try:
                await self._gatt(client.request_mtu(self._bench.mtu))
            except BleakGATTProtocolError:
                logger.info("%s refused the MTU exchange; staying at %d", self.address, _ATT_DEFAULT_MTU)
        self.services = await self._discover(connection)
        if self._advertised_name is None and self._bench._name_of(self.address) is None:
            gap_name = self.services.get_characteristic(_GAP_DEVICE_NAME_UUID)
            if gap_name is not None and "read" in gap_name.properties:
                with contextlib.suppress(BleakError):
                    self._gap_name = (await self._gatt(client.read_value(gap_name.handle))).decode("utf-8", "replace")
        if pair:
            await self.pair()

    async def _discover(self, connection: Connection) -> BleakGATTServiceCollection:
        client = connection.gatt_client
        collection = BleakGATTServiceCollection()
        uuids = [bumble_uuid(u) for u in self._service_filter] if self._service_filter else []
        for service in await self._gatt(client.discover_services(uuids)):
            bleak_service = BleakGATTService(service, service.handle, bleak_uuid(service.uuid))
            collection.add_service(bleak_service)
            for characteristic in await self._gatt(client.discover_characteristics([], service)):
                bleak_characteristic = BleakGATTCharacteristic(
                    characteristic,
                    characteristic.handle,
                    bleak_uuid(characteristic.uuid),
                    _property_names(int(characteristic.properties)),
                    self._max_write_without_response_size,
                    bleak_service,
                )
                collection.add_characteristic(bleak_characteristic)
                for descriptor in await self._gatt(client.discover_descriptors(characteristic)):
                    descriptor_uuid = bleak_uuid(descriptor.type)
                    collection.add_descriptor(
                        BleakGATTDescriptor(descriptor, descriptor.handle, descriptor_uuid, bleak_characteristic)
                    )
        return collection

    def _max_write_without_response_size(self) -> int:
        return self.mtu_size - 3

    async def _abandon(self, connection: Connection) -> None:
        """Drop a connection whose set-up failed, without firing the disconnected callback."""
        self._established = False
        if self._connection is connection:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_DISCONNECT_TIMEOUT_S):
                    await connection.disconnect()
            self._on_lost(connection, _LOCAL_HOST_TERMINATED)
        self.services = None

    def _on_lost(self, connection: Connection | None, reason: int) -> None:
        """End ``connection`` (if still ours) and fire the callback if it had been established."""
        if connection is None or self._connection is not connection:
            return
        self._connection = None
        self._subscriptions.clear()
        self._bench._clients.discard(self)
        # Bumble reports connections ended by a lost HCI transport with reason 0.
        self.last_disconnect_reason = reason or _CONNECTION_TIMEOUT
        if not self._established:
            return
        self._established = False
        callback = self._disconnected_callback
        if callback is not None:
            try:
                callback()
            except Exception:
                logger.exception("disconnected callback of %s raised", self.address)

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            async with asyncio.timeout(_DISCONNECT_TIMEOUT_S):
                await connection.disconnect()
        except (TimeoutError, core.BaseBumbleError, hci.HCI_Error) as error:
            logger.info("disconnect from %s did not complete (%s); ending it locally", self.address, error)
        self._on_lost(connection, _LOCAL_HOST_TERMINATED)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Pair with Bumble's SMP (LE Secure Connections, Just Works with Bumble's default delegate)."""
        connection = self._require_connection()
        await self._gatt(connection.pair())

    async def unpair(self) -> None:
        """Forget the peer's keys, then disconnect (as bleak documents for platform backends)."""
        keystore = self._bench.device.keystore
        if keystore is not None:
            names = {str(self._peer)}
            if self._connection is not None:
                names.add(str(self._connection.peer_address))
            for name in names:
                with contextlib.suppress(KeyError):
                    await keystore.delete(name)
        await self.disconnect()

    # ---- GATT

    def _require_connection(self) -> Connection:
        if self._connection is None:
            raise BleakError(f"{self.address}: not connected")
        return self._connection

    async def _gatt(self, operation: Awaitable[_T]) -> _T:
        """Await a Bumble GATT/SMP operation, translating its errors into bleak's."""
        try:
            return await operation
        except att.ATT_Error as error:
            raise BleakGATTProtocolError(error.error_code) from error
        except core.TimeoutError as error:
            raise TimeoutError(f"{self.address}: GATT request timed out") from error
        except (core.BaseBumbleError, hci.HCI_Error) as error:
            raise BleakError(f"{self.address}: {error}") from error
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Bumble cancels the pending response future when the link goes down.
            raise BleakError(f"{self.address}: disconnected during a GATT request") from None

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(characteristic.handle, use_cached)

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(descriptor.handle, use_cached)

    async def _read(self, handle: int, use_cached: bool) -> bytearray:
        client = self._require_connection().gatt_client
        if use_cached and handle in client.cached_values:
            return bytearray(client.cached_values[handle][1])
        return bytearray(await self._gatt(client.read_value(handle)))

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool) -> None:
        client = self._require_connection().gatt_client
        await self._gatt(client.write_value(characteristic.handle, bytes(data), with_response=response))

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        client = self._require_connection().gatt_client
        await self._gatt(client.write_value(descriptor.handle, bytes(data), with_response=True))

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        """Subscribe (notifications preferred over indications); values reach ``callback`` in order."""
        client = self._require_connection().gatt_client
        proxy = characteristic.obj
        if not isinstance(proxy, CharacteristicProxy):
            raise BleakError(f"{characteristic.uuid} was not discovered by this backend")
        if not {"notify", "indicate"} & set(characteristic.properties):
            raise BleakError(f"{characteristic.uuid} supports neither notify nor indicate")
        if not any(d.uuid == normalize_uuid_16(0x2902) for d in characteristic.descriptors):
            raise BleakError(f"{characteristic.uuid} has no Client Characteristic Configuration descriptor")
        address = self.address

        def on_value(value: bytes) -> None:
            try:
                callback(bytearray(value))
            except Exception:
                logger.exception("notification callback of %s raised", address)

        previous = self._subscriptions.pop(characteristic.handle, None)
        if previous is not None:
            await self._gatt(client.unsubscribe(proxy, previous))
        self._subscriptions[characteristic.handle] = on_value
        await self._gatt(client.subscribe(proxy, on_value, prefer_notify=True))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        client = self._require_connection().gatt_client
        subscriber = self._subscriptions.pop(characteristic.handle, None)
        proxy = characteristic.obj
        if subscriber is not None and isinstance(proxy, CharacteristicProxy):
            await self._gatt(client.unsubscribe(proxy, subscriber))
