"""Command line: a thin shell over importable code. Each command lives in ``commands/``.

Every error breathsync raises on purpose (``BreathsyncError``) is printed as one line on
stderr with exit status 2; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from importlib import import_module
from typing import Any, Protocol

from . import __version__
from .errors import BreathsyncError

# (command name, one-line help). Each command is the module of that name under breathsync.commands,
# defining add_arguments(parser) and run(args) -> int. Only the module of the command being run is
# imported: the live commands pull in the Bluetooth stacks (~0.5 s), which `replay` must not pay.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("calibrate", "record the therapist's own breathing (strap or recording) and save it as their baseline"),
    ("detect", "run the strap's breath detector on a recording; print JSON Lines, one event per line"),
    ("demo", "a whole virtual session (virtual straps, daemon, nudges, report) in under two minutes"),
    ("export", "export a stored session to CSV, EDF+ or BIDS physio (see docs/researcher-guide.md)"),
    (
        "replay",
        "replay two recordings through the straps and the entrainment engine, or re-run the engine on a stored "
        "session (JSON Lines)",
    ),
    ("report", "write a self-contained HTML report (plots embedded) and a PNG summary of a stored session"),
    ("run", "run a session: connect both straps, detect entrainment, nudge the therapist, record everything"),
    ("scan", "list straps in range (role, firmware, battery, RSSI)"),
    ("sim", "run virtual therapist + client straps (the real firmware) for another process to connect to"),
    ("stream", "stream live samples and breath events of one or two straps (terminal or CSV)"),
    ("strap", "show one strap's settings, or set its role, name or sampling rate, or make it buzz"),
)


class CommandModule(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (its default already prints usage + error)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _print_message(self, message: str, file: Any = None) -> None:  # argparse's SupportsWrite is typing-only
        # argparse swallows a failed write: `--help > /dev/full` exited 0 with nothing written. On standard output
        # it is raised here and reported like any output that cannot be written; a usage error on a failing (or
        # closed) standard error has nowhere to be said, as before.
        out = sys.stderr if file is None else file
        if not message or out is None:
            return
        try:
            out.write(message)
            out.flush()
        except (OSError, ValueError):  # ValueError: a closed stream
            if out is sys.stdout:
                raise


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; ``command``'s own options are added (and its module imported) only for it."""
    parser = _Parser(prog="breathsync", description="Breathing-synchrony biofeedback.")
    parser.add_argument("--version", action="version", version=f"breathsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_text in COMMANDS:
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module: CommandModule = import_module(f".commands.{name}", __package__)
            module.add_arguments(command_parser)
            command_parser.set_defaults(_run=module.run)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    """The command the arguments name (the first word that is not an option), if any."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in dict(COMMANDS) else None


def _negative_values_attached(argv: Sequence[str]) -> list[str]:
    """``--at -5:client:drop`` as ``--at=-5:client:drop``: argparse takes a word that starts with '-' and is not a
    plain number for an option, and said 'expected one argument' instead of the option's own range message."""
    out: list[str] = []
    for word in argv:
        if (
            out
            and out[-1].startswith("--")
            and len(out[-1]) > 2
            and "=" not in out[-1]
            and word[:2] in {f"-{d}" for d in "0123456789."}
        ):
            out[-1] = f"{out[-1]}={word}"
        else:
            out.append(word)
    return out


class _Terminated(SystemExit):
    """SIGTERM or SIGHUP (a closed terminal) during a command: unwound like Ctrl-C, so an export half written is
    removed (it was left in a hidden directory in --out) and files are closed. A SystemExit: asyncio passes those
    (and Ctrl-C's KeyboardInterrupt) on from a task or callback, where it keeps any other exception."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)  # the shell's code for a process ended by a signal
        self.signum = signum


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """While a command runs: SIGTERM, and SIGHUP unless ignored (``nohup``), raise ``_Terminated``. Commands that
    run an event loop put their own handlers in its place (``commands.shutdown``). The old handlers come back after."""

    def terminate(signum: int, _frame: object) -> None:
        raise _Terminated(signum)

    kept: dict[int, Any] = {}
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    for signum in (signal.SIGTERM, hangup):
        if signum is None or signal.getsignal(signum) is signal.SIG_IGN:
            continue
        with contextlib.suppress(ValueError):  # not the main thread: signals are not ours to handle
            kept[signum] = signal.signal(signum, terminate)
    try:
        yield
    finally:
        for signum, handler in kept.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    # Before numpy loads: its BLAS would start a worker thread per core, which only spins on arrays as small
    # as breathsync's (a replay burnt ~30 % more CPU than it used). A user's own setting is kept.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    arguments = _negative_values_attached(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_named(arguments))
    command = "breathsync"
    if sys.stdout is None:  # started with stdout closed (``>&-``): nothing could be printed, not even an error
        if sys.stderr is not None:
            print(f"{command}: standard output is closed (to discard the output: > /dev/null)", file=sys.stderr)
        return 2
    try:
        if not arguments:  # a bare `breathsync`: show what it can do
            parser.print_help(sys.stderr)
            return 2
        args = parser.parse_args(arguments)
        command = f"breathsync {args.command}"
        with _terminate_cleanly():
            result: int = args._run(args)
            sys.stdout.flush()  # here, not at exit: a full disk under `> file` is reported like any error
    except BreathsyncError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    except _Terminated as exc:
        return 128 + exc.signum
    except SystemExit:  # argparse's --help, --version and usage errors: their text must get out too
        if _stdout_broken():
            _silence_stdout()
            print(f"{command}: cannot write output", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): not an error
        _silence_stdout()
        return 0
    except OSError as exc:
        # Commands turn the errors of files they were given into InputError; what is left here is
        # mostly the output itself failing (a full disk under ``> file``, /dev/full).
        if exc.errno in _OUTPUT_ERRNOS or _stdout_broken():
            _silence_stdout()
            print(f"{command}: cannot write output: {exc.strerror or exc}", file=sys.stderr)
        else:
            print(f"{command}: {exc}", file=sys.stderr)
        return 2
    return result


# What writing to a full or failing disk raises. A failed write may leave nothing buffered, so a
# second flush can succeed: the errno tells more than retrying.
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG}


def _stdout_broken() -> bool:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        return True
    return False


def redirect_to_devnull(fd: int) -> None:
    """Point ``fd`` at /dev/null (an output with nowhere to go), so later writes and the final flush succeed."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail a second time."""
    with contextlib.suppress(OSError, ValueError):  # stdout closed or not a real file (tests): nothing to flush
        redirect_to_devnull(sys.stdout.fileno())


if __name__ == "__main__":
    raise SystemExit(main())
