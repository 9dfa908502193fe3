"""A stored session as the engine's input stream, in the order the host received it.

Used by the daemon to rebuild its engine after a crash and by ``breathsync replay SESSION`` to
re-run the engine on a recorded session with other settings. Samples and breath events go in as the
live notifications brought them, in the order they arrived (the session's ``arrivals``); a mute
('mirroring on purpose') when it was pressed. A session recorded before arrivals were kept: samples in
one notification's worth at the time their last sample's ADC window closed, events at the time the
strap reported them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np

from ..detector import TimedBreath
from ..engine import Mute, NudgeUndelivered, StrapBlock, StrapBreath, StreamItem
from ..engine.replay import live_block_samples
from ..errors import InputError
from ..roles import ROLES, Role, is_role
from ..store import ArrivalData, BreathEventRecord, LateData, SessionStore, mute_duration_s


def session_t0_s(store: SessionStore) -> float:
    """The host time (Unix s) the engine counted session time from."""
    return store.session_zero_s()


def session_rate_hz(store: SessionStore, default: int = 25) -> int:
    rates = {strap.rate_hz for strap in store.straps() if strap.rate_hz}
    if len(rates) == 1:
        return int(rates.pop())
    straps = store.config().get("straps", {})
    rate = straps.get("rate_hz", default) if isinstance(straps, dict) else default
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
        raise InputError(f"{store.path}: damaged session: its stored strap rate {rate!r} is not a sampling rate")
    return int(rate)


def timed_breath(event: BreathEventRecord, t0_s: float, rate_hz: float) -> TimedBreath:
    period = 1.0 / rate_hz
    t = event.host_t_s - t0_s
    return TimedBreath(
        kind=event.kind,
        t_s=t,
        reported_t_s=t + (event.confirmed_counter - event.counter + 0.5) * period,
        amplitude=float(event.depth_counts),
        amplitude_counts=event.depth_counts,
        interval_s=event.interval_samples * period if event.interval_samples else None,
    )


UNDELIVERED_KNOWN_AFTER_S = 1.0  # a failed nudge without its link event (a damaged file): known this long after it


def stored_stream(store: SessionStore, t0_s: float, rate_hz: float, include_late: bool = False) -> Iterator[StreamItem]:
    """The session as the engine's input, in the order its live engine had it: each notification when it arrived
    (the ``arrivals`` table), as the strap cut it. What reached the host only after a drop-out (backfill) is left
    out, as the live engine never saw it. With ``include_late``, everything is fed in where it was measured, as if
    it had all come in time. A session (or the part of one) recorded before arrivals were kept: samples in blocks at
    the time their last sample's window closed, events at the time the strap reported them."""
    period = 1.0 / rate_hz
    block_samples = live_block_samples(round(rate_hz))  # as the strap sent them live
    # Sort keys: (time, 0, arrival sequence) for what arrived as recorded, (time, 1 + kind, 0) for the rest.
    items: list[tuple[tuple[float, int, int], StreamItem]] = []
    late = {role: LateData() if include_late else store.late(role) for role in ROLES}
    arrivals = {role: ArrivalData() if include_late else store.arrivals(role) for role in ROLES}
    arrival_s = _in_sequence(arrivals)
    for role in ROLES:
        series = store.samples(role)
        kept = ~late[role].sample_mask(series.counters)
        counters, host_t_s, values = series.counters[kept], series.host_t_s[kept], series.values[kept]
        arrived = np.zeros(len(counters), dtype=bool)
        for first, last, _, sequence in arrivals[role].blocks:
            start, end = (int(i) for i in np.searchsorted(counters, (first, last + 1)))
            arrived[start:end] = True
            # As the strap cut it; split where stored counters are missing (a damaged file): no sample moved early.
            breaks = [start, *(start + 1 + np.flatnonzero(np.diff(counters[start:end]) != 1)).tolist(), end]
            for a, b in itertools.pairwise(breaks):
                if b > a:
                    block = StrapBlock(role, float(host_t_s[a]) - t0_s, period, values[a:b])
                    items.append(((arrival_s[sequence] - t0_s, 0, sequence), block))
        # Blocks of consecutive counters only: a block across a drop-out put the samples after it that much early.
        rest = np.flatnonzero(~arrived)
        runs = np.flatnonzero(np.diff(counters[rest]) != 1) + 1
        for run in np.split(rest, runs) if len(rest) else []:
            for start in range(run[0], run[-1] + 1, block_samples):
                end = min(start + block_samples, run[-1] + 1)
                block = StrapBlock(role, float(host_t_s[start]) - t0_s, period, values[start:end])
                items.append(((block.arrival_t_s, 1, 0), block))
    for event in store.events():
        if is_role(event.role) and (event.kind, event.counter) not in late[event.role].events:
            breath = timed_breath(event, t0_s, rate_hz)
            came = arrivals[event.role].events.get((event.kind, event.counter))
            key = (breath.reported_t_s, 2, 0) if came is None else (arrival_s[came[1]] - t0_s, 0, came[1])
            items.append((key, StrapBreath(event.role, breath)))
    failures: list[float] = []
    for t_s, _, kind, detail in store.link_events():
        if kind == "muted":  # the therapist pressed m: nudges were held back from here
            items.append(((t_s - t0_s, 3, 0), Mute(t_s - t0_s, mute_duration_s(detail))))
        elif kind == "nudge-failed":
            failures.append(t_s - t0_s)
    for nudge_s in (n.t_s - t0_s for n in store.nudges() if n.delivered is False):
        # When live learned it: the failure logged at or after the nudge, on the arrival timeline (a nudge is dated
        # by the data that triggered it, which arrived later), after whatever arrived at that moment.
        at_s = next((t for t in sorted(failures) if t >= nudge_s), nudge_s + UNDELIVERED_KNOWN_AFTER_S)
        if at_s in failures:
            failures.remove(at_s)
        items.append(((at_s, 4, 0), NudgeUndelivered(at_s, nudge_s)))
    items.sort(key=lambda x: x[0])
    for _, item in items:
        yield item


def _in_sequence(arrivals: dict[Role, ArrivalData]) -> dict[int, float]:
    """Arrival sequence number -> arrival time, never earlier than an earlier arrival's: the order is the stored one
    even if the host's wall clock stepped back mid-session (an NTP correction)."""
    rows = sorted(
        [(seq, at) for data in arrivals.values() for _, _, at, seq in data.blocks]
        + [(seq, at) for data in arrivals.values() for at, seq in data.events.values()]
    )
    out: dict[int, float] = {}
    latest = -math.inf
    for seq, at in rows:
        latest = max(latest, at)
        out[seq] = latest
    return out
