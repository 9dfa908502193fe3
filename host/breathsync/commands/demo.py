"""breathsync demo: a whole virtual session, end to end, in under two minutes (``make demo``).

Two virtual straps (the real firmware in MicroPython over a virtual BLE controller) play real
recordings with a scripted episode in which the therapist starts following the client; the
real daemon runs against them, nudges, stores the session and writes the report.

Where the MicroPython unix port cannot be installed, the demo says so and falls back to the
strap's breath detector on the bundled recordings (CPython), scored against human annotators.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ..datasets import BIDMC_RATE_HZ, BUNDLED_BIDMC_RECORDS, bundled_path, read_breath_annotations
from ..detector import Interpreter, micropython_executable
from ..errors import InputError
from ..evaluation import match_events
from ..recording import read_column
from ..small_files import expanded
from ..strap_sim import detect_breaths
from .shutdown import stop_on_signals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sessions",
        default="demo-sessions",
        metavar="DIR",
        help="where the demo session and its report go (default: ./demo-sessions)",
    )
    parser.add_argument(
        "--speed", type=float, default=5.0, metavar="X", help="session time per real second, 1-8 (default 5)"
    )
    parser.add_argument(
        "--detector-only", action="store_true", help="only run the strap's detector on the bundled recordings"
    )
    parser.add_argument(
        "--strap-rate",
        type=int,
        default=25,
        choices=(25, 50),
        metavar="HZ",
        help="the virtual straps' sampling rate, 25 (default) or 50",
    )


def run(args: argparse.Namespace) -> int:
    if not 1.0 <= args.speed <= 8.0:
        raise InputError(f"--speed must be within 1..8 (got {args.speed})")
    if not args.sessions.strip():
        raise InputError("--sessions: empty directory name")
    sessions = expanded(args.sessions)
    if sessions.exists() and not sessions.is_dir():  # before the banners, not after
        raise InputError(f"--sessions {args.sessions}: not a directory")
    from ..sim import micropython_unavailable_reason

    reason = micropython_unavailable_reason()
    if args.detector_only or reason is not None:
        if reason is not None:
            print(f"virtual straps unavailable ({reason}); showing the strap's detector instead\n")
        return detector_summary(args)
    args.sessions = _writable_directory(sessions)
    return virtual_session(args)


def _writable_directory(sessions: Path) -> Path:
    """``sessions``, made if need be and checked writable before the banners and the straps' boot, not after the
    whole demo (the session is created there only once the straps stream)."""
    try:
        sessions.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=sessions):
            pass
    except OSError as exc:
        raise InputError(f"--sessions {sessions}: cannot write there ({exc.strerror or exc})") from None
    return sessions


def virtual_session(args: argparse.Namespace) -> int:
    from ..demo import DemoResult, run_demo

    async def demo() -> DemoResult:  # Ctrl-C, SIGTERM or a closed terminal end it with what was recorded
        return await run_demo(sys.stdout, args.sessions, args.speed, stop=stop_on_signals())

    result = asyncio.run(demo())
    scenario = result.scenario
    onset = scenario.onset_s or 0.0
    print()
    print(f"scripted episode: the therapist follows the client from {onset:.0f} s to {scenario.offset_s or 0:.0f} s")
    if result.stopped_early:
        print(f"stopped early, {result.session_s:.0f} s into the session: what was recorded is kept")
    if result.nudge_times_s:
        first = result.nudge_times_s[0]
        print(
            f"nudges at {', '.join(f'{t:.0f} s' for t in result.nudge_times_s)} "
            f"(first {first - onset:.0f} s after the episode began)"
        )
    else:
        print("no nudge was given in this run")
    print(f"session: {result.session}")
    print(f"report:  {result.report}")
    print(f"summary: {result.summary_png}")
    print(f"done in {result.wall_s:.0f} s")
    return 130 if result.stopped_early else 0


def detector_summary(args: argparse.Namespace) -> int:
    interpreter: Interpreter = "micropython" if micropython_executable() else "cpython"
    where = "MicroPython unix port" if interpreter == "micropython" else "CPython (no MicroPython)"
    print(f"breathsync demo: simulated strap at {args.strap_rate} Hz, firmware detector on {where}")
    print()
    header = f"{'record':<10} {'breaths':>7} {'rate/min':>8} {'F1 ann1':>8} {'F1 ann2':>8} {'delay s':>8}"
    print(header)
    print("-" * len(header))
    started = time.perf_counter()
    for record in BUNDLED_BIDMC_RECORDS:
        signal = read_column(bundled_path(f"{record}_resp.csv.gz"))
        marks = read_breath_annotations(bundled_path(f"{record}_breaths.csv.gz"))
        breaths = detect_breaths(signal, BIDMC_RATE_HZ, args.strap_rate, interpreter)
        peaks = [b for b in breaths if b.kind == "peak"]
        peak_times = [b.t_s for b in peaks]
        duration_min = len(signal) / BIDMC_RATE_HZ / 60
        f1 = [match_events(peak_times, marks[name] / BIDMC_RATE_HZ, 0.5).f1 for name in ("ann1", "ann2")]
        delay = statistics.median(b.reported_t_s - b.t_s for b in peaks) if peaks else float("nan")
        print(
            f"{record:<10} {len(peaks):>7} {len(peaks) / duration_min:>8.1f} {f1[0]:>8.3f} {f1[1]:>8.3f} {delay:>8.2f}"
        )
    print()
    print("F1: breath peaks matched one-to-one to annotators' marks within 0.5 s.")
    print("delay: median time from end of inhalation to the strap's report.")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
