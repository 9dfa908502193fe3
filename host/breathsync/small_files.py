"""Small files the user names (a config, a baseline), read whole and checked first: a device named by mistake
(``/dev/zero``) is refused rather than read until memory runs out, and nothing is read past a size limit. A pipe is
read (``--config <(...)``), up to the limit; an output is never a pipe (``--out /dev/stdout`` read the command's own
output, to see whether it held a baseline, and waited for ever)."""

from __future__ import annotations

import stat
from pathlib import Path

from .errors import InputError


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def expanded(path: str | Path) -> Path:
    """``path`` with a leading ``~`` or ``~user`` made the home folder; ``InputError`` for a user with none."""
    try:
        return Path(path).expanduser()
    except RuntimeError:  # ~nobody-here
        raise InputError(f"{path}: no home folder for {str(path).split('/')[0]!r}") from None


def not_a_regular_file(path: Path) -> str | None:
    """What ``path`` is when it exists and is not a regular file (following links), else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else _kind(mode)


def read_small_file(path: str | Path, max_bytes: int, what: str) -> bytes:
    """The bytes of the file (or pipe) at ``path``, at most ``max_bytes`` of them; ``InputError`` (one line) when it
    is missing, unreadable, a directory, device or socket, or larger (then it is not a ``what``)."""
    path = Path(path)
    kind = not_a_regular_file(path)
    if kind is not None and kind != "a pipe":
        raise InputError(f"{path}: {kind}, not a {what}")
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > max_bytes:
        raise InputError(f"{path}: larger than {max_bytes // 1024} KB, not a {what}")
    return data
