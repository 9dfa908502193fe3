"""The strap's wire format on the host: packets, wired-mode framing and GATT UUIDs.

docs/protocol.md is the source of truth; golden vectors in tests/vectors/ lock this package and
the firmware's encoder (``firmware/core/packets.py``) to it. No code is shared with the firmware.

>>> from breathsync.protocol import decode, Channel
>>> decode(Channel.SAMPLES, bytes.fromhex("110500000000341200000000")).samples
(4660, 0, 0)
"""

from .errors import BadCrc, BadFrame, BadLength, BadValue, BadVersion, ProtocolError, UnknownOpcode, UnknownType
from .framing import Deframer, Frame, cobs_decode, cobs_encode, crc16_ccitt_false, encode_frame
from .packets import (
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    RESULT_ERRORS,
    Backfill,
    Channel,
    ControlCommand,
    EventKind,
    EventPacket,
    GetStatus,
    HapticCommand,
    Identify,
    Opcode,
    Packet,
    ResponsePacket,
    ResultCode,
    Role,
    SamplesPacket,
    SensorState,
    SetName,
    SetRate,
    SetRole,
    StartStream,
    StatusFlag,
    StatusPacket,
    StopStream,
    TimeSync,
    decode,
    encode,
    samples_per_packet,
)

__all__ = [
    "PROTOCOL_MINOR",
    "PROTOCOL_VERSION",
    "RESULT_ERRORS",
    "Backfill",
    "BadCrc",
    "BadFrame",
    "BadLength",
    "BadValue",
    "BadVersion",
    "Channel",
    "ControlCommand",
    "Deframer",
    "EventKind",
    "EventPacket",
    "Frame",
    "GetStatus",
    "HapticCommand",
    "Identify",
    "Opcode",
    "Packet",
    "ProtocolError",
    "ResponsePacket",
    "ResultCode",
    "Role",
    "SamplesPacket",
    "SensorState",
    "SetName",
    "SetRate",
    "SetRole",
    "StartStream",
    "StatusFlag",
    "StatusPacket",
    "StopStream",
    "TimeSync",
    "UnknownOpcode",
    "UnknownType",
    "cobs_decode",
    "cobs_encode",
    "crc16_ccitt_false",
    "decode",
    "encode",
    "encode_frame",
    "samples_per_packet",
]
