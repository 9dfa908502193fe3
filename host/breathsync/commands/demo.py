"""breathsync demo: the strap's detector on bundled real recordings, with a readable summary.

This is the foundation-stage demo: it simulates one strap per bundled recording (ADC + the
firmware detector, in the MicroPython unix port when it is installed) and scores the breaths
it finds against the two human annotators. Later stages grow it into a full virtual session.
"""

from __future__ import annotations

import argparse
import statistics
import time

from ..datasets import BIDMC_RATE_HZ, BUNDLED_BIDMC_RECORDS, bundled_path, read_breath_annotations
from ..detector import Interpreter, micropython_executable
from ..evaluation import match_events
from ..recording import read_column
from ..strap_sim import detect_breaths

HELP = "run the strap's breath detector on bundled recordings and print a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strap-rate", type=int, default=25, choices=(25, 50), metavar="HZ")


def run(args: argparse.Namespace) -> int:
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
