"""One strap's settings over BLE: read them, and change its role, name and sampling rate, or make it buzz.

A new strap is a client named ``breathsync`` (docs/firmware.md "Settings"); before a first session one of the two
must become the therapist's. This connects to one strap (not streaming), sends what was asked in a fixed order
(rate, role, name, identify: a failure leaves the rest unsent) and reads the strap's status again, so the answer
shows what the strap now holds. The strap persists each setting before it answers OK, and changes nothing when
its flash write fails (``INTERNAL_ERROR``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakBluetoothNotAvailableError, BleakError

from ..errors import InputError
from ..protocol import (
    ROLE_NAMES,
    Channel,
    ControlCommand,
    GetStatus,
    Identify,
    ProtocolError,
    ResponsePacket,
    ResultCode,
    SetName,
    SetRate,
    SetRole,
    StatusFlag,
    StatusPacket,
    StopStream,
)
from ..protocol import Role as WireRole
from ..protocol.uuids import CHARACTERISTIC_UUIDS, SERVICE_UUID
from ..roles import Role
from .ble import BleOptions, BleStrapLink, FoundStrap, check_bluetooth, looks_like_address, no_adapter_error
from .session import CommandRejected, CommandUnanswered, LinkError, StrapSession
from .stream import SampleBlock, StrapEvent

ROLE_CHOICES = ("therapist", "client", "unassigned")
RATE_CHOICES_HZ = (25, 50)
WIRE_ROLES = {"therapist": WireRole.THERAPIST, "client": WireRole.CLIENT, "unassigned": WireRole.UNASSIGNED}
ANSWER_TIMEOUT_S = 3.0
IDENTIFY_WAIT_MAX_MS = 5000  # a pattern is at most a few seconds (haptic limits); an odd value0 cannot hang us
IDENTIFY_BEFORE_0_1_3_MS = 500  # 3 x 100 ms on, 100 ms off: the pattern of firmware that did not say its length
# Straps advertise every 250 ms: a strap found by name is looked for this much longer, so that a second strap of that
# name (every new strap is called "breathsync") is seen too and the user is asked which one.
SAME_NAME_WAIT_S = 1.5


@dataclass(frozen=True)
class SettingsRequest:
    """What to change; None (False) leaves it as it is."""

    role: str | None = None
    name: str | None = None
    rate_hz: int | None = None
    identify: bool = False

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in WIRE_ROLES:
            raise InputError(f"role must be one of {', '.join(ROLE_CHOICES)} (got {self.role!r})")
        if self.rate_hz is not None and self.rate_hz not in RATE_CHOICES_HZ:
            raise InputError(f"rate must be one of {', '.join(map(str, RATE_CHOICES_HZ))} Hz (got {self.rate_hz})")
        if self.name is not None:
            try:
                SetName(0, self.name)  # the wire's own rule: 1..16 printable ASCII characters
            except ProtocolError as exc:
                raise InputError(f"--name: {exc}") from None
            # Spaces at either end look like none in `scan`, and the strap could not be found by the name as seen.
            if self.name != self.name.strip():
                raise InputError(f"--name: no spaces at its start or end, got {self.name!r}")


@dataclass(frozen=True)
class StrapSettings:
    """A strap's settings as it reports them."""

    address: str
    name: str
    role: str  # therapist, client or unassigned
    sample_rate_hz: int
    firmware: str
    battery_pct: int | None
    streaming: bool

    @classmethod
    def from_status(cls, address: str, name: str, status: StatusPacket) -> StrapSettings:
        return cls(
            address,
            name,
            ROLE_NAMES.get(status.role, "unassigned"),
            status.sample_rate_hz,
            ".".join(str(v) for v in status.fw_version),
            status.battery_pct,
            bool(status.flags & StatusFlag.STREAMING),
        )


async def find_strap(target: str, options: BleOptions, timeout_s: float) -> FoundStrap:
    """The strap ``target`` names, scanning until it is known: at once by address, ``SAME_NAME_WAIT_S`` after it was
    first seen by name (``pick_strap`` says which), or until ``timeout_s``."""
    return pick_strap(target, await _scan_for(target, options, timeout_s, looks_like_address(target)))


async def _scan_for(target: str, options: BleOptions, timeout_s: float, at_once: bool) -> list[FoundStrap]:
    """The straps seen until ``target`` was (``at_once``), or ``SAME_NAME_WAIT_S`` after, or until ``timeout_s``."""
    await check_bluetooth(options)
    by_address = looks_like_address(target)
    seen: dict[str, FoundStrap] = {}
    first_match_s: float | None = None

    def on_advert(device: BLEDevice, adv: AdvertisementData) -> None:
        nonlocal first_match_s
        if SERVICE_UUID not in [u.lower() for u in adv.service_uuids] and device.address not in seen:
            return  # the scan response (name only) of another device
        name = adv.local_name or device.name or ""
        old = seen.get(device.address)
        seen[device.address] = FoundStrap(device.address, name or (old.name if old else ""), adv.rssi, device)
        if first_match_s is None and (device.address.upper() == target.upper() if by_address else name == target):
            first_match_s = time.monotonic()

    wait_s = 0.0 if at_once else SAME_NAME_WAIT_S
    deadline = time.monotonic() + timeout_s
    try:
        async with BleakScanner(detection_callback=on_advert, **options.scanner_kwargs()):
            # Once seen by name, the wait for a second strap of that name runs to its end, past the deadline too:
            # cut short, a strap first seen late (or a short --timeout) would be taken without the check.
            while time.monotonic() < (deadline if first_match_s is None else first_match_s + wait_s):
                await asyncio.sleep(0.05)
    except BleakBluetoothNotAvailableError as exc:
        raise no_adapter_error(str(exc.args[0])) from None
    return list(seen.values())


def pick_strap(target: str, found: Sequence[FoundStrap]) -> FoundStrap:
    """The one strap ``target`` (an address or an advertised name) means among those found; InputError when it is
    none of them or, by name, more than one (every new strap is called ``breathsync``: changing the role of
    whichever answered first could give both people's straps one role)."""
    if looks_like_address(target):
        matches = [strap for strap in found if strap.address.upper() == target.upper()]
    else:
        matches = [strap for strap in found if strap.name == target]
    if not matches:
        seen = ", ".join(sorted({f"{s.name or '?'} ({s.address})" for s in found})) or "none"
        raise LinkError(
            f"no strap {'at' if looks_like_address(target) else 'named'} {target!r} in range (straps seen: {seen}; a"
            " strap connected to a running session does not advertise)"
        )
    if len(matches) > 1:
        addresses = ", ".join(strap.address for strap in matches)
        raise InputError(
            f"{len(matches)} straps are named {target!r} ({addresses}): name one by its address, or switch the"
            " other off (`breathsync strap ADDRESS --identify` buzzes the one at ADDRESS)"
        )
    return matches[0]


class _Quiet:
    """A sink for a session that does not stream: only its answers and status are read."""

    def on_samples(self, block: SampleBlock) -> None:
        pass

    def on_event(self, event: StrapEvent) -> None:
        pass

    def on_status(self, role: Role, status: StatusPacket) -> None:
        pass

    def on_link(self, role: Role, kind: str, detail: str) -> None:
        pass


class MayHaveApplied(LinkError):
    """A setting went out and its answer did not come back (the link was lost): the strap may hold it."""


def _refusal(command: ControlCommand, result: ResultCode) -> str:
    what = type(command).__name__
    if isinstance(command, Identify) and result == ResultCode.INTERNAL_ERROR:
        return "the strap cannot vibrate (no haptic driver answered at boot, or haptics are off in its settings)"
    if result == ResultCode.INTERNAL_ERROR:
        return f"the strap could not save {what} (a flash write failed; it changed nothing)"
    if result == ResultCode.BUSY:
        return f"the strap is busy and did not take {what} (is it streaming to a session? stop that first)"
    return f"the strap refused {what}: {result.name}"


async def _send(session: StrapSession, command: ControlCommand) -> ResponsePacket:
    try:
        response = await session.command(command, ANSWER_TIMEOUT_S)
    except CommandRejected as exc:
        raise LinkError(_refusal(command, exc.response.result)) from None
    except CommandUnanswered:
        raise MayHaveApplied(
            f"{type(command).__name__} got no answer (the link was lost, or the strap did not answer within "
            f"{ANSWER_TIMEOUT_S:.0f} s): it may have been applied"
        ) from None
    if response.result != ResultCode.OK:  # BUSY comes back as an answer, not an exception
        raise LinkError(_refusal(command, response.result))
    return response


async def _read_status(client: BleakClient) -> StatusPacket:
    raw = bytes(await client.read_gatt_char(CHARACTERISTIC_UUIDS[Channel.STATUS]))
    try:
        return StatusPacket.from_bytes(raw)
    except ProtocolError as exc:
        raise LinkError(f"the strap's status cannot be read ({exc}): is it a breathsync strap?") from None


async def apply_settings(
    target: str, request: SettingsRequest, options: BleOptions, scan_s: float = 5.0
) -> tuple[StrapSettings, StrapSettings]:
    """Find the strap ``target`` names, apply ``request``, and return its settings before and after. A new name
    that another strap in range advertises is refused before anything changes (neither could then be found by it)."""
    # A strap given by address is taken as soon as it is seen, unless it is to be renamed: then the scan runs on
    # for SAME_NAME_WAIT_S, as by name, to see the other straps' names.
    found = await _scan_for(target, options, scan_s, looks_like_address(target) and request.name is None)
    strap = pick_strap(target, found)
    if request.name is not None and request.name != strap.name:
        holders = [other.address for other in found if other.name == request.name and other.address != strap.address]
        if holders:
            raise InputError(
                f"--name: the strap at {', '.join(holders)} already advertises {request.name!r}: give this one "
                "another name (two straps of one name can be told apart only by their addresses)"
            )
    session = StrapSession("client", _Quiet())  # the role only names the session's own messages, never shown here
    connected = False
    try:
        async with BleStrapLink._lock():  # one connect at a time, as everywhere
            client = BleakClient(
                strap.device,
                disconnected_callback=lambda _client: session.detach("the strap disconnected"),  # answers fail now
                timeout=options.connect_timeout_s,
                **options.client_kwargs(),
            )
            await client.connect()
        connected = True
        try:
            return await _apply(client, strap, request, session)
        finally:
            with contextlib.suppress(Exception):
                await client.disconnect()
    except (BleakError, TimeoutError, OSError, LinkError) as exc:
        strap_is = f"strap {strap.name or '?'} at {strap.address}"
        what = str(exc) or type(exc).__name__
        if not connected:
            raise LinkError(f"{strap_is}: cannot connect ({what})") from None
        if isinstance(exc, MayHaveApplied):  # what the strap took before the link went, it keeps
            raise LinkError(f"{strap_is}: {what}; `breathsync strap {strap.address}` shows its settings") from None
        raise LinkError(f"{strap_is}: {what}") from None


async def _apply(
    client: BleakClient, strap: FoundStrap, request: SettingsRequest, session: StrapSession
) -> tuple[StrapSettings, StrapSettings]:
    before = await _read_status(client)

    def on_response(_characteristic: object, data: bytearray) -> None:
        session.handle(Channel.RESPONSE, bytes(data))

    async def write(channel: Channel, payload: bytes) -> None:
        try:
            await client.write_gatt_char(CHARACTERISTIC_UUIDS[channel], payload, response=True)
        except (BleakError, OSError) as exc:
            raise MayHaveApplied(f"the link was lost ({exc or type(exc).__name__})") from None

    await client.start_notify(CHARACTERISTIC_UUIDS[Channel.RESPONSE], on_response)
    session.attach(write)
    name = strap.name
    if request.rate_hz is not None and request.rate_hz != before.sample_rate_hz:
        if before.flags & StatusFlag.STREAMING:  # the rate changes only while the strap is not streaming
            await _send(session, StopStream(0))
        await _send(session, SetRate(0, request.rate_hz))
    if request.role is not None and WIRE_ROLES[request.role] != before.role:
        await _send(session, SetRole(0, WIRE_ROLES[request.role]))
    if request.name is not None and request.name != strap.name:
        await _send(session, SetName(0, request.name))
        name = request.name
    if request.identify:
        played = await _send(session, Identify(0))
        # The strap ends a pattern when its link goes: stay connected until it has played (value0: its length;
        # firmware before 0.1.3 answered 0, for the 500 ms pattern docs/protocol.md describes).
        length_ms = played.value0 or IDENTIFY_BEFORE_0_1_3_MS
        await asyncio.sleep(min(length_ms, IDENTIFY_WAIT_MAX_MS) / 1000 + 0.1)
    await _send(session, GetStatus(0))  # the status characteristic then holds the new settings
    after = await _read_status(client)
    session.detach("done")
    return StrapSettings.from_status(strap.address, strap.name, before), StrapSettings.from_status(
        strap.address, name, after
    )


__all__ = [
    "RATE_CHOICES_HZ",
    "ROLE_CHOICES",
    "SettingsRequest",
    "StrapSettings",
    "apply_settings",
    "find_strap",
    "pick_strap",
]
