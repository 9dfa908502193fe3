"""A session file among files: its side files, when it last changed, and the lock of the run recording it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import StoreError

if sys.platform != "win32":
    import fcntl


def remove_session_files(path: Path) -> None:
    """Delete a session file with the -wal/-shm files SQLite keeps beside it (for sessions that hold nothing)."""
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)


def last_written_unix_s(path: Path) -> float:
    """When a session file (or the write-ahead log beside it, where SQLite writes first) last changed."""
    times = [f.stat().st_mtime for f in (path, path.with_name(path.name + "-wal")) if f.exists()]
    return max(times, default=0.0)


class SessionLock:
    """Held by the run recording a session (an advisory ``flock`` on the session file itself), so a second
    ``breathsync run`` can neither resume a live session nor mark it closed under the first. The kernel
    drops the lock with its process: a crashed run's session is free to resume. (SQLite's own locks are
    POSIX record locks, independent of ``flock``; the descriptor is closed only after the store is.)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @staticmethod
    def held(path: Path) -> bool:
        """Whether another process records ``path`` now."""
        if not path.is_file():
            return False
        probe = SessionLock(path)
        try:
            probe.acquire()
        except StoreError:
            return True
        probe.release()
        return False

    def acquire(self) -> SessionLock:
        if sys.platform == "win32":  # no flock there: nothing is held
            return self
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{self.path}: another breathsync run is recording this session") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
