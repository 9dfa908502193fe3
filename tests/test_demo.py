"""System tier: `breathsync demo`, the README's first command, end to end (virtual straps, daemon, report)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from breathsync.store import SessionStore

pytestmark = pytest.mark.micropython


def test_demo_runs_a_whole_session_and_writes_the_report(micropython: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "breathsync", "demo", "--sessions", str(tmp_path), "--speed", "8"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    report = Path(re.search(r"^report:\s+(\S+)$", out, re.M).group(1))  # type: ignore[union-attr]
    session = Path(re.search(r"^session:\s+(\S+)$", out, re.M).group(1))  # type: ignore[union-attr]
    assert report.is_file() and report.stat().st_size > 10_000
    html = report.read_text()
    assert "http://" not in html and "https://" not in html and "data:image/png;base64," in html
    assert "T: ok" in out and "C: ok" in out  # the live status line showed both straps
    onset, offset = (float(v) for v in re.search(r"from (\d+) s to (\d+) s", out).groups())  # type: ignore[union-attr]
    with SessionStore.open(session) as store:
        for role in ("therapist", "client"):
            assert store.missing_ranges(role) == []
            counters = store.samples(role).counters
            assert len(counters) > 25 * 300
            # The session ends with the 6-minute recordings: no flat tail of a strap holding its last value.
            assert max(counters) < 25 * (360 + 4), max(counters) / 25
        assert store.config()["straps"]["ble"] == "bumble:in-process"  # what carried the data, not 'system'
        states = list(store.states())
        assert states
        t0 = float(store.meta("t0_unix_s") or 0)
        nudges = [n.t_s - t0 for n in store.nudges()]
    # The scripted episode is the only time the therapist follows: nudges fall inside it, none before.
    assert nudges, "the demo's scripted episode was not nudged"
    assert all(onset <= t <= offset + 30 for t in nudges), (nudges, onset, offset)
    assert json.dumps(states[-1].fields)


def test_a_demo_stopped_early_keeps_and_reports_what_was_recorded(micropython: str, tmp_path: Path) -> None:
    # SIGTERM killed the demo outright: its session was left unclosed, and the virtual straps' working folders
    # stayed behind in the temp folder.
    temp = tmp_path / "tmp"  # the demo's own temp folder: other breathsync runs on this machine use the system one
    temp.mkdir()
    demo = subprocess.Popen(
        [sys.executable, "-u", "-m", "breathsync", "demo", "--sessions", str(tmp_path), "--speed", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    assert demo.stdout is not None
    seen = ""
    # The live status line: both straps stream and breathe ('ok' alone comes with the STATUS read at connect, before
    # the first sample).
    while not (re.search(r"T: ok \d+% [\d.]+/min", seen) and re.search(r"C: ok \d+% [\d.]+/min", seen)):
        line = demo.stdout.readline()
        assert line, seen + (demo.stderr.read() if demo.stderr else "")
        seen += line
    demo.send_signal(signal.SIGTERM)
    out, err = demo.communicate(timeout=120)
    assert demo.returncode == 130, err[-2000:]
    assert "stopped early" in out and "Traceback" not in err
    session = Path(re.search(r"^session:\s+(\S+)$", out, re.M).group(1))  # type: ignore[union-attr]
    report = Path(re.search(r"^report:\s+(\S+)$", out, re.M).group(1))  # type: ignore[union-attr]
    assert report.is_file()
    with SessionStore.open(session, read_only=True) as store:
        assert store.meta("closed") == "1"
        assert all(len(store.samples(role).counters) > 0 for role in ("therapist", "client"))
        # It stops when asked, not when the 6-minute recordings end (it recorded to the end and exited then: the
        # stop waited for the session *and* the signal).
        assert all(len(store.samples(role).counters) < 25 * 200 for role in ("therapist", "client"))
    assert list(temp.iterdir()) == []  # the virtual straps' working folders are gone
