"""Receive side of one strap's stream, independent of the transport (BLE, serial, replay).

Turns decoded packets into gap-free, de-duplicated, time-mapped samples and events:

- 32-bit strap counters are unwrapped to plain ints, so wrap-around is invisible upstream.
- A SAMPLES packet beyond the head opens a gap; the stream asks (through ``backfill_wanted``)
  for ``BACKFILL`` of it. Samples arriving for a gap fill it; anything already held is a
  duplicate and is dropped (counted). Nothing is delivered twice, whatever order packets come in.
- Sample host times come from the counter through a ``CounterClock`` fitted on live arrivals
  only (never from arrival times directly): backfilled samples land where they were taken.
- Bad packets never reach this far: the transport decodes and counts ``ProtocolError``s in
  ``LinkStats.bad_packets``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..detector import Kind
from ..protocol import EventKind, EventPacket, SamplesPacket, StatusPacket
from ..roles import Role
from .clock import CounterClock

U32 = 1 << 32


@dataclass
class LinkStats:
    """Counters a link keeps for the user and the session store."""

    packets: int = 0
    bad_packets: int = 0
    bad_by_kind: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    samples: int = 0
    samples_backfilled: int = 0
    gaps_opened: int = 0
    gaps_filled: int = 0
    samples_lost: int = 0  # reported lost by the strap (overwritten before backfill, or gone in a reboot)
    reboots: int = 0  # the strap restarted (its counter went back): see StrapStream.rebooted
    events: int = 0
    reconnects: int = 0
    haptic_sent: int = 0
    haptic_confirmed: int = 0
    rssi_dbm: int | None = None

    def count_bad(self, error: Exception) -> None:
        self.bad_packets += 1
        name = type(error).__name__
        self.bad_by_kind[name] = self.bad_by_kind.get(name, 0) + 1


@dataclass(frozen=True)
class SampleBlock:
    """Consecutive samples of one strap: counters ``first_counter ...``, host times, raw u16 values."""

    role: Role
    first_counter: int
    values: npt.NDArray[np.int64]
    host_t_s: npt.NDArray[np.float64]
    backfilled: bool

    @property
    def counters(self) -> npt.NDArray[np.int64]:
        return np.arange(self.first_counter, self.first_counter + len(self.values), dtype=np.int64)


@dataclass(frozen=True)
class StrapEvent:
    """A breath event in unwrapped counters and host time."""

    role: Role
    kind: Kind
    counter: int
    confirmed_counter: int
    depth_counts: int
    interval_samples: int
    host_t_s: float
    backfilled: bool


def unwrap(counter_u32: int, reference: int) -> int:
    """The int nearest to ``reference`` that is congruent to ``counter_u32`` modulo 2**32."""
    base = reference - (reference % U32)
    candidate = base + counter_u32
    if candidate - reference > U32 // 2:
        candidate -= U32
    elif reference - candidate > U32 // 2:
        candidate += U32
    return candidate


STRAP_RING_S = 300  # the most a strap's sample ring holds (firmware/strap/rings.py: 5 minutes at 25 Hz)


class Gaps:
    """Sorted, disjoint half-open counter ranges [start, end) that are missing."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []

    def add(self, start: int, end: int) -> None:
        if start < end:
            self.ranges.append((start, end))
            self.ranges.sort()

    def take(self, start: int, end: int) -> list[tuple[int, int]]:
        """Remove [start, end) from the gaps; return the sub-ranges that were missing."""
        filled: list[tuple[int, int]] = []
        remaining: list[tuple[int, int]] = []
        for a, b in self.ranges:
            lo, hi = max(a, start), min(b, end)
            if lo >= hi:
                remaining.append((a, b))
                continue
            filled.append((lo, hi))
            if a < lo:
                remaining.append((a, lo))
            if hi < b:
                remaining.append((hi, b))
        self.ranges = remaining
        return filled

    def drop_before(self, counter: int) -> int:
        """Give up on everything below ``counter`` (the strap no longer has it); return how many."""
        lost = 0
        kept: list[tuple[int, int]] = []
        for a, b in self.ranges:
            if b <= counter:
                lost += b - a
            elif a < counter:
                lost += counter - a
                kept.append((counter, b))
            else:
                kept.append((a, b))
        self.ranges = kept
        return lost

    @property
    def missing(self) -> int:
        return sum(b - a for a, b in self.ranges)


SEEN_EVENTS_MAX = 4096  # event keys remembered for de-duplication, trimmed to the newest SEEN_EVENTS_KEPT
SEEN_EVENTS_KEPT = 2048  # 4x the strap's event ring


class StrapStream:
    """One strap's receive state. Feed it decoded packets with their host arrival time."""

    def __init__(
        self,
        role: Role,
        rate_hz: float,
        on_samples: Callable[[SampleBlock], None],
        on_event: Callable[[StrapEvent], None],
        stats: LinkStats | None = None,
    ) -> None:
        self.role = role
        self.clock = CounterClock(rate_hz)
        self.on_samples = on_samples
        self.on_event = on_event
        self.stats = stats if stats is not None else LinkStats()
        self.head: int | None = None  # one past the highest counter received (the strap's counting)
        self.offset = 0  # session counter = strap counter + offset (grows when the strap reboots)
        # A restarted daemon's only timing of the strap until its clock has a fit: the host time of the last
        # stored sample (strap counter head - 1). Dates a reboot that happened while no host was there.
        self.resumed_at_s: float | None = None
        self.gaps = Gaps()
        self.resumed_holes = Gaps()  # re-asked at a resume: their losses may have been said by the run before
        self._seen_events: set[tuple[int, int]] = set()
        self.status: StatusPacket | None = None

    @property
    def rate_hz(self) -> float:
        return self.clock.nominal_rate_hz

    def set_rate(self, rate_hz: float) -> None:
        """The strap changed its sample rate: the clock restarts (counters keep counting)."""
        if rate_hz != self.clock.nominal_rate_hz:
            self.clock = CounterClock(rate_hz)

    def rebooted(self, counter_now: int, at_s: float, asked_s: float | None = None) -> int:
        """The strap restarted: its counter was ``counter_now`` at host time ``at_s`` at the latest (a TIME_SYNC's
        answer), and at ``asked_s`` at the earliest (its question), behind what we hold.

        Its RAM ring went with the reboot, so open gaps are lost. Delivered counters stay unique and
        increasing for the whole session: the new boot continues after the old head, plus the samples
        the strap's downtime would have held (from the old clock), so counters still track time.
        Returns the session counter that the new boot's counter 0 maps to.
        """
        self.stats.samples_lost += sum(end - start for start, end in self.gaps.ranges)
        self.stats.reboots += 1
        head = self.head if self.head is not None else 0
        downtime = 0  # the samples the strap would have taken between its last one held and the new boot's first
        boot_s = at_s - counter_now / self.rate_hz
        last_s = self.last_held_s()
        if last_s is not None:
            # The last one held is counter head - 1: the new boot's 0 comes (boot_s - last_s) periods after it, so
            # that many minus one were missed (all of them put its 0 one period late: 390 ppm in a BIDS fit).
            # The counter was read within the TIME_SYNC's round trip: its middle is the estimate without bias (the
            # answer's arrival put the new boot's samples 43 ms late on the session's counters, a data review).
            read_s = at_s if asked_s is None else 0.5 * (asked_s + at_s)
            downtime = max(0, round((read_s - counter_now / self.rate_hz - last_s) * self.rate_hz) - 1)
        self.resumed_at_s = None  # it dated the old boot's samples, not the new one's
        self.offset += head + downtime
        self.head = 0  # everything since the new boot is wanted: its first live packet opens a gap from 0
        self.gaps = Gaps()
        self.resumed_holes = Gaps()
        self._seen_events.clear()
        self.clock.reset()
        # The new boot's first packets are its ring flushed in one burst: arriving late, they alone would date
        # its first samples to their arrival (7 s late after 7 s out of range). The TIME_SYNC answer dates
        # counter 0 to within its round trip; later arrivals can only lie above that point.
        self.clock.observe(0, boot_s)
        return self.offset

    def resume_after(
        self, counter: int, offset: int = 0, host_t_s: float | None = None, holes: Iterable[tuple[int, int]] = ()
    ) -> None:
        """The host already holds everything up to ``counter`` (a restarted daemon's store) but ``holes``.

        The first live packet then opens a gap from ``counter + 1``, which backfill closes.
        ``counter`` is a session counter (as delivered); ``offset`` what the session's counters had run
        ahead of the strap's own when that was stored (``rebooted``), 0 if the strap never rebooted;
        ``host_t_s`` when that last sample was taken (host clock): a strap that rebooted while no host was
        there then continues after the time it was away, as during a session, not right after ``counter``.
        ``holes``: session counter ranges [first, last] missing below ``counter``; those of the strap's present
        boot that its ring may still hold are asked for again (a crash while a backfill ran lost the rest for good,
        a link review); a loss found in them is said as asked again after a restart (``resumed_holes``).
        """
        self.offset = offset
        self.head = max(0, counter + 1 - offset)  # a crash right after a reboot was stored: from the new boot's 0
        # An earlier boot's samples went with its RAM (a hole can run from its last into this boot's first ones).
        oldest = max(offset, int(counter - STRAP_RING_S * self.clock.nominal_rate_hz))
        for first, last in holes:
            if oldest <= last < counter:
                self.gaps.add(max(first, oldest) - offset, last + 1 - offset)
                self.resumed_holes.add(max(first, oldest) - offset, last + 1 - offset)
        # That stored sample dates strap counter head - 1 only if it belongs to the boot the head counts.
        self.resumed_at_s = host_t_s if counter + 1 - offset > 0 else None

    def last_held_s(self) -> float | None:
        """Host time of the newest sample held (strap counter head - 1): from the clock's fit, or for a restarted
        daemon without one yet, from the store."""
        if self.head is None:
            return None
        fit = self.clock.fit
        if fit is not None:
            self.resumed_at_s = None  # the live fit dates the strap from now on (also after a rate change)
            return fit.offset_s + (self.head - 1) * fit.period_s
        return self.resumed_at_s

    def backfill_wanted(self) -> tuple[int, int] | None:
        """The oldest missing range [start, end) to ask the strap for, or None."""
        return self.gaps.ranges[0] if self.gaps.ranges else None

    def strap_lost(self, before_counter: int) -> int:
        """The strap answered a backfill from a later counter: what is below it is gone for good; returns how many
        samples that gave up."""
        lost = self.gaps.drop_before(before_counter)
        self.stats.samples_lost += lost
        return lost

    def on_samples_packet(self, packet: SamplesPacket, arrival_s: float) -> None:
        self.stats.packets += 1
        n = len(packet.samples)
        if self.head is None:
            start = packet.counter
            self.head = start
        else:
            start = unwrap(packet.counter, self.head)
        end = start + n
        values = np.asarray(packet.samples, dtype=np.int64)
        if start >= self.head:
            # Live data (or a flush after a reconnect): anything skipped becomes a gap.
            if start > self.head:
                self.gaps.add(self.head, start)
                self.stats.gaps_opened += 1
            self.head = end
            self.clock.observe(end - 1, arrival_s)
            self._deliver(start, values, backfilled=False)
            return
        # Below the head only what fills a gap is new; a straddling packet's tail is live.
        gaps_before = len(self.gaps.ranges)
        pieces = self.gaps.take(start, min(end, self.head))
        if self.resumed_holes.ranges:  # filled: no longer a hole whose loss was said before
            self.resumed_holes.take(start, min(end, self.head))
        for lo, hi in pieces:
            self._deliver(lo, values[lo - start : hi - start], backfilled=True)
            self.stats.samples_backfilled += hi - lo
        self.stats.gaps_filled += max(0, gaps_before - len(self.gaps.ranges))
        if end > self.head:
            live_start = self.head
            self.head = end
            self.clock.observe(end - 1, arrival_s)
            self._deliver(live_start, values[live_start - start :], backfilled=False)
        elif not pieces:
            self.stats.duplicates += 1

    def _deliver(self, first: int, values: npt.NDArray[np.int64], backfilled: bool) -> None:
        if len(values) == 0:
            return
        counters = np.arange(first, first + len(values), dtype=np.float64)
        fit = self.clock.fit
        assert fit is not None  # observe() ran for the first live packet
        host = fit.offset_s + counters * fit.period_s
        self.stats.samples += len(values)
        self.on_samples(SampleBlock(self.role, first + self.offset, values, host, backfilled))

    def on_event_packet(self, packet: EventPacket, arrival_s: float) -> None:
        self.stats.packets += 1
        reference = self.head if self.head is not None else packet.index
        index = unwrap(packet.index, reference)
        key = (int(packet.kind), index)
        if key in self._seen_events:
            self.stats.duplicates += 1
            return
        self._seen_events.add(key)
        if len(self._seen_events) > SEEN_EVENTS_MAX:
            # Bounded: the strap can re-send only what its event ring (512) still holds, so keys older than the
            # newest SEEN_EVENTS_KEPT cannot recur. (Trimming by age kept >4096 keys of a fast breather, and the
            # set was rebuilt on every event: 300 us each.)
            newest = sorted(self._seen_events, key=lambda k: k[1])[-SEEN_EVENTS_KEPT:]
            self._seen_events = set(newest)
        if self.clock.fit is None:
            self.clock.observe(index + packet.confirm_delay, arrival_s)
        host = self.clock.host_time_s(index)
        self.stats.events += 1
        kind: Kind = "peak" if packet.kind == EventKind.PEAK else "trough"
        backfilled = self.head is not None and index + packet.confirm_delay < self.head - 4 * self.rate_hz
        self.on_event(
            StrapEvent(
                self.role,
                kind,
                index + self.offset,
                index + packet.confirm_delay + self.offset,
                packet.depth,
                packet.interval,
                host,
                backfilled,
            )
        )
