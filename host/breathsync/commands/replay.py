"""breathsync replay: two recordings through the straps and the engine exactly as live; JSON Lines out."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..adc import StrapSignal
from ..detector import STRAP_RATES_HZ
from ..engine import (
    Config,
    EntrainmentEngine,
    Role,
    StrapBlock,
    StrapBreath,
    StreamItem,
    dyad_stream,
    load_config,
    run_engine,
)
from ..engine.config import stored_config
from ..errors import InputError
from ..quantiles import small_median
from ..recording import FloatArray
from .recording_input import input_rate, read_strap_input

if TYPE_CHECKING:
    from ..store import SessionStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "session", nargs="?", metavar="SESSION", help="a stored session (.sqlite) to re-run the engine on"
    )
    parser.add_argument("--therapist", metavar="A.csv", help="therapist's recording (CSV/CSV.gz)")
    parser.add_argument("--client", metavar="B.csv", help="client's recording (CSV/CSV.gz)")
    parser.add_argument(
        "--rate",
        type=float,
        metavar="HZ",
        help="sampling rate of both inputs (default: the rate a file's own header states, as OpenSignals exports do)",
    )
    parser.add_argument(
        "--therapist-rate", type=float, metavar="HZ", help="the therapist's file's sampling rate (over --rate)"
    )
    parser.add_argument(
        "--client-rate", type=float, metavar="HZ", help="the client's file's sampling rate (over --rate)"
    )
    parser.add_argument("--column", help="signal column in both files (default: resp)")
    parser.add_argument(
        "--therapist-column", metavar="NAME", help="the therapist's file's signal column (over --column)"
    )
    parser.add_argument("--client-column", metavar="NAME", help="the client's file's signal column (over --column)")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with [engine] and [policy] tables (a SESSION: instead of the settings it was run with)",
    )
    parser.add_argument(
        "--therapist-baseline",
        metavar="FILE",
        help="the therapist's pre-session baseline (breathsync calibrate); a SESSION uses the one it was run with",
    )
    parser.add_argument(
        "--include-late",
        action="store_true",
        help="a SESSION: also what its straps sent again after drop-outs (kept, but the live engine never saw it), "
        "and what a stalled radio held up, where it was measured: as if everything had come in time",
    )
    parser.add_argument(
        "--strap-rate",
        type=int,
        choices=STRAP_RATES_HZ,
        metavar="HZ",
        help="the straps' sampling rate, 25 (default) or 50",
    )


def _open_session(path: str) -> SessionStore:
    from ..store import SessionStore, StoreError

    try:
        return SessionStore.open(path, read_only=True)
    except StoreError as exc:
        raise InputError(str(exc)) from None


def _session_stream(store: SessionStore, include_late: bool) -> Iterator[StreamItem]:
    from ..daemon.rebuild import session_rate_hz, session_t0_s, stored_stream

    with store:
        yield from stored_stream(store, session_t0_s(store), session_rate_hz(store), include_late)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else Config()
    config_notes: list[str] = []
    file_rates_hz: dict[Role, float] = {}  # recordings' sampling rates (none for a session)
    baseline = None
    if args.therapist_baseline:
        from ..engine.baseline_file import read_baseline  # here: most replays have no baseline file

        baseline = read_baseline(args.therapist_baseline)
    if args.include_late and not args.session:
        raise InputError("--include-late is for a SESSION (recordings have no drop-outs the straps filled in later)")
    if args.session:
        if (
            args.therapist
            or args.client
            or any(r is not None for r in (args.rate, args.therapist_rate, args.client_rate))
        ):
            raise InputError("give either a SESSION or --therapist/--client/--rate, not both")
        if any(x is not None for x in (args.column, args.therapist_column, args.client_column, args.strap_rate)):
            raise InputError(
                "--column, --therapist-column, --client-column and --strap-rate are for recordings; "
                "a SESSION keeps its straps' own"
            )
        from ..engine.baseline_file import stored_baseline

        store = _open_session(args.session)
        try:
            baseline = baseline or stored_baseline(store)
            if not args.config:  # the settings live ran with, or a state would not match its stored twin
                stored, config_notes = stored_config(store.config().get("engine"), args.session)
                config = stored or config
        except InputError:
            store.close()
            raise
        stream = _session_stream(store, args.include_late)
    else:
        # Two devices can record at two rates: each file's own rate over the shared one.
        rates: dict[Role, float | None] = {
            "therapist": args.rate if args.therapist_rate is None else args.therapist_rate,
            "client": args.rate if args.client_rate is None else args.client_rate,
        }
        if not (args.therapist and args.client):
            raise InputError(
                "need a SESSION, or all of --therapist A.csv --client B.csv --rate HZ "
                "(or each file's own: --therapist-rate HZ --client-rate HZ)"
            )
        inputs: tuple[tuple[Role, str], ...] = (("therapist", args.therapist), ("client", args.client))
        options: dict[Role, str] = {
            role: f"--rate HZ or --{role}-rate" if rate is None else "--rate" if rate == args.rate else f"--{role}-rate"
            for role, rate in rates.items()
        }
        rate_hz = file_rates_hz = {role: input_rate(path, rates[role], options[role]) for role, path in inputs}
        column = "resp" if args.column is None else args.column
        columns: dict[Role, str] = {
            "therapist": column if args.therapist_column is None else args.therapist_column,
            "client": column if args.client_column is None else args.client_column,
        }
        strap_rate = args.strap_rate or STRAP_RATES_HZ[0]
        signals: dict[Role, FloatArray] = {}
        straps: dict[Role, StrapSignal] = {}
        gaps: dict[Role, tuple[tuple[float, float], ...]] = {}
        for role, path in inputs:
            strap_input = read_strap_input(path, columns[role], rate_hz[role], f"the {role}'s", "replay", strap_rate)
            signals[role], gaps[role], straps[role] = strap_input.signal, strap_input.dropouts_s, strap_input.strap
        durations_s = {role: len(signals[role]) / rate_hz[role] for role in signals}
        _check_durations(durations_s["therapist"], durations_s["client"], config)
        stream = dyad_stream(
            signals["therapist"],
            signals["client"],
            rate_hz["therapist"],
            strap_rate,
            gaps,
            rate_hz["client"],
            holes=True,
            straps=straps,
        )
    engine = EntrainmentEngine(config, baseline)
    counted = _BreathCount(stream)
    out = sys.stdout
    lines = 0
    for record in run_engine(counted, engine):
        out.write(json.dumps(record.as_json_dict()) + "\n")
        lines += 1
    out.flush()
    if args.session and not any(counted.blocks.values()):
        raise InputError(f"{args.session}: empty session (no samples from either strap)")
    for note in config_notes:
        print(f"breathsync replay: note: {note}", file=sys.stderr)
    for role in ("therapist", "client"):
        if counted.blocks[role] == 0:
            where = "in this session" if args.session else "reached the host (the recording is missing samples)"
            print(f"breathsync replay: note: no {role} samples {where}", file=sys.stderr)
        elif counted.breaths[role] == 0:
            why = "no breath events were stored" if args.session else "a flat signal, or a wrong --rate or --column?"
            print(
                f"breathsync replay: note: no breaths found for the {role} ({why}): the engine had nothing to "
                "decide on",
                file=sys.stderr,
            )
    for role, file_rate_hz in file_rates_hz.items():  # a session's rates are its straps' own
        rate = counted.typical_rate_bpm(role)
        if rate is not None and not PLAUSIBLE_RATE_BPM[0] <= rate <= PLAUSIBLE_RATE_BPM[1]:
            print(
                f"breathsync replay: note: the {role} typically breathes {rate:.0f} times a minute in this recording"
                f" (read at {file_rate_hz:g} Hz): is its sampling rate right?",
                file=sys.stderr,
            )
    for role, inverted in engine.inverted.items():
        if inverted:
            print(
                f"breathsync replay: note: the {role}'s signal looks upside down (inspiration pointing down): its "
                "breaths were read inverted (engine.auto_polarity)",
                file=sys.stderr,
            )
    if lines == 0 and all(counted.breaths.values()):
        whose = "the client's baseline" if baseline is not None else "both baselines"
        what = "the session ends" if args.session else "the recordings end"
        print(
            f"breathsync replay: note: {what} before the engine learned {whose} (the first "
            f"{config.engine.baseline_s:.0f} s in which both straps deliver breathing, engine.baseline_s; up to "
            "3 min more for someone who talked then, to get quiet breaths): no decisions",
            file=sys.stderr,
        )
    return 0


def _check_durations(therapist_s: float, client_s: float, config: Config) -> None:
    """Both recordings start at t = 0; the engine decides only after its baseline period and while both breathe."""
    shorter = min(therapist_s, client_s)
    learn_s = config.engine.baseline_s
    if shorter <= learn_s:
        who = "therapist" if therapist_s <= client_s else "client"
        raise InputError(
            f"the {who}'s recording is too short ({shorter:.0f} s): the engine learns both baselines over the first "
            f"{learn_s:.0f} s (engine.baseline_s), so it could never decide"
        )
    if abs(therapist_s - client_s) > 1.0:
        who = "therapist" if therapist_s < client_s else "client"
        print(
            f"breathsync replay: note: the {who}'s recording ends at {shorter:.0f} s, the other at "
            f"{max(therapist_s, client_s):.0f} s; no decisions after {shorter:.0f} s",
            file=sys.stderr,
        )


class _BreathCount:
    """Passes the stream through, counting sample blocks and breaths per role (to explain an empty replay), and
    the span of each person's end-inspirations (the mean breathing rate a wrong --rate would scale)."""

    def __init__(self, stream: Iterable[StreamItem]) -> None:
        self._stream = stream
        self.blocks = {"therapist": 0, "client": 0}
        self.breaths = {"therapist": 0, "client": 0}
        self.peaks_s: dict[str, list[float]] = {"therapist": [], "client": []}

    def __iter__(self) -> Iterator[StreamItem]:
        for item in self._stream:
            if isinstance(item, StrapBlock):
                self.blocks[item.role] = self.blocks.get(item.role, 0) + 1
            elif isinstance(item, StrapBreath) and item.breath.kind in ("peak", "trough"):
                self.breaths[item.role] = self.breaths.get(item.role, 0) + 1
                if item.breath.kind == "peak":
                    self.peaks_s.setdefault(item.role, []).append(item.breath.t_s)
            yield item

    def typical_rate_bpm(self, role: str) -> float | None:
        """Breaths per minute of the median breath (end-inspiration to end-inspiration: a drop-out between two is
        one long interval among many, not a slower person); None with fewer than MIN_RATE_PEAKS."""
        peaks_s = self.peaks_s.get(role, [])
        if len(peaks_s) < MIN_RATE_PEAKS:
            return None
        interval_s = small_median(np.diff(peaks_s))
        return 60.0 / interval_s if interval_s > 0 else None


MIN_RATE_PEAKS = 10
# Adults breathe about 6-30 times a minute at rest, and seldom past 40 even when anxious: a typical rate outside
# this range over a whole recording is more likely a wrong --rate (a 25 Hz file given as 50 Hz breathes twice
# as fast) than a person.
PLAUSIBLE_RATE_BPM = (3.0, 40.0)
