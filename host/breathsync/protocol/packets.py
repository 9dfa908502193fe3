"""Host side of the strap's wire format (docs/protocol.md is the source of truth).

Every packet is a frozen dataclass with ``from_bytes()`` and ``__bytes__()``, like Bumble's
profiles. Construction validates every field, so an object that exists always encodes to a
valid packet, and decoding is strict. Any malformed input raises exactly one
:class:`~breathsync.protocol.errors.ProtocolError` subclass, in the check order of the document:
empty -> version -> type -> (opcode) -> length -> values. Because decoding is strict and every
field has one encoding, ``bytes(Packet.from_bytes(b)) == b`` for every accepted ``b``.

This module deliberately shares no code with ``firmware/core/packets.py``. The two are locked
together only by the golden vectors in ``tests/vectors/``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import ClassVar, Final, Self, TypeAlias, TypeVar

from .errors import BadLength, BadValue, BadVersion, ProtocolError, UnknownOpcode, UnknownType

PROTOCOL_VERSION: Final = 1
PROTOCOL_MINOR: Final = 0
MIN_PAYLOAD_BYTES: Final = 20
MAX_PACKET_BYTES: Final = 244
ATT_OVERHEAD_BYTES: Final = 3
SAMPLES_HEADER_BYTES: Final = 6
MAX_SAMPLES: Final = 119
EVENT_BYTES: Final = 13
STATUS_BYTES: Final = 19
RESPONSE_BYTES: Final = 13
HAPTIC_BYTES: Final = 8
NAME_MAX_CHARS: Final = 16
U8_MAX: Final = 0xFF
U16_MAX: Final = 0xFFFF
U32_MAX: Final = 0xFFFFFFFF
BACKFILL_OPEN_END: Final = U32_MAX
BATTERY_UNKNOWN: Final = 0xFF
SAMPLE_RATES_HZ: Final = (25, 50)

HAPTIC_MAX_PULSES: Final = 10
HAPTIC_MIN_ON_MS: Final = 20
HAPTIC_MAX_ON_MS: Final = 1000
HAPTIC_MIN_OFF_MS: Final = 50
HAPTIC_MAX_OFF_MS: Final = 15000

NOTIFY_MIN_INTERVAL_MS: Final = 50
FLUSH_AFTER_MS: Final = 300

Buffer: TypeAlias = bytes | bytearray | memoryview


class Channel(IntEnum):
    """Characteristic / wired channel number; in version 1 also the header's type nibble."""

    SAMPLES = 1
    EVENT = 2
    STATUS = 3
    RESPONSE = 4
    HAPTIC = 8
    CONTROL = 9


class EventKind(IntEnum):
    PEAK = 1  # end of inhalation
    TROUGH = 2  # end of exhalation


class SensorState(IntEnum):
    OK = 0
    STARTING = 1
    ABSENT = 2
    SATURATED = 3
    FAULT = 4


class Role(IntEnum):
    UNASSIGNED = 0
    THERAPIST = 1
    CLIENT = 2


ROLE_NAMES = {Role.THERAPIST: "therapist", Role.CLIENT: "client"}  # the host's name for an assigned role


class StatusFlag(IntFlag):
    STREAMING = 0x01
    WIRED = 0x02
    HAPTIC_ACTIVE = 0x04
    BACKFILLING = 0x08
    CHARGING = 0x10


_FLAGS_DEFINED: Final = 0x1F


class ResultCode(IntEnum):
    OK = 0
    BAD_LENGTH = 1
    BAD_VALUE = 2
    UNKNOWN_OPCODE = 3
    BUSY = 4
    BAD_VERSION = 5
    UNKNOWN_TYPE = 6
    INTERNAL_ERROR = 7


class Opcode(IntEnum):
    START_STREAM = 0x01
    STOP_STREAM = 0x02
    SET_RATE = 0x03
    BACKFILL = 0x04
    IDENTIFY = 0x05
    SET_ROLE = 0x06
    SET_NAME = 0x07
    TIME_SYNC = 0x08
    GET_STATUS = 0x09


#: The host exception that corresponds to each validation result code of the strap.
RESULT_ERRORS: Final[dict[ResultCode, type[ProtocolError]]] = {
    ResultCode.BAD_LENGTH: BadLength,
    ResultCode.BAD_VALUE: BadValue,
    ResultCode.UNKNOWN_OPCODE: UnknownOpcode,
    ResultCode.BAD_VERSION: BadVersion,
    ResultCode.UNKNOWN_TYPE: UnknownType,
}


def samples_per_packet(att_mtu: int) -> int:
    """Samples in one SAMPLES notification at a negotiated ATT MTU: 7 at 23, 119 at 247."""
    if att_mtu < MIN_PAYLOAD_BYTES + ATT_OVERHEAD_BYTES:
        raise BadValue(f"ATT MTU {att_mtu} is below the BLE minimum of 23")
    return min(MAX_SAMPLES, (att_mtu - ATT_OVERHEAD_BYTES - SAMPLES_HEADER_BYTES) // 2)


def header_byte(channel: Channel) -> int:
    return (PROTOCOL_VERSION << 4) | int(channel)


# --- validation helpers: raise BadValue, never anything else -------------------------------------

_E = TypeVar("_E", bound=IntEnum)


def _int(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or not lo <= value <= hi:
        raise BadValue(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _enum(cls: type[_E], name: str, value: object) -> _E:
    if isinstance(value, cls):
        return value
    if isinstance(value, int):
        try:
            return cls(value)
        except ValueError:
            pass
    raise BadValue(f"{name}: {value!r} is not a valid {cls.__name__}")


def _set(obj: object, name: str, value: object) -> None:
    # Normalise a field of a frozen dataclass in __post_init__ (int -> enum, list -> tuple).
    object.__setattr__(obj, name, value)


def as_bytes(data: Buffer) -> bytes:
    """``bytes(data)`` for any bytes-like input; anything else is a BadValue, not a TypeError."""
    if isinstance(data, bytes):
        return data
    if not isinstance(data, bytearray | memoryview):
        raise BadValue(f"expected bytes-like data, got {type(data).__name__}")
    try:
        return bytes(data)
    except (TypeError, ValueError) as error:  # e.g. a released memoryview
        raise BadValue(f"unreadable buffer: {error}") from None


def _open(data: Buffer, channel: Channel) -> bytes:
    """Common header checks, in the document's order: empty, version, type."""
    raw = as_bytes(data)
    if not raw:
        raise BadLength(f"empty {channel.name} packet")
    version = raw[0] >> 4
    if version != PROTOCOL_VERSION:
        raise BadVersion(f"{channel.name} packet has version {version}, this decoder speaks {PROTOCOL_VERSION}")
    if raw[0] & 0x0F != channel:
        raise UnknownType(f"type {raw[0] & 0x0F} does not belong to channel {channel.name} ({int(channel)})")
    return raw


def _exact(raw: bytes, length: int, what: str) -> None:
    if len(raw) != length:
        raise BadLength(f"{what} must be {length} bytes, got {len(raw)}")


# --- strap -> host -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplesPacket:
    """Respiration stream: ``samples[i]`` has sample counter ``counter + i`` (mod 2**32)."""

    CHANNEL: ClassVar[Channel] = Channel.SAMPLES

    seq: int
    counter: int
    samples: tuple[int, ...]

    def __post_init__(self) -> None:
        _int("seq", self.seq, 0, U8_MAX)
        _int("counter", self.counter, 0, U32_MAX)
        if not isinstance(self.samples, Sequence):
            raise BadValue("samples must be a sequence of integers")
        samples = tuple(self.samples)
        if not 1 <= len(samples) <= MAX_SAMPLES:
            raise BadLength(f"a SAMPLES packet holds 1..{MAX_SAMPLES} samples, got {len(samples)}")
        for value in samples:
            _int("sample", value, 0, U16_MAX)
        _set(self, "samples", samples)

    @classmethod
    def from_bytes(cls, data: Buffer) -> Self:
        raw = _open(data, Channel.SAMPLES)
        n = len(raw)
        if n % 2 or not SAMPLES_HEADER_BYTES + 2 <= n <= MAX_PACKET_BYTES:
            raise BadLength(f"SAMPLES must be 6 + 2n bytes with n in 1..{MAX_SAMPLES}, got {n}")
        seq, counter = struct.unpack_from("<BI", raw, 1)
        count = (n - SAMPLES_HEADER_BYTES) // 2
        return cls(seq, counter, struct.unpack_from(f"<{count}H", raw, SAMPLES_HEADER_BYTES))

    def __bytes__(self) -> bytes:
        head = struct.pack("<BBI", header_byte(self.CHANNEL), self.seq, self.counter)
        return head + struct.pack(f"<{len(self.samples)}H", *self.samples)

    @property
    def end_counter(self) -> int:
        """Counter of the sample after the last one (mod 2**32)."""
        return (self.counter + len(self.samples)) & U32_MAX


@dataclass(frozen=True)
class EventPacket:
    """One breath event; ``index`` is the extremum's sample counter."""

    CHANNEL: ClassVar[Channel] = Channel.EVENT

    seq: int
    kind: EventKind
    index: int
    confirm_delay: int
    depth: int
    interval: int

    def __post_init__(self) -> None:
        _int("seq", self.seq, 0, U8_MAX)
        _set(self, "kind", _enum(EventKind, "kind", self.kind))
        _int("index", self.index, 0, U32_MAX)
        _int("confirm_delay", self.confirm_delay, 1, U16_MAX)
        _int("depth", self.depth, 0, U16_MAX)
        _int("interval", self.interval, 0, U16_MAX)

    @classmethod
    def from_bytes(cls, data: Buffer) -> Self:
        raw = _open(data, Channel.EVENT)
        _exact(raw, EVENT_BYTES, "EVENT")
        seq, kind, index, delay, depth, interval = struct.unpack_from("<BBIHHH", raw, 1)
        return cls(seq, _enum(EventKind, "kind", kind), index, delay, depth, interval)

    def __bytes__(self) -> bytes:
        return struct.pack(
            "<BBBIHHH",
            header_byte(self.CHANNEL),
            self.seq,
            self.kind,
            self.index,
            self.confirm_delay,
            self.depth,
            self.interval,
        )

    @property
    def confirmed_index(self) -> int:
        """Sample counter at which the strap confirmed (emitted) the event (mod 2**32)."""
        return (self.index + self.confirm_delay) & U32_MAX


@dataclass(frozen=True)
class StatusPacket:
    """The strap's status (read, or notified on change)."""

    CHANNEL: ClassVar[Channel] = Channel.STATUS

    fw_version: tuple[int, int, int]
    sensor_state: SensorState
    sample_rate_hz: int
    role: Role
    flags: StatusFlag
    battery_pct: int | None
    buffer_fill_pct: int
    dropped_samples: int
    notify_retries: int
    protocol_minor: int = PROTOCOL_MINOR

    def __post_init__(self) -> None:
        if not isinstance(self.fw_version, Sequence) or len(self.fw_version) != 3:
            raise BadValue(f"fw_version must be (major, minor, patch), got {self.fw_version!r}")
        _set(self, "fw_version", tuple(_int("fw_version", v, 0, U8_MAX) for v in self.fw_version))
        _int("protocol_minor", self.protocol_minor, 0, 15)
        _set(self, "sensor_state", _enum(SensorState, "sensor_state", self.sensor_state))
        if self.sample_rate_hz not in SAMPLE_RATES_HZ or not isinstance(self.sample_rate_hz, int):
            raise BadValue(f"sample_rate_hz must be 25 or 50, got {self.sample_rate_hz!r}")
        _set(self, "role", _enum(Role, "role", self.role))
        flags = _int("flags", self.flags, 0, U8_MAX)
        if flags & ~_FLAGS_DEFINED:
            raise BadValue(f"reserved status flag bits set: 0x{flags & ~_FLAGS_DEFINED:02x}")
        _set(self, "flags", StatusFlag(flags))
        if self.battery_pct is not None:
            _int("battery_pct", self.battery_pct, 0, 100)
        _int("buffer_fill_pct", self.buffer_fill_pct, 0, 100)
        _int("dropped_samples", self.dropped_samples, 0, U32_MAX)
        _int("notify_retries", self.notify_retries, 0, U32_MAX)

    @property
    def protocol_version(self) -> tuple[int, int]:
        return (PROTOCOL_VERSION, self.protocol_minor)

    @classmethod
    def from_bytes(cls, data: Buffer) -> Self:
        raw = _open(data, Channel.STATUS)
        _exact(raw, STATUS_BYTES, "STATUS")
        (major, minor, patch, proto, state, rate, role, flags, battery, fill, dropped, retries) = struct.unpack_from(
            "<BBBBBBBBBBII", raw, 1
        )
        if proto >> 4 != PROTOCOL_VERSION:
            raise BadValue(f"status protocol_version 0x{proto:02x} disagrees with header version {PROTOCOL_VERSION}")
        return cls(
            fw_version=(major, minor, patch),
            sensor_state=_enum(SensorState, "sensor_state", state),
            sample_rate_hz=rate,
            role=_enum(Role, "role", role),
            flags=StatusFlag(flags),
            battery_pct=None if battery == BATTERY_UNKNOWN else battery,
            buffer_fill_pct=fill,
            dropped_samples=dropped,
            notify_retries=retries,
            protocol_minor=proto & 0x0F,
        )

    def __bytes__(self) -> bytes:
        return struct.pack(
            "<BBBBBBBBBBBII",
            header_byte(self.CHANNEL),
            *self.fw_version,
            (PROTOCOL_VERSION << 4) | self.protocol_minor,
            self.sensor_state,
            self.sample_rate_hz,
            self.role,
            self.flags,
            BATTERY_UNKNOWN if self.battery_pct is None else self.battery_pct,
            self.buffer_fill_pct,
            self.dropped_samples,
            self.notify_retries,
        )


@dataclass(frozen=True)
class ResponsePacket:
    """The strap's answer to one command (HAPTIC or CONTROL); ``value0``/``value1`` per section 4.4."""

    CHANNEL: ClassVar[Channel] = Channel.RESPONSE

    tag: int
    channel: Channel
    opcode: int
    result: ResultCode
    value0: int = 0
    value1: int = 0

    def __post_init__(self) -> None:
        _int("tag", self.tag, 0, U8_MAX)
        channel = _enum(Channel, "channel", self.channel)
        if channel not in (Channel.HAPTIC, Channel.CONTROL):
            raise BadValue(f"a response answers HAPTIC or CONTROL, not {channel.name}")
        _set(self, "channel", channel)
        _int("opcode", self.opcode, 0, 0 if channel == Channel.HAPTIC else U8_MAX)
        _set(self, "result", _enum(ResultCode, "result", self.result))
        _int("value0", self.value0, 0, U32_MAX)
        _int("value1", self.value1, 0, U32_MAX)

    @classmethod
    def from_bytes(cls, data: Buffer) -> Self:
        raw = _open(data, Channel.RESPONSE)
        _exact(raw, RESPONSE_BYTES, "RESPONSE")
        tag, channel, opcode, result, value0, value1 = struct.unpack_from("<BBBBII", raw, 1)
        return cls(tag, _enum(Channel, "channel", channel), opcode, _enum(ResultCode, "result", result), value0, value1)

    def __bytes__(self) -> bytes:
        return struct.pack(
            "<BBBBBII",
            header_byte(self.CHANNEL),
            self.tag,
            self.channel,
            self.opcode,
            self.result,
            self.value0,
            self.value1,
        )

    @property
    def ok(self) -> bool:
        return self.result == ResultCode.OK


# --- host -> strap -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HapticCommand:
    """A vibration pattern; ``pulses == 0`` (all other fields 0) stops the motor."""

    CHANNEL: ClassVar[Channel] = Channel.HAPTIC

    tag: int
    pulses: int
    on_ms: int
    off_ms: int
    intensity_pct: int

    def __post_init__(self) -> None:
        _int("tag", self.tag, 0, U8_MAX)
        pulses = _int("pulses", self.pulses, 0, HAPTIC_MAX_PULSES)
        if pulses == 0:
            if (self.on_ms, self.off_ms, self.intensity_pct) != (0, 0, 0):
                raise BadValue("a stop command (pulses 0) has on_ms, off_ms and intensity_pct 0")
            return
        _int("on_ms", self.on_ms, HAPTIC_MIN_ON_MS, HAPTIC_MAX_ON_MS)
        _int("off_ms", self.off_ms, HAPTIC_MIN_OFF_MS if pulses > 1 else 0, HAPTIC_MAX_OFF_MS)
        _int("intensity_pct", self.intensity_pct, 1, 100)

    @classmethod
    def stop(cls, tag: int = 0) -> Self:
        return cls(tag, 0, 0, 0, 0)

    @property
    def duration_ms(self) -> int:
        """Time from the first pulse's start to the last pulse's end."""
        return self.pulses * self.on_ms + max(self.pulses - 1, 0) * self.off_ms

    @classmethod
    def from_bytes(cls, data: Buffer) -> Self:
        raw = _open(data, Channel.HAPTIC)
        _exact(raw, HAPTIC_BYTES, "HAPTIC")
        return cls(*struct.unpack_from("<BBHHB", raw, 1))

    def __bytes__(self) -> bytes:
        return struct.pack(
            "<BBBHHB",
            header_byte(self.CHANNEL),
            self.tag,
            self.pulses,
            self.on_ms,
            self.off_ms,
            self.intensity_pct,
        )


@dataclass(frozen=True)
class ControlCommand:
    """Base of the control commands; ``ControlCommand.from_bytes`` returns the right subclass."""

    CHANNEL: ClassVar[Channel] = Channel.CONTROL
    OPCODE: ClassVar[Opcode]
    LENGTH: ClassVar[int] = 3

    tag: int

    def __post_init__(self) -> None:
        _int("tag", self.tag, 0, U8_MAX)

    @classmethod
    def from_bytes(cls, data: Buffer) -> Self:
        raw = _open(data, Channel.CONTROL)
        if len(raw) < 3:
            raise BadLength(f"CONTROL needs at least 3 bytes (header, tag, opcode), got {len(raw)}")
        try:
            opcode = Opcode(raw[2])
        except ValueError:
            raise UnknownOpcode(f"unknown control opcode 0x{raw[2]:02x}") from None
        command = _CONTROL_CLASSES[opcode]._parse(raw)
        if not isinstance(command, cls):
            raise UnknownOpcode(f"expected {cls.__name__}, got opcode {opcode.name}")
        return command

    @classmethod
    def _parse(cls, raw: bytes) -> ControlCommand:
        _exact(raw, cls.LENGTH, cls.OPCODE.name)
        return cls._from_args(raw[1], raw[3:])

    @classmethod
    def _from_args(cls, tag: int, args: bytes) -> ControlCommand:
        return cls(tag)

    def _args(self) -> bytes:
        return b""

    def __bytes__(self) -> bytes:
        return bytes((header_byte(self.CHANNEL), self.tag, self.OPCODE)) + self._args()


@dataclass(frozen=True)
class StartStream(ControlCommand):
    OPCODE: ClassVar[Opcode] = Opcode.START_STREAM


@dataclass(frozen=True)
class StopStream(ControlCommand):
    OPCODE: ClassVar[Opcode] = Opcode.STOP_STREAM


@dataclass(frozen=True)
class SetRate(ControlCommand):
    OPCODE: ClassVar[Opcode] = Opcode.SET_RATE
    LENGTH: ClassVar[int] = 4

    rate_hz: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rate_hz not in SAMPLE_RATES_HZ or not isinstance(self.rate_hz, int):
            raise BadValue(f"rate_hz must be 25 or 50, got {self.rate_hz!r}")

    @classmethod
    def _from_args(cls, tag: int, args: bytes) -> ControlCommand:
        return cls(tag, args[0])

    def _args(self) -> bytes:
        return bytes((self.rate_hz,))


@dataclass(frozen=True)
class Backfill(ControlCommand):
    """Re-send buffered samples and events with counters in ``[from_counter, to_counter)``.

    ``to_counter=None`` (``0xFFFFFFFF`` on the wire) means up to now.
    """

    OPCODE: ClassVar[Opcode] = Opcode.BACKFILL
    LENGTH: ClassVar[int] = 11

    from_counter: int
    to_counter: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        start = _int("from_counter", self.from_counter, 0, U32_MAX)
        end = BACKFILL_OPEN_END if self.to_counter is None else _int("to_counter", self.to_counter, 0, U32_MAX - 1)
        if start >= end:
            raise BadValue(f"backfill range is empty: from {start} to {end}")

    @classmethod
    def _from_args(cls, tag: int, args: bytes) -> ControlCommand:
        start, end = struct.unpack("<II", args)
        return cls(tag, start, None if end == BACKFILL_OPEN_END else end)

    def _args(self) -> bytes:
        end = BACKFILL_OPEN_END if self.to_counter is None else self.to_counter
        return struct.pack("<II", self.from_counter, end)


@dataclass(frozen=True)
class Identify(ControlCommand):
    OPCODE: ClassVar[Opcode] = Opcode.IDENTIFY


@dataclass(frozen=True)
class SetRole(ControlCommand):
    OPCODE: ClassVar[Opcode] = Opcode.SET_ROLE
    LENGTH: ClassVar[int] = 4

    role: Role

    def __post_init__(self) -> None:
        super().__post_init__()
        _set(self, "role", _enum(Role, "role", self.role))

    @classmethod
    def _from_args(cls, tag: int, args: bytes) -> ControlCommand:
        return cls(tag, _enum(Role, "role", args[0]))

    def _args(self) -> bytes:
        return bytes((self.role,))


@dataclass(frozen=True)
class SetName(ControlCommand):
    """Advertised name: 1..16 printable ASCII characters."""

    OPCODE: ClassVar[Opcode] = Opcode.SET_NAME

    name: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.name, str) or not 1 <= len(self.name) <= NAME_MAX_CHARS:
            raise BadValue(f"name must be 1..{NAME_MAX_CHARS} characters, got {self.name!r}")
        if any(not 0x20 <= ord(c) <= 0x7E for c in self.name):
            raise BadValue(f"name must be printable ASCII, got {self.name!r}")

    @classmethod
    def _parse(cls, raw: bytes) -> ControlCommand:
        if not 4 <= len(raw) <= 3 + NAME_MAX_CHARS:
            raise BadLength(f"SET_NAME must be 4..{3 + NAME_MAX_CHARS} bytes, got {len(raw)}")
        return cls(raw[1], raw[3:].decode("latin-1"))

    def _args(self) -> bytes:
        return self.name.encode("ascii")


@dataclass(frozen=True)
class TimeSync(ControlCommand):
    """Ping: the strap answers with ``token`` and its current sample counter."""

    OPCODE: ClassVar[Opcode] = Opcode.TIME_SYNC
    LENGTH: ClassVar[int] = 7

    token: int

    def __post_init__(self) -> None:
        super().__post_init__()
        _int("token", self.token, 0, U32_MAX)

    @classmethod
    def _from_args(cls, tag: int, args: bytes) -> ControlCommand:
        return cls(tag, struct.unpack("<I", args)[0])

    def _args(self) -> bytes:
        return struct.pack("<I", self.token)


@dataclass(frozen=True)
class GetStatus(ControlCommand):
    OPCODE: ClassVar[Opcode] = Opcode.GET_STATUS


_CONTROL_CLASSES: Final[dict[Opcode, type[ControlCommand]]] = {
    cls.OPCODE: cls
    for cls in (StartStream, StopStream, SetRate, Backfill, Identify, SetRole, SetName, TimeSync, GetStatus)
}

Packet: TypeAlias = SamplesPacket | EventPacket | StatusPacket | ResponsePacket | HapticCommand | ControlCommand

_DECODERS: Final[dict[Channel, type[Packet]]] = {
    Channel.SAMPLES: SamplesPacket,
    Channel.EVENT: EventPacket,
    Channel.STATUS: StatusPacket,
    Channel.RESPONSE: ResponsePacket,
    Channel.HAPTIC: HapticCommand,
    Channel.CONTROL: ControlCommand,
}


def decode(channel: int, data: Buffer) -> Packet:
    """Decode one packet received on ``channel`` (a characteristic, or a wired frame's channel byte).

    Raises a :class:`ProtocolError` subclass, and nothing else, for any bad input; an unknown
    channel is :class:`UnknownType`.
    """
    try:
        known = Channel(channel)
    except ValueError:
        raise UnknownType(f"unknown channel {channel!r}") from None
    return _DECODERS[known].from_bytes(data)


def encode(packet: Packet) -> tuple[Channel, bytes]:
    """The channel and bytes of ``packet``."""
    return packet.CHANNEL, bytes(packet)
