"""Ending a long-running command cleanly: Ctrl-C and SIGTERM set an event the command awaits."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (where the loop supports signal handlers), so the command
    closes its links and files instead of dying mid-write."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        first = not stop.is_set()
        stop.set()  # first: a stderr that cannot be written (a closed pipe) must not keep the command going
        if first:  # say so at once: closing links can take a few seconds
            with contextlib.suppress(OSError, ValueError):
                print("\nstopping...", file=sys.stderr, flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    return stop
