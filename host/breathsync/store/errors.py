"""The store's one error (a breathsync InputError) and how SQLite's storage failures become it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError


class StoreError(InputError):
    """The session file is missing, not a breathsync session, damaged, or unwritable."""


def storage_failure(exc: sqlite3.Error) -> bool:
    """The file system or the file let SQLite down (full, I/O error, read-only, locked, damaged);
    not a programming error such as a closed connection or a value SQLite cannot bind."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


KEPT_NOTE = "; what was saved before is kept"


class SaveFailed(StoreError):
    """Saving to an open session failed (a full disk): what was committed before stays readable and resumable.
    ``failure`` is the message without that note, for a caller that knows nothing had been saved."""

    def __init__(self, failure: str) -> None:
        super().__init__(failure + KEPT_NOTE)
        self.failure = failure


@contextmanager
def writing(path: Path, creating: bool = False) -> Iterator[None]:
    """SQLite's storage failures (a full disk, a vanished directory) as one StoreError naming the session:
    ``SaveFailed`` for a session that exists, a plain StoreError for one being created."""
    try:
        yield
    except sqlite3.Error as exc:
        if not storage_failure(exc):
            raise
        if creating:
            raise StoreError(f"{path}: cannot create the session ({exc})") from None
        raise SaveFailed(f"{path}: cannot save to the session ({exc})") from None
