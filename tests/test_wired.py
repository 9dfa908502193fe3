"""Wired mode end to end: firmware/main.py (unmodified) in the MicroPython unix port, in real time,
writing COBS/CRC-framed packets into a pseudo-terminal; the host reads it with
breathsync.link.serial_link.SerialStrapLink (pyserial), exactly as from a strap's USB port."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import tty
from pathlib import Path

import numpy as np
import pytest

from breathsync.detector import detect_cpython
from breathsync.link.serial_link import SerialStrapLink
from breathsync.link.stream import SampleBlock, StrapEvent
from breathsync.protocol import HapticCommand, StatusFlag, StatusPacket
from breathsync.sim import synthetic_counts

from conftest import DOUBLES, FIRMWARE

pytestmark = pytest.mark.micropython

RATE = 25
SCRIPT = DOUBLES.parent / "virtual_strap.py"


class Sink:
    def __init__(self) -> None:
        self.samples: dict[int, int] = {}
        self.twice = 0
        self.events: list[StrapEvent] = []
        self.statuses: list[StatusPacket] = []

    def on_samples(self, block: SampleBlock) -> None:
        for counter, value in zip(block.counters, block.values, strict=True):
            self.twice += int(counter) in self.samples
            self.samples[int(counter)] = int(value)

    def on_event(self, event: StrapEvent) -> None:
        self.events.append(event)

    def on_status(self, role: str, status: StatusPacket) -> None:
        self.statuses.append(status)

    def on_link(self, role: str, kind: str, detail: str) -> None:
        pass


def test_wired_mode_over_a_pty(micropython: str, tmp_path: Path) -> None:
    counts = synthetic_counts(120, 20, RATE, seed=11)
    counts.astype("<u2").tofile(tmp_path / "counts.u16")
    (tmp_path / "settings.json").write_text(json.dumps({"wired": True, "role": "client"}))
    report = tmp_path / "report.json"
    conf = {
        "counts": str(tmp_path / "counts.u16"),
        "settings": str(tmp_path / "settings.json"),
        "wired": True,
        "seconds": 9,
        "report": str(report),
    }
    (tmp_path / "config.json").write_text(json.dumps(conf))
    master, slave = os.openpty()
    tty.setraw(slave)  # before the strap writes: no echo, no newline translation on the host's side
    # Left blocking on purpose: the unix port's readinto() then waits until its buffer is full, as
    # sys.stdin.buffer does on the ESP32 (MicroPython issue #8772); the firmware must cope with it.
    env = dict(os.environ, MICROPYPATH=f"{DOUBLES}:{FIRMWARE}:.frozen")
    strap = subprocess.Popen(
        [micropython, "-X", "heapsize=512K", str(SCRIPT), str(tmp_path / "config.json")],
        stdin=master,
        stdout=master,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    sink = Sink()

    async def host() -> None:
        link = SerialStrapLink("client", os.ttyname(slave), sink, rate_hz=RATE, backfill_every_s=0.5)
        link.session.stream.resume_after(-1)  # everything since the strap's boot
        task = asyncio.create_task(link.run())
        deadline = time.monotonic() + 5
        while not link.connected.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        response = await link.haptic(HapticCommand(0, 1, 300, 0, 70))
        assert response.ok and response.value0 == 300
        await asyncio.sleep(5.5)
        await link.close()
        await asyncio.wait_for(task, 5)
        assert link.stats.haptic_confirmed == 1 and link.stats.samples_lost == 0

    try:
        asyncio.run(asyncio.wait_for(host(), 30))
        _out, err = strap.communicate(timeout=10)
    finally:
        if strap.poll() is None:
            strap.kill()
            strap.communicate()
        os.close(master)
        os.close(slave)
    assert strap.returncode == 0, err.decode(errors="replace")
    summary = json.loads(report.read_text())
    assert summary["outcome"] == "done"
    # Every sample from counter 0, exactly as fed to the ADC, none twice.
    n = 0
    while n in sink.samples:
        n += 1
    assert n == len(sink.samples) and sink.twice == 0 and n >= 5 * RATE
    assert np.array_equal(np.array([sink.samples[c] for c in range(n)]), counts[:n])
    # Events decode and equal the firmware detector's on the same counts.
    core = {(e.kind, e.index, e.confirmed_index) for e in detect_cpython(counts[:n].tolist(), RATE)}
    got = {(e.kind, e.counter, e.confirmed_counter) for e in sink.events}
    assert got and got <= core
    assert {e for e in core if e[2] < n - 2 * RATE and e[1] >= 0} <= got
    assert sink.statuses and all(StatusFlag.WIRED in s.flags for s in sink.statuses)
    # The haptic command played: one 300 ms pulse at 70 % on the motor's PWM. If the firmware's control loop
    # was starved for over its stall limit (100 ms: the test machine under load), the off-timer ends the pulse
    # early and the haptic core counts the stall; a pulse never runs long either way.
    on = [(t, d) for t, d in summary["pwm"] if d > 0]
    assert [d for _t, d in on] == [70 * 65535 // 100]
    off = [t for t, d in summary["pwm"] if d == 0 and t > on[0][0]]
    pulse_ms = off[0] - on[0][0]
    if summary["haptic_stalls"] == 0:
        assert abs(pulse_ms - 300) <= 30, pulse_ms
    else:
        assert 0 < pulse_ms <= 300 + 30, (pulse_ms, summary["haptic_stalls"])
