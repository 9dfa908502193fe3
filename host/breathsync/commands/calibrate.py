"""breathsync calibrate: the therapist's own breathing before a session, saved for `run --therapist-baseline`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ..daemon.calibration import Calibration, calibrate_recording, calibrate_strap, check_calibration_seconds
from ..detector import STRAP_RATES_HZ
from ..engine.baseline_file import check_baseline_target, write_baseline
from ..errors import InputError
from ..link.ble import check_bluetooth
from ..link.session import LinkError
from ..link.sources import ble_adapter, check_source, needs_ble
from .arguments import file_path
from .recording_input import input_rate, read_strap_input
from .shutdown import stop_on_signals

DEFAULT_OUT = "therapist-baseline.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strap",
        metavar="SOURCE",
        help="the therapist's strap: ble:<address-or-name>, serial:<port> or 'auto' (the default: by role)",
    )
    parser.add_argument("--ble", default="system", metavar="ADAPTER", help="system (default) or bumble:<transport>")
    parser.add_argument("--recording", metavar="FILE", help="learn from a recording instead (CSV/CSV.gz)")
    parser.add_argument(
        "--rate", type=float, metavar="HZ", help="the recording's sampling rate (default: as its header states it)"
    )
    parser.add_argument("--column", help="signal column of the recording (default: resp)")
    parser.add_argument(
        "--strap-rate", type=int, default=25, choices=STRAP_RATES_HZ, metavar="HZ", help="strap rate, 25 or 50"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        metavar="S",
        help="how long to record, 30-3600 (strap: default 120, Ctrl-C ends early; recording: default all of it)",
    )
    parser.add_argument(
        "--out",
        type=file_path,
        default=Path(DEFAULT_OUT),
        metavar="FILE",
        help=f"where to save (default {DEFAULT_OUT})",
    )


async def _live(args: argparse.Namespace) -> Calibration:
    stop = stop_on_signals()
    seconds = 120.0 if args.seconds is None else args.seconds
    check_source(args.strap or "auto")  # a typo: one error line, no instructions first
    async with ble_adapter(args.ble) as options:
        if needs_ble(args.strap or "auto"):
            await check_bluetooth(options)  # no adapter: one error line, no instructions first
        print(f"calibrating for {seconds:.0f} s: sit quietly and breathe as you normally do", flush=True)
        return await calibrate_strap(
            args.strap or "auto",
            options,
            seconds,
            args.strap_rate,
            progress=lambda line: print(line, flush=True),
            stop=stop,
        )


def run(args: argparse.Namespace) -> int:
    if args.seconds is not None:
        check_calibration_seconds(args.seconds)  # before anything is printed or opened
    check_baseline_target(args.out)  # before minutes of calibration, not after
    if args.recording is not None:
        if args.strap:
            raise InputError("give either --strap or --recording, not both")
        if not args.recording:
            raise InputError("--recording needs a file name")
        rate_hz = input_rate(args.recording, args.rate)
        strap_input = read_strap_input(
            args.recording, args.column or "resp", rate_hz, "the", "calibrate", args.strap_rate
        )
        result = calibrate_recording(
            strap_input.signal, rate_hz, args.strap_rate, args.seconds, args.recording, strap_input.dropouts_s
        )
        if args.seconds is not None and result.duration_s < args.seconds - 1.0:
            print(
                f"breathsync calibrate: note: the recording has only {result.duration_s:.0f} s; used all of it",
                file=sys.stderr,
            )
    else:
        if args.rate is not None:
            raise InputError("--rate belongs to --recording (a strap's rate is --strap-rate)")
        if args.column is not None:  # was ignored without a word (an input review)
            raise InputError("--column belongs to --recording (a strap sends one signal)")
        try:
            result = asyncio.run(_live(args))
        except LinkError as exc:
            raise InputError(str(exc)) from None
    write_baseline(args.out, result.baseline, result.source, result.duration_s)
    b = result.baseline
    print(
        f"baseline: {b.rate_bpm:.1f} breaths/min (SD {b.rate_sd_bpm:.1f}), depth {b.depth:.3g}, "
        f"{b.n_breaths} breaths over {result.duration_s:.0f} s -> {args.out}",
        file=sys.stdout,
    )
    return 0
