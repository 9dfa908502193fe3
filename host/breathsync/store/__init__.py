"""Session store: one SQLite file (WAL mode) per session.

What a session keeps: both straps' raw samples with strap counters and host times, breath
events, engine states, nudges with their efficacy, link events, the configuration and the
straps' firmware versions. Writes are buffered and committed at least every
``commit_interval_s`` (0.5 s by default), so a ``kill -9`` loses at most the last second; on
restart ``SessionStore.open`` resumes the same file and ``last_counter`` tells the link where
to ask the straps to backfill from. Samples are keyed by (role, counter) and inserted with
``INSERT OR IGNORE``: a backfill that overlaps what is stored is harmless.

Opening never changes a file that is not a breathsync session: the file is checked (schema
version, every table and column) before WAL mode is switched on. ``open(path, read_only=True)``
is for readers (exports, report, replay): it changes nothing at all, not even by leaving WAL
side files behind. Everything read back is checked at this boundary, so a damaged session
(a table dropped, JSON or numbers overwritten) is one ``StoreError`` naming the file and the
damage, never a traceback in whichever consumer happens to touch it first.

Modules: ``schema`` (the tables), ``session_store`` (``SessionStore``), ``records`` (what reads hand
back), ``errors`` (``StoreError``), ``files`` (side files, the recording run's lock).
"""

from .errors import SaveFailed, StoreError
from .files import SessionLock, last_written_unix_s, remove_session_files
from .records import (
    ArrivalData,
    BreathEventRecord,
    LateData,
    SampleSeries,
    StoredEvent,
    StoredNudge,
    StoredState,
    StrapInfo,
    battery_level_pct,
    mute_duration_s,
)
from .schema import SAMPLE_MAX, SCHEMA_VERSION
from .session_store import SessionStore

__all__ = [
    "SAMPLE_MAX",
    "SCHEMA_VERSION",
    "ArrivalData",
    "BreathEventRecord",
    "LateData",
    "SampleSeries",
    "SaveFailed",
    "SessionLock",
    "SessionStore",
    "StoreError",
    "StoredEvent",
    "StoredNudge",
    "StoredState",
    "StrapInfo",
    "battery_level_pct",
    "last_written_unix_s",
    "mute_duration_s",
    "remove_session_files",
]
