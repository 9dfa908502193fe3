"""Session store: one SQLite file (WAL mode) per session.

What a session keeps: both straps' raw samples with strap counters and host times, breath
events, engine states, nudges with their efficacy, link events, the configuration and the
straps' firmware versions. Writes are buffered and committed at least every
``commit_interval_s`` (0.5 s by default), so a ``kill -9`` loses at most the last second; on
restart ``SessionStore.open`` resumes the same file and ``last_counter`` tells the link where
to ask the straps to backfill from. Samples are keyed by (role, counter) and inserted with
``INSERT OR IGNORE``: a backfill that overlaps what is stored is harmless.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import BreathsyncError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS straps (
    role TEXT PRIMARY KEY, address TEXT, name TEXT, firmware TEXT, protocol_version INTEGER,
    rate_hz INTEGER, updated_t_s REAL
);
CREATE TABLE IF NOT EXISTS samples (
    role TEXT NOT NULL, counter INTEGER NOT NULL, host_t_s REAL NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (role, counter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    role TEXT NOT NULL, kind TEXT NOT NULL, counter INTEGER NOT NULL, confirmed_counter INTEGER NOT NULL,
    depth_counts INTEGER NOT NULL, interval_samples INTEGER NOT NULL, host_t_s REAL NOT NULL,
    PRIMARY KEY (role, kind, counter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS states (t_s REAL NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nudges (
    id INTEGER PRIMARY KEY, t_s REAL NOT NULL, detail TEXT NOT NULL, efficacy TEXT
);
CREATE TABLE IF NOT EXISTS link_events (t_s REAL NOT NULL, role TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT);
CREATE INDEX IF NOT EXISTS states_t ON states (t_s);
CREATE INDEX IF NOT EXISTS link_events_t ON link_events (t_s);
"""


class StoreError(BreathsyncError):
    """The session file is missing, not a breathsync session, or unwritable."""


@dataclass(frozen=True)
class StrapInfo:
    role: str
    address: str
    name: str
    firmware: str
    protocol_version: int
    rate_hz: int


@dataclass(frozen=True)
class SampleSeries:
    """One strap's stored samples, sorted by counter."""

    counters: npt.NDArray[np.int64]
    host_t_s: npt.NDArray[np.float64]
    values: npt.NDArray[np.int64]


@dataclass(frozen=True)
class StoredEvent:
    role: str
    kind: str
    counter: int
    confirmed_counter: int
    depth_counts: int
    interval_samples: int
    host_t_s: float


@dataclass(frozen=True)
class StoredNudge:
    id: int
    t_s: float
    detail: dict[str, Any]
    efficacy: dict[str, Any] | None


class SessionStore:
    """A session's SQLite file. Use ``create`` for a new session, ``open`` to resume or read."""

    def __init__(self, connection: sqlite3.Connection, path: Path, commit_interval_s: float) -> None:
        self._db = connection
        self.path = path
        self.commit_interval_s = commit_interval_s
        self._last_commit = time.monotonic()
        self._pending = 0

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | Path, config: dict[str, Any] | None = None, commit_interval_s: float = 0.5
    ) -> SessionStore:
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path}: session already exists (open it to resume)")
        path.parent.mkdir(parents=True, exist_ok=True)
        store = cls(cls._connect(path), path, commit_interval_s)
        store._db.executescript(_SCHEMA)
        now = time.time()
        store._set_meta("schema_version", str(SCHEMA_VERSION))
        store._set_meta("created_unix_s", repr(now))
        store._set_meta("config", json.dumps(config or {}, sort_keys=True))
        store._db.commit()
        return store

    @classmethod
    def open(cls, path: str | Path, commit_interval_s: float = 0.5) -> SessionStore:
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"{path}: no such session file")
        try:
            store = cls(cls._connect(path), path, commit_interval_s)
            version = store.meta("schema_version")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not a breathsync session ({exc})") from None
        if version is None:
            raise StoreError(f"{path}: not a breathsync session (no schema version)")
        if int(version) != SCHEMA_VERSION:
            raise StoreError(f"{path}: session schema {version}, this breathsync reads {SCHEMA_VERSION}")
        return store

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed transaction survives a process crash (kill -9);
            # only a power loss could lose the last commits.
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not a breathsync session ({exc})") from None
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open session: {exc}") from None
        return db

    def close(self) -> None:
        self.commit()
        self._db.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------

    def commit(self) -> None:
        self._db.commit()
        self._pending = 0
        self._last_commit = time.monotonic()

    def _wrote(self, rows: int) -> None:
        self._pending += rows
        if time.monotonic() - self._last_commit >= self.commit_interval_s:
            self.commit()

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def set_meta(self, key: str, value: str) -> None:
        self._set_meta(key, value)
        self._wrote(1)

    def set_strap(self, info: StrapInfo, t_s: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO straps VALUES (?, ?, ?, ?, ?, ?, ?)",
            (info.role, info.address, info.name, info.firmware, info.protocol_version, info.rate_hz, t_s),
        )
        self._wrote(1)

    def add_samples(
        self, role: str, counters: Sequence[int], host_t_s: Sequence[float], values: Sequence[int]
    ) -> None:
        if not len(counters) == len(host_t_s) == len(values):
            raise ValueError("counters, host times and values differ in length")
        self._db.executemany(
            "INSERT OR IGNORE INTO samples VALUES (?, ?, ?, ?)",
            zip([role] * len(counters), map(int, counters), map(float, host_t_s), map(int, values), strict=True),
        )
        self._wrote(len(counters))

    def add_event(self, event: StoredEvent) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.role,
                event.kind,
                event.counter,
                event.confirmed_counter,
                event.depth_counts,
                event.interval_samples,
                event.host_t_s,
            ),
        )
        self._wrote(1)

    def add_state(self, t_s: float, state: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO states VALUES (?, ?)", (t_s, json.dumps(state, sort_keys=True)))
        self._wrote(1)

    def add_nudge(self, t_s: float, detail: dict[str, Any]) -> int:
        cursor = self._db.execute(
            "INSERT INTO nudges (t_s, detail) VALUES (?, ?)", (t_s, json.dumps(detail, sort_keys=True))
        )
        self._wrote(1)
        return int(cursor.lastrowid or 0)

    def set_nudge_efficacy(self, nudge_id: int, efficacy: dict[str, Any]) -> None:
        self._db.execute(
            "UPDATE nudges SET efficacy = ? WHERE id = ?", (json.dumps(efficacy, sort_keys=True), nudge_id)
        )
        self._wrote(1)

    def add_link_event(self, t_s: float, role: str, kind: str, detail: str = "") -> None:
        self._db.execute("INSERT INTO link_events VALUES (?, ?, ?, ?)", (t_s, role, kind, detail))
        self._wrote(1)

    # -- reading -------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def config(self) -> dict[str, Any]:
        raw = self.meta("config")
        return {} if raw is None else dict(json.loads(raw))

    def straps(self) -> list[StrapInfo]:
        rows = self._db.execute(
            "SELECT role, address, name, firmware, protocol_version, rate_hz FROM straps ORDER BY role"
        ).fetchall()
        return [StrapInfo(*row) for row in rows]

    def roles(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT role FROM samples ORDER BY role")]

    def last_counter(self, role: str) -> int | None:
        """Highest stored sample counter of ``role``: backfill after a restart starts after it."""
        row = self._db.execute("SELECT MAX(counter) FROM samples WHERE role = ?", (role,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def missing_ranges(self, role: str) -> list[tuple[int, int]]:
        """Gaps [first, last] (inclusive) in the stored counters of ``role``."""
        counters = self.samples(role).counters
        if len(counters) < 2:
            return []
        jumps = np.nonzero(np.diff(counters) > 1)[0]
        return [(int(counters[i] + 1), int(counters[i + 1] - 1)) for i in jumps]

    def samples(self, role: str) -> SampleSeries:
        rows = self._db.execute(
            "SELECT counter, host_t_s, value FROM samples WHERE role = ? ORDER BY counter", (role,)
        ).fetchall()
        if not rows:
            empty_i = np.zeros(0, dtype=np.int64)
            return SampleSeries(empty_i, np.zeros(0, dtype=np.float64), empty_i.copy())
        data = np.asarray(rows, dtype=np.float64)
        return SampleSeries(data[:, 0].astype(np.int64), data[:, 1], data[:, 2].astype(np.int64))

    def events(self, role: str | None = None) -> list[StoredEvent]:
        query = "SELECT role, kind, counter, confirmed_counter, depth_counts, interval_samples, host_t_s FROM events"
        params: tuple[str, ...] = ()
        if role is not None:
            query += " WHERE role = ?"
            params = (role,)
        rows = self._db.execute(query + " ORDER BY host_t_s", params).fetchall()
        return [StoredEvent(*row) for row in rows]

    def states(self) -> Iterator[tuple[float, dict[str, Any]]]:
        for t_s, raw in self._db.execute("SELECT t_s, state FROM states ORDER BY t_s"):
            yield float(t_s), dict(json.loads(raw))

    def nudges(self) -> list[StoredNudge]:
        rows = self._db.execute("SELECT id, t_s, detail, efficacy FROM nudges ORDER BY t_s").fetchall()
        return [
            StoredNudge(int(i), float(t), dict(json.loads(d)), None if e is None else dict(json.loads(e)))
            for i, t, d, e in rows
        ]

    def link_events(self) -> list[tuple[float, str, str, str]]:
        rows: Iterable[tuple[float, str, str, str]] = self._db.execute(
            "SELECT t_s, role, kind, detail FROM link_events ORDER BY t_s"
        ).fetchall()
        return list(rows)
