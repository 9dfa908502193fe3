"""CPython side of the bridge protocol to a virtual strap (``breathsync/mp/doubles/bridge_link.py``).

Frames, both directions: ``0xA5 | type (u8) | length (u16 LE) | payload``; the frame types and
their payloads are documented in ``bridge_link.py``, which is the MicroPython end. Anything the
strap writes to stdout that does not start with the magic byte (an interpreter message that
escaped the entry script's guard) is read up to the next newline and reported as stray text,
so the stream re-synchronises instead of failing.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Final

MAGIC: Final = 0xA5
MAX_PAYLOAD: Final = 0xFFFF

# strap -> parent
GATT: Final = ord("G")
ADVERTISE: Final = ord("A")
NOTIFY: Final = ord("N")
DISCONNECT_REQUEST: Final = ord("D")
MTU_REQUEST: Final = ord("M")
READ_REPLY: Final = ord("r")
PWM: Final = ord("P")
INFO_REPLY: Final = ord("i")
BYE: Final = ord("Z")
# parent -> strap
CONNECTED: Final = ord("C")
DISCONNECTED: Final = ord("X")
MTU: Final = ord("U")
WRITE: Final = ord("W")
READ: Final = ord("R")
SUBSCRIBE: Final = ord("B")
ACK: Final = ord("K")
OPTIONS: Final = ord("O")
DRIFT: Final = ord("T")
INFO: Final = ord("I")
QUIT: Final = ord("Q")
BATTERY: Final = ord("V")  # the battery voltage the gauge sees from now on (mV)
HANG: Final = ord("H")  # the firmware's loop blocks for N ms without yielding (a hung driver): the watchdog fires

ADV_STOPPED: Final = 0xFFFFFFFF
# Attribute kinds and flags of the bluetooth double (MicroPython's FLAG_* values).
KIND_SERVICE: Final = 0
KIND_CHARACTERISTIC: Final = 1
KIND_DESCRIPTOR: Final = 2
FLAG_READ: Final = 0x0002
FLAG_WRITE_NO_RESPONSE: Final = 0x0004
FLAG_WRITE: Final = 0x0008
FLAG_NOTIFY: Final = 0x0010
FLAG_INDICATE: Final = 0x0020


def frame(kind: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"bridge payload too long ({len(payload)} bytes)")
    return struct.pack("<BBH", MAGIC, kind, len(payload)) + payload


@dataclass(frozen=True)
class GattAttr:
    """One attribute the firmware registered: value handle, kind, FLAG_* bits, UUID (little-endian)."""

    handle: int
    kind: int
    flags: int
    uuid_le: bytes

    @property
    def uuid(self) -> str:
        """Lowercase 128-bit UUID string (16-bit UUIDs on the Bluetooth base), as bleak spells it."""
        if len(self.uuid_le) == 2:
            return f"0000{int.from_bytes(self.uuid_le, 'little'):04x}-0000-1000-8000-00805f9b34fb"
        h = self.uuid_le[::-1].hex()
        return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def parse_gatt(payload: bytes) -> tuple[int, list[GattAttr]]:
    """(preferred MTU, attributes in handle order) of a ``G`` frame."""
    (mtu,) = struct.unpack_from("<H", payload, 0)
    pos = 2
    out: list[GattAttr] = []
    while pos < len(payload):
        handle, kind, flags, n = struct.unpack_from("<HBHB", payload, pos)
        pos += 6
        out.append(GattAttr(handle, kind, flags, bytes(payload[pos : pos + n])))
        pos += n
    return mtu, out


@dataclass(frozen=True)
class Advertising:
    interval_us: int
    connectable: bool
    adv_data: bytes
    resp_data: bytes


def parse_advertise(payload: bytes) -> Advertising | None:
    """The strap's advertising request of an ``A`` frame; None = stop advertising."""
    interval, connectable, n = struct.unpack_from("<IBB", payload, 0)
    if interval == ADV_STOPPED:
        return None
    return Advertising(interval, bool(connectable), bytes(payload[6 : 6 + n]), bytes(payload[6 + n :]))


@dataclass(frozen=True)
class Notification:
    """One ``gatts_notify`` of the strap: connection id, value handle, ticks_us stamp, value."""

    conn: int
    handle: int
    indicate: bool
    stamp_us: int
    value: bytes


def parse_notify(payload: bytes) -> Notification:
    conn, handle, flags, stamp = struct.unpack_from("<HHBQ", payload, 0)
    return Notification(conn, handle, bool(flags & 1), stamp, bytes(payload[13:]))


class FrameReader:
    """Reads frames from the strap's stdout; stray text lines go to ``on_stray``."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream
        self.stray: list[str] = []

    async def read(self) -> tuple[int, bytes] | None:
        """The next frame (type, payload), or None at end of stream."""
        while True:
            try:
                first = await self.stream.readexactly(1)
            except asyncio.IncompleteReadError:
                return None
            if first[0] != MAGIC:
                rest = await self.stream.readline()
                self.stray.append((first + rest).decode("utf-8", "replace").rstrip())
                continue
            try:
                head = await self.stream.readexactly(3)
                kind, length = head[0], int.from_bytes(head[1:3], "little")
                payload = await self.stream.readexactly(length)
            except asyncio.IncompleteReadError:
                return None
            return kind, payload
