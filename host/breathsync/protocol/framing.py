"""Wired mode (docs/protocol.md section 8): the strap's packets over USB serial.

    frame = COBS(channel || packet || crc16 little-endian) || 0x00
    crc16 = CRC-16/CCITT-FALSE over channel || packet

:class:`Deframer` turns an arbitrary byte stream (split anywhere, with garbage, line noise or a
strap that rebooted mid-frame) into good frames, counting the bad ones by error class and
resynchronising at the next 0x00 delimiter.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Final, Self

from .errors import BadCrc, BadFrame, ProtocolError
from .packets import MAX_PACKET_BYTES, Buffer, Channel, Packet, as_bytes, decode, encode

CRC_INIT: Final = 0xFFFF
CRC_POLY: Final = 0x1021
MAX_RAW_BYTES: Final = 1 + MAX_PACKET_BYTES + 2  # 247
MIN_RAW_BYTES: Final = 1 + 1 + 2
MAX_ENCODED_BYTES: Final = MAX_RAW_BYTES + 1  # one COBS code byte: no block reaches 254 bytes
DELIMITER: Final = 0x00


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE: Final = _table()


def crc16_ccitt_false(data: Buffer, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor): "123456789" -> 0x29B1."""
    for byte in as_bytes(data):
        crc = ((crc << 8) & 0xFF00) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def cobs_encode(data: Buffer) -> bytes:
    """Consistent overhead byte stuffing; the result has no 0x00 (the delimiter is not added).

    A run of 254 non-zero bytes closes a block with code 0xFF (no implied zero); as in the
    reference encoder, no empty block follows when the input ends right there.
    """
    out = bytearray()
    block = bytearray()
    just_flushed = False
    for byte in as_bytes(data):
        just_flushed = False
        if byte:
            block.append(byte)
            if len(block) == 0xFE:
                out.append(0xFF)
                out += block
                block.clear()
                just_flushed = True
        else:
            out.append(len(block) + 1)
            out += block
            block.clear()
    if not just_flushed:
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(data: Buffer) -> bytes:
    """Inverse of :func:`cobs_encode`; raises :class:`BadFrame` on a malformed input."""
    raw = as_bytes(data)
    if 0 in raw:  # the delimiter never appears inside a frame, as a code byte or as data
        raise BadFrame(f"0x00 inside a COBS frame (offset {raw.index(0)})")
    out = bytearray()
    i = 0
    while i < len(raw):
        code = raw[i]
        end = i + code
        if end > len(raw):
            raise BadFrame(f"COBS code {code} at offset {i} points past the end ({len(raw)} bytes)")
        out += raw[i + 1 : end]
        i = end
        if code != 0xFF and i < len(raw):
            out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class Frame:
    """One wired-mode frame: a packet and the channel it belongs to (not yet decoded)."""

    channel: int
    payload: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.channel, int) or not 0 <= self.channel <= 0xFF:
            raise BadFrame(f"channel must be a byte, got {self.channel!r}")
        payload = as_bytes(self.payload)
        if not 1 <= len(payload) <= MAX_PACKET_BYTES:
            raise BadFrame(f"a frame carries a 1..{MAX_PACKET_BYTES}-byte packet, got {len(payload)} bytes")
        object.__setattr__(self, "payload", payload)

    @classmethod
    def of(cls, packet: Packet) -> Self:
        channel, payload = encode(packet)
        return cls(channel, payload)

    @classmethod
    def from_bytes(cls, data: Buffer) -> Self:
        """Decode one encoded frame, without its 0x00 delimiter."""
        encoded = as_bytes(data)
        if len(encoded) > MAX_ENCODED_BYTES:
            raise BadFrame(f"frame of {len(encoded)} encoded bytes exceeds {MAX_ENCODED_BYTES}")
        raw = cobs_decode(encoded)
        if len(raw) < MIN_RAW_BYTES:
            raise BadFrame(f"frame of {len(raw)} bytes is too short (channel, packet, crc)")
        if len(raw) > MAX_RAW_BYTES:
            raise BadFrame(f"frame of {len(raw)} bytes exceeds {MAX_RAW_BYTES}")
        body, crc = raw[:-2], raw[-2] | (raw[-1] << 8)
        expected = crc16_ccitt_false(body)
        if crc != expected:
            raise BadCrc(f"frame CRC 0x{crc:04x} != computed 0x{expected:04x}")
        return cls(body[0], body[1:])

    def __bytes__(self) -> bytes:
        """The encoded frame with its trailing 0x00 delimiter."""
        body = bytes((self.channel,)) + self.payload
        crc = crc16_ccitt_false(body)
        return cobs_encode(body + bytes((crc & 0xFF, crc >> 8))) + bytes((DELIMITER,))

    def packet(self) -> Packet:
        """Decode the payload for this frame's channel (raises a ProtocolError subclass)."""
        return decode(self.channel, self.payload)


def encode_frame(packet: Packet) -> bytes:
    """The wired-mode bytes of ``packet``, delimiter included."""
    return bytes(Frame.of(packet))


class Deframer:
    """Reassemble frames from a byte stream; count bad frames and resynchronise at each 0x00.

    ``feed(data)`` returns the good frames completed by ``data``; ``feed_packets(data)`` also
    decodes them and drops (and counts) bad packets. ``errors`` counts every rejected frame or
    packet by exception class name, so the caller can report e.g. ``{"BadCrc": 2}``. More than
    248 bytes without a delimiter count as one ``BadFrame`` and are skipped to the next 0x00.
    Empty frames (0x00 0x00) are padding and are not counted. Never raises on any bytes.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False
        self.frames = 0
        self.packets = 0
        self.errors: Counter[str] = Counter()
        self.last_error: ProtocolError | None = None

    @property
    def bad_frames(self) -> int:
        """Frames rejected by framing checks (COBS, length, CRC)."""
        return sum(n for name, n in self.errors.items() if name in _FRAME_ERRORS)

    def _count(self, error: ProtocolError) -> None:
        self.errors[type(error).__name__] += 1
        self.last_error = error

    def _append(self, chunk: bytes) -> None:
        if self._skipping or not chunk:
            return
        if len(self._buf) + len(chunk) > MAX_ENCODED_BYTES:
            self._buf.clear()
            self._skipping = True
            self._count(BadFrame(f"no delimiter within {MAX_ENCODED_BYTES} bytes"))
            return
        self._buf += chunk

    def _finish(self, out: list[Frame]) -> None:
        if self._skipping:
            self._skipping = False
            return
        if not self._buf:
            return
        encoded = bytes(self._buf)
        self._buf.clear()
        try:
            out.append(Frame.from_bytes(encoded))
        except ProtocolError as error:
            self._count(error)
            return
        self.frames += 1

    def feed(self, data: Buffer) -> list[Frame]:
        stream = as_bytes(data)
        out: list[Frame] = []
        pos = 0
        while pos < len(stream):
            end = stream.find(DELIMITER, pos)
            if end < 0:
                self._append(stream[pos:])
                break
            self._append(stream[pos:end])
            self._finish(out)
            pos = end + 1
        return out

    def feed_packets(self, data: Buffer) -> list[Packet]:
        packets: list[Packet] = []
        for frame in self.feed(data):
            try:
                packets.append(frame.packet())
            except ProtocolError as error:
                self._count(error)
                continue
            self.packets += 1
        return packets


_FRAME_ERRORS: Final = frozenset({BadFrame.__name__, BadCrc.__name__})

__all__ = [
    "CRC_INIT",
    "MAX_ENCODED_BYTES",
    "MAX_RAW_BYTES",
    "Channel",
    "Deframer",
    "Frame",
    "cobs_decode",
    "cobs_encode",
    "crc16_ccitt_false",
    "encode_frame",
]
