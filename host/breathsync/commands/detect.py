"""breathsync detect: simulate the strap on a recording and print its breath events."""

from __future__ import annotations

import argparse
import json
import sys

from ..detector import STRAP_RATES_HZ
from ..recording import read_column
from ..strap_sim import detect_breaths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="CSV or CSV.gz recording with a header row")
    parser.add_argument("--rate", type=float, required=True, metavar="HZ", help="sampling rate of the input")
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
    signal = read_column(args.input, args.column)
    breaths = detect_breaths(signal, args.rate, args.strap_rate, args.interpreter)
    out = sys.stdout
    for breath in breaths:
        out.write(json.dumps(breath.as_json_dict()) + "\n")
    out.flush()
    return 0
