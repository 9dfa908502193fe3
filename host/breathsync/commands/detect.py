"""breathsync detect: simulate the strap on a recording and print its breath events."""

from __future__ import annotations

import argparse
import json
import sys

from ..detector import STRAP_RATES_HZ, TimedBreath
from ..engine.replay import reportable
from ..strap_sim import detect_breaths
from .recording_input import input_rate, read_strap_input


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="CSV or CSV.gz recording with a header row")
    parser.add_argument(
        "--rate",
        type=float,
        metavar="HZ",
        help="sampling rate of the input (default: the rate its own header states, as OpenSignals exports do)",
    )
    parser.add_argument("--column", default="resp", help="signal column (default: resp)")
    parser.add_argument(
        "--strap-rate",
        type=int,
        default=25,
        choices=STRAP_RATES_HZ,
        metavar="HZ",
        help="the strap's sampling rate, 25 (default) or 50",
    )
    parser.add_argument(
        "--interpreter",
        choices=("cpython", "micropython"),
        default="cpython",
        help="run the firmware core here (cpython) or in the MicroPython unix port",
    )


def run(args: argparse.Namespace) -> int:
    rate_hz = input_rate(args.input, args.rate)
    strap_input = read_strap_input(args.input, args.column, rate_hz, "the", "detect", args.strap_rate)
    breaths = detect_breaths(strap_input.signal, rate_hz, args.strap_rate, args.interpreter, strap_input.strap)
    out = sys.stdout
    kept = outside_dropouts(breaths, strap_input.dropouts_s)
    for breath in kept:
        out.write(json.dumps(breath.as_json_dict()) + "\n")
    out.flush()
    if not kept:
        print(
            "breathsync detect: note: no breaths found (a flat signal, or a wrong --rate or --column?)", file=sys.stderr
        )
    return 0


def outside_dropouts(breaths: list[TimedBreath], dropouts_s: tuple[tuple[float, float], ...]) -> list[TimedBreath]:
    """The breaths a strap could have reported from a recording with drop-outs, as ``replay`` has them."""
    return [real for real in (reportable(breath, dropouts_s) for breath in breaths) if real is not None]
