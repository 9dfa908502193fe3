"""Session store on real SQLite: contents, idempotent backfill, crash safety under kill -9."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from breathsync.errors import InputError
from breathsync.store import (
    ArrivalData,
    LateData,
    SessionStore,
    StoredEvent,
    StoredNudge,
    StoredState,
    StoreError,
    StrapInfo,
)
from breathsync.values import shown


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
        assert list(store.states()) == [StoredState(12.0, {"lock": 0.5})]
        assert len({*store.states(), StoredState(12.0, {"lock": 0.6})}) == 2  # frozen records are hashable
        [nudge] = store.nudges()
        assert nudge.detail == {"pattern": "paced"} and nudge.efficacy == {"decoupled": True, "after_s": 21.0}
        assert store.link_events() == [(11.0, "client", "disconnected", "supervision timeout")]


def test_what_came_late_is_kept_in_merged_ranges_and_older_sessions_have_none(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with SessionStore.create(path) as store:
        store.add_late_samples("client", 100, 107)
        store.add_late_samples("client", 108, 115)  # the next backfill block: one range
        store.add_late_samples("client", 300, 307)
        store.add_late_event("client", "peak", 104)
        assert store.late("therapist") == LateData()
    with SessionStore.open(path, read_only=True) as store:
        late = store.late("client")
    assert late.sample_ranges == ((100, 115), (300, 307)) and late.events == {("peak", 104)}
    assert late.sample_mask(np.array([99, 100, 115, 116, 300])).tolist() == [False, True, True, False, True]
    # A session an older version recorded has no late table: read as nothing late, made when a run resumes it.
    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE late")
        db.commit()
    with SessionStore.open(path, read_only=True) as store:
        assert store.late("client") == LateData()
    with SessionStore.open(path) as store:
        store.add_late_samples("therapist", 5, 9)
        assert store.late("therapist").sample_ranges == ((5, 9),)


def test_when_each_notification_reached_the_engine_is_kept_in_order_and_older_sessions_have_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite"
    with SessionStore.create(path) as store:
        store.add_arrival("client", "samples", 100, 107, 1000.5)
        store.add_arrival("therapist", "samples", 40, 47, 1000.5)  # the same moment: the order is kept
        store.add_arrival("client", "trough", 103, 103, 1000.6)
        store.add_arrival("client", "samples", 108, 130, 1000.9)
        assert store.arrivals("therapist").blocks == ((40, 47, 1000.5, 2),)
    with SessionStore.open(path, read_only=True) as store:
        arrivals = store.arrivals("client")
    assert arrivals.blocks == ((100, 107, 1000.5, 1), (108, 130, 1000.9, 4))
    assert arrivals.events == {("trough", 103): (1000.6, 3)}
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE arrivals SET arrived_t_s = 'soon' WHERE kind = 'trough'")
        db.commit()
    with SessionStore.open(path, read_only=True) as store, pytest.raises(StoreError, match="arrived_t_s is 'soon'"):
        store.arrivals("client")
    # A session an older version recorded has no arrivals table: read as none recorded, made when a run resumes it.
    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE arrivals")
        db.commit()
    with SessionStore.open(path, read_only=True) as store:
        assert store.arrivals("client") == ArrivalData()
    with SessionStore.open(path) as store:
        store.add_arrival("therapist", "samples", 5, 9, 7.0)
        assert store.arrivals("therapist").blocks == ((5, 9, 7.0, 1),)


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
        # One lost sample is a gap too: tests that prove 'nothing lost' rely on it (a mutation review).
        store.add_samples("therapist", [0, 1, 2, 4, 5, 7], np.arange(6) * 0.04, range(6))
        assert store.missing_ranges("therapist") == [(3, 3), (6, 6)]


def _crashed_session(path: Path) -> Path:
    """A session with two therapist samples (values 5, 6) whose run died without closing it: its rows are still in
    its -wal file."""
    written = (
        "import os\nfrom breathsync.store import SessionStore\n"
        f"s = SessionStore.create({str(path)!r}, {{}})\n"
        "s.add_samples('therapist', [0, 1], [1.0, 1.04], [5, 6])\ns.commit()\nos._exit(0)  # a crash: never closed\n"
    )
    subprocess.run([sys.executable, "-c", written], check=True, timeout=60)
    return path


def test_a_crashed_session_copied_without_its_wal_file_says_what_is_missing(tmp_path: Path) -> None:
    # Copied alone, the main file of a session whose run did not close it is an empty database: the error said
    # 'not a breathsync session (no such table: meta)', and the researcher looked for the fault in the wrong place.
    crashed = _crashed_session(tmp_path / "crashed.sqlite")
    assert crashed.with_name("crashed.sqlite-wal").exists()
    (tmp_path / "copy").mkdir()
    copy = tmp_path / "copy" / "crashed.sqlite"
    shutil.copyfile(crashed, copy)
    with pytest.raises(StoreError, match=r"no tables\): if it is a copy of a session .* copy its crashed\.sqlite-wal"):
        SessionStore.open(copy, read_only=True)
    shutil.copyfile(crashed.with_name("crashed.sqlite-wal"), copy.with_name("crashed.sqlite-wal"))
    with SessionStore.open(copy, read_only=True) as store:  # with it, everything is there
        assert store.samples("therapist").values.tolist() == [5, 6]


def test_a_crashed_session_that_cannot_get_its_shared_memory_file_is_not_called_foreign(tmp_path: Path) -> None:
    # A session whose run did not close it is read through its -wal file, which needs a -shm file beside it: on a
    # full disk or in a read-only folder that fails, and the session was called 'not a breathsync session (disk I/O
    # error)'. Here the -shm name points at /dev/null (what a full disk does needs a filesystem of its own: checked
    # by hand on a 64 KB tmpfs, the same message).
    crashed = _crashed_session(tmp_path / "crashed.sqlite")
    shm = crashed.with_name("crashed.sqlite-shm")
    shm.unlink(missing_ok=True)
    shm.symlink_to(os.devnull)
    with pytest.raises(StoreError, match=r"cannot open the session \(.*\): SQLite needs room and write access beside"):
        SessionStore.open(crashed, read_only=True)
    shm.unlink()
    with SessionStore.open(crashed, read_only=True) as store:  # the session itself is fine
        assert store.samples("therapist").values.tolist() == [5, 6]


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
    with pytest.raises(StoreError, match="is a directory, not a session file"):
        SessionStore.open(tmp_path, read_only=True)
    # A real session cut short (a copy interrupted half-way): damaged, not foreign.
    whole = _small_session(tmp_path / "whole.sqlite")
    cut = tmp_path / "cut.sqlite"
    cut.write_bytes(whole.read_bytes()[: 3 * 4096])
    damaged = r"cut\.sqlite: damaged session \(database disk image is malformed\)"
    with pytest.raises(StoreError, match=damaged), SessionStore.open(cut, read_only=True) as store:
        store.samples("therapist")


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


# -- opening changes nothing; damaged files are one StoreError --------------------------------------


def _small_session(path: Path) -> Path:
    with SessionStore.create(path, config={"engine": {"min_lock_s": 30}}) as store:
        store.set_strap(StrapInfo("therapist", "AA:BB", "strap-T", "0.1.0", 1, 25), 0.0)
        store.add_samples("therapist", [0, 1, 2], [10.0, 10.04, 10.08], [100, 200, 300])
        store.add_event(StoredEvent("therapist", "peak", 2, 9, 1234, 100, 10.08))
        store.add_state(12.0, {"lock": 0.5})
        store.set_nudge_efficacy(store.add_nudge(13.0, {"pattern": "paced"}), {"decoupled": True})
        store.add_link_event(11.0, "client", "disconnected", "supervision timeout")
    return path


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("read_only", [False, True])
def test_open_leaves_foreign_and_empty_files_as_they_were(tmp_path: Path, read_only: bool) -> None:
    (tmp_path / "empty.sqlite").touch()
    with closing(sqlite3.connect(tmp_path / "other.sqlite")) as db:
        db.execute("CREATE TABLE foo (x)")
        db.execute("INSERT INTO foo VALUES (1)")
        db.commit()
    before = _snapshot(tmp_path)
    for name in before:
        with pytest.raises(StoreError, match="not a breathsync session"):
            SessionStore.open(tmp_path / name, read_only=True) if read_only else SessionStore.open(tmp_path / name)
    # Same files, same bytes: not turned into WAL (header bytes 18-19 stay 1 = rollback journal).
    assert _snapshot(tmp_path) == before
    assert before["empty.sqlite"] == b"" and before["other.sqlite"][18:20] == b"\x01\x01"


def test_read_only_open_changes_nothing_and_reads_what_a_writer_committed(tmp_path: Path) -> None:
    path = _small_session(tmp_path / "s.sqlite")
    before = _snapshot(tmp_path)
    assert list(before) == ["s.sqlite"]
    with SessionStore.open(path, read_only=True) as store:
        assert store.samples("therapist").values.tolist() == [100, 200, 300]
        assert list(store.states()) == [StoredState(12.0, {"lock": 0.5})] and store.config() == {
            "engine": {"min_lock_s": 30}
        }
        with pytest.raises(StoreError, match="read-only"):
            store.add_state(14.0, {})
    assert _snapshot(tmp_path) == before  # not even empty -wal / -shm files left beside it
    # A session still being written (its newest rows only in the -wal file) reads in full.
    writer = SessionStore.open(path)
    try:
        writer.add_samples("therapist", [3], [10.12], [400])
        writer.commit()
        with SessionStore.open(path, read_only=True) as store:
            assert store.samples("therapist").values.tolist() == [100, 200, 300, 400]
    finally:
        writer.close()


def test_a_session_locked_by_another_program_is_in_use_not_damaged(tmp_path: Path) -> None:
    path = _small_session(tmp_path / "s.sqlite")
    with closing(sqlite3.connect(path, timeout=0.1)) as other:
        other.execute("PRAGMA locking_mode=EXCLUSIVE")
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match=r"s\.sqlite: session is in use by another program \(database is locked\)"):
            SessionStore.open(path)
        other.rollback()
    with SessionStore.open(path, read_only=True) as store:  # and it is still a good session
        assert store.samples("therapist").values.tolist() == [100, 200, 300]


DAMAGE = [
    # (SQL run on a good session, what is read, expected message)
    ("UPDATE meta SET value = 'abc' WHERE key = 'schema_version'", "open", r"schema version 'abc' is not a number"),
    ("DROP TABLE states", "open", r"states table missing"),
    ("ALTER TABLE events DROP COLUMN depth_counts", "open", r"events table has no depth_counts column"),
    ("UPDATE meta SET value = '{bad' WHERE key = 'config'", "config", r"meta config is not valid JSON"),
    ("UPDATE meta SET value = 'yesterday' WHERE key = 'created_unix_s'", "created", r"created_unix_s is 'yesterday'"),
    ("UPDATE states SET state = '{bad'", "states", r"state at t_s 12.0 is not valid JSON"),
    ("UPDATE nudges SET detail = '{bad'", "nudges", r"nudge 1: detail is not valid JSON"),
    ("UPDATE nudges SET efficacy = '[1, 2]'", "nudges", r"nudge 1: efficacy is not a JSON object"),
    ("UPDATE straps SET rate_hz = 'x'", "straps", r"therapist rate_hz is 'x', not a whole number"),
    ("UPDATE samples SET value = 'abc' WHERE counter = 1", "samples", r"counter 1: value is 'abc'"),
    ("UPDATE samples SET host_t_s = 9e999 WHERE counter = 2", "samples", r"counter 2: host_t_s is inf"),
    # a number, but not a 16-bit sample: it used to come out as -9223372036854775808 with a numpy warning
    ("UPDATE samples SET value = 1e300 WHERE counter = 1", "samples", r"counter 1: value is 1e\+300, not a whole"),
    ("UPDATE samples SET value = 70000 WHERE counter = 1", "samples", r"counter 1: value 70000 is outside the strap's"),
    ("UPDATE samples SET counter = -5 WHERE counter = 1", "samples", r"counter -5 is out of range"),
    ("UPDATE events SET interval_samples = 'x'", "events", r"interval_samples is 'x'"),
    ("UPDATE events SET kind = 'sigh'", "events", r"kind is 'sigh', not 'peak' or 'trough'"),
    ("UPDATE link_events SET t_s = 'soon'", "link_events", r"t_s is 'soon', not a finite number"),
    # a review: exported as a third person's samples_Therapist.csv
    ("UPDATE samples SET role = 'Therapist'", "roles", r"role 'Therapist' is neither therapist nor client"),
]


@pytest.mark.parametrize(("sql", "read", "message"), DAMAGE, ids=[d[0].split(" SET ")[0] + "/" + d[1] for d in DAMAGE])
def test_damaged_sessions_give_one_store_error_naming_the_damage(
    tmp_path: Path, sql: str, read: str, message: str
) -> None:
    path = _small_session(tmp_path / "s.sqlite")
    with closing(sqlite3.connect(path)) as db:
        db.execute(sql)
        db.commit()
    before = path.read_bytes()
    readers = {
        "config": lambda s: s.config(),
        "created": lambda s: s.meta_float("created_unix_s"),
        "states": lambda s: list(s.states()),
        "nudges": lambda s: s.nudges(),
        "straps": lambda s: s.straps(),
        "samples": lambda s: s.samples("therapist"),
        "events": lambda s: s.events(),
        "link_events": lambda s: s.link_events(),
        "roles": lambda s: s.roles(),
    }
    expected = rf"^{re.escape(str(path))}: damaged session \(.*{message}"
    with pytest.raises(StoreError, match=expected) as caught, SessionStore.open(path, read_only=True) as store:
        readers[read](store)
    assert "\n" not in str(caught.value) and isinstance(caught.value, InputError)
    assert path.read_bytes() == before


def test_a_full_disk_is_one_store_error_and_keeps_what_was_saved(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = SessionStore.create(path, {})
    store.add_samples("client", list(range(100)), [i / 25 for i in range(100)], [7] * 100)
    store.commit()
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLite's own 'database or disk is full'
    with pytest.raises(StoreError, match=r"s\.sqlite: cannot save to the session \(database or disk is full\)"):
        for block in range(1, 1000):
            counters = list(range(100 * block, 100 * block + 100))
            store.add_samples("client", counters, [c / 25 for c in counters], [7] * 100)
            store.commit()
    store.abandon()
    with SessionStore.open(path, read_only=True) as kept:
        saved = kept.samples("client").counters.tolist()
    assert saved[:100] == list(range(100)) and len(saved) % 100 == 0  # whole commits only


def test_a_session_that_cannot_be_created_leaves_nothing(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "sessions"
    not_a_dir.write_text("a file where the sessions directory should be")
    with pytest.raises(StoreError, match="sessions: not a directory"):
        SessionStore.create(not_a_dir / "s.sqlite", {})
    path = tmp_path / "s.sqlite"
    with pytest.raises(TypeError):  # fails half-way through setting the session up
        SessionStore.create(path, {"not json": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions"]


def test_stored_records_read_fields_that_older_or_damaged_writers_left_out_as_absent() -> None:
    """A session outlives the engine that wrote it: a field that is missing, null, text or a boolean where a
    number belongs reads as NaN / None, never as a wrong number (``True`` is not a PLV of 1)."""
    state = StoredState(5.0, {"decision": "no_lock", "plv": 0.75, "lag_s": None, "direction": "1.2", "muted": True})
    assert state.decision == "no_lock" and state.number("plv") == 0.75
    assert all(math.isnan(state.number(name)) for name in ("lag_s", "direction", "muted", "not_a_field"))
    assert StoredState(5.0, {"decision": 3}).decision is None and StoredState(5.0, {}).decision is None
    assert math.isnan(StoredState(5.0, {"plv": 10**400}).number("plv"))  # too large for a float: not an error
    assert shown(10**5000) == "an integer of thousands of digits"  # its repr raises ValueError in an error line

    pending = StoredNudge(1, 10.0, {"plv": 0.9, "pattern": {"pulse_count": 3, "on_ms": 200, "off_ms": 300}}, None)
    assert pending.decoupled is None and pending.decoupled_after_s is None and pending.delivered is None
    assert pending.pattern_duration_s == 1.5 and pending.number("plv") == 0.9
    decoupled = StoredNudge(
        2, 20.0, {"delivered": True, "pattern": {"pulse_count": 3}}, {"decoupled": True, "after_s": 21}
    )
    assert decoupled.decoupled is True and decoupled.decoupled_after_s == 21.0 and decoupled.delivered is True
    assert decoupled.pattern_duration_s is None  # an incomplete pattern has no duration, not a made-up one
    not_yet = StoredNudge(3, 30.0, {"delivered": "yes"}, {"decoupled": None, "after_s": None})
    assert not_yet.decoupled is None and not_yet.delivered is None
    assert StoredNudge(4, 40.0, {}, {"decoupled": False, "after_s": None}).decoupled is False
    assert StoredNudge(5, 50.0, {"plv": 10**400}, {"decoupled": True, "after_s": 10**400}).decoupled_after_s is None
