"""breathsync stream: live samples and breath events of one or two straps, to the terminal or CSV."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from ..errors import InputError
from ..link.clock import steady_wall_clock
from ..link.session import LinkError
from ..link.sources import (
    ROLES,
    StrapLink,
    ble_adapter,
    close_links,
    find_by_roles,
    looking_for,
    open_link,
    open_sources,
    unless_stopped,
)
from ..link.stream import SampleBlock, StrapEvent
from ..protocol import StatusPacket
from ..roles import Role
from .arguments import file_path, seconds_or_forever
from .shutdown import stop_on_signals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ble", default="system", metavar="ADAPTER", help="system (default) or bumble:<transport>")
    for role in ROLES:
        parser.add_argument(
            f"--{role}",
            metavar="SOURCE",
            help=f"the {role}'s strap: ble:<address-or-name>, serial:<port>, replay:<session>, or 'auto' (by role)",
        )
    parser.add_argument("--csv", type=file_path, metavar="FILE", help="write every sample and event to FILE")
    parser.add_argument(
        "--seconds", type=seconds_or_forever, default=0, metavar="S", help="stop after S seconds (default: Ctrl-C)"
    )


CSV_HEADER = ("role", "kind", "counter", "host_t_s", "value")


def _cannot_write(path: Path, exc: OSError) -> InputError:
    return InputError(f"cannot write {path}: {exc.strerror or exc}")


def _refuse_to_overwrite_other_files(path: Path) -> None:
    """An earlier stream's CSV (or an empty file) may be replaced; anything else is some other data (a session
    store, a recording, the replayed session itself) that one mistyped --csv would destroy."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return
        with path.open("rb") as handle:
            first = handle.readline(256).rstrip(b"\r\n")
    except OSError:
        return  # unreadable: opening it for writing says why
    if first != ",".join(CSV_HEADER).encode():
        raise InputError(
            f"--csv {path}: exists and is not a breathsync stream CSV; not overwriting it "
            "(choose another file name, or remove it first)"
        )


class CsvOutput:
    """The --csv file, opened without truncating it: an existing file is only replaced once there is
    something to put in it (or the command ends normally), and a new file is removed again if the
    command fails before any data. Opening early still reports an unwritable path up front."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._existed = path.exists()
        _refuse_to_overwrite_other_files(path)
        try:
            self._file = path.open("a", newline="")
        except OSError as exc:
            raise _cannot_write(path, exc) from None
        self._writer: Any = None  # the csv module's writer type is not public
        # Rows come from link callbacks, whose libraries log and swallow what they raise: a write
        # failure (a full disk) is kept here and raised by the command's loop (``check``).
        self.failure: InputError | None = None

    def writerow(self, row: Sequence[object]) -> None:
        if self.failure is not None:
            return
        try:
            if self._writer is None:
                self._start()
            self._writer.writerow(row)
        except OSError as exc:
            self.failure = _cannot_write(self.path, exc)

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _start(self) -> None:
        if stat.S_ISREG(os.fstat(self._file.fileno()).st_mode):  # a pipe, terminal or /dev/null: nothing to cut
            self._file.seek(0)
            self._file.truncate()
        self._writer = csv.writer(self._file)
        self._writer.writerow(CSV_HEADER)

    def close(self, completed: bool) -> None:
        """``completed``: the command ended normally. Without data, a new file gets the header (it says:
        no data) and an existing file is left exactly as it was (Ctrl-C on a strap out of range)."""
        try:
            if completed and self._writer is None and not self._existed:
                self._start()
        except OSError as exc:
            self.failure = self.failure or _cannot_write(self.path, exc)
        finally:
            with contextlib.suppress(OSError):  # the data that fit is on disk; the failure is reported
                self._file.close()
            if self._writer is None and not self._existed:
                with contextlib.suppress(OSError):
                    self.path.unlink()


class Printer:
    """Terminal and/or CSV output; one summary line per strap per second, one line per event.

    Lines are written from the links' notification callbacks: a reader that went away (``| head``) must not
    raise there (each callback's traceback would be logged). The console then stays silent and ``console_gone``
    is set; the command ends unless it is still writing a CSV file.
    """

    def __init__(self, out: TextIO, writer: CsvOutput | None) -> None:
        self.out = out
        self.writer = writer
        self.counts: dict[str, int] = {}
        self.last_value: dict[str, int] = {}
        self.started = time.monotonic()
        self.console_gone = asyncio.Event()
        self.connected: set[str] = set()  # roles whose link connected at least once
        self.last_failure: dict[str, str] = {}  # each role's latest connect failure

    def _say(self, text: str) -> None:
        if self.console_gone.is_set():
            return
        try:
            self.out.write(text)
        except (OSError, ValueError):  # EPIPE / EIO, or a closed stream
            self.console_gone.set()

    def on_samples(self, block: SampleBlock) -> None:
        self.counts[block.role] = self.counts.get(block.role, 0) + len(block.values)
        self.last_value[block.role] = int(block.values[-1])
        if self.writer is not None:
            for c, t, v in zip(block.counters, block.host_t_s, block.values, strict=True):
                self.writer.writerow([block.role, "sample", int(c), f"{t:.4f}", int(v)])

    def on_event(self, event: StrapEvent) -> None:
        if self.writer is not None:
            self.writer.writerow([event.role, event.kind, event.counter, f"{event.host_t_s:.4f}", event.depth_counts])
        # The strap's own units: depth in 14-bit counts, the interval since the last event of this kind in samples.
        self._say(
            f"{self._t():8.1f}s {event.role:<9} {event.kind:<6} depth {event.depth_counts:5d} counts, "
            f"interval {event.interval_samples} samples\n"
        )

    def on_status(self, role: str, status: StatusPacket) -> None:
        battery = "?" if status.battery_pct is None else f"{status.battery_pct}%"
        self._say(
            f"{self._t():8.1f}s {role:<9} status: {status.sensor_state.name.lower()}, {status.sample_rate_hz} Hz, "
            f"battery {battery}, buffer {status.buffer_fill_pct}%, dropped {status.dropped_samples}\n"
        )

    def on_link(self, role: str, kind: str, detail: str) -> None:
        if kind == "connected":
            self.connected.add(role)
        elif kind == "connect-failed":
            self.last_failure[role] = detail
        elif kind == "closed" and role not in self.connected:
            return  # a link that never opened is not 'closed': the command ends with why it never connected
        self._say(f"{self._t():8.1f}s {role:<9} link {kind} {detail}\n")

    def never_connected(self, sources: Mapping[Role, str], seconds: float) -> LinkError | None:
        """Why the command streamed nothing from a strap it was given, if it did not (exit 2, not 0)."""
        for role, source in sources.items():
            if role not in self.connected:
                why = self.last_failure.get(role) or f"not found in {seconds:.0f} s"
                return LinkError(f"the {role}'s strap ({source}) never connected: {why.removeprefix(f'{role}: ')}")
        return None

    def tick(self) -> None:
        parts = [f"{role} {n} samples (last {self.last_value.get(role, 0)})" for role, n in sorted(self.counts.items())]
        if parts:
            self._say(f"{self._t():8.1f}s " + "; ".join(parts) + "\n")
        if not self.console_gone.is_set():
            try:
                self.out.flush()
            except (OSError, ValueError):
                self.console_gone.set()

    def _t(self) -> float:
        return time.monotonic() - self.started


async def stream(args: argparse.Namespace, out: TextIO) -> int:
    sources: dict[Role, str] = {role: getattr(args, role) for role in ROLES if getattr(args, role)}
    if not sources:
        sources = dict.fromkeys(ROLES, "auto")
    stop = stop_on_signals()
    loop = asyncio.get_running_loop()
    # Everything that can fail without the radio fails before the CSV is touched.
    async with ble_adapter(args.ble) as options:
        printer = Printer(out, None)
        # Arrivals stamped on Unix time, as `breathsync run` stores them: a stream's CSV lines up with a stored
        # session or any other logger's file (without the wall clock's steps: link.clock.steady_wall_clock).
        clock = steady_wall_clock()
        opened = await open_sources(sources, printer, options, clock=clock)
        writer = None if args.csv is None else CsvOutput(args.csv)
        printer.writer = writer
        completed = False
        links: list[StrapLink] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            auto = [role for role, source in sources.items() if source == "auto"]
            if auto:
                # The search takes seconds: say so on stderr (stdout is the data) before the first line is due.
                print(looking_for(auto), file=sys.stderr)
                taken = [link.address for link in opened.values()]  # never the strap another role names
                found = await unless_stopped(find_by_roles(auto, options, taken=taken), stop)
                if found is None:  # Ctrl-C while searching: nothing to stream, and nothing wrong
                    links, completed = list(opened.values()), True  # the sources already opened are let go
                    return 0
                for role, strap in found.items():
                    opened[role] = open_link(f"ble:{strap.address}", role, printer, options, clock=clock)
            links = [opened[role] for role in sources]
            tasks = [asyncio.create_task(link.run()) for link in links]
            started = loop.time()
            deadline = None if not args.seconds else started + args.seconds
            while not stop.is_set() and (deadline is None or loop.time() < deadline):
                if printer.console_gone.is_set() and writer is None:
                    break  # the reader went away (`| head`) and there is no file to write: done
                if writer is not None:
                    writer.check()
                done = [t for t in tasks if t.done()]
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if len(done) == len(tasks):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                printer.tick()
            if writer is not None:
                writer.check()
            never = None if stop.is_set() else printer.never_connected(sources, loop.time() - started)
            if never is not None:  # (stopped by the user before a strap connected: their choice, not a failure)
                raise never
            completed = True
        finally:
            # One failed link must not leave the other running (and writing) while the error is shown.
            await close_links(links, tasks)
            if writer is not None:
                writer.close(completed)
        if writer is not None:
            writer.check()  # the last rows are written when the file closes
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(stream(args, sys.stdout))
    except LinkError as exc:
        raise InputError(str(exc)) from None
