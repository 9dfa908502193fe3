"""Wired mode: packets over the USB serial port, framed for a byte stream (docs/protocol.md section 8).

    frame = COBS(channel || packet || crc16 little-endian) || 0x00
    crc16 = CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0) over channel || packet

A raw frame is at most 247 bytes (1 + 244 + 2), so no COBS block reaches 254 bytes. That lets
``encode_frame`` stuff in place: it lays the raw frame out at ``out[1:]`` and then replaces each
zero by the distance to the next one, working backwards, with no scratch buffer. ``decode_frame``
unstuffs in place (the write index never passes the read index). Neither allocates.
"""

from array import array

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


MAX_RAW_BYTES = const(247)  # channel + 244-byte packet + crc
MIN_RAW_BYTES = const(4)  # channel + 1-byte packet + crc
MAX_ENCODED_BYTES = const(248)  # COBS adds one byte to a raw frame of < 254 bytes
FRAME_OVERHEAD_BYTES = const(5)  # COBS code + channel + crc (2) + delimiter
MAX_PACKET_BYTES = const(244)

# decode_frame / FrameReader.push results: > 0 is a good frame, 0 nothing yet, < 0 a bad frame.
FRAME_NONE = const(0)
FRAME_BAD_COBS = const(-1)
FRAME_TOO_SHORT = const(-2)
FRAME_BAD_CRC = const(-3)
FRAME_TOO_LONG = const(-4)

CRC_INIT = const(0xFFFF)


def _crc_table():
    table = array("H", [0] * 256)
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table[i] = crc & 0xFFFF
    return table


_CRC_TABLE = _crc_table()


def crc16(buf, start, end, crc=CRC_INIT):
    """CRC-16/CCITT-FALSE of ``buf[start:end]``, continuing from ``crc``."""
    table = _CRC_TABLE
    while start < end:
        crc = ((crc << 8) & 0xFF00) ^ table[(crc >> 8) ^ buf[start]]
        start += 1
    return crc


def _copy(out, off, src, n):
    i = 0
    while i < n:
        out[off + i] = src[i]
        i += 1


def _stuff(out, m):
    # COBS in place: the raw frame is out[1:m + 1]; out[0] becomes the first code byte.
    last = m + 1
    i = m
    while i > 0:
        if out[i] == 0:
            out[i] = last - i
            last = i
        i -= 1
    out[0] = last
    out[m + 1] = 0
    return m + 2


def encode_frame(out, channel, packet, n):
    """Frame ``packet[:n]`` for ``channel`` into ``out`` (at least ``n + FRAME_OVERHEAD_BYTES`` long).

    Returns the number of bytes to write, the trailing 0x00 delimiter included. ``n`` is
    1..MAX_PACKET_BYTES (the caller's invariant: its packets come from the encoders).
    """
    out[1] = channel
    _copy(out, 2, packet, n)
    n += 2  # raw length without the crc: channel + packet, at out[1:n]
    channel = crc16(out, 1, n)
    out[n] = channel & 0xFF
    out[n + 1] = channel >> 8
    return _stuff(out, n + 1)


def decode_frame(buf, n):
    """Decode the encoded frame ``buf[:n]`` (delimiter removed) in place.

    Returns ``k`` >= 2 for a good frame: ``buf[0]`` is the channel and ``buf[1:k]`` the packet.
    Returns FRAME_BAD_COBS, FRAME_TOO_SHORT, FRAME_TOO_LONG or FRAME_BAD_CRC (< 0) otherwise.
    Never raises.
    """
    if n > MAX_ENCODED_BYTES:
        return FRAME_TOO_LONG
    r = 0
    w = 0
    while r < n:
        code = buf[r]
        if code == 0:
            return FRAME_BAD_COBS
        end = r + code
        if end > n:
            return FRAME_BAD_COBS
        r += 1
        while r < end:
            if buf[r] == 0:  # the delimiter is never data: a frame holding one is not canonical
                return FRAME_BAD_COBS
            buf[w] = buf[r]
            w += 1
            r += 1
        if r < n:
            # Implied zero between blocks. (A 0xFF code, a block with no implied zero, would need
            # 254 data bytes: more than a frame of MAX_ENCODED_BYTES holds, so it failed above.)
            buf[w] = 0
            w += 1
    return _check(buf, w)


def _check(buf, w):
    if w < MIN_RAW_BYTES:
        return FRAME_TOO_SHORT
    if w > MAX_RAW_BYTES:
        return FRAME_TOO_LONG
    w -= 2
    if crc16(buf, 0, w) != buf[w] | (buf[w + 1] << 8):
        return FRAME_BAD_CRC
    return w


class FrameReader:
    """Reassemble frames from a serial byte stream, one byte at a time; resynchronise at 0x00.

    ``push(byte)`` returns FRAME_NONE while a frame is incomplete, ``k`` > 0 when a good frame
    was decoded into ``self.buf`` (read it before the next push: channel ``buf[0]``, packet
    ``buf[1:k]``), or a FRAME_* error (< 0), counted in ``bad_frames``. More than
    MAX_ENCODED_BYTES without a delimiter is reported once as FRAME_TOO_LONG; the rest of that
    frame is skipped up to the next 0x00. Empty frames are ignored.
    """

    def __init__(self):
        self.buf = bytearray(MAX_ENCODED_BYTES)
        self.n = 0
        self.skipping = False
        self.bad_frames = 0

    def push(self, byte):
        if byte:
            if self.skipping:
                return FRAME_NONE
            if self.n == MAX_ENCODED_BYTES:
                self.n = 0
                self.skipping = True
                self.bad_frames += 1
                return FRAME_TOO_LONG
            self.buf[self.n] = byte
            self.n += 1
            return FRAME_NONE
        if self.skipping:
            self.skipping = False
            return FRAME_NONE
        if self.n == 0:
            return FRAME_NONE
        byte = decode_frame(self.buf, self.n)
        self.n = 0
        if byte < 0:
            self.bad_frames += 1
        return byte
