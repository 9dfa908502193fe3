"""The transport-independent receive side: no loss, no duplicates, counters to host time."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from breathsync.link.stream import Gaps, SampleBlock, StrapEvent, StrapStream, unwrap
from breathsync.protocol import EventKind, EventPacket, SamplesPacket

RATE_HZ = 25.0
PER_PACKET = 7


def packets(first_counter: int, values: list[int]) -> list[SamplesPacket]:
    out = []
    for i in range(0, len(values), PER_PACKET):
        chunk = values[i : i + PER_PACKET]
        out.append(SamplesPacket(len(out) & 0xFF, (first_counter + i) % (1 << 32), tuple(chunk)))
    return out


class Collector:
    def __init__(self) -> None:
        self.blocks: list[SampleBlock] = []
        self.events: list[StrapEvent] = []

    def stream(self) -> StrapStream:
        return StrapStream("client", RATE_HZ, self.blocks.append, self.events.append)

    def counters(self) -> list[int]:
        return [int(c) for b in self.blocks for c in b.counters]

    def values(self) -> dict[int, int]:
        return {int(c): int(v) for b in self.blocks for c, v in zip(b.counters, b.values, strict=True)}


def test_unwrap_across_the_32_bit_boundary() -> None:
    assert unwrap(5, (1 << 32) - 10) == (1 << 32) + 5
    assert unwrap((1 << 32) - 3, 1 << 32) == (1 << 32) - 3
    assert unwrap(100, 90) == 100


def test_gaps_take_and_drop() -> None:
    gaps = Gaps()
    gaps.add(10, 20)
    gaps.add(30, 40)
    assert gaps.take(15, 35) == [(15, 20), (30, 35)]
    assert gaps.ranges == [(10, 15), (35, 40)]
    assert gaps.drop_before(37) == 5 + 2
    assert gaps.ranges == [(37, 40)]


@settings(max_examples=60, deadline=None)
@given(
    first=st.sampled_from([0, 1000, (1 << 32) - 40]),
    n=st.integers(20, 200),
    data=st.data(),
)
def test_any_order_with_losses_and_duplicates_then_backfill_delivers_each_sample_once(
    first: int, n: int, data: st.DataObject
) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    values = [int(v) for v in rng.integers(0, 65536, n)]
    live = packets(first, values)
    # The first packet arrives first (it anchors the stream); the rest may be lost, duplicated, reordered.
    order = [0]
    lost = []
    for i in range(1, len(live)):
        fate = data.draw(st.sampled_from(["ok", "ok", "lost", "dup"]))
        if fate == "lost":
            lost.append(i)
        else:
            order.append(i)
            if fate == "dup":
                order.append(i)
    head, tail = order[:1], order[1:]
    rng.shuffle(tail)
    collector = Collector()
    stream = collector.stream()
    t = 0.0
    for i in head + tail:
        t += 0.3
        stream.on_samples_packet(live[i], t)
    # Backfill: the strap re-sends what the host asks for (here: the lost packets, in any order).
    for i in lost:
        stream.on_samples_packet(live[i], t + 5)
    got = collector.counters()
    assert sorted(got) == list(range(first, first + n))
    assert len(got) == len(set(got)), "a sample was delivered twice"
    assert collector.values() == {first + i: v for i, v in enumerate(values)}
    assert stream.backfill_wanted() is None
    assert stream.stats.samples == n


def test_gap_is_requested_and_counted() -> None:
    collector = Collector()
    stream = collector.stream()
    live = packets(0, list(range(70)))
    stream.on_samples_packet(live[0], 0.3)
    stream.on_samples_packet(live[3], 1.2)  # packets 1 and 2 lost
    assert stream.backfill_wanted() == (7, 21)
    stream.on_samples_packet(live[1], 2.0)
    assert stream.backfill_wanted() == (14, 21)
    stream.on_samples_packet(live[2], 2.0)
    assert stream.backfill_wanted() is None
    assert stream.stats.gaps_opened == 1 and stream.stats.gaps_filled >= 1
    assert stream.stats.samples_backfilled == 14
    stream.on_samples_packet(live[2], 2.1)
    assert stream.stats.duplicates == 1


def test_strap_reports_overwritten_samples_as_lost() -> None:
    collector = Collector()
    stream = collector.stream()
    live = packets(0, list(range(70)))
    stream.on_samples_packet(live[0], 0.3)
    stream.on_samples_packet(live[5], 1.5)
    stream.strap_lost(before_counter=21)  # the strap only still had counters >= 21
    assert stream.stats.samples_lost == 14
    assert stream.backfill_wanted() == (21, 35)


def test_backfilled_samples_get_their_own_time_not_their_arrival() -> None:
    collector = Collector()
    stream = collector.stream()
    live = packets(0, list(range(25 * 60)))
    for i, packet in enumerate(live):
        if 100 <= i < 110:
            continue  # lost during a disconnect
        stream.on_samples_packet(packet, (packet.counter + PER_PACKET - 1) / RATE_HZ + 0.02)
    for i in range(100, 110):
        stream.on_samples_packet(live[i], 60.0 + i)  # very late
    block = next(b for b in collector.blocks if b.backfilled)
    expected = block.first_counter / RATE_HZ
    assert abs(block.host_t_s[0] - expected) < 0.05


def test_events_are_deduplicated_and_time_mapped() -> None:
    collector = Collector()
    stream = collector.stream()
    for packet in packets(0, list(range(250))):
        stream.on_samples_packet(packet, (packet.counter + PER_PACKET - 1) / RATE_HZ + 0.02)
    event = EventPacket(0, EventKind.PEAK, 100, 15, 900, 80)
    stream.on_event_packet(event, 5.0)
    stream.on_event_packet(event, 5.1)
    assert len(collector.events) == 1 and stream.stats.duplicates == 1
    [ev] = collector.events
    assert ev.kind == "peak" and ev.counter == 100 and ev.confirmed_counter == 115
    assert abs(ev.host_t_s - 100 / RATE_HZ) < 0.05


def test_reboot_continues_session_counters_after_the_downtime() -> None:
    collector = Collector()
    stream = collector.stream()
    first = packets(0, list(range(700)))  # 28 s
    for i, packet in enumerate(first):
        if i not in (50, 51):  # a gap that the reboot makes unrecoverable
            stream.on_samples_packet(packet, (packet.counter + PER_PACKET - 1) / RATE_HZ + 0.02)
    assert stream.backfill_wanted() == (350, 364)
    # Off for ~12 s, then booted: 2 s later its counter is 50.
    start = stream.rebooted(counter_now=50, at_s=42.0)
    assert stream.stats.samples_lost == 14 and stream.stats.reboots == 1
    # The last sample held, counter 699, was taken at 699 / RATE_HZ; the new boot's 0 at 40 s, that many periods later.
    assert start == 699 + round((42.0 - 50 / RATE_HZ - 699 / RATE_HZ) * RATE_HZ) == 1000
    assert stream.backfill_wanted() is None
    for packet in packets(0, [1000 + v for v in range(70)]):
        stream.on_samples_packet(packet, 40.0 + (packet.counter + PER_PACKET - 1) / RATE_HZ + 0.02)
    stream.on_event_packet(EventPacket(0, EventKind.PEAK, 30, 15, 900, 80), 42.0)
    got = collector.values()
    assert [got[start + i] for i in range(70)] == [1000 + v for v in range(70)]
    counters = collector.counters()
    assert len(counters) == len(set(counters)) and stream.stats.duplicates == 0
    assert collector.events[-1].counter == start + 30
    assert abs(collector.blocks[-1].host_t_s[-1] - (40.0 + 69 / RATE_HZ)) < 0.1


class _QuietSink:
    def on_samples(self, block: SampleBlock) -> None: ...
    def on_event(self, event: StrapEvent) -> None: ...
    def on_status(self, role: str, status: object) -> None: ...
    def on_link(self, role: str, kind: str, detail: str) -> None: ...


def test_a_resumed_run_dates_a_reboot_by_the_stored_time_but_not_a_wall_clock_step() -> None:
    from breathsync.link.session import StrapSession

    # Last stored sample: session counter 1000 at wall time 1000 s; the host comes back 40 s later.
    session = StrapSession("therapist", _QuietSink(), RATE_HZ, clock=lambda: 1040.0)
    session.stream.resume_after(1000, 0, 1000.0)
    assert not session._behind_clock(1000 + 40 * 25, 1040.0)  # the strap counted on: no reboot
    assert not session._behind_clock(1000 + 40 * 25, 1043.0)  # nor after NTP stepped the wall clock by 3 s
    assert session._behind_clock(1001 + 10 * 25, 1040.0)  # restarted 30 s ago, now past the old head: a reboot
    # The new boot's counter 0 continues after the time the strap was away, not right after counter 1000.
    start = session.stream.rebooted(counter_now=10 * 25, at_s=1040.0)
    assert start == 1000 + round((1030.0 - 1000.0) * RATE_HZ)
    # Stored after a reboot, before any sample of the new boot: the stored time dates the old boot, not this one.
    again = StrapSession("therapist", _QuietSink(), RATE_HZ, clock=lambda: 1100.0)
    again.stream.resume_after(1000, 1001 + 60 * 25, 1000.0)
    assert again.stream.head == 0 and again.stream.last_held_s() is None
    assert not again._behind_clock(40 * 25, 1100.0)


def test_a_resumed_run_asks_again_for_the_holes_the_strap_may_still_hold() -> None:
    # A crash while a backfill ran: the next run asked only after the last stored sample, and the strap's samples of
    # the hole below it were never fetched, though it still held them (a link review: 77 samples, for good).
    from breathsync.link.session import StrapSession

    session = StrapSession("therapist", _QuietSink(), RATE_HZ)
    session.stream.resume_after(10_000, 0, 400.0, holes=[(9_000, 9_099), (9_950, 9_979)])
    assert session.stream.gaps.ranges == [(9_000, 9_100), (9_950, 9_980)]
    # After a reboot (offset 5000): the earlier boot's hole went with its RAM; this boot's is in its own counters.
    again = StrapSession("therapist", _QuietSink(), RATE_HZ)
    again.stream.resume_after(10_000, 5_000, 400.0, holes=[(4_000, 4_999), (9_950, 9_979)])
    assert again.stream.gaps.ranges == [(4_950, 4_980)]
    # A hole from the earlier boot's last samples into this boot's first ones (a crash right after a reconnect
    # that followed a reboot): this boot's part is asked for (a review: dropped whole).
    straddling = StrapSession("therapist", _QuietSink(), RATE_HZ)
    straddling.stream.resume_after(10_000, 5_000, 400.0, holes=[(4_000, 5_099)])
    assert straddling.stream.gaps.ranges == [(0, 100)]
    # Older than the strap's ring (5 min at 25 Hz): given up, and said, by the run before.
    old = StrapSession("therapist", _QuietSink(), RATE_HZ)
    old.stream.resume_after(20_000, 0, 800.0, holes=[(1_000, 1_099), (12_000, 12_999), (19_000, 19_009)])
    assert old.stream.gaps.ranges == [(12_500, 13_000), (19_000, 19_010)]


def test_a_reboot_is_dated_by_the_middle_of_the_time_syncs_round_trip() -> None:
    # The strap read its counter somewhere between the question and the answer: dated by the answer, the new boot's
    # counters sat ~2 samples (43 ms at 50 Hz) ahead of their host times in a data review's session.
    from breathsync.link.session import StrapSession

    starts = []
    for asked_s in (None, 1039.76):
        session = StrapSession("therapist", _QuietSink(), RATE_HZ, clock=lambda: 1040.0)
        session.stream.resume_after(1000, 0, 1000.0)  # counter 1000 at 1000 s
        # Counter 500 read at 1039.88 s, the middle of a 240 ms round trip: the new boot's 0 came at 1019.88 s, 496
        # samples (19.84 s) after the last one held.
        starts.append(session.stream.rebooted(counter_now=500, at_s=1040.0, asked_s=asked_s))
    assert starts == [1001 + 496 + 3, 1001 + 496]  # 3 samples (0.12 s) late by the answer; on time by the middle


def test_a_loss_in_a_hole_asked_again_after_a_restart_is_said_as_such() -> None:
    # A resumed run asks again for the holes its strap may hold. The run before may have said a loss there already
    # (a review: said twice alike) or crashed while it asked (a second review: not saying it hid the loss).
    import asyncio

    from breathsync.link.session import StrapSession
    from breathsync.protocol import Backfill, Channel, ResponsePacket, ResultCode, decode, encode

    class Sink(_QuietSink):
        def __init__(self) -> None:
            self.link: list[tuple[str, str]] = []

        def on_link(self, role: str, kind: str, detail: str) -> None:
            self.link.append((kind, detail))

    async def go() -> list[tuple[str, str]]:
        sink = Sink()
        session = StrapSession("client", sink, RATE_HZ)
        session.stream.resume_after(9_999, 0, 400.0, holes=[(9_000, 9_099)])
        session.stream.on_samples_packet(packets(10_000, list(range(7)))[0], 401.0)  # live again
        session.stream.on_samples_packet(packets(10_100, list(range(7)))[0], 405.0)  # a new gap: 10_007..10_099

        async def write(channel: int, payload: bytes) -> None:
            command = decode(Channel(channel), payload)
            assert isinstance(command, Backfill)
            held_from = 10_050  # the strap no longer holds anything before it
            answer = ResponsePacket(command.tag, Channel.CONTROL, 0x04, ResultCode.OK, held_from, held_from)
            asyncio.get_running_loop().call_soon(session.handle, Channel.RESPONSE, encode(answer)[1])

        session.attach(write)
        session._epoch_pending = False
        assert await session.request_backfill()  # the re-asked hole: gone, said before
        assert await session.request_backfill()  # the new gap: half of it gone
        return sink.link

    assert asyncio.run(go()) == [
        ("samples-lost", "4.0 s of its data could not be recovered (samples 9000..9099; asked again after a restart)"),
        ("samples-lost", "1.7 s of its data could not be recovered (samples 10007..10049)"),
    ]


def test_a_strap_that_restarts_behind_an_open_port_is_asked_to_stream_again() -> None:
    # Wired: the port stays open through a strap's restart, and the new boot streams only once asked; the link asked
    # once per port (a review: silent for the rest of the session).
    from breathsync.link.session import StrapSession

    session = StrapSession("therapist", _QuietSink(), RATE_HZ, clock=lambda: 1040.0)
    for packet in packets(0, list(range(700))):
        session.stream.on_samples_packet(packet, 1000.0 + packet.counter / RATE_HZ)
    session.streaming = True
    session._settle_epoch(25, 1040.0, held_at_send=700, sent_s=1039.9)  # its counter back to 25: restarted
    assert session.stream.stats.reboots == 1 and session.streaming is False


def test_a_gap_across_the_counters_wrap_is_asked_for_up_to_now() -> None:
    # [from & mask, to & mask) of a gap across 2**32 was empty: Backfill raised, which is no LinkError, and ended the
    # link's task, and the session with it (a link review; 994 days of uptime at 50 Hz).
    import asyncio

    from breathsync.link.session import StrapSession
    from breathsync.protocol import Backfill, Channel, ResponsePacket, ResultCode, SamplesPacket, decode, encode

    async def go() -> list[Backfill]:
        session = StrapSession("client", _QuietSink(), RATE_HZ)
        sent: list[Backfill] = []

        async def write(channel: int, payload: bytes) -> None:
            command = decode(Channel(channel), payload)
            assert isinstance(command, Backfill)
            sent.append(command)
            start = command.from_counter
            answer = ResponsePacket(command.tag, Channel.CONTROL, 0x04, ResultCode.OK, start, (start + 18) % 2**32)
            asyncio.get_running_loop().call_soon(session.handle, Channel.RESPONSE, encode(answer)[1])

        session.attach(write)
        session._epoch_pending = False
        session.handle(Channel.SAMPLES, bytes(SamplesPacket(0, 2**32 - 20, (1,) * 7)), 100.0)
        session.handle(Channel.SAMPLES, bytes(SamplesPacket(2, 5, (1,) * 7)), 101.0)
        assert session.stream.gaps.ranges == [(2**32 - 13, 2**32 + 5)]
        assert await session.request_backfill()
        assert session.stream.gaps.ranges == [(2**32 - 13, 2**32 + 5)]  # nothing given up
        return sent

    sent = asyncio.run(go())
    assert [(c.from_counter, c.to_counter) for c in sent] == [(2**32 - 13, None)]


def test_a_backfill_answer_behind_the_start_asked_for_loses_nothing() -> None:
    """value0 > from: the strap no longer holds [from, value0), lost. value0 < from (mod 2**32): the strap has
    not counted that far (it rebooted and the host has not seen it yet); read as 'ahead', the gap's whole
    range was given up: 2**32 counters lost."""
    import asyncio

    from breathsync.link.session import StrapSession
    from breathsync.protocol import Backfill, Channel, ResponsePacket, ResultCode, decode, encode

    class Sink(_QuietSink):
        def __init__(self) -> None:
            self.link: list[tuple[str, str]] = []

        def on_link(self, role: str, kind: str, detail: str) -> None:
            self.link.append((kind, detail))

    async def asked(value0: int) -> tuple[list[tuple[int, int]], list[tuple[str, str]]]:
        sink = Sink()
        session = StrapSession("client", sink, RATE_HZ)
        for packet in packets(0, list(range(100))) + packets(200, list(range(100))):
            session.stream.on_samples_packet(packet, 0.0)

        async def write(channel: int, payload: bytes) -> None:
            command = decode(Channel(channel), payload)
            assert isinstance(command, Backfill) and (command.from_counter, command.to_counter) == (100, 200)
            answer = ResponsePacket(command.tag, Channel.CONTROL, 0x04, ResultCode.OK, value0, value0)
            asyncio.get_running_loop().call_soon(session.handle, Channel.RESPONSE, encode(answer)[1])

        session.attach(write)
        session._epoch_pending = False  # the TIME_SYNC after connecting has answered: no reboot seen
        assert await session.request_backfill()
        return session.stream.gaps.ranges, sink.link

    gaps, link = asyncio.run(asked(150))
    assert gaps == [(150, 200)] and link == [
        ("samples-lost", "2.0 s of its data could not be recovered (samples 100..149)")
    ]
    gaps, link = asyncio.run(asked(60))
    assert gaps == [(100, 200)] and link == []
    # An answer past the range asked for gives up that range only (a review: the strap's oldest sample, 452 past a
    # 2-sample gap, was said as 454 lost).
    gaps, link = asyncio.run(asked(250))
    assert gaps == [] and link == [("samples-lost", "4.0 s of its data could not be recovered (samples 100..199)")]


def test_the_duplicate_filter_stays_bounded_and_still_catches_what_a_strap_can_resend() -> None:
    # Trimmed by age (67 min of counters), a fast breather's set never fell under its 4096 limit and was rebuilt on
    # every event (300 us each). The strap re-sends only what its 512-event ring holds.
    from breathsync.link.stream import SEEN_EVENTS_MAX

    collector = Collector()
    stream = collector.stream()
    stream.on_samples_packet(packets(0, [0] * 7)[0], 0.0)
    events = [
        EventPacket(i & 0xFF, EventKind.PEAK if i % 2 else EventKind.TROUGH, 10 * i, 5, 100, 0) for i in range(10_000)
    ]
    for event in events:
        stream.on_event_packet(event, 1.0)
        assert len(stream._seen_events) <= SEEN_EVENTS_MAX + 1
    assert len(collector.events) == 10_000
    for event in events[-512:]:  # a backfill re-sends the whole ring
        stream.on_event_packet(event, 2.0)
    assert len(collector.events) == 10_000 and stream.stats.duplicates == 512
