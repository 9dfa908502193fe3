"""Which session file a run records into: a new one, or the unfinished one a crash left behind."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..small_files import expanded
from ..store import SessionLock, SessionStore, last_written_unix_s
from .config import DaemonConfig

RESUME_WITHIN_S = 15 * 60.0  # an unfinished session is a crash to resume only if written this recently


@dataclass(frozen=True)
class SessionChoice:
    path: Path
    resumed: bool
    note: str = ""  # why an unfinished session was not resumed


def session_path(config: DaemonConfig, now: dt.datetime | None = None) -> SessionChoice:
    """The session file to use and whether it resumes an unfinished one.

    Only the newest session is resumed, only if it was not closed, is not being recorded by another run
    (``SessionLock``) and was written within ``RESUME_WITHIN_S``: a session that crashed yesterday belongs
    to yesterday's client, and appending today's (with yesterday's baselines) would mix two people."""
    directory = expanded(config.session.directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"sessions folder {directory}: not a directory (it is an existing file)")
    if config.session.name:
        path = directory / f"{config.session.name.removesuffix('.sqlite')}.sqlite"  # 'x' and 'x.sqlite' alike
        if SessionLock.held(path):
            raise InputError(f"session {path} is being recorded by another breathsync run")
        return SessionChoice(path, path.exists())
    clock = now or dt.datetime.now()
    fresh = directory / f"{clock.strftime('%Y-%m-%dT%H-%M-%S')}.sqlite"
    if config.session.resume and directory.is_dir():
        for candidate in sorted(directory.glob("*.sqlite"), key=last_written_unix_s, reverse=True):
            if SessionLock.held(candidate):
                return SessionChoice(fresh, False, f"{candidate.name} is being recorded by another run")
            with contextlib.suppress(Exception), SessionStore.open(candidate, read_only=True) as store:
                if store.meta("closed") != "1":
                    idle_s = clock.timestamp() - last_written_unix_s(candidate)
                    if idle_s <= RESUME_WITHIN_S:
                        return SessionChoice(candidate, True)
                    return SessionChoice(
                        fresh,
                        False,
                        f"{candidate.name} ended without closing {idle_s / 60:.0f} min ago (a crash is resumed within "
                        f"{RESUME_WITHIN_S / 60:.0f} min; `--name {candidate.stem}` continues it)",
                    )
            break  # only the newest session may be resumed
    return SessionChoice(fresh, False)
