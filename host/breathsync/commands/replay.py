"""breathsync replay: two recordings through the straps and the engine exactly as live; JSON Lines out."""

from __future__ import annotations

import argparse
import json
import sys

from ..detector import STRAP_RATES_HZ
from ..engine import Config, EntrainmentEngine, dyad_stream, load_config, run_engine
from ..errors import InputError
from ..recording import read_column

HELP = "replay a therapist and a client recording through the straps and the entrainment engine (JSON Lines)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--therapist", required=True, metavar="A.csv", help="therapist's recording (CSV/CSV.gz)")
    parser.add_argument("--client", required=True, metavar="B.csv", help="client's recording (CSV/CSV.gz)")
    parser.add_argument("--rate", type=float, required=True, metavar="HZ", help="sampling rate of both inputs")
    parser.add_argument("--column", default="resp", help="signal column in both files (default: resp)")
    parser.add_argument("--config", metavar="FILE", help="TOML file with [engine] and [policy] tables")
    parser.add_argument(
        "--strap-rate",
        type=int,
        default=25,
        choices=STRAP_RATES_HZ,
        metavar="HZ",
        help="the straps' sampling rate, 25 (default) or 50",
    )


def run(args: argparse.Namespace) -> int:
    if not args.rate > 0:
        raise InputError(f"--rate must be > 0 Hz (got {args.rate})")
    config = load_config(args.config) if args.config else Config()
    therapist = read_column(args.therapist, args.column)
    client = read_column(args.client, args.column)
    engine = EntrainmentEngine(config)
    out = sys.stdout
    for record in run_engine(dyad_stream(therapist, client, args.rate, args.strap_rate), engine):
        out.write(json.dumps(record.as_json_dict()) + "\n")
    out.flush()
    return 0
