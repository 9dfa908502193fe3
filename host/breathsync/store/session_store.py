"""``SessionStore``: open (checked), write (buffered, committed every ``commit_interval_s``) and read back
(checked) one session file. The package's docstring (``breathsync.store``) tells what a session keeps."""

from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import numpy as np

from ..detector import Kind
from ..roles import ROLES
from ..values import finite_float, shown
from .errors import StoreError, writing
from .files import remove_session_files
from .records import (
    ArrivalData,
    BreathEventRecord,
    LateData,
    SampleSeries,
    StoredEvent,
    StoredNudge,
    StoredState,
    StrapInfo,
)
from .schema import LATE_SCHEMA, OPTIONAL_TABLES, SAMPLE_MAX, SCHEMA, SCHEMA_VERSION, expected_columns

P = ParamSpec("P")
R = TypeVar("R")
MAX_STRAP_RATE_HZ = 10_000  # a strap samples at 25 or 50 Hz; beyond any input rate is a damaged row


def _write_op(method: Callable[Concatenate[SessionStore, P], R]) -> Callable[Concatenate[SessionStore, P], R]:
    @functools.wraps(method)
    def wrapper(self: SessionStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with writing(self.path):
            return method(self, *args, **kwargs)

    return cast("Callable[Concatenate[SessionStore, P], R]", wrapper)


def _no_tables(db: sqlite3.Connection) -> bool:
    try:
        return bool(db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0)
    except sqlite3.Error:
        return False


class SessionStore:
    """A session's SQLite file. Use ``create`` for a new session, ``open`` to resume or read."""

    def __init__(
        self, connection: sqlite3.Connection, path: Path, commit_interval_s: float, read_only: bool = False
    ) -> None:
        self._db = connection
        self.path = path
        self.commit_interval_s = commit_interval_s
        self.read_only = read_only
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
        if path.parent.exists() and not path.parent.is_dir():
            raise StoreError(f"{path.parent}: not a directory (sessions need one)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{path.parent}: cannot create the sessions directory ({exc.strerror})") from None
        try:  # claim the name first: two runs starting in the same second must not share (or delete) one file
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            raise StoreError(f"{path}: session already exists (open it to resume)") from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the session ({exc.strerror})") from None
        try:
            db = cls._connect(path, "rw")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        try:
            cls._use_wal(db, path)
            store = cls(db, path, commit_interval_s)
            with writing(path, creating=True):
                store._db.executescript(SCHEMA)
                store._set_meta("schema_version", str(SCHEMA_VERSION))
                store._set_meta("created_unix_s", repr(time.time()))
                store._set_meta("config", json.dumps(config or {}, sort_keys=True))
                store._db.commit()
        except BaseException:
            # A session that could not be set up (a full disk) must not be left behind half-made.
            db.close()
            remove_session_files(path)
            raise
        return store

    @classmethod
    def open(cls, path: str | Path, commit_interval_s: float = 0.5, *, read_only: bool = False) -> SessionStore:
        """Open a session to resume it (the daemon) or, with ``read_only``, to read it without any change."""
        path = Path(path)
        if path.is_dir():
            raise StoreError(f"{path}: is a directory, not a session file")
        if not path.exists():
            raise StoreError(f"{path}: no such session file")
        if not path.is_file():  # /dev/null, a pipe: SQLite needs a file it can seek in
            raise StoreError(f"{path}: not a session file (not a regular file)")
        if not os.access(path, os.R_OK if read_only else os.R_OK | os.W_OK):
            raise StoreError(f"{path}: permission denied")
        wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
        if read_only and wal.exists() and not shm.exists() and not os.access(path.parent, os.W_OK):
            # SQLite cannot read the -wal file (the last data of a run that did not close) without making a -shm
            # file beside it; it only said 'unable to open database file', which read as 'not a session'.
            raise StoreError(
                f"{path}: a session its run did not close, on storage that cannot be written: reading its -wal file "
                f"needs a -shm file beside it; copy {path.name} and {wal.name} to a writable folder"
            )
        db = cls._connect(path, "ro" if read_only else "rw")
        try:
            # Check first: a foreign or damaged file must come out exactly as it went in.
            cls._verify(db, path)
            if not read_only:
                cls._use_wal(db, path)
                with writing(path):
                    db.executescript(LATE_SCHEMA)  # a session an older version began
        except BaseException:
            db.close()
            raise
        return cls(db, path, commit_interval_s, read_only)

    @staticmethod
    def _connect(path: Path, mode: str) -> sqlite3.Connection:
        """``mode``: rwc creates, rw never creates (a vanished file is an error), ro changes nothing."""
        uri = f"{path.absolute().as_uri()}?mode={mode}"
        if mode == "ro" and not any(path.with_name(path.name + s).exists() for s in ("-wal", "-journal")):
            # Nothing pending beside the file, so nobody has it open for writing: read it as
            # immutable, or SQLite would leave empty -wal and -shm files beside a WAL session.
            # With a -wal file (a running or crashed daemon) its content is needed: plain ro.
            uri += "&immutable=1"
        try:
            return sqlite3.connect(uri, uri=True, isolation_level="DEFERRED", check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not a breathsync session ({exc})") from None
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open session: {exc}") from None

    @staticmethod
    def _use_wal(db: sqlite3.Connection, path: Path) -> None:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed transaction survives a process crash (kill -9);
            # only a power loss could lose the last commits.
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open session for writing: {exc}") from None

    @staticmethod
    def _verify(db: sqlite3.Connection, path: Path) -> None:
        """Schema version and every table and column of the schema, by reading only."""
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):  # another program holds it: not damaged
                raise StoreError(f"{path}: session is in use by another program ({exc}); try again later") from None
            if "disk I/O error" in str(exc) or "unable to open" in str(exc):
                # SQLite writes -wal and -shm files beside a session it opens for writing, and beside one whose run
                # did not close it even to read it: a full disk, or a folder the user may not write, fails here with
                # a session that is fine.
                raise StoreError(
                    f"{path}: cannot open the session ({exc}): SQLite needs room and write access beside it for its "
                    "-wal and -shm files (a full disk? a read-only folder?)"
                ) from None
            if _no_tables(db) and path.stat().st_size > 0:
                # A session whose run did not close it keeps everything in its -wal file until then: copied
                # without that file, what arrives is an empty database.
                raise StoreError(
                    f"{path}: not a breathsync session on its own (an SQLite file with no tables): if it is a copy of "
                    f"a session whose run did not close it, copy its {path.name}-wal file beside it too"
                ) from None
            raise StoreError(f"{path}: not a breathsync session ({exc})") from None
        except sqlite3.DatabaseError as exc:
            if "malformed" in str(exc):  # an SQLite file, cut short or overwritten in part
                raise StoreError(f"{path}: damaged session ({exc})") from None
            raise StoreError(f"{path}: not a breathsync session ({exc})") from None
        if row is None:
            raise StoreError(f"{path}: not a breathsync session (no schema version)")
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            raise StoreError(f"{path}: damaged session (schema version {shown(row[0])} is not a number)") from None
        if version != SCHEMA_VERSION:
            raise StoreError(f"{path}: session schema {version}, this breathsync reads {SCHEMA_VERSION}")
        try:
            for table, columns in expected_columns().items():
                present = {str(r[1]) for r in db.execute(f"PRAGMA table_info({table})")}
                if not present and table in OPTIONAL_TABLES:
                    continue
                if not present:
                    raise StoreError(f"{path}: damaged session ({table} table missing)")
                for column in columns:
                    if column not in present:
                        raise StoreError(f"{path}: damaged session ({table} table has no {column} column)")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: damaged session ({exc})") from None

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._db.close()

    def abandon(self) -> None:
        """Close without saving what is pending (after a write failed: what was committed is kept)."""
        with suppress(sqlite3.Error):
            self._db.rollback()
        self._db.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:  # the error already on its way is the one to report
            self.abandon()

    # -- writing -------------------------------------------------------------------------------

    def _writer(self) -> sqlite3.Connection:
        if self.read_only:
            raise StoreError(f"{self.path}: session opened read-only")
        return self._db

    def commit(self) -> None:
        with writing(self.path):
            self._db.commit()
        self._pending = 0
        self._last_commit = time.monotonic()

    def _wrote(self, rows: int) -> None:
        self._pending += rows
        if time.monotonic() - self._last_commit >= self.commit_interval_s:
            self.commit()

    def _set_meta(self, key: str, value: str) -> None:
        self._writer().execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @_write_op
    def set_meta(self, key: str, value: str) -> None:
        self._set_meta(key, value)
        self._wrote(1)

    @_write_op
    def set_strap(self, info: StrapInfo, t_s: float) -> None:
        self._writer().execute(
            "INSERT OR REPLACE INTO straps VALUES (?, ?, ?, ?, ?, ?, ?)",
            (info.role, info.address, info.name, info.firmware, info.protocol_version, info.rate_hz, t_s),
        )
        self._wrote(1)

    @_write_op
    def add_samples(self, role: str, counters: Sequence[int], host_t_s: Sequence[float], values: Sequence[int]) -> None:
        if not len(counters) == len(host_t_s) == len(values):
            raise ValueError("counters, host times and values differ in length")
        self._writer().executemany(
            "INSERT OR IGNORE INTO samples VALUES (?, ?, ?, ?)",
            zip([role] * len(counters), map(int, counters), map(float, host_t_s), map(int, values), strict=True),
        )
        self._wrote(len(counters))

    @_write_op
    def add_event(self, event: BreathEventRecord) -> bool:
        """Store a breath event; False when it was stored already (a strap sends an event again after a drop-out)."""
        cursor = self._writer().execute(
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
        return cursor.rowcount > 0

    @_write_op
    def add_state(self, t_s: float, state: dict[str, Any]) -> None:
        self._writer().execute("INSERT INTO states VALUES (?, ?)", (t_s, json.dumps(state, sort_keys=True)))
        self._wrote(1)

    @_write_op
    def add_nudge(self, t_s: float, detail: dict[str, Any]) -> int:
        cursor = self._writer().execute(
            "INSERT INTO nudges (t_s, detail) VALUES (?, ?)", (t_s, json.dumps(detail, sort_keys=True))
        )
        self._wrote(1)
        return int(cursor.lastrowid or 0)

    @_write_op
    def set_nudge_efficacy(self, nudge_id: int, efficacy: dict[str, Any]) -> None:
        self._writer().execute(
            "UPDATE nudges SET efficacy = ? WHERE id = ?", (json.dumps(efficacy, sort_keys=True), nudge_id)
        )
        self._wrote(1)

    @_write_op
    def set_nudge_delivery(self, nudge_id: int, delivered: bool | None, detail: str = "") -> None:
        """Whether the therapist's strap confirmed the nudge (kept in the nudge's detail: ``delivered``, and
        ``delivery_error`` when it was not); None: sent, but no answer came, so it may have been felt."""
        writer = self._writer()
        row = writer.execute("SELECT detail FROM nudges WHERE id = ?", (nudge_id,)).fetchone()
        if row is None:
            return
        record = json.loads(row[0])
        record["delivered"] = delivered
        if not delivered:
            record["delivery_error"] = detail
        writer.execute("UPDATE nudges SET detail = ? WHERE id = ?", (json.dumps(record, sort_keys=True), nudge_id))
        self._wrote(1)

    def stored_counters(self, role: str, first_counter: int, last_counter: int) -> set[int]:
        """The counters of ``role`` in ``first_counter..last_counter`` that are stored already."""
        rows = self._query(
            "samples",
            "SELECT counter FROM samples WHERE role = ? AND counter BETWEEN ? AND ?",
            (role, first_counter, last_counter),
        )
        return {int(r[0]) for r in rows}

    @_write_op
    def add_late_samples(self, role: str, first_counter: int, last_counter: int) -> None:
        """Samples ``first_counter..last_counter`` reached the host after a drop-out (backfill): kept, but the live
        engine never saw them. Consecutive ranges are merged into one row."""
        db = self._writer()
        merged = db.execute(
            "UPDATE late SET last_counter = ? WHERE role = ? AND kind = 'samples' AND last_counter = ?",
            (last_counter, role, first_counter - 1),
        )
        if merged.rowcount == 0:
            db.execute("INSERT INTO late VALUES (?, 'samples', ?, ?)", (role, first_counter, last_counter))
        self._wrote(1)

    @_write_op
    def add_late_event(self, role: str, kind: str, counter: int) -> None:
        """The breath event at ``counter`` reached the host after a drop-out: the live engine never saw it."""
        self._writer().execute("INSERT INTO late VALUES (?, ?, ?, ?)", (role, kind, counter, counter))
        self._wrote(1)

    @_write_op
    def add_arrival(self, role: str, kind: str, first_counter: int, last_counter: int, arrived_t_s: float) -> None:
        """``role``'s live notification reached the engine at ``arrived_t_s`` (host Unix s): samples
        ``first_counter..last_counter`` (``kind`` 'samples') or its breath event at ``first_counter`` (``kind``
        'peak' or 'trough'). A replay feeds them in this order, as the live engine had them."""
        self._writer().execute(
            "INSERT INTO arrivals VALUES (?, ?, ?, ?, ?)", (role, kind, first_counter, last_counter, arrived_t_s)
        )
        self._wrote(1)

    @_write_op
    def add_link_event(self, t_s: float, role: str, kind: str, detail: str = "") -> None:
        self._writer().execute("INSERT INTO link_events VALUES (?, ?, ?, ?)", (t_s, role, kind, detail))
        self._wrote(1)

    # -- reading -------------------------------------------------------------------------------
    # Every read goes through ``_query`` and the checks below, so a damaged file is a StoreError.

    def _damaged(self, what: str) -> StoreError:
        return StoreError(f"{self.path}: damaged session ({what})")

    @contextmanager
    def _reading(self, table: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise  # misuse (a closed store), not a property of the file
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", "")
            if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
                raise StoreError(f"{self.path}: session is locked by another process ({exc})") from None
            if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_NOMEM")):
                raise StoreError(f"{self.path}: cannot read session ({exc})") from None
            if "no such table" in str(exc):
                raise self._damaged(f"{table} table missing") from None
            raise self._damaged(f"{table} table: {exc}") from None

    def _query(self, table: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._reading(table):
            return self._db.execute(sql, params).fetchall()  # already a list: no copy of millions of rows

    def _int(self, value: object, where: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise self._damaged(f"{where} is {shown(value)}, not a whole number")

    def _number(self, value: object, where: str) -> float:
        number = finite_float(value)
        if number is None:
            raise self._damaged(f"{where} is {shown(value)}, not a finite number")
        return number

    def _text(self, value: object, where: str, null_ok: bool = False) -> str:
        if isinstance(value, str):
            return value
        if value is None and null_ok:
            return ""
        raise self._damaged(f"{where} is {shown(value)}, not text")

    def _breath_kind(self, value: object, where: str) -> Kind:
        if value == "peak" or value == "trough":
            return value
        raise self._damaged(f"{where} is {shown(value)}, not 'peak' or 'trough'")

    def _json_object(self, raw: object, where: str) -> dict[str, Any]:
        if not isinstance(raw, str):
            raise self._damaged(f"{where} is {shown(raw)}, not JSON text")
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise self._damaged(f"{where} is not valid JSON") from None
        if not isinstance(value, dict):
            raise self._damaged(f"{where} is not a JSON object")
        return value

    def meta(self, key: str) -> str | None:
        rows = self._query("meta", "SELECT value FROM meta WHERE key = ?", (key,))
        return None if not rows else str(rows[0][0])

    def meta_float(self, key: str) -> float | None:
        """A numeric meta value (``created_unix_s``, ``t0_unix_s``); None if absent, StoreError if damaged."""
        rows = self._query("meta", "SELECT value FROM meta WHERE key = ?", (key,))
        if not rows:
            return None
        try:
            value = float(rows[0][0])
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise self._damaged(f"meta {key} is {shown(rows[0][0])}, not a number")
        return value

    def first_sample_t_s(self, role: str) -> float | None:
        """Host time of ``role``'s first stored sample (lowest counter); None when it has none."""
        rows = self._query("samples", "SELECT host_t_s FROM samples WHERE role = ? ORDER BY counter LIMIT 1", (role,))
        return None if not rows else self._number(rows[0][0], f"samples table, {role}: host_t_s")

    def session_zero_s(self) -> float:
        """The host time (Unix s) session time counts from: ``t0_unix_s`` as the daemon stored it, else the earliest
        first sample of the roles (a session from before it was stored); 0.0 for a session without samples."""
        t0 = self.meta_float("t0_unix_s")
        if t0 is not None:
            return t0
        firsts = [float(s.host_t_s[0]) for s in (self.samples(role) for role in ROLES) if len(s.host_t_s)]
        return min(firsts) if firsts else 0.0

    def meta_int(self, key: str) -> int | None:
        """A whole-number meta value (``counter_offset.<role>``); None if absent, StoreError if damaged."""
        text = self.meta(key)
        if text is None:
            return None
        try:
            return int(text)
        except ValueError:
            raise self._damaged(f"meta {key} is {shown(text)}, not a whole number") from None

    def config(self) -> dict[str, Any]:
        rows = self._query("meta", "SELECT value FROM meta WHERE key = 'config'")
        return {} if not rows else self._json_object(rows[0][0], "meta config")

    def straps(self) -> list[StrapInfo]:
        rows = self._query(
            "straps", "SELECT role, address, name, firmware, protocol_version, rate_hz FROM straps ORDER BY role"
        )
        straps = []
        for role, address, name, firmware, protocol_version, rate_hz in rows:
            who = f"straps table, {self._text(role, 'straps table: a role')}"
            if not 0 <= self._int(rate_hz, f"{who} rate_hz") <= MAX_STRAP_RATE_HZ:  # 0: not reported
                raise self._damaged(f"{who} rate_hz is {rate_hz}, not a sampling rate")
            straps.append(
                StrapInfo(
                    role,
                    self._text(address, f"{who} address", null_ok=True),
                    self._text(name, f"{who} name", null_ok=True),
                    self._text(firmware, f"{who} firmware", null_ok=True),
                    self._int(protocol_version, f"{who} protocol_version"),
                    self._int(rate_hz, f"{who} rate_hz"),
                )
            )
        return straps

    def roles(self) -> list[str]:
        rows = self._query("samples", "SELECT DISTINCT role FROM samples ORDER BY role")
        roles = [self._text(r[0], "samples table: a role") for r in rows]
        for role in roles:
            if role not in ROLES:  # a hand edit ('Therapist'): its samples would pass for a third person's
                raise self._damaged(f"samples table: role {shown(role)} is neither {' nor '.join(ROLES)}")
        return roles

    def last_counter(self, role: str) -> int | None:
        """Highest stored sample counter of ``role``: backfill after a restart starts after it."""
        rows = self._query("samples", "SELECT MAX(counter) FROM samples WHERE role = ?", (role,))
        if not rows or rows[0][0] is None:
            return None
        return self._int(rows[0][0], f"samples table, {role}: the last counter")

    def first_sample_time(self) -> float | None:
        """Host time of the earliest stored sample of any strap: the session zero (``research.session``)."""
        rows = self._query("samples", "SELECT MIN(host_t_s) FROM samples")
        return None if not rows or rows[0][0] is None else self._number(rows[0][0], "samples table: the first time")

    def last_sample_time(self, role: str) -> float | None:
        """Host time of ``role``'s highest stored counter: a resumed run dates a strap reboot against it."""
        rows = self._query(
            "samples", "SELECT host_t_s FROM samples WHERE role = ? ORDER BY counter DESC LIMIT 1", (role,)
        )
        return self._number(rows[0][0], f"samples table, {role}: the last time") if rows else None

    def missing_ranges(self, role: str) -> list[tuple[int, int]]:
        """Gaps [first, last] (inclusive) in the stored counters of ``role``."""
        counters = self.samples(role).counters
        if len(counters) < 2:
            return []
        jumps = np.nonzero(np.diff(counters) > 1)[0]
        return [(int(counters[i] + 1), int(counters[i + 1] - 1)) for i in jumps]

    def samples(self, role: str) -> SampleSeries:
        rows = self._query(
            "samples", "SELECT counter, host_t_s, value FROM samples WHERE role = ? ORDER BY counter", (role,)
        )
        if not rows:
            empty_i = np.zeros(0, dtype=np.int64)
            return SampleSeries(empty_i, np.zeros(0, dtype=np.float64), empty_i.copy())
        try:
            data = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            data = np.full((len(rows), 3), np.nan)  # some cell is not a number: find it below
        # Vectorised check (sessions hold millions of samples); the slow path only names the culprit.
        whole = np.isfinite(data).all(axis=1) & (data[:, 0] == np.round(data[:, 0]))
        whole &= data[:, 2] == np.round(data[:, 2])
        # Samples are the strap's 16-bit ADC values, counters count up from 0 (and stay exact as floats).
        whole &= (data[:, 2] >= 0) & (data[:, 2] <= SAMPLE_MAX) & (data[:, 0] >= 0) & (data[:, 0] < 2.0**53)
        if not whole.all():
            for counter, host_t_s, value in rows:
                where = f"samples table, {role} counter {shown(counter)}"
                if not 0 <= self._int(counter, f"samples table, {role}: a counter") < 2**53:
                    raise self._damaged(f"samples table, {role}: counter {shown(counter)} is out of range")
                self._number(host_t_s, f"{where}: host_t_s")
                if not 0 <= self._int(value, f"{where}: value") <= SAMPLE_MAX:
                    raise self._damaged(f"{where}: value {shown(value)} is outside the strap's 0-{SAMPLE_MAX}")
            raise self._damaged(f"samples table, {role}: a stored number is not usable")  # not reached
        return SampleSeries(data[:, 0].astype(np.int64), data[:, 1], data[:, 2].astype(np.int64))

    def events(self, role: str | None = None) -> list[StoredEvent]:
        query = "SELECT role, kind, counter, confirmed_counter, depth_counts, interval_samples, host_t_s FROM events"
        params: tuple[str, ...] = ()
        if role is not None:
            query += " WHERE role = ?"
            params = (role,)
        events = []
        for who, kind, counter, confirmed, depth, interval, host_t_s in self._query(
            "events", query + " ORDER BY host_t_s", params
        ):
            where = f"events table, {shown(who)} {shown(kind)} at counter {shown(counter)}"
            events.append(
                StoredEvent(
                    self._text(who, "events table: a role"),
                    self._breath_kind(kind, f"{where}: kind"),
                    self._int(counter, f"{where}: counter"),
                    self._int(confirmed, f"{where}: confirmed_counter"),
                    self._int(depth, f"{where}: depth_counts"),
                    self._int(interval, f"{where}: interval_samples"),
                    self._number(host_t_s, f"{where}: host_t_s"),
                )
            )
        return events

    def _has_optional(self, table: str) -> bool:
        """Whether this session has ``table`` (one of OPTIONAL_TABLES: older versions' sessions lack them)."""
        with self._reading(table):
            query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
            return self._db.execute(query, (table,)).fetchone() is not None

    def late(self, role: str) -> LateData:
        """What of ``role``'s strap reached the host after a drop-out (none recorded in sessions of older versions)."""
        if not self._has_optional("late"):
            return LateData()
        ranges: list[tuple[int, int]] = []
        events: set[tuple[str, int]] = set()
        rows = self._query(
            "late", "SELECT kind, first_counter, last_counter FROM late WHERE role = ? ORDER BY first_counter", (role,)
        )
        for kind, first, last in rows:
            where = f"late table, {role} {shown(kind)} at counter {shown(first)}"
            first_counter, last_counter = self._int(first, where), self._int(last, where)
            if kind == "samples":
                ranges.append((first_counter, last_counter))
            else:
                events.add((self._breath_kind(kind, f"{where}: kind"), first_counter))
        return LateData(tuple(ranges), frozenset(events))

    def arrivals(self, role: str) -> ArrivalData:
        """When and in which order ``role``'s live notifications reached the engine (none recorded in sessions of
        older versions)."""
        if not self._has_optional("arrivals"):
            return ArrivalData()
        blocks: list[tuple[int, int, float, int]] = []
        events: dict[tuple[str, int], tuple[float, int]] = {}
        rows = self._query(
            "arrivals",
            "SELECT rowid, kind, first_counter, last_counter, arrived_t_s FROM arrivals WHERE role = ? ORDER BY rowid",
            (role,),
        )
        for sequence, kind, first, last, arrived in rows:
            where = f"arrivals table, {role} {shown(kind)} at counter {shown(first)}"
            first_counter, last_counter = self._int(first, where), self._int(last, where)
            arrived_t_s = self._number(arrived, f"{where}: arrived_t_s")
            if kind == "samples":
                blocks.append((first_counter, last_counter, arrived_t_s, int(sequence)))
            else:
                events[(self._breath_kind(kind, f"{where}: kind"), first_counter)] = (arrived_t_s, int(sequence))
        return ArrivalData(tuple(blocks), events)

    def states(self) -> Iterator[StoredState]:
        with self._reading("states"):
            for t_s, raw in self._db.execute("SELECT t_s, state FROM states ORDER BY t_s"):
                time_s = self._number(t_s, "states table: a t_s")
                yield StoredState(time_s, self._json_object(raw, f"states table: the state at t_s {time_s!r}"))

    def nudges(self) -> list[StoredNudge]:
        nudges = []
        for i, t, detail, efficacy in self._query(
            "nudges", "SELECT id, t_s, detail, efficacy FROM nudges ORDER BY t_s"
        ):
            where = f"nudges table, nudge {shown(i)}"
            nudges.append(
                StoredNudge(
                    self._int(i, "nudges table: an id"),
                    self._number(t, f"{where}: t_s"),
                    self._json_object(detail, f"{where}: detail"),
                    None if efficacy is None else self._json_object(efficacy, f"{where}: efficacy"),
                )
            )
        return nudges

    def link_events(self) -> list[tuple[float, str, str, str]]:
        rows = self._query("link_events", "SELECT t_s, role, kind, detail FROM link_events ORDER BY t_s")
        where = "link_events table: a"
        return [
            (
                self._number(t, f"{where} t_s"),
                self._text(role, f"{where} role"),
                self._text(kind, f"{where} kind"),
                self._text(detail, f"{where} detail", null_ok=True),
            )
            for t, role, kind, detail in rows
        ]
