"""breathsync replay: two recordings through the straps and the engine exactly as live; JSON Lines out."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..detector import STRAP_RATES_HZ
from ..engine import Config, EntrainmentEngine, StreamItem, dyad_stream, load_config, run_engine
from ..engine.baseline_file import read_baseline
from ..errors import InputError
from ..recording import read_column

if TYPE_CHECKING:
    from ..store import SessionStore

HELP = (
    "replay two recordings through the straps and the entrainment engine, or re-run the engine on a stored "
    "session (JSON Lines)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "session", nargs="?", metavar="SESSION", help="a stored session (.sqlite) to re-run the engine on"
    )
    parser.add_argument("--therapist", metavar="A.csv", help="therapist's recording (CSV/CSV.gz)")
    parser.add_argument("--client", metavar="B.csv", help="client's recording (CSV/CSV.gz)")
    parser.add_argument("--rate", type=float, metavar="HZ", help="sampling rate of both inputs")
    parser.add_argument("--column", default="resp", help="signal column in both files (default: resp)")
    parser.add_argument("--config", metavar="FILE", help="TOML file with [engine] and [policy] tables")
    parser.add_argument(
        "--therapist-baseline",
        metavar="FILE",
        help="the therapist's pre-session baseline (breathsync calibrate); a SESSION uses the one it was run with",
    )
    parser.add_argument(
        "--strap-rate",
        type=int,
        default=25,
        choices=STRAP_RATES_HZ,
        metavar="HZ",
        help="the straps' sampling rate, 25 (default) or 50",
    )


def _open_session(path: str) -> SessionStore:
    from ..store import SessionStore, StoreError

    try:
        return SessionStore.open(path)
    except StoreError as exc:
        raise InputError(str(exc)) from None


def _session_stream(store: SessionStore) -> Iterator[StreamItem]:
    from ..daemon.rebuild import session_rate_hz, session_t0_s, stored_stream

    with store:
        yield from stored_stream(store, session_t0_s(store), session_rate_hz(store))


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else Config()
    baseline = read_baseline(args.therapist_baseline) if args.therapist_baseline else None
    if args.session:
        if args.therapist or args.client or args.rate is not None:
            raise InputError("give either a SESSION or --therapist/--client/--rate, not both")
        from ..daemon.rebuild import stored_baseline

        store = _open_session(args.session)
        try:
            baseline = baseline or stored_baseline(store)
        except InputError:
            store.close()
            raise
        stream = _session_stream(store)
    else:
        if not (args.therapist and args.client and args.rate is not None):
            raise InputError("need a SESSION, or all of --therapist A.csv --client B.csv --rate HZ")
        if not args.rate > 0:
            raise InputError(f"--rate must be > 0 Hz (got {args.rate})")
        therapist = read_column(args.therapist, args.column)
        client = read_column(args.client, args.column)
        stream = dyad_stream(therapist, client, args.rate, args.strap_rate)
    engine = EntrainmentEngine(config, baseline)
    out = sys.stdout
    for record in run_engine(stream, engine):
        out.write(json.dumps(record.as_json_dict()) + "\n")
    out.flush()
    return 0
