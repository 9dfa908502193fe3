"""Property-based fuzzing of the host protocol package (hypothesis).

Random and mutated packets or frames give a value or a ProtocolError subclass, never any other
exception. Strictness makes every accepted packet canonical, so decode -> encode is the identity.
"""

from __future__ import annotations

import binascii
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from breathsync import protocol as P
from breathsync.protocol import packets as packets_module

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors"
PACKETS: dict[str, Any] = json.loads((VECTORS / "packets.json").read_text())
FRAMES: dict[str, Any] = json.loads((VECTORS / "frames.json").read_text())
SEEDS = [(P.Channel[v["channel"]], bytes.fromhex(v["hex"])) for v in PACKETS["valid"]]
FRAME_SEEDS = [bytes.fromhex(v["frame"]) for v in FRAMES["valid"]]

FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
channels = st.sampled_from(list(P.Channel))


def decode_or_error(channel: int, data: bytes) -> P.Packet | P.ProtocolError:
    try:
        return P.decode(channel, data)
    except P.ProtocolError as error:
        return error


def check_canonical(channel: int, data: bytes) -> None:
    result = decode_or_error(channel, data)
    if not isinstance(result, P.ProtocolError):
        assert bytes(result) == data
        assert channel == result.CHANNEL
        assert len(data) <= packets_module.MAX_PACKET_BYTES


@FUZZ
@given(channel=st.integers(-2, 260), data=st.binary(max_size=260))
def test_random_bytes_on_any_channel(channel: int, data: bytes) -> None:
    check_canonical(channel, data)


@FUZZ
@given(channel=channels, body=st.binary(max_size=40), version=st.integers(0, 2))
def test_random_bodies_behind_a_plausible_header(channel: P.Channel, body: bytes, version: int) -> None:
    # Random bytes alone rarely pass the header check; this reaches the length and value checks.
    check_canonical(channel, bytes(((version << 4) | channel,)) + body)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[P.Channel, bytes]:
    channel, seed = draw(st.sampled_from(SEEDS))
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "extend"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(u8)
        elif op == "insert":
            data.insert(pos, draw(u8))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=4))
    return channel, bytes(data)


@FUZZ
@given(mutated())
def test_mutated_vectors(case: tuple[P.Channel, bytes]) -> None:
    check_canonical(*case)


# --- valid packets from their fields -------------------------------------------------------------

samples_packets = st.builds(
    P.SamplesPacket, u8, u32, st.lists(u16, min_size=1, max_size=packets_module.MAX_SAMPLES).map(tuple)
)
event_packets = st.builds(P.EventPacket, u8, st.sampled_from(list(P.EventKind)), u32, st.integers(1, 0xFFFF), u16, u16)
status_packets = st.builds(
    P.StatusPacket,
    fw_version=st.tuples(u8, u8, u8),
    sensor_state=st.sampled_from(list(P.SensorState)),
    sample_rate_hz=st.sampled_from([25, 50]),
    role=st.sampled_from(list(P.Role)),
    flags=st.integers(0, 0x1F).map(P.StatusFlag),
    battery_pct=st.none() | st.integers(0, 100),
    buffer_fill_pct=st.integers(0, 100),
    dropped_samples=u32,
    notify_retries=u32,
    protocol_minor=st.integers(0, 15),
)
response_packets = st.one_of(
    st.builds(
        P.ResponsePacket, u8, st.just(P.Channel.HAPTIC), st.just(0), st.sampled_from(list(P.ResultCode)), u32, u32
    ),
    st.builds(P.ResponsePacket, u8, st.just(P.Channel.CONTROL), u8, st.sampled_from(list(P.ResultCode)), u32, u32),
)


@st.composite
def haptic_commands(draw: st.DrawFn) -> P.HapticCommand:
    tag = draw(u8)
    pulses = draw(st.integers(0, packets_module.HAPTIC_MAX_PULSES))
    if pulses == 0:
        return P.HapticCommand.stop(tag)
    on_ms = draw(st.integers(packets_module.HAPTIC_MIN_ON_MS, packets_module.HAPTIC_MAX_ON_MS))
    low = packets_module.HAPTIC_MIN_OFF_MS if pulses > 1 else 0
    off_ms = draw(st.integers(low, packets_module.HAPTIC_MAX_OFF_MS))
    return P.HapticCommand(tag, pulses, on_ms, off_ms, draw(st.integers(1, 100)))


@st.composite
def backfills(draw: st.DrawFn) -> P.Backfill:
    start = draw(st.integers(0, 0xFFFFFFFE))
    end = draw(st.none() | st.integers(start + 1, 0xFFFFFFFE)) if start < 0xFFFFFFFE else None
    return P.Backfill(draw(u8), start, end)


names = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=16)
control_commands = st.one_of(
    st.builds(P.StartStream, u8),
    st.builds(P.StopStream, u8),
    st.builds(P.SetRate, u8, st.sampled_from([25, 50])),
    backfills(),
    st.builds(P.Identify, u8),
    st.builds(P.SetRole, u8, st.sampled_from(list(P.Role))),
    st.builds(P.SetName, u8, names),
    st.builds(P.TimeSync, u8, u32),
    st.builds(P.GetStatus, u8),
)
any_packet = st.one_of(
    samples_packets, event_packets, status_packets, response_packets, haptic_commands(), control_commands
)


@FUZZ
@given(any_packet)
def test_round_trip_through_bytes(packet: P.Packet) -> None:
    channel, data = P.encode(packet)
    assert P.decode(channel, data) == packet
    assert len(data) <= packets_module.MAX_PACKET_BYTES
    if not isinstance(packet, P.SamplesPacket):
        assert len(data) <= packets_module.MIN_PAYLOAD_BYTES


@FUZZ
@given(any_packet, st.binary(max_size=30), st.binary(max_size=30), st.integers(1, 50))
def test_packets_survive_garbage_on_the_wire(packet: P.Packet, before: bytes, after: bytes, chunk: int) -> None:
    """Garbage around a frame costs at most the garbage: the frame itself always survives."""
    data = before + b"\x00" + P.encode_frame(packet) + after
    deframer = P.Deframer()
    received: list[P.Packet] = []
    for i in range(0, len(data), chunk):
        received += deframer.feed_packets(data[i : i + chunk])
    assert packet in received
    # Only garbage can form bad frames: at most one per delimiter it contains, plus the one we add.
    assert deframer.bad_frames <= before.count(0) + 1 + after.count(0)


# --- framing ------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=700))
def test_cobs_round_trip_has_no_zero(data: bytes) -> None:
    encoded = P.cobs_encode(data)
    assert 0 not in encoded
    assert P.cobs_decode(encoded) == data
    assert len(encoded) <= len(data) + 1 + len(data) // 254


@FUZZ
@given(st.binary(max_size=300))
def test_crc_matches_an_independent_implementation(data: bytes) -> None:
    assert P.crc16_ccitt_false(data) == binascii.crc_hqx(data, 0xFFFF)


@FUZZ
@given(u8, st.binary(min_size=1, max_size=packets_module.MAX_PACKET_BYTES))
def test_frame_round_trip_any_payload(channel: int, payload: bytes) -> None:
    encoded = bytes(P.Frame(channel, payload))
    assert 0 not in encoded[:-1] and encoded[-1] == 0
    assert P.Frame.from_bytes(encoded[:-1]) == P.Frame(channel, payload)


@FUZZ
@given(st.binary(max_size=600), st.integers(1, 64))
def test_deframer_never_raises_on_random_streams(data: bytes, chunk: int) -> None:
    whole = P.Deframer()
    frames = whole.feed_packets(data)
    split = P.Deframer()
    pieces: list[P.Packet] = []
    for i in range(0, len(data), chunk):
        pieces += split.feed_packets(data[i : i + chunk])
    # Chunking never changes the result.
    assert pieces == frames
    assert split.errors == whole.errors
    assert whole.frames + whole.bad_frames <= data.count(0)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(FRAME_SEEDS))[:-1])
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "set", "delete", "insert"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(u8)
        elif op == "delete" and len(data) > 1:
            del data[pos]
        else:
            data.insert(pos, draw(u8))
    return bytes(data)


@FUZZ
@given(mutated_frames())
def test_mutated_frames(data: bytes) -> None:
    try:
        frame = P.Frame.from_bytes(data)
    except P.ProtocolError:
        return
    assert bytes(frame)[:-1] == data  # accepted frames are canonical too
    check_canonical(frame.channel, frame.payload)
