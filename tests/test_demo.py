"""System tier: `breathsync demo`, the README's first command, end to end (virtual straps, daemon, report)."""

from __future__ import annotations

import json
import re
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
        states = list(store.states())
        assert states
        t0 = float(store.meta("t0_unix_s") or 0)
        nudges = [n.t_s - t0 for n in store.nudges()]
    # The scripted episode is the only time the therapist follows: nudges fall inside it, none before.
    assert nudges, "the demo's scripted episode was not nudged"
    assert all(onset <= t <= offset + 30 for t in nudges), (nudges, onset, offset)
    assert json.dumps(states[-1].fields)
