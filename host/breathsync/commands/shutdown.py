"""Ending a long-running command cleanly: Ctrl-C, SIGTERM and a closed terminal set an event the command awaits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import sys

from ..cli import redirect_to_devnull


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT, SIGTERM or SIGHUP (where the loop supports signal handlers), so the command
    closes its links and files instead of dying mid-write.

    SIGHUP is what closing the terminal window sends: without a handler the process dies with its session
    unclosed, and the next run within the resume window would record the next client into it. A command
    started under ``nohup`` (SIGHUP ignored) keeps running, as asked."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        first = not stop.is_set()
        stop.set()  # first: a stderr that cannot be written (a closed pipe) must not keep the command going
        if first:  # say so at once: closing links can take a few seconds
            with contextlib.suppress(OSError, ValueError):
                print("\nstopping...", file=sys.stderr, flush=True)

    def on_hangup() -> None:
        # The terminal is gone: what the command prints there while closing (and its summary) has nowhere to go,
        # and a failed write must not turn a cleanly saved session into an error exit. Output redirected to a
        # file or a pipe (`run > run.log`) still works and keeps every line.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                # A character device: the hung-up terminal (isatty() itself fails on it by now). Files and
                # pipes are left alone.
                if stat.S_ISCHR(os.fstat(stream.fileno()).st_mode):
                    redirect_to_devnull(stream.fileno())
        on_signal()

    handlers = {signal.SIGINT: on_signal, signal.SIGTERM: on_signal}
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:
        handlers[hangup] = on_hangup
    for sig, handler in handlers.items():
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler)
    return stop
