"""Host decoder/encoder (breathsync.protocol) against the golden vectors and docs/protocol.md."""

from __future__ import annotations

import binascii
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from breathsync import protocol as P
from breathsync.errors import BreathsyncError
from breathsync.protocol import errors as E
from breathsync.protocol import packets as packets_module
from breathsync.protocol import uuids

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO / "tests" / "vectors"
DOC = REPO / "docs" / "protocol.md"
PACKETS: dict[str, Any] = json.loads((VECTORS / "packets.json").read_text())
FRAMES: dict[str, Any] = json.loads((VECTORS / "frames.json").read_text())

_CONTROL_CLASSES = {
    "START_STREAM": P.StartStream,
    "STOP_STREAM": P.StopStream,
    "SET_RATE": P.SetRate,
    "BACKFILL": P.Backfill,
    "IDENTIFY": P.Identify,
    "SET_ROLE": P.SetRole,
    "SET_NAME": P.SetName,
    "TIME_SYNC": P.TimeSync,
    "GET_STATUS": P.GetStatus,
}


def _channel(value: str | int) -> int:
    return P.Channel[value] if isinstance(value, str) else value


def _error_class(name: str) -> type[P.ProtocolError]:
    cls = getattr(E, name)
    assert issubclass(cls, P.ProtocolError)
    return cls  # type: ignore[no-any-return]


def expected_packet(vector: dict[str, Any]) -> P.Packet:
    """Build the packet a vector describes from its JSON fields (enums by name), independently of decoding."""
    f = dict(vector["fields"])
    channel = P.Channel[vector["channel"]]
    if channel == P.Channel.SAMPLES:
        return P.SamplesPacket(f["seq"], f["counter"], tuple(f["samples"]))
    if channel == P.Channel.EVENT:
        return P.EventPacket(
            f["seq"], P.EventKind[f["kind"]], f["index"], f["confirm_delay"], f["depth"], f["interval"]
        )
    if channel == P.Channel.STATUS:
        flags = P.StatusFlag(0)
        for name in f["flags"]:
            flags |= P.StatusFlag[name]
        return P.StatusPacket(
            fw_version=tuple(f["fw_version"]),
            sensor_state=P.SensorState[f["sensor_state"]],
            sample_rate_hz=f["sample_rate_hz"],
            role=P.Role[f["role"]],
            flags=flags,
            battery_pct=f["battery_pct"],
            buffer_fill_pct=f["buffer_fill_pct"],
            dropped_samples=f["dropped_samples"],
            notify_retries=f["notify_retries"],
            protocol_minor=f["protocol_minor"],
        )
    if channel == P.Channel.RESPONSE:
        return P.ResponsePacket(
            f["tag"], P.Channel[f["channel"]], f["opcode"], P.ResultCode[f["result"]], f["value0"], f["value1"]
        )
    if channel == P.Channel.HAPTIC:
        return P.HapticCommand(f["tag"], f["pulses"], f["on_ms"], f["off_ms"], f["intensity_pct"])
    cls: type[P.ControlCommand] = _CONTROL_CLASSES[f.pop("opcode")]
    if "role" in f:
        f["role"] = P.Role[f["role"]]
    return cls(**f)


VALID = PACKETS["valid"]
INVALID = PACKETS["invalid"]


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector_decodes_to_its_fields(vector: dict[str, Any]) -> None:
    decoded = P.decode(P.Channel[vector["channel"]], bytes.fromhex(vector["hex"]))
    assert decoded == expected_packet(vector)
    assert type(decoded) is type(expected_packet(vector))


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_fields_encode_to_the_vector_bytes(vector: dict[str, Any]) -> None:
    packet = expected_packet(vector)
    assert bytes(packet).hex() == vector["hex"]
    assert P.encode(packet) == (P.Channel[vector["channel"]], bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_class_from_bytes_accepts_bytearray_and_memoryview(vector: dict[str, Any]) -> None:
    cls = type(expected_packet(vector))
    raw = bytes.fromhex(vector["hex"])
    base: type[Any] = P.ControlCommand if issubclass(cls, P.ControlCommand) else cls
    assert base.from_bytes(bytearray(raw)) == base.from_bytes(memoryview(raw)) == expected_packet(vector)


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vector_raises_exactly_its_error(vector: dict[str, Any]) -> None:
    cls = _error_class(vector["error"])
    with pytest.raises(P.ProtocolError) as info:
        P.decode(_channel(vector["channel"]), bytes.fromhex(vector["hex"]))
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"


def test_error_classes_share_one_root() -> None:
    for name in ("BadLength", "BadVersion", "UnknownType", "UnknownOpcode", "BadValue", "BadFrame", "BadCrc"):
        cls = _error_class(name)
        assert issubclass(cls, BreathsyncError)
    assert issubclass(P.BadCrc, P.BadFrame)


def test_invalid_command_vectors_map_to_strap_result_codes() -> None:
    """Every error the strap can answer has one host exception, so both sides agree (section 6)."""
    command_errors = {v["error"] for v in INVALID if v["channel"] in ("HAPTIC", "CONTROL")}
    mapped = {cls.__name__ for cls in P.RESULT_ERRORS.values()}
    assert command_errors == mapped
    assert len(set(P.RESULT_ERRORS.values())) == len(P.RESULT_ERRORS)


def test_vectors_cover_every_channel_and_opcode() -> None:
    assert {v["channel"] for v in VALID} == {c.name for c in P.Channel}
    assert {v["fields"]["opcode"] for v in VALID if v["channel"] == "CONTROL"} == {op.name for op in P.Opcode}
    assert {v["error"] for v in INVALID} >= {"BadLength", "BadVersion", "UnknownType", "UnknownOpcode", "BadValue"}


def test_every_packet_but_large_samples_fits_the_minimum_payload() -> None:
    for vector in VALID:
        size = len(bytes.fromhex(vector["hex"]))
        if vector["channel"] == "SAMPLES":
            fits = len(vector["fields"]["samples"]) <= P.samples_per_packet(packets_module.MIN_PAYLOAD_BYTES + 3)
            assert (size <= packets_module.MIN_PAYLOAD_BYTES) == fits
        else:
            assert size <= packets_module.MIN_PAYLOAD_BYTES, vector["name"]
        assert size <= packets_module.MAX_PACKET_BYTES


@pytest.mark.parametrize("att_mtu", [23, 24, 50, 185, 246, 247, 517])
def test_samples_per_packet_fills_the_mtu(att_mtu: int) -> None:
    n = P.samples_per_packet(att_mtu)
    payload = att_mtu - 3
    assert len(bytes(P.SamplesPacket(0, 0, (0,) * n))) <= min(payload, packets_module.MAX_PACKET_BYTES)
    more = packets_module.SAMPLES_HEADER_BYTES + 2 * (n + 1)
    assert more > payload or n == packets_module.MAX_SAMPLES
    with pytest.raises(P.BadLength):
        P.SamplesPacket(0, 0, (0,) * (packets_module.MAX_SAMPLES + 1))


def test_samples_per_packet_rejects_an_impossible_mtu() -> None:
    with pytest.raises(P.BadValue):
        P.samples_per_packet(22)


def test_derived_counters_wrap_modulo_2_32() -> None:
    samples = P.SamplesPacket(0, packets_module.U32_MAX, (1, 2))
    assert samples.end_counter == 1
    event = P.EventPacket(0, P.EventKind.PEAK, packets_module.U32_MAX - 1, 3, 0, 0)
    assert event.confirmed_index == 1


@pytest.mark.parametrize(
    "build",
    [
        lambda: P.SamplesPacket(256, 0, (1,)),
        lambda: P.SamplesPacket(0, -1, (1,)),
        lambda: P.SamplesPacket(0, 0, (65536,)),
        lambda: P.EventPacket(0, 3, 0, 1, 0, 0),  # type: ignore[arg-type]
        lambda: P.EventPacket(0, P.EventKind.PEAK, 0, 0, 0, 0),
        lambda: P.StatusPacket((0, 1), P.SensorState.OK, 25, P.Role.CLIENT, P.StatusFlag(0), 50, 0, 0, 0),  # type: ignore[arg-type]
        lambda: P.StatusPacket((0, 1, 0), P.SensorState.OK, 30, P.Role.CLIENT, P.StatusFlag(0), 50, 0, 0, 0),
        lambda: P.StatusPacket((0, 1, 0), P.SensorState.OK, 25, P.Role.CLIENT, P.StatusFlag(0x40), 50, 0, 0, 0),
        lambda: P.StatusPacket((0, 1, 0), P.SensorState.OK, 25, P.Role.CLIENT, P.StatusFlag(0), 50, 0, 0, 0, 16),
        lambda: P.ResponsePacket(0, P.Channel.STATUS, 0, P.ResultCode.OK),
        lambda: P.ResponsePacket(0, P.Channel.HAPTIC, 1, P.ResultCode.OK),
        lambda: P.HapticCommand(0, 1, 1001, 0, 50),
        lambda: P.HapticCommand(0, 2, 200, 0, 50),
        lambda: P.HapticCommand(0, 0, 0, 0, 1),
        lambda: P.SetRate(0, 30),
        lambda: P.Backfill(0, 10, 10),
        lambda: P.Backfill(0, 0, packets_module.BACKFILL_OPEN_END),
        lambda: P.SetName(0, ""),
        lambda: P.SetName(0, "x" * 17),
        lambda: P.SetName(0, "caf\u00e9"),
        lambda: P.TimeSync(0, 1 << 32),
        lambda: P.SetRole(0, 7),  # type: ignore[arg-type]
    ],
)
def test_constructors_reject_out_of_range_fields(build: Any) -> None:
    with pytest.raises(P.ProtocolError):
        build()


def test_constructors_normalise_plain_ints_to_enums() -> None:
    event = P.EventPacket(0, 1, 0, 1, 0, 0)  # type: ignore[arg-type]
    assert event.kind is P.EventKind.PEAK
    response = P.ResponsePacket(0, 9, 3, 4)  # type: ignore[arg-type]
    assert response.channel is P.Channel.CONTROL and response.result is P.ResultCode.BUSY
    assert not response.ok


def test_haptic_stop_and_duration() -> None:
    assert bytes(P.HapticCommand.stop(0x11)) == bytes.fromhex("1811000000000000")
    pattern = P.HapticCommand(0, 3, 200, 300, 80)
    assert pattern.duration_ms == 3 * 200 + 2 * 300


def test_subclass_from_bytes_refuses_another_opcode() -> None:
    raw = bytes(P.StartStream(1))
    assert P.StartStream.from_bytes(raw) == P.StartStream(1)
    with pytest.raises(P.UnknownOpcode):
        P.SetRate.from_bytes(raw)


@pytest.mark.parametrize("data", ["1100", [0x11, 0, 0, 0, 0, 0, 1, 2], None, 7])
def test_non_bytes_input_is_a_protocol_error(data: Any) -> None:
    with pytest.raises(P.BadValue):
        P.decode(P.Channel.SAMPLES, data)
    with pytest.raises(P.BadValue):
        P.Deframer().feed(data)


@pytest.mark.parametrize("channel", [0, 5, 10, 255, -1, "1", None])
def test_unknown_channel_is_unknown_type(channel: Any) -> None:
    with pytest.raises(P.UnknownType):
        P.decode(channel, b"\x11\x00\x00\x00\x00\x00\x00\x00")


# --- UUIDs and the document ---------------------------------------------------------------------


def test_uuids_are_distinct_lowercase_128_bit_and_documented() -> None:
    doc = DOC.read_text()
    custom = [uuids.SERVICE_UUID, *uuids.CHARACTERISTIC_UUIDS.values()]
    assert len(set(custom)) == len(custom)
    for value in custom:
        assert str(uuid.UUID(value)) == value
        assert value in doc, f"{value} is not in docs/protocol.md"
    assert set(uuids.CHARACTERISTIC_UUIDS) == set(P.Channel)
    for channel, value in uuids.CHARACTERISTIC_UUIDS.items():
        assert uuids.CHANNEL_BY_UUID[value] is channel
    for short in ("0x180F", "0x180A", "0x2A19", "0x2A29", "0x2A24", "0x2A25", "0x2A27", "0x2A26", "0x2A28"):
        assert short in doc
        assert any(v == f"0000{short[2:].lower()}-0000-1000-8000-00805f9b34fb" for v in vars(uuids).values())


def test_document_tables_agree_with_the_enums() -> None:
    doc = DOC.read_text()
    for op in P.Opcode:
        assert re.search(rf"`0x{op.value:02x}` \| {op.name} \|", doc, re.IGNORECASE), op.name
    for code in P.ResultCode:
        assert re.search(rf"\| {code.value} \| {code.name} \|", doc), code.name
    for channel in P.Channel:
        assert re.search(rf"\| {channel.value} \| {channel.name} \| .* `0x1{channel.value:x}` \|", doc), channel.name


def test_document_worked_examples_are_vectors() -> None:
    """Every hex line of the worked examples in section 9 is a vector (or a frame) in the JSON."""
    doc = DOC.read_text().split("## 9. Worked examples", 1)[1]
    known = {v["hex"] for v in VALID} | {f["frame"] for f in FRAMES["valid"]}
    blocks = re.findall(r"^((?:[0-9a-f]{2} ){2,}[0-9a-f]{2})$", doc, re.MULTILINE)
    inline = re.findall(r"`((?:[0-9a-f]{2} ){2,}[0-9a-f]{2})`", doc)
    examples = [b.replace(" ", "") for b in blocks + inline]
    assert len(examples) >= 8
    for example in examples:
        assert example in known, example


def test_document_wired_frame_examples_are_the_frame_vectors() -> None:
    """The wired-frame examples' `raw =`, `encoded =` and `frame =` lines and their CRCs (a review: a changed CRC
    byte in them passed every test)."""
    doc = DOC.read_text().split("## 9. Worked examples", 1)[1].split("## 10.", 1)[0]
    hex_bytes = r"((?:[0-9a-f]{2} )*[0-9a-f]{2})"
    frames = {f["frame"]: f for f in FRAMES["valid"]}
    framed = re.findall(rf"^frame += {hex_bytes}$", doc, re.MULTILINE)
    encoded = re.findall(rf"^encoded += {hex_bytes}\b", doc, re.MULTILINE)
    raws = re.findall(
        rf"^raw += {hex_bytes} \| crc16.*= 0x([0-9a-f]{{4}}) -> ([0-9a-f]{{2}}) ([0-9a-f]{{2}})$", doc, re.M
    )
    assert len(framed) == len(encoded) == len(raws) >= 2
    for frame, enc, (raw, crc, low, high) in zip(framed, encoded, raws, strict=True):
        vector = frames[frame.replace(" ", "")]
        assert enc.replace(" ", "") + "00" == vector["frame"]
        raw_bytes = bytes.fromhex(raw)
        assert raw_bytes == bytes([vector["channel"]]) + bytes.fromhex(vector["payload"])
        assert P.crc16_ccitt_false(raw_bytes) == int(crc, 16) == int(high + low, 16)
        assert bytes(P.Frame(vector["channel"], bytes.fromhex(vector["payload"]))).hex() == vector["frame"]


# --- wired-mode framing -------------------------------------------------------------------------


def test_crc_check_value_matches_an_independent_crc() -> None:
    check = FRAMES["crc_check"]
    data = bytes.fromhex(check["data"])
    assert P.crc16_ccitt_false(data) == check["crc"] == binascii.crc_hqx(data, 0xFFFF)


@pytest.mark.parametrize("vector", FRAMES["valid"], ids=[v["name"] for v in FRAMES["valid"]])
def test_frame_vectors(vector: dict[str, Any]) -> None:
    payload = bytes.fromhex(vector["payload"])
    encoded = bytes.fromhex(vector["frame"])
    frame = P.Frame(vector["channel"], payload)
    assert bytes(frame) == encoded
    assert P.Frame.from_bytes(encoded[:-1]) == frame
    assert b"\x00" not in encoded[:-1] and encoded[-1] == 0
    # The CRC inside, checked with CPython's own CRC-CCITT as an independent oracle.
    raw = P.cobs_decode(encoded[:-1])
    body = bytes((vector["channel"],)) + payload
    crc = binascii.crc_hqx(body, 0xFFFF)
    assert raw == body + bytes((crc & 0xFF, crc >> 8))
    # And the packet inside is the packets.json vector of the same name.
    packet = frame.packet()
    assert bytes(packet) == payload
    assert P.encode_frame(packet) == encoded


@pytest.mark.parametrize("vector", FRAMES["invalid"], ids=[v["name"] for v in FRAMES["invalid"]])
def test_invalid_frame_vectors(vector: dict[str, Any]) -> None:
    encoded = bytes.fromhex(vector["frame"])
    with pytest.raises(P.ProtocolError) as info:
        P.Frame.from_bytes(encoded[:-1])
    assert type(info.value) is _error_class(vector["error"])
    deframer = P.Deframer()
    assert deframer.feed(encoded) == []
    assert deframer.errors == {vector["error"]: 1}
    assert deframer.bad_frames == 1


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 10_000])
def test_deframer_resynchronises_on_the_stream_vector(chunk: int) -> None:
    stream = FRAMES["stream"]
    data = bytes.fromhex(stream["bytes"])
    deframer = P.Deframer()
    frames: list[P.Frame] = []
    for i in range(0, len(data), chunk):
        frames += deframer.feed(data[i : i + chunk])
    assert [{"channel": f.channel, "payload": f.payload.hex()} for f in frames] == stream["frames"]
    assert deframer.bad_frames == stream["bad_frames"]
    assert deframer.frames == len(stream["frames"])


def test_deframer_counts_bad_packets_in_good_frames() -> None:
    good = P.encode_frame(P.StartStream(3))
    unknown_channel = bytes(P.Frame(7, b"\x17\x00"))
    wrong_type = bytes(P.Frame(P.Channel.EVENT, bytes(P.StartStream(3))))
    deframer = P.Deframer()
    packets = deframer.feed_packets(unknown_channel + good + wrong_type + good)
    assert packets == [P.StartStream(3), P.StartStream(3)]
    assert deframer.errors == {"UnknownType": 2}
    assert deframer.bad_frames == 0 and deframer.frames == 4 and deframer.packets == 2
    assert isinstance(deframer.last_error, P.UnknownType)


def test_empty_frames_are_padding() -> None:
    deframer = P.Deframer()
    assert deframer.feed(b"\x00\x00\x00" + P.encode_frame(P.GetStatus(1)) + b"\x00") == [P.Frame.of(P.GetStatus(1))]
    assert deframer.bad_frames == 0


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        # Reference examples of Cheshire & Baker's COBS (as listed on Wikipedia).
        (b"\x00", b"\x01\x01"),
        (b"\x00\x00", b"\x01\x01\x01"),
        (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
        (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
        (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
        (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    ],
)
def test_cobs_reference_examples(raw: bytes, encoded: bytes) -> None:
    assert P.cobs_encode(raw) == encoded
    assert P.cobs_decode(encoded) == raw


def test_a_zero_inside_a_cobs_block_is_refused_even_with_a_good_crc() -> None:
    """Found by the fuzz test: a frame handed over with a 0x00 inside a block decoded to a valid CRC.

    A stream never delivers such a frame (the deframer splits at every 0x00), but the decoder must be
    strict on its own: the firmware's decode_frame refuses the same bytes (test_protocol_firmware.py).
    """
    good = bytes.fromhex("06011105e803010110802381468269838c84af85d286334b")
    assert P.Frame.from_bytes(good).channel == 1
    zero_inside = bytes.fromhex("07011105e803000110802381468269838c84af85d286334b")
    with pytest.raises(P.BadFrame, match="0x00 inside a COBS frame"):
        P.Frame.from_bytes(zero_inside)
