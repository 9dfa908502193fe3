"""What this test process holds open (Linux /proc): a leaked file handle is a real, observable bug."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def open_descriptors(path: Path) -> int:
    """This process's open file descriptors on ``path``."""
    target = str(path.resolve())
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            count += os.readlink(fd) == target
    return count
