"""Typed errors of the strap protocol: every malformed input raises exactly one of these.

Callers count them by class (a receiver drops bad packets and keeps going); nothing in
``breathsync.protocol`` raises any other exception type on bad bytes.
"""

from __future__ import annotations

from ..errors import BreathsyncError


class ProtocolError(BreathsyncError):
    """A packet or frame violates docs/protocol.md."""


class BadLength(ProtocolError):
    """Wrong length for the packet type (or control opcode); also an empty packet."""


class BadVersion(ProtocolError):
    """The header's version nibble is not a version this decoder speaks."""


class UnknownType(ProtocolError):
    """The header's type nibble is unknown or does not belong to the channel; or an unknown channel."""


class UnknownOpcode(ProtocolError):
    """A control command with an opcode this version does not define."""


class BadValue(ProtocolError):
    """A field is outside its documented range (also reserved bits set, or a non-canonical form)."""


class BadFrame(ProtocolError):
    """A wired-mode frame is malformed: bad COBS, too short or too long."""


class BadCrc(BadFrame):
    """A wired-mode frame's CRC-16/CCITT-FALSE does not match."""
