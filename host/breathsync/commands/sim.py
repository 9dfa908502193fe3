"""breathsync sim: virtual therapist + client straps (the real firmware) served on loopback HCI.

Each strap is firmware/main.py running in the MicroPython unix port behind a Bumble GATT server
(``breathsync.sim``). Another process reaches them through the printed adapter moniker::

    breathsync sim --synthetic --seed 1
    ready: therapist=breathsync-therapist client=breathsync-client --ble bumble:tcp-client:127.0.0.1:PORT
    breathsync stream --ble bumble:tcp-client:127.0.0.1:PORT --therapist ble:breathsync-therapist ...

Feeds: two recordings (``--therapist-input``/``--client-input``, column ``--column`` sampled at
``--rate`` Hz or as their headers state, CSV or CSV.gz), replayed from the start when they end;
``--synthetic``: a seeded breathing generator (therapist seed N, client seed N + 1, one hour each, then repeated); or
``--scenario KIND``: a seeded 6-minute dyad with known ground truth from the bundled recordings (the
therapist follows the client from a stated time, or the client the therapist, or neither), repeated.

A session's troubles can be scripted (``--at SECONDS:ROLE:ACTION[:VALUE]``, see ``breathsync.sim.script``):
a lost link, a strap out of range, a congested radio, a reboot, a draining battery.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import math
import sys
from typing import TextIO

from ..errors import InputError
from ..scenarios import KINDS, Kind, Scenario
from ..sim import (
    SimError,
    StrapConfig,
    VirtualBench,
    micropython_unavailable_reason,
    signal_counts,
    synthetic_counts,
)
from ..sim.feeds import SCENARIO_SECONDS, Counts, scenario_feeds
from ..sim.script import ScriptStep, parse_step, play_script
from ..sim.strap import BATTERY_MV_RANGE, check_battery_mv
from .arguments import non_negative_int, positive_float, seconds_or_forever
from .recording_input import input_rate, read_strap_input
from .shutdown import stop_on_signals

SYNTHETIC_SECONDS = 3600.0
SYNTHETIC_BPM = {"therapist": 12.0, "client": 16.0}  # --synthetic's breathing rates unless given
SCENARIO_KINDS: dict[str, Kind] = {kind.replace("_", "-"): kind for kind in KINDS}  # as typed: therapist-follows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    feed = parser.add_argument_group("feed (one of)")
    feed.add_argument("--therapist-input", metavar="CSV", help="recording the therapist's strap senses")
    feed.add_argument("--client-input", metavar="CSV", help="recording the client's strap senses")
    feed.add_argument(
        "--rate",
        type=positive_float,
        metavar="HZ",
        help="sampling rate of the input recordings (default: as their headers state it)",
    )
    for role in ("therapist", "client"):
        feed.add_argument(
            f"--{role}-rate", type=positive_float, metavar="HZ", help=f"the {role}'s recording's rate (over --rate)"
        )
    feed.add_argument("--column", default="resp", help="column of the respiration signal (default: resp)")
    feed.add_argument("--synthetic", action="store_true", help="seeded synthetic breathing instead of recordings")
    feed.add_argument(
        "--scenario",
        choices=tuple(SCENARIO_KINDS),
        metavar="KIND",
        help=f"a scripted dyad with known truth from the bundled recordings: {', '.join(SCENARIO_KINDS)}",
    )
    feed.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="synthetic: therapist seed N, client N + 1; scenario: the dyad's seed (default 0)",
    )
    for role, bpm in SYNTHETIC_BPM.items():  # None unless given: given without --synthetic, it is noted as unused
        feed.add_argument(f"--{role}-bpm", type=float, metavar="BPM", help=f"synthetic (default {bpm:g})")
    strap = parser.add_argument_group("straps")
    strap.add_argument(
        "--strap-rate",
        type=int,
        default=25,
        choices=(25, 50),
        metavar="HZ",
        help="25 (default) or 50: the straps' rate at start (one set to the other rate later, `breathsync strap "
        "--rate`, feeds its wearer's breathing at the same pace)",
    )
    strap.add_argument("--therapist-drift-ppm", type=int, default=0, metavar="PPM", help="therapist's clock error")
    strap.add_argument("--client-drift-ppm", type=int, default=0, metavar="PPM", help="client's clock error")
    lo, hi = BATTERY_MV_RANGE
    for role in ("therapist", "client"):
        strap.add_argument(
            f"--{role}-battery-mv",
            type=int,
            default=3900,
            metavar="MV",
            help=f"{role}'s battery voltage at the start, {lo}..{hi} (default 3900, ~61 %%)",
        )
    strap.add_argument(
        "--at",
        action="append",
        default=[],
        metavar="S:ROLE:ACTION[:VALUE]",
        help="script a happening S seconds after serving: drop, off[:S], stall:S, reboot[:S], battery:MV "
        "(e.g. 200:client:off:30; repeatable)",
    )
    serve = parser.add_argument_group("serving")
    serve.add_argument("--host", default="127.0.0.1", help="loopback address to serve on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="TCP port of the HCI transport (default: a free one)")
    serve.add_argument(
        "--seconds", type=seconds_or_forever, default=0, metavar="S", help="stop after S seconds (default: Ctrl-C)"
    )


def configs_from(args: argparse.Namespace) -> list[StrapConfig]:
    """The two straps' configurations; InputError for anything unusable."""
    return _prepare(args)[0]


def _prepare(args: argparse.Namespace) -> tuple[list[StrapConfig], str | None]:
    """The two straps' configurations and, for a scenario, what it scripts (its ground truth)."""
    recordings = args.therapist_input is not None or args.client_input is not None
    scenario = getattr(args, "scenario", None)
    if [bool(args.synthetic), recordings, scenario is not None].count(True) != 1:
        raise InputError(
            "give one feed: --synthetic, --scenario KIND, or both --therapist-input and --client-input (and --rate)"
        )
    rate = args.strap_rate
    feeds: dict[str, Counts]
    truth = None
    if scenario is not None:
        dyad, feeds = scenario_feeds(SCENARIO_KINDS[scenario], args.seed, rate)
        truth = f"{_truth(dyad, args.seed)}; the dyad repeats every {SCENARIO_SECONDS:g} s"
    elif args.synthetic:
        feeds = {
            role: synthetic_counts(SYNTHETIC_SECONDS, _given(args, f"{role}_bpm", bpm), rate, seed=args.seed + i)
            for i, (role, bpm) in enumerate(SYNTHETIC_BPM.items())
        }
    else:
        if args.therapist_input is None or args.client_input is None:
            raise InputError("recordings need both --therapist-input and --client-input")
        feeds = {}
        for role, path in (("therapist", args.therapist_input), ("client", args.client_input)):
            own = getattr(args, f"{role}_rate", None)  # two devices can record at two rates
            rate_hz = input_rate(path, args.rate if own is None else own, "--rate" if own is None else f"--{role}-rate")
            recording = read_strap_input(path, args.column, rate_hz, f"the {role}'s", "sim", rate, dropouts=False)
            feeds[role] = signal_counts(recording.signal, rate_hz, rate, path)
    drift = {"therapist": args.therapist_drift_ppm, "client": args.client_drift_ppm}
    battery = {r: getattr(args, f"{r}_battery_mv", 3900) for r in ("therapist", "client")}
    for role, mv in battery.items():
        try:
            check_battery_mv(mv)
        except InputError as exc:
            raise InputError(f"--{role}-battery-mv: {exc}") from None
    configs = [
        # A reboot does not rewind the wearer's breathing (a scripted dyad stays in step).
        StrapConfig(feeds[r], role=r, rate_hz=rate, drift_ppm=drift[r], battery_mv=battery[r], feed_continues=True)
        for r in ("therapist", "client")
    ]
    for c in configs:
        c.check()
    return configs, truth


def _given(args: argparse.Namespace, name: str, default: float) -> float:
    value = getattr(args, name, None)
    return default if value is None else float(value)


def unused_options(args: argparse.Namespace, script: list[ScriptStep]) -> list[str]:
    """What the command line asks for that this run will not do: a step after ``--seconds``, a synthetic
    breathing rate for another feed."""
    notes = [
        f"--at {spec} comes after --seconds {args.seconds:g}: never played"
        for step, spec in zip(script, getattr(args, "at", []), strict=True)
        if args.seconds and step.at_s >= args.seconds
    ]
    if not args.synthetic:
        notes += [
            f"--{role}-bpm is for --synthetic: ignored" for role in SYNTHETIC_BPM if getattr(args, f"{role}_bpm", None)
        ]
    return notes


def _truth(dyad: Scenario, seed: int) -> str:
    if dyad.follower is None:
        similar = " at similar rates" if dyad.kind == "similar_rate" else ""
        text = f"scripted: independent breathing{similar}, nobody follows"
    else:
        leader = "client" if dyad.follower == "therapist" else "therapist"
        text = (
            f"scripted: the {dyad.follower} follows the {leader} from {dyad.onset_s or 0:.0f} s to "
            f"{dyad.offset_s or 0:.0f} s of the straps' feed"
        )
    text += f" (seed {seed})"
    # The generator's own troubles are part of the truth: a decision that pauses there is not a miss.
    for what, stretches in (("talks", dyad.speech_s), ("has a loose strap", dyad.flat_s)):
        for role, spans in stretches.items():
            times = ", ".join(f"{a:.0f}-{b:.0f} s" for a, b in _merged(spans))
            text += f"; the {role} {what} at {times}"
    return text


def _merged(spans: tuple[tuple[float, float], ...]) -> list[tuple[float, float]]:
    """Overlapping stretches as one (the generator draws them independently)."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _loopback(host: str) -> str:
    try:
        ok = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        ok = host == "localhost"
    if not ok:
        raise InputError(f"--host must be a loopback address (virtual straps are served on this machine only): {host}")
    return "127.0.0.1" if host == "localhost" else host.strip("[]")


async def serve(args: argparse.Namespace, out: TextIO) -> int:
    host = _loopback(args.host)
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be 0..65535 (got {args.port})")
    if not (math.isfinite(args.seconds) and args.seconds >= 0):  # serve() is also called without argparse
        raise InputError(f"--seconds must be a finite number >= 0 (got {args.seconds})")
    script = [parse_step(spec) for spec in getattr(args, "at", [])]
    configs, truth = _prepare(args)
    for note in unused_options(args, script):
        print(f"breathsync sim: note: {note}", file=sys.stderr)
    reason = micropython_unavailable_reason()
    if reason is not None:
        raise InputError(f"cannot run virtual straps: {reason}")
    where = f"[{host}]" if ":" in host else host
    stop = stop_on_signals()
    loop = asyncio.get_running_loop()
    try:
        bench = await VirtualBench.start(configs, serve=f"tcp-server:{where}:{args.port}")
    except OSError as exc:
        raise InputError(f"cannot serve on {where}:{args.port}: {exc}") from None
    except SimError as exc:
        raise InputError(str(exc)) from None
    happenings: asyncio.Task[None] | None = None
    try:
        names = " ".join(f"{role}={strap.name}" for role, strap in bench.straps.items())
        out.write(f"ready: {names} --ble {bench.adapter}\n")
        if truth is not None:
            out.write(truth + "\n")
        out.flush()

        def say(line: str) -> None:
            out.write(line + "\n")
            out.flush()

        if script:
            happenings = asyncio.create_task(play_script(bench.straps, script, say))
        deadline = None if not args.seconds else loop.time() + args.seconds
        status = 0
        while not stop.is_set() and (deadline is None or loop.time() < deadline):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            failure = happenings.exception() if happenings is not None and happenings.done() else None
            if failure is not None:  # a fault of the script runner itself, not of a strap
                raise failure
            dead = [(role, s) for role, s in bench.straps.items() if not s.running and not s.rebooting]
            for role, strap in dead:
                tail = " | ".join(line for line in list(strap.stderr_tail)[-3:] if line.strip())
                out.write(f"{role}: the firmware stopped ({tail or 'no message'})\n")
            if dead:
                status = 1
                break
    finally:
        if happenings is not None:
            happenings.cancel()
            await asyncio.gather(happenings, return_exceptions=True)
        summaries = await bench.close()
    for role, summary in summaries.items():
        if summary is not None:
            out.write(
                f"{role}: {summary.get('head', 0)} samples, {summary.get('sent', 0)} notifications, "
                f"{summary.get('retries', 0)} retries\n"
            )
    out.flush()
    return status


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(serve(args, sys.stdout))
    except KeyboardInterrupt:
        return 0
