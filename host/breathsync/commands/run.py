"""breathsync run: the session daemon. Finds both straps, runs the engine, nudges, records."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import shlex
import sys

from ..daemon import Daemon, SessionSummary, load_daemon_config
from ..daemon.config import check_session_name
from ..errors import InputError
from .shutdown import stop_on_signals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (every setting has a default)")
    parser.add_argument("--ble", metavar="ADAPTER", help="override straps.ble (system or bumble:<transport>)")
    parser.add_argument("--therapist", metavar="SOURCE", help="override straps.therapist")
    parser.add_argument("--client", metavar="SOURCE", help="override straps.client")
    parser.add_argument("--sessions", metavar="DIR", help="override session.directory")
    parser.add_argument(
        "--name", metavar="SESSION", help="override session.name: record into (or continue) this session"
    )
    parser.add_argument("--no-lsl", action="store_true", help="do not open LSL outlets")
    parser.add_argument(
        "--therapist-baseline",
        metavar="FILE",
        help="override session.therapist_baseline: the file `breathsync calibrate` wrote",
    )


async def run_daemon(args: argparse.Namespace) -> SessionSummary:
    config = load_daemon_config(args.config)
    straps = config.straps
    for name in ("ble", "therapist", "client"):
        value = getattr(args, name)
        if value:
            straps = dataclasses.replace(straps, **{name: value})
    session = config.session
    if args.sessions is not None:
        if not args.sessions.strip():
            raise InputError("--sessions: empty directory name")
        session = dataclasses.replace(session, directory=args.sessions)
    if args.name is not None:
        if not args.name.strip():
            raise InputError("--name: empty session name")
        check_session_name(args.name, "--name")
        session = dataclasses.replace(session, name=args.name)
    if args.therapist_baseline:
        session = dataclasses.replace(session, therapist_baseline=args.therapist_baseline)
    outputs = dataclasses.replace(config.outputs, lsl=config.outputs.lsl and not args.no_lsl)
    config = dataclasses.replace(config, straps=straps, session=session, outputs=outputs)
    stop = stop_on_signals()
    loop = asyncio.get_running_loop()
    daemon = Daemon(config, sys.stdout)
    if sys.stdin.isatty():
        # Keys while the session runs: m + Enter mutes nudges (mirroring on purpose; again: unmutes), q + Enter ends.
        def on_key() -> None:
            try:
                raw = sys.stdin.readline()
            except (OSError, ValueError):  # the terminal hung up (EIO)
                raw = ""
            if not raw:  # end of input (Ctrl-D, a closed terminal): stop listening, or this fires forever
                loop.remove_reader(sys.stdin.fileno())
                return
            line = raw.strip().lower()
            if line == "m":
                daemon.mute()
            elif line == "q":
                stop.set()

        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_reader(sys.stdin.fileno(), on_key)
    return await daemon.run(stop)


def run(args: argparse.Namespace) -> int:
    summary = asyncio.run(run_daemon(args))
    minutes = summary.duration_s / 60
    samples = ", ".join(f"{role} {n}" for role, n in summary.samples.items())
    if not summary.kept:
        print("\nstopped before either strap sent data: no session kept")
        return 0
    print(f"\nsession saved: {summary.path}")
    print(f"{minutes:.1f} min, samples: {samples}; nudges: {summary.nudges} ({summary.nudges_confirmed} confirmed)")
    print(f"its report: breathsync report {shlex.quote(str(summary.path))}")
    return 0
