"""A stored session as the engine's input stream, in the order the host received it.

Used by the daemon to rebuild its engine after a crash and by ``breathsync replay SESSION`` to
re-run the engine on a recorded session with other settings. Samples go in as 7-sample blocks
(one 20-byte notification each) at the time their last sample's ADC window closed; breath
events at the time the strap reported them; a mute ('mirroring on purpose') when it was pressed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..detector import TimedBreath
from ..engine import Mute, StrapBlock, StrapBreath, StreamItem
from ..engine.replay import live_block_samples
from ..errors import InputError
from ..roles import ROLES, is_role
from ..store import BreathEventRecord, LateData, SessionStore, mute_duration_s


def session_t0_s(store: SessionStore) -> float:
    """The host time (Unix s) the engine counted session time from."""
    t0 = store.meta_float("t0_unix_s")
    if t0 is not None:
        return t0
    firsts = [float(s.host_t_s[0]) for s in (store.samples(r) for r in ROLES) if len(s.host_t_s)]
    return min(firsts) if firsts else 0.0


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


def stored_stream(store: SessionStore, t0_s: float, rate_hz: float, include_late: bool = False) -> Iterator[StreamItem]:
    """The session as the engine's input. What reached the host only after a drop-out (backfill) is left out, as
    the live engine never saw it (``include_late``: fed in where it was measured, as if it had come in time)."""
    period = 1.0 / rate_hz
    block_samples = live_block_samples(round(rate_hz))  # as the strap sent them live
    items: list[tuple[float, int, StreamItem]] = []
    late = {role: LateData() if include_late else store.late(role) for role in ROLES}
    for role in ROLES:
        series = store.samples(role)
        kept = ~late[role].sample_mask(series.counters)
        counters, host_t_s, values = series.counters[kept], series.host_t_s[kept], series.values[kept]
        # Blocks of consecutive counters only: a block across a drop-out put the samples after it that much early.
        runs = np.flatnonzero(np.diff(counters) != 1) + 1
        for run_start, run_end in zip([0, *runs.tolist()], [*runs.tolist(), len(counters)], strict=True):
            for start in range(run_start, run_end, block_samples):
                end = min(start + block_samples, run_end)
                block = StrapBlock(role, float(host_t_s[start]) - t0_s, period, values[start:end])
                items.append((block.arrival_t_s, 0, block))
    for event in store.events():
        if is_role(event.role) and (event.kind, event.counter) not in late[event.role].events:
            breath = timed_breath(event, t0_s, rate_hz)
            items.append((breath.reported_t_s, 1, StrapBreath(event.role, breath)))
    for t_s, _, kind, detail in store.link_events():
        if kind == "muted":  # the therapist pressed m: nudges were held back from here
            items.append((t_s - t0_s, 2, Mute(t_s - t0_s, mute_duration_s(detail))))
    items.sort(key=lambda x: (x[0], x[1]))
    for _, _, item in items:
        yield item
