"""Writing research outputs all or nothing.

An export or a report is several files. Written in place, a failure half-way (a name taken by
a directory, a full disk, a damaged session found late) would leave some new files beside old
ones, or a truncated file over a good one. So every output is first written into a hidden
staging directory inside the output directory (same file system: moving is a rename), the
targets are checked, and only then is each file renamed into place. On failure the staging
directory and any directory this run created are removed; files the run did not create are
never deleted, and an earlier output of the same name stays as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import InputError

STAGING_PREFIX = ".breathsync-partial-"


def out_dir_option(value: str | None, option: str = "--out") -> Path | None:
    """``--out`` as given on the command line: None = the default; checked before any work is done."""
    if value is None:
        return None
    if not value.strip():
        raise InputError(f"{option} is empty: give a directory, or leave {option} out for the default")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: not a directory (it is an existing file)")
    return path


def make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and missing parents; returns the directories created, outermost first."""
    missing: list[Path] = []
    existing = path
    while not existing.exists() and not existing.is_symlink():
        missing.append(existing)
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{path}: cannot be an output directory ({existing} is not a directory)")
    created: list[Path] = []
    try:
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:
                if not directory.is_dir():
                    raise
                continue  # another export made it meanwhile (exports in parallel): theirs, not ours to remove
            created.append(directory)
    except OSError as exc:
        remove_empty_dirs(created)
        raise InputError(f"{path}: cannot create output directory ({exc.strerror or exc})") from None
    return created


def remove_empty_dirs(created: Sequence[Path]) -> None:
    """Undo ``make_dirs``: innermost first, and only directories that are still empty."""
    for directory in reversed(created):
        # Not empty (someone else's files) or already gone: leave it.
        with contextlib.suppress(OSError):
            directory.rmdir()


def _check_target(out_dir: Path, target: Path, ours: Callable[[Path], bool] | None = None) -> None:
    """Fail before anything is moved if a target or a directory on its way is the wrong kind of thing, or (with
    ``ours``) an existing file that ``ours`` does not recognise as an earlier output of the same session."""
    for parent in reversed(target.relative_to(out_dir).parents[:-1]):
        place = out_dir / parent
        if place.exists() and not place.is_dir():
            raise InputError(f"{place}: is a file, cannot create the directory {parent} of the output there")
    if target.is_dir():
        raise InputError(f"{target}: is a directory, cannot write the output file there")
    if _is_sqlite(target):  # a session renamed x.edf, exported to EDF beside itself, was replaced by its export
        raise InputError(f"{target}: is a SQLite database (a stored session?), not overwritten; choose another --out")
    if ours is not None and (target.exists() or target.is_symlink()) and not ours(target):
        # A review: a user's own events.csv or notes in session.json, or a second session's CSV export, were
        # replaced without a word. An earlier output of this session is what may be replaced.
        raise InputError(
            f"{target}: exists and is not an earlier output of this session; not overwritten (choose another "
            "--out, or move it)"
        )


def _is_sqlite(path: Path) -> bool:
    # Absent, a pipe or not ours to read reads as empty: the move says so if it matters.
    return file_head(path, len(SQLITE_MAGIC)) == SQLITE_MAGIC


SQLITE_MAGIC = b"SQLite format 3\x00"


def write_all_or_nothing(
    out_dir: Path, write: Callable[[Path], Sequence[Path]], ours: Callable[[Path], bool] | None = None
) -> list[Path]:
    """Call ``write(staging_dir)``, which writes files there and returns them; move them into ``out_dir``.
    ``ours``: whether an existing target is an earlier output of the same session (only those are replaced).

    Returns the final paths in the order ``write`` returned them. Raises ``InputError`` for an
    unusable output directory or target (OSError while writing included); the output directory
    then holds exactly what it held before (files replaced earlier in a failed move aside).
    """
    created = make_dirs(out_dir)
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    except OSError as exc:
        remove_empty_dirs(created)
        raise InputError(f"{out_dir}: cannot write into the output directory ({exc.strerror or exc})") from None
    new_files: list[Path] = []
    done = False
    try:
        staged = list(write(staging))
        finals = [out_dir / p.relative_to(staging) for p in staged]
        for final in finals:
            _check_target(out_dir, final, ours)
        for source, final in zip(staged, finals, strict=True):
            created += make_dirs(final.parent)
            existed = final.exists()
            os.replace(source, final)
            if not existed:
                new_files.append(final)
        done = True
        return finals
    except OSError as exc:
        where = exc.filename if isinstance(exc.filename, str) else str(out_dir)
        where = where.replace(str(staging), str(out_dir))  # name the output, not the hidden staging dir
        raise InputError(f"{where}: cannot write output ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            for file in new_files:
                file.unlink(missing_ok=True)
            remove_empty_dirs(created)


def file_head(path: Path, size: int = 4096) -> bytes:
    """The first ``size`` bytes of ``path`` (empty when it is not a regular file or cannot be read: a pipe, opened,
    would wait for a writer for ever)."""
    if not path.is_file():
        return b""
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError:
        return b""
