"""Every data source behind one interface, chosen by a moniker.

| moniker | source |
| --- | --- |
| ``ble:<address-or-name>`` | a strap over BLE through the selected adapter (bleak) |
| ``serial:<port>`` | a strap in wired mode on a serial port (pyserial) |
| ``replay:<session.sqlite>`` | a stored session's samples and events, played back |
| ``role`` (no moniker) | the strap that reports that role, found by scanning |

The BLE adapter is chosen separately (``--ble``): ``system`` (bleak's platform backend, the
default) or ``bumble:<transport>``, e.g. ``bumble:tcp-client:127.0.0.1:7402`` for the virtual
straps that ``breathsync sim`` serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from bleak import BleakClient

from ..errors import InputError
from ..protocol import ROLE_NAMES, Channel, HapticCommand, ResponsePacket, StatusPacket
from ..protocol.uuids import BATTERY_LEVEL_UUID, CHARACTERISTIC_UUIDS, FIRMWARE_REVISION_UUID
from ..roles import ROLES as ROLES
from ..roles import Role, is_role
from .ble import SCAN_SLICE_S, BleOptions, BleStrapLink, FoundStrap, check_bluetooth, looks_like_address, scan
from .serial_link import SerialStrapLink
from .session import LinkError, StrapSink
from .stream import LinkStats, SampleBlock, StrapEvent, StrapStream

if TYPE_CHECKING:
    from ..store.records import StoredEvent  # the store is imported only when a session is replayed

SOURCE_KINDS = ("ble", "serial", "replay")
T = TypeVar("T")


def check_source(moniker: str) -> str:
    """``moniker`` if it names a source (``auto`` or a moniker above), else InputError. Touches nothing,
    so commands can reject a typo before they create files."""
    if moniker == "auto":
        return moniker
    kind, _, target = moniker.partition(":")
    if not target:
        raise InputError(
            f"bad source {moniker!r}: expected ble:<address-or-name>, serial:<port>, replay:<file> or auto"
        )
    if kind not in SOURCE_KINDS:
        raise InputError(f"unknown source kind {kind!r} in {moniker!r}: use ble:, serial: or replay:")
    return moniker


def needs_ble(moniker: str) -> bool:
    """Whether the source is reached over BLE (``auto`` finds its strap by scanning)."""
    return moniker == "auto" or moniker.startswith("ble:")


def check_adapter(spec: str) -> str:
    """``spec`` if it names a BLE adapter (``system`` or ``bumble:<transport>``), else InputError."""
    if spec in ("", "system") or (spec.startswith("bumble:") and spec != "bumble:"):
        return spec
    raise InputError(f"unknown BLE adapter {spec!r}: use 'system' or 'bumble:<transport>'")


class StrapLink(Protocol):
    """What every source offers the daemon, whatever carries the data."""

    role: Role
    stats: LinkStats
    connected: asyncio.Event

    @property
    def address(self) -> str:
        """Where the strap is reached: its BLE name or address as given, a serial port; '' for a replayed file."""
        ...

    @property
    def counters(self) -> StrapStream | None:
        """The strap's counter bookkeeping (reboots, offsets); None where there is no strap (a replayed file)."""
        ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...

    async def haptic(self, pattern: HapticCommand, timeout_s: float = 3.0) -> ResponsePacket: ...


CLOSE_WAIT_S = 2.0


async def close_links(links: list[StrapLink], tasks: list[asyncio.Task[None]], wait_s: float = CLOSE_WAIT_S) -> None:
    """Ask every link to close, give their ``run`` tasks ``wait_s`` to end, then cancel the rest.

    A BLE link stops searching at once, but one in the middle of a connect only notices ``close`` when the connect
    ends (up to its 10 s timeout): Ctrl-C must not wait for it.
    """
    for link in links:
        await link.close()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=wait_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True)
class StrapDescription:
    """What ``breathsync scan`` shows about a strap in range."""

    address: str
    name: str
    rssi_dbm: int | None
    role: str | None
    firmware: str | None
    battery_pct: int | None
    sample_rate_hz: int | None


@contextlib.asynccontextmanager
async def ble_adapter(spec: str = "system") -> AsyncIterator[BleOptions]:
    """BLE options for an adapter moniker: ``system`` or ``bumble:<transport>``.

    ``system`` touches nothing yet (serial and replay sources need no Bluetooth); the first scan or
    connect checks the system's stack (``check_bluetooth``), as may a command up front.
    """
    if check_adapter(spec) in ("", "system"):
        yield BleOptions()
        return
    from .bumble_backend import BumbleBench, BumbleBenchError

    transport = spec[len("bumble:") :]
    try:
        bench = await BumbleBench.open(transport)
    except BumbleBenchError as exc:  # its message names the transport already
        raise InputError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot open Bumble transport {transport!r}: {exc}") from None
    async with bench:
        yield bench.ble_options()


async def describe(found: FoundStrap, options: BleOptions) -> StrapDescription:
    """Connect briefly to read role, firmware, battery and rate (one connect at a time)."""
    role = firmware = None
    battery = rate = None
    async with BleStrapLink._lock():
        client = BleakClient(found.device, timeout=options.connect_timeout_s, **options.client_kwargs())
        await client.connect()
        try:
            status = StatusPacket.from_bytes(await client.read_gatt_char(CHARACTERISTIC_UUIDS[Channel.STATUS]))
            role = ROLE_NAMES.get(status.role, "unassigned")
            firmware = ".".join(str(v) for v in status.fw_version)
            battery = status.battery_pct
            rate = status.sample_rate_hz
            with contextlib.suppress(Exception):
                level = (await client.read_gatt_char(BATTERY_LEVEL_UUID))[0]
                battery = level if 0 <= level <= 100 else battery  # 255: the strap does not know yet
            with contextlib.suppress(Exception):
                firmware = (await client.read_gatt_char(FIRMWARE_REVISION_UUID)).decode(errors="replace")
        finally:
            with contextlib.suppress(Exception):
                await client.disconnect()
    return StrapDescription(found.address, found.name, found.rssi_dbm, role, firmware, battery, rate)


async def scan_straps(options: BleOptions, timeout_s: float = 5.0) -> list[StrapDescription]:
    out = []
    for found in await scan(options, timeout_s):
        try:
            out.append(await describe(found, options))
        except Exception:  # a strap that vanished mid-scan is listed without details
            out.append(StrapDescription(found.address, found.name, found.rssi_dbm, None, None, None, None))
    return out


async def unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """``work``'s result, or None as soon as ``stop`` is set (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():  # stopped, or this coroutine itself was cancelled: the search ends too
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


def looking_for(roles: Sequence[Role]) -> str:
    """The line said while ``find_by_roles`` searches: "looking for the therapist's and the client's straps..."."""
    whose = " and the ".join(role + "'s" for role in roles)
    return f"looking for the {whose} strap{'s' if len(roles) > 1 else ''}..."


async def find_by_roles(
    roles: Sequence[Role], options: BleOptions, timeout_s: float = 10.0, taken: Iterable[str] = ()
) -> dict[Role, StrapDescription]:
    """The straps in range that report ``roles`` (straps keep their role across power cycles), found in one
    search: each strap is asked its role once, and the search ends as soon as every role has its strap (one role
    after another scanned and asked every strap again: ~7 s before a stream's first line). ``taken``: sources of
    the other roles; a strap at an address one of them gives is never taken here, whatever role it reports (an
    outside review: with the client given by address and the therapist by role, a strap set to the wrong role was
    connected to both, and the session ran on without the client's data). A strap the other role names (a name
    every new strap shares, maybe) is not left out: that role's link checks the role it reports (``name_shared``)."""
    wanted = list(dict.fromkeys(roles))
    skip = {t.upper() for t in taken if looks_like_address(t)}
    found: dict[Role, StrapDescription] = {}
    seen: dict[str, StrapDescription] = {}  # by address: what each strap said its role was
    asked: set[str] = set()  # addresses whose role is known (a strap that failed to answer is asked again)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        slice_s = min(SCAN_SLICE_S, max(0.5, deadline - time.monotonic()))
        for strap in await scan(options, timeout_s=slice_s):
            if strap.address in asked or strap.address.upper() in skip:
                continue
            try:
                described = await describe(strap, options)
            except Exception:  # gone mid-scan, or busy: asked again in the next slice
                continue
            asked.add(strap.address)
            seen[strap.address] = described
            role = described.role
            if role is not None and is_role(role) and role in wanted and role not in found:
                found[role] = described  # strongest first: of two straps set to one role, the nearer
        if len(found) == len(wanted):
            return {role: found[role] for role in wanted}
    missing = [role for role in wanted if role not in found]
    which = " and ".join(repr(role) for role in missing)
    which = f"no strap with role {which}" if len(missing) == 1 else f"no straps with roles {which}"
    if not seen:
        raise LinkError(f"{which} found in {timeout_s:.0f} s, nor any other strap: switched on, charged and near?")
    others = ", ".join(f"{s.name or '?'} ({s.address}) reports {s.role or 'no role'}" for s in seen.values())
    raise LinkError(
        f"{which} found in {timeout_s:.0f} s ({others}): give a strap its role with "
        f"`breathsync strap ADDRESS --role {missing[0]}`"
    )


async def find_by_role(role: Role, options: BleOptions, timeout_s: float = 10.0) -> StrapDescription:
    """The strap in range that reports ``role``."""
    return (await find_by_roles([role], options, timeout_s))[role]


def open_link(
    moniker: str,
    role: str,
    sink: StrapSink,
    options: BleOptions,
    rate_hz: float = 25.0,
    clock: Callable[[], float] = time.monotonic,
    name_shared: bool = False,
    others: Iterable[str] = (),
    replay_start: ReplayStart | None = None,
    session_rate_hz: int | None = None,
) -> StrapLink:
    """The link for a source moniker (see the module docstring); ``clock`` stamps arrivals. ``name_shared``:
    the other role's strap may answer to the same BLE name (then each strap's role must match); ``others``: the
    other role's strap addresses, never taken by a name; ``replay_start``: shared by the replayed roles of one
    dyad, so that they keep the timing they were recorded with (``ReplayStart``); ``session_rate_hz``: a strap at
    another rate is set to it before it streams (None: each strap's own rate)."""
    if not is_role(role):
        raise InputError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
    if check_source(moniker) == "auto":
        raise InputError(f"{role}: 'auto' is resolved by scanning (find_by_role) before a link is opened")
    kind, _, target = moniker.partition(":")
    if kind == "ble":
        return BleStrapLink(role, target, sink, options, rate_hz, clock, name_shared, others, session_rate_hz)
    if kind == "serial":
        # A device path that is not there fails now, not after files were created (COM3 etc. are not paths).
        if target.startswith("/") and not Path(target).exists():
            raise InputError(f"{role}: no serial port {target} (is the strap plugged in?)")
        return SerialStrapLink(role, target, sink, rate_hz, clock, session_rate_hz=session_rate_hz)
    return ReplayLink(role, Path(target), sink, clock=clock, start=replay_start)


def name_shared(source: str, sources: Mapping[Role, str]) -> bool:
    """Whether the strap ``source`` names may also be the other role's, so its link must check the role the strap
    reports: a name given to both roles, or any name while the other role is found by role (``auto``). (The other
    role given by address: that address is never taken by name, ``open_sources``: with ``--therapist
    ble:breathsync --client ble:<address>`` the therapist's link took the client's strap whenever it answered first,
    and the nudges went to the client, an outside review.)"""
    if not source.startswith("ble:"):
        return False
    return sum(other == source for other in sources.values()) > 1 or "auto" in sources.values()


def _is_ble_address(source: str) -> bool:
    return source.startswith("ble:") and looks_like_address(source[len("ble:") :])


async def open_sources(
    sources: Mapping[Role, str],
    sink: StrapSink,
    options: BleOptions,
    rate_hz: float = 25.0,
    clock: Callable[[], float] = time.monotonic,
    session_rate_hz: int | None = None,
) -> dict[Role, StrapLink]:
    """The links of the explicit sources (role -> moniker), once everything that can be checked without
    the radio was: monikers, replay files, serial device paths, then the system's Bluetooth stack if a
    source needs BLE. ``auto`` sources are left out (found by scanning). Call before creating files.
    ``session_rate_hz``: as ``open_link``'s."""
    for source in sources.values():
        check_source(source)
    links: dict[Role, StrapLink] = {}
    replay_start = ReplayStart()
    try:
        for role, source in sources.items():
            if source != "auto":
                others = [s[len("ble:") :] for r, s in sources.items() if r != role and _is_ble_address(s)]
                links[role] = open_link(
                    source,
                    role,
                    sink,
                    options,
                    rate_hz,
                    clock,
                    name_shared(source, sources),
                    others,
                    replay_start,
                    session_rate_hz,
                )
        if any(needs_ble(source) for source in sources.values()):
            await check_bluetooth(options)
    except BaseException:
        await close_links(list(links.values()), [])
        raise
    return links


class ReplayStart:
    """What the replayed roles of one dyad share: the moment the first of them began playing, and which roles each
    session file plays. Two roles of one file play from the earlier one's first sample at that moment, the later one
    as much later as it was recorded. (Each role from its own first sample moved the two people apart by however far
    apart their straps had connected, 2.5 s in an outside review's session: a different phase relation from the one
    recorded. The session's zero instead, which comes before the straps are found, left a role played alone, as
    calibration plays it, seconds without data.)"""

    def __init__(self) -> None:
        self._start_s: float | None = None
        self._roles: dict[Path, list[Role]] = {}

    def add(self, path: Path, role: Role) -> None:
        self._roles.setdefault(path.resolve(), []).append(role)

    def roles(self, path: Path) -> list[Role]:
        """The roles played from ``path`` (none for a path not added)."""
        return self._roles.get(path.resolve(), [])

    def at(self, clock: Callable[[], float]) -> float:
        if self._start_s is None:
            self._start_s = clock()
        return self._start_s


class ReplayLink:
    """A stored session's samples and events for one role, played back as if live.

    Host times are shifted so the first sample of the roles played from this file is now, or the moment the other
    role's replay began (``start``, ``ReplayStart``): the two people keep their timing. ``speed`` > 1 plays faster, 0
    as fast as possible. Useful to re-run a session through the live daemon path.
    """

    def __init__(
        self,
        role: Role,
        path: Path,
        sink: StrapSink,
        speed: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        start: ReplayStart | None = None,
    ) -> None:
        from ..store import SessionStore, StoreError

        try:
            self._store = SessionStore.open(path, read_only=True)
        except StoreError as exc:
            raise InputError(str(exc)) from None
        self._store_open = True  # all it holds is read in ``run``, then the file is closed
        self.role = role
        self.sink = sink
        self.speed = speed
        self.clock = clock
        self.stats = LinkStats()
        self.connected = asyncio.Event()
        self._closing = False
        self._start = start or ReplayStart()
        self._start.add(path, role)

    @property
    def address(self) -> str:
        return ""

    @property
    def counters(self) -> StrapStream | None:
        return None

    async def run(self) -> None:
        import numpy as np

        from ..store import StoreError

        try:
            series = self._store.samples(self.role)
            events = [e for e in self._store.events(self.role)]
            late = self._store.late(self.role)  # what live received only after a drop-out: played as such
            firsts = [self._store.first_sample_t_s(role) for role in self._start.roles(self._store.path)]
        except StoreError as exc:
            # The source is damaged, not the store a daemon records into (whose failures keep its session open).
            raise LinkError(str(exc)) from None
        finally:
            self._release()
        if len(series.counters) == 0:
            raise LinkError(f"{self._store.path}: no samples for role {self.role!r}")
        t0 = min((t for t in firsts if t is not None), default=float(series.host_t_s[0]))
        start_s = self._start.at(self.clock)
        shift = start_s - t0
        self.connected.set()
        self.sink.on_link(self.role, "connected", str(self._store.path))
        next_event = 0
        came_late = late.sample_mask(series.counters)
        for start in range(0, len(series.counters), 7):
            if self._closing:
                break
            stop = min(start + 7, len(series.counters))
            t_last = float(series.host_t_s[stop - 1])
            if self.speed > 0:
                delay = (t_last - t0) / self.speed - (self.clock() - start_s)
                if delay > 0:
                    await asyncio.sleep(delay)
            counters = series.counters[start:stop]
            # Split at counter gaps (a block is consecutive by definition) and where live's late data begins or ends.
            cuts = np.nonzero((np.diff(counters) != 1) | (np.diff(came_late[start:stop]) != 0))[0] + 1
            for piece in np.split(np.arange(start, stop), cuts):
                block = SampleBlock(
                    self.role,
                    int(series.counters[piece[0]]),
                    series.values[piece],
                    series.host_t_s[piece] + shift,
                    backfilled=bool(came_late[piece[0]]),
                )
                self.stats.samples += len(piece)
                self.sink.on_samples(block)
            # An event once the sample that confirmed it is played, as the strap sent it (a link review: at its
            # extremum's time, the engine had each breath up to a confirmation delay early).
            last = int(counters[-1])
            while next_event < len(events) and events[next_event].confirmed_counter <= last:
                self._send_event(events[next_event], shift, late.events)
                next_event += 1
        if not self._closing:  # confirmed past the last sample stored: the strap sent them before that sample
            for e in events[next_event:]:
                self._send_event(e, shift, late.events)
        self.connected.clear()
        self.sink.on_link(self.role, "closed", "stopped" if self._closing else "end of recording")

    def _send_event(self, e: StoredEvent, shift: float, late: frozenset[tuple[str, int]]) -> None:
        self.sink.on_event(
            StrapEvent(
                self.role,
                e.kind,
                e.counter,
                e.confirmed_counter,
                e.depth_counts,
                e.interval_samples,
                e.host_t_s + shift,
                (e.kind, e.counter) in late,
            )
        )
        self.stats.events += 1

    async def close(self) -> None:
        self._closing = True
        self._release()  # closed before it ever ran (start-up failed later): the file is not kept open

    def _release(self) -> None:
        if self._store_open:
            self._store_open = False
            self._store.close()

    async def haptic(self, pattern: HapticCommand, timeout_s: float = 3.0) -> ResponsePacket:
        raise LinkError(f"{self.role}: a replayed session cannot vibrate")
