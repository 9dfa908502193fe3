"""Session store on real SQLite: contents, idempotent backfill, crash safety under kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from breathsync.store import SessionStore, StoredEvent, StoreError, StrapInfo


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with SessionStore.create(path, config={"engine": {"min_lock_s": 30}}) as store:
        store.set_strap(StrapInfo("therapist", "AA:BB", "strap-T", "0.1.0", 1, 25), 0.0)
        store.add_samples("therapist", [0, 1, 2], [10.0, 10.04, 10.08], [100, 200, 300])
        store.add_samples("client", [5, 6], [10.0, 10.04], [7, 8])
        store.add_event(StoredEvent("therapist", "peak", 2, 9, 1234, 100, 10.08))
        store.add_state(12.0, {"lock": 0.5})
        nudge_id = store.add_nudge(13.0, {"pattern": "paced"})
        store.set_nudge_efficacy(nudge_id, {"decoupled": True, "after_s": 21.0})
        store.add_link_event(11.0, "client", "disconnected", "supervision timeout")
    with SessionStore.open(path) as store:
        assert store.config() == {"engine": {"min_lock_s": 30}}
        assert store.straps() == [StrapInfo("therapist", "AA:BB", "strap-T", "0.1.0", 1, 25)]
        assert store.roles() == ["client", "therapist"]
        series = store.samples("therapist")
        assert series.counters.tolist() == [0, 1, 2] and series.values.tolist() == [100, 200, 300]
        assert np.allclose(series.host_t_s, [10.0, 10.04, 10.08])
        assert store.events("therapist")[0].depth_counts == 1234
        assert list(store.states()) == [(12.0, {"lock": 0.5})]
        [nudge] = store.nudges()
        assert nudge.detail == {"pattern": "paced"} and nudge.efficacy == {"decoupled": True, "after_s": 21.0}
        assert store.link_events() == [(11.0, "client", "disconnected", "supervision timeout")]


def test_backfill_overlap_is_idempotent_and_gaps_are_reported(tmp_path: Path) -> None:
    with SessionStore.create(tmp_path / "s.sqlite") as store:
        store.add_samples("client", range(0, 100), np.arange(100) * 0.04, range(100))
        store.add_samples("client", range(150, 200), np.arange(150, 200) * 0.04, range(150, 200))
        assert store.missing_ranges("client") == [(100, 149)]
        # Backfill overlapping both sides: stored once, gap closed.
        store.add_samples("client", range(90, 160), np.arange(90, 160) * 0.04, range(90, 160))
        assert store.missing_ranges("client") == []
        assert len(store.samples("client").counters) == 200
        assert store.last_counter("client") == 199
        assert store.last_counter("therapist") is None


def test_bad_files_give_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such session"):
        SessionStore.open(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a breathsync session"):
        SessionStore.open(junk)
    SessionStore.create(tmp_path / "a.sqlite").close()
    with pytest.raises(StoreError, match="already exists"):
        SessionStore.create(tmp_path / "a.sqlite")


WRITER = textwrap.dedent(
    """
    import sys, time
    from breathsync.store import SessionStore
    store = SessionStore.create(sys.argv[1], commit_interval_s=0.5)
    counter = 0
    start = time.monotonic()
    while True:
        # 50 samples/s in blocks of 5, like two straps' notifications.
        store.add_samples("therapist", range(counter, counter + 5), [time.time()] * 5, [1] * 5)
        counter += 5
        print(counter - 1, flush=True)
        time.sleep(max(0.0, start + counter / 50 - time.monotonic()))
    """
)


def test_kill_9_loses_at_most_the_last_second(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    assert proc.stdout is not None
    written = -1
    deadline = time.monotonic() + 30
    while written < 150 and time.monotonic() < deadline:  # about 3 s of writing
        written = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    # Whatever the child printed before dying was handed to the store.
    with proc.stdout:
        for line in proc.stdout.read().split():
            written = max(written, int(line))
    with SessionStore.open(path) as store:
        stored = store.last_counter("therapist")
        assert stored is not None
        assert written - stored <= 50, f"lost {written - stored} samples (> 1 s at 50 Hz)"
        assert store.missing_ranges("therapist") == []
