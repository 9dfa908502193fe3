# MicroPython: check the firmware encoders/validators against the golden vectors.
#   micropython protocol_vectors.py VECTORS_DIR        (MICROPYPATH = firmware:.frozen)
# Prints one "FAIL <name>: <why>" line per mismatch and finally "checked <n> failed <m>";
# exit status 1 if anything failed or raised (errors go to stderr: MicroPython prints uncaught
# exceptions to stdout).
import json
import sys
from array import array
from binascii import unhexlify

from core import framing as FR
from core import packets as F

# Name tables typed from docs/protocol.md (independent of both implementations).
CHANNELS = {"SAMPLES": 1, "EVENT": 2, "STATUS": 3, "RESPONSE": 4, "HAPTIC": 8, "CONTROL": 9}
KINDS = {"PEAK": 1, "TROUGH": 2}
SENSOR = {"OK": 0, "STARTING": 1, "ABSENT": 2, "SATURATED": 3, "FAULT": 4}
ROLES = {"UNASSIGNED": 0, "THERAPIST": 1, "CLIENT": 2}
FLAGS = {"STREAMING": 1, "WIRED": 2, "HAPTIC_ACTIVE": 4, "BACKFILLING": 8, "CHARGING": 16}
RESULTS = {
    "OK": 0,
    "BAD_LENGTH": 1,
    "BAD_VALUE": 2,
    "UNKNOWN_OPCODE": 3,
    "BUSY": 4,
    "BAD_VERSION": 5,
    "UNKNOWN_TYPE": 6,
    "INTERNAL_ERROR": 7,
}
OPCODES = {
    "START_STREAM": 1,
    "STOP_STREAM": 2,
    "SET_RATE": 3,
    "BACKFILL": 4,
    "IDENTIFY": 5,
    "SET_ROLE": 6,
    "SET_NAME": 7,
    "TIME_SYNC": 8,
    "GET_STATUS": 9,
}
ERROR_OF_RESULT = {1: "BadLength", 2: "BadValue", 3: "UnknownOpcode", 5: "BadVersion", 6: "UnknownType"}
ERROR_OF_FRAME = {
    FR.FRAME_BAD_COBS: "BadFrame",
    FR.FRAME_TOO_SHORT: "BadFrame",
    FR.FRAME_TOO_LONG: "BadFrame",
    FR.FRAME_BAD_CRC: "BadCrc",
}

checked = 0
failed = 0


def check(ok, name, why):
    global checked, failed
    checked += 1
    if not ok:
        failed += 1
        print(f"FAIL {name}: {why}")


def hexs(b):
    return "".join(f"{x:02x}" for x in b)


def encode_strap_packet(channel, f, buf):
    if channel == 1:
        samples = f["samples"]
        # Put the samples across the end of a ring so the wrap is exercised too.
        ring = array("H", [0] * (len(samples) + 5))
        start = len(ring) - 3
        for i in range(len(samples)):
            ring[(start + i) % len(ring)] = samples[i]
        return F.encode_samples(buf, f["seq"], f["counter"], ring, start, len(samples))
    if channel == 2:
        ev = [KINDS[f["kind"]], f["index"], f["depth"], f["interval"], f["index"] + f["confirm_delay"]]
        # A detector event sits at some offset of the events array.
        events = [0] * 5 + ev
        return F.encode_event(buf, f["seq"], events, 5)
    if channel == 3:
        flags = 0
        for name in f["flags"]:
            flags |= FLAGS[name]
        battery = F.BATTERY_UNKNOWN if f["battery_pct"] is None else f["battery_pct"]
        n = F.encode_status(
            buf,
            tuple(f["fw_version"]),
            SENSOR[f["sensor_state"]],
            f["sample_rate_hz"],
            ROLES[f["role"]],
            flags,
            battery,
            f["buffer_fill_pct"],
            f["dropped_samples"],
            f["notify_retries"],
        )
        if f["protocol_minor"] != F.PROTOCOL_MINOR:
            buf[4] = (F.PROTOCOL_VERSION << 4) | f["protocol_minor"]  # a future strap's minor
        return n
    if channel == 4:
        return F.encode_response(
            buf, f["tag"], CHANNELS[f["channel"]], f["opcode"], RESULTS[f["result"]], f["value0"], f["value1"]
        )
    return -1


def expected_command(channel, f, raw):
    # The ``out`` list decode_command must produce for a valid command.
    if channel == 8:
        return [8, f["tag"], 0, f["pulses"], f["on_ms"], f["off_ms"], f["intensity_pct"]]
    op = OPCODES[f["opcode"]]
    out = [9, f["tag"], op, 0, 0, 0, 0]
    if op == F.OP_SET_RATE:
        out[3] = f["rate_hz"]
    elif op == F.OP_BACKFILL:
        out[3] = f["from_counter"]
        out[4] = F.BACKFILL_OPEN_END if f["to_counter"] is None else f["to_counter"]
    elif op == F.OP_SET_ROLE:
        out[3] = ROLES[f["role"]]
    elif op == F.OP_SET_NAME:
        out[3] = 3
        out[4] = len(f["name"])
    elif op == F.OP_TIME_SYNC:
        out[3] = f["token"]
    return out


def packet_vectors(doc):
    buf = bytearray(F.MAX_PAYLOAD_BYTES)
    out = [0] * F.CMD_FIELDS
    for v in doc["valid"]:
        channel = CHANNELS[v["channel"]]
        raw = unhexlify(v["hex"])
        if channel in (F.CH_HAPTIC, F.CH_CONTROL):
            result = F.decode_command(channel, raw, 0, len(raw), out)
            check(result == F.OK, v["name"], f"result {result}")
            want = expected_command(channel, v["fields"], raw)
            check(out == want, v["name"], f"out {out!r} != {want!r}")
            if channel == F.CH_CONTROL and v["fields"]["opcode"] == "SET_NAME":
                name = bytes(raw[out[3] : out[3] + out[4]]).decode()
                check(name == v["fields"]["name"], v["name"], f"name {name!r}")
        else:
            n = encode_strap_packet(channel, v["fields"], buf)
            check(hexs(buf[:n]) == v["hex"], v["name"], "encoded " + hexs(buf[:n]))
    for v in doc["invalid"]:
        if v["channel"] not in ("HAPTIC", "CONTROL"):
            continue  # the strap never decodes strap->host packets
        channel = CHANNELS[v["channel"]]
        raw = unhexlify(v["hex"])
        # Also inside a larger buffer at an offset, as the wired path hands it over.
        framed = bytearray(3) + raw + bytearray(4)
        for data, start in ((raw, 0), (framed, 3)):
            result = F.decode_command(channel, data, start, len(raw), out)
            check(ERROR_OF_RESULT.get(result) == v["error"], v["name"], f"result {result}")
            echo = v["echo"]
            check(
                out[F.CMD_CHANNEL] == channel and out[F.CMD_TAG] == echo["tag"] and out[F.CMD_OPCODE] == echo["opcode"],
                v["name"],
                f"echo {out!r}",
            )


def frame_vectors(doc):
    crc = doc["crc_check"]
    data = unhexlify(crc["data"])
    check(FR.crc16(data, 0, len(data)) == crc["crc"], "crc_check", "crc")
    out = bytearray(FR.MAX_ENCODED_BYTES + 1)
    for v in doc["valid"]:
        payload = unhexlify(v["payload"])
        n = FR.encode_frame(out, v["channel"], payload, len(payload))
        check(hexs(out[:n]) == v["frame"], v["name"], "framed " + hexs(out[:n]))
        enc = bytearray(unhexlify(v["frame"]))
        k = FR.decode_frame(enc, len(enc) - 1)
        check(
            k == len(payload) + 1 and enc[0] == v["channel"] and bytes(enc[1:k]) == payload, v["name"], f"decoded {k}"
        )
    for v in doc["invalid"]:
        enc = bytearray(unhexlify(v["frame"]))
        k = FR.decode_frame(enc, len(enc) - 1)
        check(ERROR_OF_FRAME.get(k) == v["error"], v["name"], f"decode_frame {k}")
    s = doc["stream"]
    reader = FR.FrameReader()
    frames = []
    for byte in unhexlify(s["bytes"]):
        k = reader.push(byte)
        if k > 0:
            frames.append({"channel": reader.buf[0], "payload": hexs(reader.buf[1:k])})
    check(frames == s["frames"], s["name"], f"frames {frames!r}")
    check(reader.bad_frames == s["bad_frames"], s["name"], f"bad_frames {reader.bad_frames}")


def main():
    root = sys.argv[1]
    with open(root + "/packets.json") as f:
        packet_vectors(json.load(f))
    with open(root + "/frames.json") as f:
        frame_vectors(json.load(f))
    print(f"checked {checked} failed {failed}")
    if failed:
        sys.exit(1)


try:
    main()
except Exception as exc:  # report on stderr, never as if it were output
    sys.stderr.write(f"protocol_vectors: {type(exc).__name__}: {exc}\n")
    sys.exit(2)
