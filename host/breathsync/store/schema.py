"""The session file's SQLite schema (version 1): one source of truth for creating and checking files."""

from __future__ import annotations

import functools
import sqlite3
from contextlib import closing

SAMPLE_MAX = 65535  # the strap's samples are unsigned 16-bit (docs/protocol.md)

SCHEMA_VERSION = 1

# Tables added after version 1 shipped: absent from older files (readers then take them as empty), made when a run
# resumes such a file. ``late``: what reached the host after a drop-out, which the live engine never saw.
# ``arrivals``: when each live notification (a block of samples, a breath event) reached the engine, in that order.
OPTIONAL_TABLES = frozenset({"late", "arrivals"})
LATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS late (
    role TEXT NOT NULL, kind TEXT NOT NULL, first_counter INTEGER NOT NULL, last_counter INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS arrivals (
    role TEXT NOT NULL, kind TEXT NOT NULL, first_counter INTEGER NOT NULL, last_counter INTEGER NOT NULL,
    arrived_t_s REAL NOT NULL
);
"""

SCHEMA = (
    """
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
    + LATE_SCHEMA
)


@functools.cache
def expected_columns() -> dict[str, tuple[str, ...]]:
    """Table -> columns of a schema-1 session, taken from ``SCHEMA`` itself (one source of truth)."""
    with closing(sqlite3.connect(":memory:")) as db:
        db.executescript(SCHEMA)
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: tuple(str(row[1]) for row in db.execute(f"PRAGMA table_info({t})")) for t in tables}
