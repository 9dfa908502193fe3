"""A strap over BLE through bleak's public API (BleakScanner / BleakClient) only.

``BleStrapLink.run()`` keeps one strap connected for as long as it runs: find it, connect
(one scan or connect at a time across all straps: concurrent ones misbehave on Linux and macOS),
subscribe, start streaming, ask for backfill of whatever is missing, and after any disconnect
reconnect with exponential backoff. A search scans in short slices, taking turns with the other
strap's link, so a strap that dropped out is not kept waiting while the other is still looked for.
bleak's platform backends also call the disconnected callback on our own ``disconnect()``; the link
tells the two apart by its ``_closing`` flag.

The bleak backend is a parameter: the system's by default, or the Bumble backend
(``breathsync.link.bumble_backend``) for virtual straps, so this code runs unchanged in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakBluetoothNotAvailableError, BleakError

from ..errors import InputError
from ..protocol import ROLE_NAMES, Channel, HapticCommand, ProtocolError, ResponsePacket, StatusPacket
from ..protocol.uuids import CHANNEL_BY_UUID, CHARACTERISTIC_UUIDS, SERVICE_UUID
from ..roles import Role
from .session import LinkError, StrapSession, StrapSink
from .stream import StrapStream

log = logging.getLogger(__name__)

NOTIFY_CHANNELS = (Channel.RESPONSE, Channel.STATUS, Channel.EVENT, Channel.SAMPLES)
PROBE_TIMEOUT_S = 5.0
# One scan under the radio lock lasts at most this long: the straps advertise every 250 ms, and a link waiting
# to reconnect its strap gets the radio between two slices instead of after the other link's whole search.
SCAN_SLICE_S = 2.0


class StrapNotInRange(LinkError):
    """A search saw no such strap: it is searched for again at once, with no back-off (scanning disturbs nothing, and
    a back-off grown to 15 s over a long absence kept a strap that had come back waiting for up to that long)."""


class AdapterGone(LinkError):
    """The adapter itself went away mid-run (the virtual straps' HCI transport ended): no strap can be reached
    through it again, so a link ends instead of retrying for ever (a review: 'retrying' until Ctrl-C, which then
    closed the session, and the next run began a new one)."""


# A connection that lasted this long resets the reconnect back-off. Shorter ones (a strap that drops each link at
# once) wait it, doubling; a flaky link at the edge of range (connections of seconds) is reconnected at once, as
# every second without the strap is a second the engine and the nudges go without it (a review: 5 s left such a
# strap 8 s offline after five drops).
STABLE_CONNECTION_S = 1.0


@dataclass(frozen=True)
class BleOptions:
    """How a BLE link behaves; defaults suit a therapist's session."""

    connect_timeout_s: float = 10.0
    scan_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0
    backfill_every_s: float = 1.0
    ping_every_s: float = 2.0  # TIME_SYNC: clock observations, and the keep-alive haptics need (< 5 s)
    scanner_backend: type[Any] | None = None
    client_backend: type[Any] | None = None

    def scanner_kwargs(self) -> dict[str, Any]:
        return {} if self.scanner_backend is None else {"backend": self.scanner_backend}

    def client_kwargs(self) -> dict[str, Any]:
        return {} if self.client_backend is None else {"backend": self.client_backend}


@dataclass(frozen=True)
class FoundStrap:
    """A strap seen while scanning."""

    address: str
    name: str
    rssi_dbm: int | None
    device: BLEDevice


def no_adapter_error(reason: str) -> InputError:
    hint = "is BlueZ running?" if sys.platform.startswith("linux") else "is Bluetooth on and allowed?"
    return InputError(
        f"no Bluetooth adapter available: {reason}; {hint} For virtual straps use --ble bumble:<transport>"
    )


async def check_bluetooth(options: BleOptions) -> None:
    """InputError unless the system's Bluetooth stack is usable; custom backends have nothing to check.

    Without BlueZ (or D-Bus) bleak fails deep inside its backend with a bare FileNotFoundError, and a
    link would retry that for ever. On Linux this asks BlueZ for a powered adapter, exactly what bleak
    does first (its manager is cached, so a later scan or connect reuses it). Other platforms report a
    missing adapter as BleakBluetoothNotAvailableError at first use, which ``scan`` and
    ``BleStrapLink.run`` translate.
    """
    if options.scanner_backend is not None or options.client_backend is not None:
        return
    from bleak.backends import BleakBackend, get_default_backend

    if get_default_backend() != BleakBackend.BLUEZ_DBUS:
        return
    from bleak.backends.bluezdbus.manager import get_global_bluez_manager
    from dbus_fast.errors import DBusFastError

    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            manager = await get_global_bluez_manager()
        manager.get_default_adapter()
    except BleakBluetoothNotAvailableError as exc:
        raise no_adapter_error(str(exc.args[0])) from None
    except TimeoutError:  # before OSError, its base class
        raise no_adapter_error(f"BlueZ did not answer within {PROBE_TIMEOUT_S:.0f} s") from None
    except OSError as exc:  # no system D-Bus socket, or refused
        raise no_adapter_error(f"cannot reach the system D-Bus ({exc.strerror or exc})") from None
    except (BleakError, DBusFastError) as exc:  # e.g. org.bluez not on the bus: bluetoothd not running
        raise no_adapter_error(str(exc) or type(exc).__name__) from None


async def scan(options: BleOptions, timeout_s: float | None = None) -> list[FoundStrap]:
    """Straps advertising the breathsync service, strongest first."""
    await check_bluetooth(options)
    try:
        found = await BleakScanner.discover(
            timeout=options.scan_timeout_s if timeout_s is None else timeout_s,
            return_adv=True,
            service_uuids=[SERVICE_UUID],
            **options.scanner_kwargs(),
        )
    except BleakBluetoothNotAvailableError as exc:
        raise no_adapter_error(str(exc.args[0])) from None
    straps = [
        FoundStrap(device.address, adv.local_name or device.name or "", adv.rssi, device)
        for device, adv in found.values()
        if SERVICE_UUID in [u.lower() for u in adv.service_uuids]
    ]
    return sorted(straps, key=lambda s: -(s.rssi_dbm if s.rssi_dbm is not None else -999))


class BleStrapLink:
    """Keeps one strap (``target``: address or advertised name) connected and streaming."""

    # One connect at a time for the whole process (one lock per event loop).
    _connect_locks: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(
        self,
        role: Role,
        target: str,
        sink: StrapSink,
        options: BleOptions | None = None,
        rate_hz: float = 25.0,
        clock: Callable[[], float] = time.monotonic,
        name_shared: bool = False,
        others: Iterable[str] = (),
        session_rate_hz: int | None = None,
    ) -> None:
        self.role = role
        self.target = target
        # Both roles' straps were given by the same name (the firmware's default is one name for every strap):
        # only the role each strap reports tells them apart.
        self.name_shared = name_shared
        self.options = options or BleOptions()
        self.session = StrapSession(role, sink, rate_hz, clock, session_rate_hz)
        self.sink = sink
        self.stats = self.session.stats
        self.connected = asyncio.Event()
        self._client: BleakClient | None = None
        self._closing = False
        self._closed = asyncio.Event()  # set with _closing: ends a scan at once
        self._disconnected = asyncio.Event()
        # A strap found by name is kept by address once connected (two straps of one name must not swap
        # people on a reconnect); with a shared name, straps that report the other role are never taken.
        self._found_address: str | None = None
        self._other_roles: set[str] = {address.upper() for address in others}  # the other role's straps: never ours

    @property
    def address(self) -> str:
        return self.target

    @property
    def counters(self) -> StrapStream:
        return self.session.stream

    @classmethod
    def _lock(cls) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = cls._connect_locks.get(loop)
        if lock is None:
            lock = cls._connect_locks[loop] = asyncio.Lock()
        return lock

    async def _find_and_connect(self) -> BleakClient:
        """Scan for this link's strap in slices of at most SCAN_SLICE_S under the radio lock, up to ``scan_timeout_s``
        of scanning in all, and connect in the same turn as it was seen. By address too: given an address,
        BleakClient would scan inside ``connect``, holding the lock for the whole connect timeout. ``close()`` ends a
        search at once; a strap connected as it came is let go by ``run()`` (nobody else would disconnect it, and a
        strap kept connected does not advertise, so the next session would not find it)."""
        target = self.target
        address = target if looks_like_address(target) else self._found_address

        def wanted(device: BLEDevice, adv: AdvertisementData) -> bool:
            if address is not None:
                return device.address.upper() == address.upper()
            return (adv.local_name or device.name or "") == target and device.address.upper() not in self._other_roles

        slices = max(1, math.ceil(self.options.scan_timeout_s / SCAN_SLICE_S - 1e-9))
        slice_s = self.options.scan_timeout_s / slices  # even slices: a last one of 0.1 s would see nothing
        for _ in range(slices):
            async with self._lock():
                if self._closing:
                    break
                device = await self._scan(wanted, slice_s)
                if device is None or self._closing:
                    continue
                client = BleakClient(
                    device,
                    disconnected_callback=self._on_disconnect,
                    timeout=self.options.connect_timeout_s,
                    **self.options.client_kwargs(),
                )
                self._disconnected.clear()
                await client.connect()
                return client  # closed meanwhile: run() lets it go
        if self._closing:
            raise LinkError(f"{self.role}: link closed")
        if address == target:
            raise StrapNotInRange(f"{self.role}: no strap at {address} in range")
        seen = "" if address is None else f" (last seen at {address})"  # the name the user gave comes first
        raise StrapNotInRange(f"{self.role}: no strap named {target!r} in range{seen}")

    async def _scan(self, wanted: Callable[[BLEDevice, AdvertisementData], bool], timeout_s: float) -> BLEDevice | None:
        """One scan slice: the first device ``wanted`` accepts, or None when none came within ``timeout_s`` or
        ``close()`` came first. The scan is stopped, never cancelled half-way: a scan command cut off in flight
        leaves the controller answering a request nobody waits for."""
        found: asyncio.Future[BLEDevice] = asyncio.get_running_loop().create_future()

        def seen(device: BLEDevice, adv: AdvertisementData) -> None:
            if not found.done() and wanted(device, adv):
                found.set_result(device)

        async with BleakScanner(detection_callback=seen, **self.options.scanner_kwargs()):
            closed = asyncio.ensure_future(self._closed.wait())
            try:
                await asyncio.wait((found, closed), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
        return found.result() if found.done() else None

    def _on_disconnect(self, _client: BleakClient) -> None:
        self._disconnected.set()

    def _on_notify(self, characteristic: BleakGATTCharacteristic, data: bytearray) -> None:
        channel = CHANNEL_BY_UUID.get(characteristic.uuid.lower())
        if channel is None:
            return
        self.session.handle(channel, bytes(data))

    async def _write(self, channel: Channel, payload: bytes) -> None:
        client = self._client
        if client is None or not client.is_connected:
            raise LinkError(f"{self.role}: not connected")
        try:
            await client.write_gatt_char(CHARACTERISTIC_UUIDS[channel], payload, response=True)
        except (BleakError, OSError) as exc:
            raise LinkError(f"{self.role}: write failed: {exc}") from None

    async def _connect_once(self) -> BleakClient:
        client = await self._find_and_connect()
        try:
            status = bytes(await client.read_gatt_char(CHARACTERISTIC_UUIDS[Channel.STATUS]))
            self._check_role(client.address, status)  # before subscribing: another role's strap sends nothing here
            for channel in NOTIFY_CHANNELS:
                await client.start_notify(CHARACTERISTIC_UUIDS[channel], self._on_notify)
            self.session.handle(Channel.STATUS, status)
        except BaseException:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise
        return client

    def _check_role(self, address: str, status: bytes) -> None:
        """Found by a name the other role may share (``sources.name_shared``: one name for both roles, the
        factory name, or any name while the other role is found by role), a strap must not report the other role:
        otherwise the therapist's link took whichever strap answered first (the client's), and the nudges went to
        the client. A strap with no role, a name of the user's own for one role only, or an address is taken as
        the user said."""
        if looks_like_address(self.target):
            return
        try:
            reported = ROLE_NAMES.get(StatusPacket.from_bytes(status).role) if self.name_shared else None
        except ProtocolError:
            reported = None  # the session counts the bad packet
        if reported is not None and reported != self.role:
            self._other_roles.add(address.upper())
            self._found_address = None  # a strap re-assigned to the other role: look for this role's again
            raise LinkError(
                f"{self.role}: the strap named {self.target!r} at {address} reports the {reported}'s role "
                "(found by a name the other role may share, a strap is taken by its role: set it with SET_ROLE, "
                "or name the strap by its address)"
            )
        self._found_address = address

    async def run(self) -> None:
        """Connect, stream, and reconnect after any drop until ``close()`` or cancellation."""
        backoff = self.options.backoff_initial_s
        first = True
        # A missing adapter is a setup error, not a strap out of range: say so instead of retrying.
        await check_bluetooth(self.options)
        while not self._closing:
            try:
                client = await self._connect_once()
            except (BleakError, LinkError, TimeoutError, OSError) as exc:
                if self._closing:  # closed while searching: nothing failed
                    break
                if first and isinstance(exc, BleakBluetoothNotAvailableError):  # never connected: not a dropout
                    raise no_adapter_error(str(exc.args[0])) from None
                if isinstance(exc, AdapterGone):
                    raise
                self.sink.on_link(self.role, "connect-failed", str(exc) or type(exc).__name__)
                if isinstance(exc, StrapNotInRange):  # not a failure to back off from: search on
                    pause = backoff = self.options.backoff_initial_s
                else:
                    pause, backoff = backoff, min(backoff * 2, self.options.backoff_max_s)
                with contextlib.suppress(TimeoutError):  # cut short by close()
                    await asyncio.wait_for(self._closed.wait(), pause)
                continue
            if self._closing:  # closed while it was connecting or being set up: close() found no client to disconnect
                with contextlib.suppress(Exception):
                    await client.disconnect()
                break
            self._client = client
            self.session.attach(self._write)
            if not first:
                self.stats.reconnects += 1
            first = False
            self.connected.set()
            self.sink.on_link(self.role, "connected", str(client.address))
            connected_at = asyncio.get_running_loop().time()
            try:
                await self._serve(client)
            finally:
                self.connected.clear()
                self.session.detach("disconnected")
                self._client = None
                if not self._closing:
                    self.sink.on_link(self.role, "disconnected", "")
            if asyncio.get_running_loop().time() - connected_at >= STABLE_CONNECTION_S:
                backoff = self.options.backoff_initial_s
            elif not self._closing:
                # A link that ends at once, every time (a strap that drops each connection): reconnected after the
                # back-off, not in a tight loop (a link review).
                with contextlib.suppress(TimeoutError):  # cut short by close()
                    await asyncio.wait_for(self._closed.wait(), backoff)
                backoff = min(backoff * 2, self.options.backoff_max_s)
        self.sink.on_link(self.role, "closed", "")

    async def _serve(self, client: BleakClient) -> None:
        next_backfill = next_ping = 0.0
        loop = asyncio.get_running_loop()
        while not self._disconnected.is_set() and not self._closing:
            now = loop.time()
            await self.session.keep_streaming(now, self.options.backfill_every_s)
            try:
                if now >= next_backfill:
                    next_backfill = now + self.options.backfill_every_s
                    await self.session.request_backfill()
                if now >= next_ping:
                    next_ping = now + self.options.ping_every_s
                    await self.session.ping()
            except LinkError as exc:
                log.debug("%s: %s", self.role, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), timeout=0.2)

    async def haptic(self, pattern: HapticCommand, timeout_s: float = 3.0) -> ResponsePacket:
        """Send a haptic pattern and wait for the strap to confirm it."""
        return await self.session.haptic(pattern, timeout_s)

    @property
    def status(self) -> StatusPacket | None:
        return self.session.status

    async def close(self) -> None:
        self._closing = True
        self._closed.set()
        self._disconnected.set()
        client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                await client.disconnect()


def looks_like_address(target: str) -> bool:
    parts = target.split(":")
    return (len(parts) == 6 and all(len(p) == 2 for p in parts)) or (len(target) == 36 and target.count("-") == 4)


__all__ = [
    "AdvertisementData",
    "BleOptions",
    "BleStrapLink",
    "FoundStrap",
    "StrapNotInRange",
    "check_bluetooth",
    "looks_like_address",
    "scan",
]
