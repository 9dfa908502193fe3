"""Replay two recordings exactly as live: strap ADC, firmware detector chunk by chunk, host merge.

``strap_stream`` turns a recording into what the host would receive from a strap: blocks of
samples (one BLE notification each) and breath events at the moment the strap reports them,
produced by the firmware detector fed incrementally. ``dyad_stream`` merges both straps in
arrival order; ``run_engine`` drives any consumer (the engine, or the benchmark's baseline).
The live daemon builds the same ``StreamItem`` records from BLE and calls the same
``EntrainmentEngine.feed``: the engine cannot tell live from replayed data.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from ..adc import StrapSignal, simulate_adc
from ..detector import BreathEvent, TimedBreath, check_rate
from ..errors import InputError
from ..roles import Role
from ..strap_sim import MIN_DURATION_S
from .stream import StrapBlock, StrapBreath, StreamItem

# A live SAMPLES packet leaves the strap once its oldest sample has waited this long: docs/protocol.md,
# protocol.packets.FLUSH_AFTER_MS. (Or once it is full, but the 247-byte ATT MTU the strap asks for holds
# 119 samples; only a host that keeps the minimum MTU, 23 bytes, gets packets of 7.) Not imported from there: the
# protocol module would cost `breathsync replay` ~7 ms of start-up.
LIVE_FLUSH_AFTER_MS = 300
_ROLE_ORDER: dict[Role, int] = {"therapist": 0, "client": 1}
SHORTEST_DROPOUT_S = 0.5  # missing stretches at least this long are drop-outs; shorter ones are bridged

T_co = TypeVar("T_co", covariant=True)


class Consumer(Protocol[T_co]):
    def feed(self, item: StreamItem) -> Sequence[T_co]: ...


def _timed(event: BreathEvent, strap: StrapSignal) -> TimedBreath:
    period_s = 1.0 / strap.rate_hz
    return TimedBreath(
        kind=event.kind,
        t_s=strap.t0_s + event.index * period_s,
        reported_t_s=strap.t0_s + (event.confirmed_index + 0.5) * period_s,
        amplitude=event.depth_counts * strap.units_per_count14,
        amplitude_counts=event.depth_counts,
        interval_s=event.interval_samples * period_s if event.interval_samples else None,
    )


def live_block_samples(strap_rate_hz: int) -> int:
    """Samples in one live SAMPLES packet of a strap at ``strap_rate_hz``: 8 at 25 Hz, 15 at 50 Hz."""
    return math.ceil(LIVE_FLUSH_AFTER_MS * strap_rate_hz / 1000)


def strap_stream(
    role: Role,
    signal: npt.NDArray[np.float64],
    sampling_rate: float,
    strap_rate_hz: int = 25,
    gaps_s: Iterable[tuple[float, float]] = (),
    chunk_samples: int | None = None,
    holes: bool = False,
    strap: StrapSignal | None = None,
) -> Iterator[tuple[float, int, StreamItem]]:
    """One strap as the host receives it: ``(arrival time, order, item)`` in arrival order.

    ``holes``: the gaps are holes in the recording, bridged by a straight line for the detector, not radio
    drop-outs over a measured signal: a breath found on the bridge is none, and no interval is measured across one.

    The firmware detector runs on every sample (the strap keeps measuring during a radio
    drop-out); blocks arriving inside one of ``gaps_s`` are lost, with the events they carried.
    Blocks are ``chunk_samples`` long, by default as the strap's live packets.
    """
    from ..fwcore.detector import EVENT_FIELDS, BreathDetector

    check_rate(strap_rate_hz)
    if chunk_samples is None:
        chunk_samples = live_block_samples(strap_rate_hz)
    if not sampling_rate > 0:
        raise InputError(f"--rate must be > 0 Hz (got {sampling_rate})")
    duration_s = len(signal) / sampling_rate
    if duration_s < MIN_DURATION_S:
        raise InputError(f"recording too short: {duration_s:.1f} s of data, need at least {MIN_DURATION_S:.0f} s")
    if strap is None:  # given: the caller has it already (``read_strap_input``)
        strap = simulate_adc(signal, sampling_rate, strap_rate_hz)
    gaps = sorted(gaps_s)
    detector = BreathDetector(strap_rate_hz, chunk_samples, fast=False)
    counts = strap.counts_u16
    # The portable detector only indexes its samples: a list slice feeds it the same ints as the strap's
    # array('H') block, without building an array per block (and a list hands out its ints without boxing).
    values = counts.tolist()
    period_s = 1.0 / strap_rate_hz
    order = _ROLE_ORDER[role]
    for start in range(0, len(values), chunk_samples):
        block = values[start : start + chunk_samples]
        n = len(block)
        written = detector.feed(block, n)
        item = StrapBlock(role, strap.t0_s + start * period_s, period_s, counts[start : start + n])
        arrival = item.arrival_t_s
        lost = bool(gaps) and any(a <= arrival < b for a, b in gaps)
        if not lost:
            yield arrival, order, item
        elif not holes:
            continue  # a radio drop-out: the events this block carried are lost with it
        for e in range(written):
            fields = detector.events[e * EVENT_FIELDS : (e + 1) * EVENT_FIELDS]
            found = _timed(BreathEvent.from_fields(list(fields)), strap)
            # Which breaths a hole leaves is one rule for every command (``reportable``).
            breath = reportable(found, gaps) if holes else found
            if breath is not None:
                yield breath.reported_t_s, order, StrapBreath(role, breath)


def reportable(breath: TimedBreath, holes_s: Sequence[tuple[float, float]]) -> TimedBreath | None:
    """``breath`` as a strap could have reported it from a recording with ``holes_s`` (missing samples bridged by a
    line): none found on a bridge or confirmed on one (it was lost with its notification), and no interval measured
    across one (it would span the missing time)."""
    if inside(breath.t_s, holes_s) or inside(breath.reported_t_s, holes_s):
        return None
    if breath.interval_s is not None and any(
        breath.t_s - breath.interval_s <= b and a <= breath.t_s
        for a, b in holes_s  # as closed as ``inside``
    ):
        return replace(breath, interval_s=None)
    return breath


def inside(t_s: float, intervals: Sequence[tuple[float, float]]) -> bool:
    """Whether ``t_s`` falls in one of ``intervals`` (closed), such as a recording's drop-outs."""
    return any(a <= t_s <= b for a, b in intervals)


def missing_stretches(missing: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Start and end (exclusive) sample indices of each run of True in ``missing``."""
    edges = np.diff(np.concatenate(([0], missing.view(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def missing_as_dropouts(
    signal: npt.NDArray[np.float64],
    sampling_rate: float,
    strap_rate_hz: int = 25,
    chunk_samples: int | None = None,
) -> tuple[npt.NDArray[np.float64], tuple[tuple[float, float], ...]]:
    """A recording's missing samples (NaN) as a strap would show them: drop-outs, for ``strap_stream``'s ``gaps_s``.

    A hole shorter than SHORTEST_DROPOUT_S (a sensor or logger glitch) is only bridged: averaged over by the
    strap's ADC it barely shows, while dropping the block around it would lose the breath events it carried.

    Returns the signal with each missing stretch bridged linearly (the strap simulation and detector need
    values; a bridge has no step that could pass for a breath) and the drop-outs in seconds, widened so that
    every block holding one of their samples is lost with its events: the host sees nothing from that time, as
    during a radio drop-out or a loose strap. InputError when no sample is present at all.
    """
    missing = np.isnan(signal)
    if not missing.any():
        return signal, ()
    present = np.flatnonzero(~missing)
    if len(present) == 0:
        raise InputError("the recording has no samples, only missing values")
    filled = signal.copy()
    filled[missing] = np.interp(np.flatnonzero(missing), present, signal[present])
    starts, ends = missing_stretches(missing)
    if chunk_samples is None:
        chunk_samples = live_block_samples(strap_rate_hz)
    block_s = (chunk_samples + 1) / strap_rate_hz  # a block arrives after its last sample: lose any it touched
    gaps = tuple(
        (float(a / sampling_rate), float(b / sampling_rate + block_s))
        for a, b in zip(starts, ends, strict=True)
        if (b - a) / sampling_rate >= SHORTEST_DROPOUT_S
    )
    return filled, gaps


def dyad_stream(
    therapist: npt.NDArray[np.float64],
    client: npt.NDArray[np.float64],
    sampling_rate: float,
    strap_rate_hz: int = 25,
    gaps_s: Mapping[Role, Sequence[tuple[float, float]]] | None = None,
    client_sampling_rate: float | None = None,
    holes: bool = False,
    straps: Mapping[Role, StrapSignal] | None = None,
) -> Iterator[StreamItem]:
    """Both straps merged in host arrival order (ties: therapist first, block before its events). The client's
    recording is at ``client_sampling_rate`` when given (two devices), else at ``sampling_rate`` like the
    therapist's. ``holes``: the gaps are missing samples of the recordings (``strap_stream``)."""
    gaps = gaps_s or {}
    client_rate = sampling_rate if client_sampling_rate is None else client_sampling_rate
    given = straps or {}
    streams = [
        strap_stream(
            "therapist",
            therapist,
            sampling_rate,
            strap_rate_hz,
            gaps.get("therapist", ()),
            holes=holes,
            strap=given.get("therapist"),
        ),
        strap_stream(
            "client", client, client_rate, strap_rate_hz, gaps.get("client", ()), holes=holes, strap=given.get("client")
        ),
    ]
    for _, _, item in heapq.merge(*streams, key=lambda x: (x[0], x[1])):
        yield item


def run_engine(stream: Iterable[StreamItem], consumer: Consumer[T_co]) -> Iterator[T_co]:
    """Feed every record to ``consumer`` in order and yield whatever it emits."""
    for item in stream:
        yield from consumer.feed(item)
