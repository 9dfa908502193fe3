"""The strap's side of the wire format: ``docs/protocol.md`` is the source of truth.

Encoders write the packets the strap sends (SAMPLES, EVENT, STATUS, RESPONSE) into caller-owned,
preallocated bytearrays and return the packet length; the caller notifies ``buf`` (or a view of
its first ``n`` bytes). ``decode_command`` validates what the strap receives (HAPTIC, CONTROL)
and returns a result code: it never raises on bad bytes, because a malformed write from a host
must never crash the strap.

Device discipline: the hot-path encoders (``encode_samples``, ``encode_event``) allocate nothing
on MicroPython (tested with ``micropython.heap_lock()`` and ``mem_total()``). That is why they
keep few locals: a bytecode function whose locals + stack exceed ~11 words gets its frame from
the heap on every call. Values are range-clamped before ``struct.pack_into`` because MicroPython
truncates silently where CPython raises; this keeps both interpreters byte-identical.
"""

import struct

from .detector import EV_CONFIRMED, EV_DEPTH, EV_INDEX, EV_INTERVAL, EV_KIND

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


PROTOCOL_VERSION = const(1)
PROTOCOL_MINOR = const(0)

# Channels = packet types (docs/protocol.md section 3).
CH_SAMPLES = const(1)
CH_EVENT = const(2)
CH_STATUS = const(3)
CH_RESPONSE = const(4)
CH_HAPTIC = const(8)
CH_CONTROL = const(9)

HDR_SAMPLES = const(0x11)
HDR_EVENT = const(0x12)
HDR_STATUS = const(0x13)
HDR_RESPONSE = const(0x14)
HDR_HAPTIC = const(0x18)
HDR_CONTROL = const(0x19)

# Sizes in bytes.
MIN_PAYLOAD_BYTES = const(20)  # ATT MTU 23
MAX_PAYLOAD_BYTES = const(244)  # ATT MTU 247
ATT_OVERHEAD_BYTES = const(3)
SAMPLES_HEADER_BYTES = const(6)
MAX_SAMPLES = const(119)
EVENT_BYTES = const(13)
STATUS_BYTES = const(19)
RESPONSE_BYTES = const(13)
HAPTIC_BYTES = const(8)
CONTROL_MIN_BYTES = const(3)
CONTROL_MAX_BYTES = const(19)
NAME_MAX_BYTES = const(16)

# Result codes (RESPONSE.result).
OK = const(0)
BAD_LENGTH = const(1)
BAD_VALUE = const(2)
UNKNOWN_OPCODE = const(3)
BUSY = const(4)
BAD_VERSION = const(5)
UNKNOWN_TYPE = const(6)
INTERNAL_ERROR = const(7)

# Control opcodes.
OP_START_STREAM = const(0x01)
OP_STOP_STREAM = const(0x02)
OP_SET_RATE = const(0x03)
OP_BACKFILL = const(0x04)
OP_IDENTIFY = const(0x05)
OP_SET_ROLE = const(0x06)
OP_SET_NAME = const(0x07)
OP_TIME_SYNC = const(0x08)
OP_GET_STATUS = const(0x09)

BACKFILL_OPEN_END = const(0xFFFFFFFF)

# Status enumerations and flag bits.
SENSOR_OK = const(0)
SENSOR_STARTING = const(1)
SENSOR_ABSENT = const(2)
SENSOR_SATURATED = const(3)
SENSOR_FAULT = const(4)
ROLE_UNASSIGNED = const(0)
ROLE_THERAPIST = const(1)
ROLE_CLIENT = const(2)
FLAG_STREAMING = const(0x01)
FLAG_WIRED = const(0x02)
FLAG_HAPTIC_ACTIVE = const(0x04)
FLAG_BACKFILLING = const(0x08)
FLAG_CHARGING = const(0x10)
BATTERY_UNKNOWN = const(255)

# Wire ranges of a HAPTIC command: the haptic core's compile-time ceilings (haptics.ABS_*). The
# core clamps to tighter configured limits, defers pulses for the duty budget and forces the
# motor off on its own; these only reject what no configuration could play.
HAPTIC_MAX_PULSES = const(10)
HAPTIC_MIN_ON_MS = const(20)
HAPTIC_MAX_ON_MS = const(1000)
HAPTIC_MIN_OFF_MS = const(50)
HAPTIC_MAX_OFF_MS = const(15000)
HAPTIC_MAX_INTENSITY_PCT = const(100)

# Notification pacing (section 7).
NOTIFY_MIN_INTERVAL_MS = const(50)
NOTIFY_MAX_BACKOFF_MS = const(400)
FLUSH_AFTER_MS = const(300)

# Fields that decode_command writes into the caller's ``out`` list (CMD_FIELDS entries).
CMD_FIELDS = const(7)
CMD_CHANNEL = const(0)
CMD_TAG = const(1)
CMD_OPCODE = const(2)  # control opcode; 0 for HAPTIC
# CMD_ARG0: HAPTIC pulses | SET_RATE rate_hz | BACKFILL from | SET_ROLE role | SET_NAME offset in buf
#   | TIME_SYNC token
CMD_ARG0 = const(3)
CMD_ARG1 = const(4)  # HAPTIC on_ms | BACKFILL to (BACKFILL_OPEN_END = up to now) | SET_NAME length
CMD_ARG2 = const(5)  # HAPTIC off_ms
CMD_ARG3 = const(6)  # HAPTIC intensity_pct

_pack_into = struct.pack_into
_unpack_from = struct.unpack_from


def samples_per_packet(att_mtu):
    """Samples in one SAMPLES notification for a negotiated ATT MTU (7 at 23, 119 at 247)."""
    n = (att_mtu - ATT_OVERHEAD_BYTES - SAMPLES_HEADER_BYTES) >> 1
    if n > MAX_SAMPLES:
        return MAX_SAMPLES
    if n < 1:
        return 1
    return n


def _u16(value):
    # Saturate to 0..65535 (MicroPython's pack_into would truncate, CPython's would raise).
    if value > 0xFFFF:
        return 0xFFFF
    if value < 0:
        return 0
    return value


def _mod32(value):
    # Counters travel modulo 2**32. ``>> 32`` is 0 for every small int on the device, so the
    # common path allocates nothing; only a negative or huge value builds a big int.
    if value >> 32:
        return value & 0xFFFFFFFF
    return value


def encode_samples(buf, seq, counter, ring, start, count):
    """SAMPLES: ``count`` u16 samples from ``ring`` (an ``array('H')``) beginning at ``start``.

    The ring index wraps at ``len(ring)``, so the caller can pass its ring buffer directly.
    ``counter`` is the sample counter of ``ring[start]``. Returns the packet length, ``6 + 2 * count``;
    ``buf`` must hold it (``count`` is 1..MAX_SAMPLES, the caller's invariant).
    """
    buf[0] = HDR_SAMPLES
    buf[1] = seq & 0xFF
    counter = _mod32(counter)
    _pack_into("<I", buf, 2, counter)
    # Reuse the argument slots as loop variables: fewer locals keep the frame on the C stack.
    count = SAMPLES_HEADER_BYTES + (count << 1)  # end offset
    seq = SAMPLES_HEADER_BYTES  # write offset
    counter = len(ring)
    while seq < count:
        buf[seq] = ring[start] & 0xFF
        buf[seq + 1] = ring[start] >> 8
        start += 1
        if start == counter:
            start = 0
        seq += 2
    return count


def encode_event(buf, seq, events, base):
    """EVENT from one detector event: ``events[base:base + EVENT_FIELDS]`` as ``BreathDetector`` writes it.

    Returns EVENT_BYTES. ``confirm_delay``, ``depth`` and ``interval`` saturate at 65535.
    """
    buf[0] = HDR_EVENT
    buf[1] = seq & 0xFF
    buf[2] = events[base + EV_KIND]
    # One value at a time through ``seq``: nested calls inside pack_into's argument list would
    # deepen the VM stack past the frame size that stays off the heap.
    seq = _mod32(events[base + EV_INDEX])
    _pack_into("<I", buf, 3, seq)
    seq = _u16(events[base + EV_CONFIRMED] - events[base + EV_INDEX])
    _pack_into("<H", buf, 7, seq)
    seq = _u16(events[base + EV_DEPTH])
    _pack_into("<H", buf, 9, seq)
    seq = _u16(events[base + EV_INTERVAL])
    _pack_into("<H", buf, 11, seq)
    return EVENT_BYTES


def encode_status(
    buf,
    fw_version,
    sensor_state,
    rate_hz,
    role,
    flags,
    battery_pct,
    buffer_fill_pct,
    dropped_samples,
    notify_retries,
):
    """STATUS (not on the hot path: about once per 10 s). ``fw_version`` = (major, minor, patch).

    ``battery_pct`` is 0..100 or BATTERY_UNKNOWN; ``buffer_fill_pct`` 0..100. Counters saturate.
    """
    buf[0] = HDR_STATUS
    buf[1] = fw_version[0]
    buf[2] = fw_version[1]
    buf[3] = fw_version[2]
    buf[4] = (PROTOCOL_VERSION << 4) | PROTOCOL_MINOR
    buf[5] = sensor_state
    buf[6] = rate_hz
    buf[7] = role
    buf[8] = flags
    buf[9] = battery_pct
    buf[10] = buffer_fill_pct
    _pack_into("<II", buf, 11, _sat32(dropped_samples), _sat32(notify_retries))
    return STATUS_BYTES


def _sat32(value):
    if value >> 32:
        return 0 if value < 0 else 0xFFFFFFFF
    return value


def encode_response(buf, tag, channel, opcode, result, value0, value1):
    """RESPONSE to one command: echo ``tag``/``channel``/``opcode`` from ``decode_command``'s ``out``.

    ``value0``/``value1`` travel modulo 2**32 (see the table in docs/protocol.md section 4.4).
    """
    buf[0] = HDR_RESPONSE
    buf[1] = tag & 0xFF
    buf[2] = channel
    buf[3] = opcode & 0xFF
    buf[4] = result
    _pack_into("<II", buf, 5, _mod32(value0), _mod32(value1))
    return RESPONSE_BYTES


def decode_command(channel, buf, start, n, out):
    """Validate the command ``buf[start:start + n]`` that arrived on ``channel`` (8 or 9).

    Fills ``out`` (a list of CMD_FIELDS ints, reused) with what could be read, even on error, so
    the caller can always answer with ``encode_response(buf2, out[CMD_TAG], out[CMD_CHANNEL],
    out[CMD_OPCODE], result, ...)``. Returns a result code: OK or the first error in the order
    of docs/protocol.md section 1. Never raises on any bytes.
    """
    out[CMD_CHANNEL] = channel
    out[CMD_TAG] = 0
    out[CMD_OPCODE] = 0
    out[CMD_ARG0] = 0
    out[CMD_ARG1] = 0
    out[CMD_ARG2] = 0
    out[CMD_ARG3] = 0
    if n < 1 or start < 0 or start + n > len(buf):
        return BAD_LENGTH
    if n >= 2:
        out[CMD_TAG] = buf[start + 1]
    if buf[start] >> 4 != PROTOCOL_VERSION:
        return BAD_VERSION
    if buf[start] & 0x0F != channel:
        return UNKNOWN_TYPE
    if channel == CH_HAPTIC:
        return _decode_haptic(buf, start, n, out)
    if channel == CH_CONTROL:
        return _decode_control(buf, start, n, out)
    return UNKNOWN_TYPE


def _decode_haptic(buf, start, n, out):
    if n != HAPTIC_BYTES:
        return BAD_LENGTH
    pulses, on_ms, off_ms, intensity = _unpack_from("<BHHB", buf, start + 2)
    out[CMD_ARG0] = pulses
    out[CMD_ARG1] = on_ms
    out[CMD_ARG2] = off_ms
    out[CMD_ARG3] = intensity
    if pulses == 0:
        # Stop: exactly one encoding.
        if on_ms or off_ms or intensity:
            return BAD_VALUE
        return OK
    if pulses > HAPTIC_MAX_PULSES:
        return BAD_VALUE
    if on_ms < HAPTIC_MIN_ON_MS or on_ms > HAPTIC_MAX_ON_MS:
        return BAD_VALUE
    if off_ms > HAPTIC_MAX_OFF_MS or (pulses > 1 and off_ms < HAPTIC_MIN_OFF_MS):
        return BAD_VALUE
    if intensity < 1 or intensity > HAPTIC_MAX_INTENSITY_PCT:
        return BAD_VALUE
    return OK


# Exact lengths by opcode (index = opcode); SET_NAME is variable and checked separately.
_CONTROL_BYTES = (0, 3, 3, 4, 11, 3, 4, 0, 7, 3)


def _decode_control(buf, start, n, out):
    if n < CONTROL_MIN_BYTES:
        return BAD_LENGTH
    op = buf[start + 2]
    out[CMD_OPCODE] = op
    if op < OP_START_STREAM or op > OP_GET_STATUS:
        return UNKNOWN_OPCODE
    if op == OP_SET_NAME:
        if n < CONTROL_MIN_BYTES + 1 or n > CONTROL_MIN_BYTES + NAME_MAX_BYTES:
            return BAD_LENGTH
        out[CMD_ARG0] = start + 3
        out[CMD_ARG1] = n - 3
        i = start + 3
        while i < start + n:
            if buf[i] < 0x20 or buf[i] > 0x7E:
                return BAD_VALUE
            i += 1
        return OK
    if n != _CONTROL_BYTES[op]:
        return BAD_LENGTH
    if op == OP_SET_RATE:
        out[CMD_ARG0] = buf[start + 3]
        if buf[start + 3] != 25 and buf[start + 3] != 50:
            return BAD_VALUE
    elif op == OP_SET_ROLE:
        out[CMD_ARG0] = buf[start + 3]
        if buf[start + 3] > ROLE_CLIENT:
            return BAD_VALUE
    elif op == OP_BACKFILL:
        first, end = _unpack_from("<II", buf, start + 3)
        out[CMD_ARG0] = first
        out[CMD_ARG1] = end
        if first >= end:
            return BAD_VALUE
    elif op == OP_TIME_SYNC:
        out[CMD_ARG0] = _unpack_from("<I", buf, start + 3)[0]
    return OK
