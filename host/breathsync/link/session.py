"""Protocol logic over one connected transport: decode, dispatch, commands and their answers.

A transport (BLE characteristic notifications, the serial port's frames) hands every received
packet to ``StrapSession.handle`` with its arrival time; the session decodes it (counting, never
raising on, bad packets), feeds the ``StrapStream`` and resolves pending commands when their
RESPONSE arrives. Commands carry an 8-bit tag so each answer finds its caller.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

from ..errors import BreathsyncError
from ..protocol import (
    Backfill,
    Channel,
    ControlCommand,
    EventPacket,
    GetStatus,
    HapticCommand,
    ProtocolError,
    ResponsePacket,
    ResultCode,
    SamplesPacket,
    SetRate,
    StartStream,
    StatusFlag,
    StatusPacket,
    StopStream,
    TimeSync,
    decode,
    encode,
)
from ..roles import Role
from .clock import MAX_DRIFT_PPM
from .stream import SampleBlock, StrapEvent, StrapStream, unwrap

WriteFn = Callable[[Channel, bytes], Awaitable[None]]
TIME_SYNCS_KEPT = 256
REBOOT_BEHIND_S = 2.0  # a TIME_SYNC counter this far behind the clock fit's prediction is a new boot
MAX_HELD_PACKETS = 512  # about 2 minutes of 7-sample packets at 25 Hz


class LinkError(BreathsyncError):
    """A strap could not be reached, or did not answer a command in time."""


class CommandUnanswered(LinkError):
    """A command went out but no answer came (in time, or before the link was lost): the strap may have carried it
    out. A haptic pattern may have been felt."""


class CommandRejected(LinkError):
    """The strap answered a command with an error result code."""

    def __init__(self, response: ResponsePacket) -> None:
        super().__init__(f"strap rejected the command: {response.result.name}")
        self.response = response


class StrapSink(Protocol):
    """Where a link delivers what it receives. Called on the event loop's thread."""

    def on_samples(self, block: SampleBlock) -> None: ...

    def on_event(self, event: StrapEvent) -> None: ...

    def on_status(self, role: Role, status: StatusPacket) -> None: ...

    def on_link(self, role: Role, kind: str, detail: str) -> None: ...


class StrapSession:
    """One strap's protocol state; survives reconnects (the stream and statistics persist)."""

    def __init__(
        self,
        role: Role,
        sink: StrapSink,
        rate_hz: float = 25.0,
        clock: Callable[[], float] = time.monotonic,
        session_rate_hz: int | None = None,
    ):
        """``rate_hz``: the rate assumed until the strap's STATUS says; ``session_rate_hz``: the rate the strap is set
        to before it streams (a session records at one rate), or None to take the strap's own."""
        self.role = role
        self.sink = sink
        self.clock = clock
        self.session_rate_hz = session_rate_hz
        self.stream = StrapStream(role, rate_hz, sink.on_samples, sink.on_event)
        self.stats = self.stream.stats
        self.status: StatusPacket | None = None
        self._status_seen = asyncio.Event()
        self.streaming = False  # START_STREAM answered since this transport attached and the strap last restarted
        self._next_start_s = 0.0
        self._rate_refused = False
        self._write: WriteFn | None = None
        self._tags = itertools.cycle(range(1, 256))
        self._pending: dict[int, asyncio.Future[ResponsePacket]] = {}
        self._backfill_in_flight: tuple[int, int] | None = None
        # (sent_s, answered_s, counter) of the latest TIME_SYNCs: one every 1-2 s, kept for inspection only (a
        # list of every one grew by ~0.5 MB an hour).
        self.time_sync: deque[tuple[float, float, int]] = deque(maxlen=TIME_SYNCS_KEPT)
        # After a reconnect the strap may have rebooted (counter restarted). Until the first TIME_SYNC
        # answer tells, sample and event packets are held: read against the old counting they would
        # be taken for duplicates, or worse, for backfill of old gaps.
        self._epoch_pending = False
        self._held: list[tuple[int, bytes, float]] = []

    # -- transport side --------------------------------------------------------------------------

    def attach(self, write: WriteFn) -> None:
        """A transport connected: commands go through ``write`` from now on."""
        self._write = write
        self._backfill_in_flight = None
        self._epoch_pending = self.stream.head is not None
        self.streaming = False
        self._next_start_s = 0.0

    def detach(self, reason: str) -> None:
        """The transport is gone: pending commands fail; the stream keeps its position."""
        self._write = None
        self._backfill_in_flight = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(LinkError(f"{self.role}: link lost ({reason})"))
        self._pending.clear()

    @property
    def attached(self) -> bool:
        return self._write is not None

    def handle(self, channel: int, data: bytes, arrival_s: float | None = None) -> None:
        arrival = self.clock() if arrival_s is None else arrival_s
        if self._epoch_pending and channel in (Channel.SAMPLES, Channel.EVENT):
            self._held.append((channel, data, arrival))
            if len(self._held) >= MAX_HELD_PACKETS:  # no TIME_SYNC answer for minutes: assume no reboot
                self._settle_epoch(None, arrival)
            return
        try:
            packet = decode(channel, data)
        except ProtocolError as error:
            self.stats.count_bad(error)
            return
        if isinstance(packet, SamplesPacket):
            self.stream.on_samples_packet(packet, arrival)
        elif isinstance(packet, EventPacket):
            self.stream.on_event_packet(packet, arrival)
        elif isinstance(packet, StatusPacket):
            self.stats.packets += 1
            self._on_status(packet)
        elif isinstance(packet, ResponsePacket):
            self.stats.packets += 1
            future = self._pending.pop(packet.tag, None)
            if future is not None and not future.done():
                future.set_result(packet)
        else:  # a command echoed back: not for the host
            self.stats.count_bad(ProtocolError(f"unexpected {type(packet).__name__} from the strap"))

    def _on_status(self, status: StatusPacket) -> None:
        previous = self.status
        self.status = status
        self._status_seen.set()
        if previous is None or previous.sample_rate_hz != status.sample_rate_hz:
            self.stream.set_rate(status.sample_rate_hz)
        self.sink.on_status(self.role, status)

    # -- commands ----------------------------------------------------------------------------------

    async def command(self, command: ControlCommand | HapticCommand, timeout_s: float = 3.0) -> ResponsePacket:
        """Send ``command`` (its tag is replaced) and wait for the strap's RESPONSE.

        Raises LinkError when not connected or unanswered within ``timeout_s``, and
        CommandRejected when the strap answers with an error code (except BUSY, returned).
        """
        write = self._write
        if write is None:
            raise LinkError(f"{self.role}: not connected")
        tag = next(self._tags)
        while tag in self._pending:
            tag = next(self._tags)
        command = replace(command, tag=tag)
        future: asyncio.Future[ResponsePacket] = asyncio.get_running_loop().create_future()
        self._pending[tag] = future
        channel, payload = encode(command)
        try:
            await write(channel, payload)
            try:
                response = await asyncio.wait_for(future, timeout_s)
            except TimeoutError:
                raise CommandUnanswered(
                    f"{self.role}: no answer to {type(command).__name__} within {timeout_s} s"
                ) from None
            except LinkError as exc:  # the link was lost after the command went out
                raise CommandUnanswered(str(exc)) from None
        finally:
            self._pending.pop(tag, None)
        if response.result not in (ResultCode.OK, ResultCode.BUSY):
            raise CommandRejected(response)
        return response

    async def keep_streaming(self, now_s: float, retry_s: float) -> None:
        """Called by the link every turn: ``start_streaming`` until the strap streams, at most every ``retry_s`` (10x
        that after a refused SET_RATE: each is a flash write on the strap). Once was all, and one lost write left a
        connected strap that answered every ping and never streamed (a link review); failures are the next turn's."""
        if self.streaming or now_s < self._next_start_s:
            return
        self._next_start_s = now_s + retry_s
        try:
            await self.start_streaming()
            self.streaming = True
        except CommandRejected:
            self._next_start_s = now_s + 10 * retry_s
        except LinkError:
            pass

    async def start_streaming(self, timeout_s: float = 3.0) -> None:
        """After each connect: the strap set to ``session_rate_hz`` if it runs at another rate (SET_RATE, which the
        strap keeps), then START_STREAM. LinkError when any step fails: the caller tries again. (The daemon took
        every strap for straps.rate_hz and never asked: a strap set to 50 Hz by `breathsync strap --rate` had its
        breaths dated at twice their intervals and its sample blocks overlapping, a link review.)"""
        wanted = self.session_rate_hz
        if wanted is None:
            await self.command(GetStatus(0), timeout_s)  # its STATUS now, not at its first change
        else:
            status = await self.read_status(timeout_s)
            if status.sample_rate_hz != wanted:
                if status.flags & StatusFlag.STREAMING:  # a strap changes its rate only while not streaming
                    await self.command(StopStream(0), timeout_s)
                try:
                    response = await self.command(SetRate(0, wanted), timeout_s)
                except CommandRejected as exc:  # it could not save its settings: said once, tried again later
                    if not self._rate_refused:
                        self._rate_refused = True
                        self.sink.on_link(
                            self.role,
                            "rate-refused",
                            f"refused the session's {wanted} Hz ({exc.response.result.name}) and stays at "
                            f"{status.sample_rate_hz} Hz: nothing is recorded from it until it takes the rate "
                            "(restart the strap)",
                        )
                    raise
                if response.result != ResultCode.OK:  # BUSY: it was streaming after all
                    raise LinkError(f"{self.role}: the strap put off SET_RATE (busy)")
                self.sink.on_link(
                    self.role, "rate-set", f"set to the session's {wanted} Hz (it ran at {status.sample_rate_hz} Hz)"
                )
                await self.read_status(timeout_s)  # its clock at the new rate before any sample at it is read
        await self.command(StartStream(0), timeout_s)

    async def read_status(self, timeout_s: float = 3.0) -> StatusPacket:
        """GET_STATUS, and the STATUS the strap sends after answering it."""
        self._status_seen.clear()
        await self.command(GetStatus(0), timeout_s)
        try:
            await asyncio.wait_for(self._status_seen.wait(), timeout_s)
        except TimeoutError:
            raise CommandUnanswered(f"{self.role}: no STATUS after GET_STATUS within {timeout_s} s") from None
        assert self.status is not None
        return self.status

    async def haptic(self, pattern: HapticCommand, timeout_s: float = 3.0) -> ResponsePacket:
        self.stats.haptic_sent += 1
        response = await self.command(pattern, timeout_s)
        if response.ok:
            self.stats.haptic_confirmed += 1
        return response

    async def ping(self) -> None:
        """TIME_SYNC: the strap's counter at a bracketed host time (a precise clock observation)."""
        sent_s = self.clock()
        held_at_send = self.stream.head  # every sample below it was acquired before the strap handles this
        response = await self.command(TimeSync(0, int(sent_s * 1000) & 0xFFFFFFFF))
        answered_s = self.clock()
        self.time_sync.append((sent_s, answered_s, response.value1))
        self._settle_epoch(response.value1, answered_s, held_at_send, sent_s)

    def _settle_epoch(
        self, counter_now: int | None, at_s: float, held_at_send: int | None = None, sent_s: float | None = None
    ) -> None:
        """Release held packets; first, a strap counter (TIME_SYNC) below what the host already held when it
        asked means the strap rebooted. (Samples that arrive while the answer travels may pass it: they
        do not count.)"""
        head = self.stream.head
        if (
            counter_now is not None
            and head is not None
            and held_at_send is not None
            # min(): a reboot already handled while this answer travelled reset the head; no second one
            and (
                unwrap(counter_now, held_at_send) < min(held_at_send, head)
                or (sent_s is not None and self._behind_clock(counter_now, sent_s))
            )
        ):
            old = self.stream.offset + head
            start = self.stream.rebooted(counter_now, at_s, sent_s)
            self.streaming = False  # a restarted strap streams once asked again (a serial port stays open through it)
            self.sink.on_link(
                self.role, "strap-rebooted", f"counter back to {counter_now}; session counters {old} -> {start}"
            )
        self._epoch_pending = False
        held, self._held = self._held, []
        for channel, data, arrival in held:
            self.handle(channel, data, arrival)

    def _behind_clock(self, counter_now: int, sent_s: float) -> bool:
        """The strap's counter is well behind where its clock says it was when the TIME_SYNC was sent (it read
        the counter later: a late answer cannot look like a reboot): it rebooted. Needed when the new boot has
        been up longer than the old one had reached when the link dropped (out of range for a while): its
        counter is then past the old head, and its samples were taken for the old boot's, 4 s early in one
        case, and the old boot's missing ones were never asked for."""
        clock = self.stream.clock
        head = self.stream.head
        last_s = self.stream.last_held_s()
        if head is None or last_s is None:
            return False
        period_s = clock.fit.period_s if clock.fit is not None else 1.0 / clock.nominal_rate_hz
        since_s = max(0.0, sent_s - last_s)
        expected = head - 1 + since_s / period_s
        slack_s = REBOOT_BEHIND_S + MAX_DRIFT_PPM * 1e-6 * since_s  # the fit extrapolated over a gap
        slack = slack_s * clock.nominal_rate_hz
        if clock.fit is None:
            # Dated from the store (a crashed run's wall clock, which NTP may have stepped since): a new boot is
            # behind by at least everything the old one had counted, so half of that is a safe margin.
            slack = max(slack, 0.5 * head)
        return unwrap(counter_now, head) < expected - slack

    async def request_backfill(self) -> bool:
        """Ask for the oldest missing range, unless a backfill is already running. True if asked."""
        wanted = self.stream.backfill_wanted()
        if wanted is None or self._backfill_in_flight is not None or self._write is None or self._epoch_pending:
            return False
        start, end = wanted
        self._backfill_in_flight = wanted
        # A gap across the counter's 2**32 wrap cannot be one [from, to) on the wire: asked open-ended, up to now
        # (what arrives twice is dropped). As [from & mask, to & mask) it was empty, and the error ended the link.
        to = end & 0xFFFFFFFF if (end & 0xFFFFFFFF) > (start & 0xFFFFFFFF) else None
        try:
            response = await self.command(Backfill(0, start & 0xFFFFFFFF, to))
        except LinkError:
            self._backfill_in_flight = None
            raise
        if response.result == ResultCode.BUSY:
            self._backfill_in_flight = None
            return False
        first_available = self.stream.gaps.ranges[0][0] if self.stream.gaps.ranges else start
        ahead = (response.value0 - start) & 0xFFFFFFFF
        # value0 behind the start asked for: the strap has not counted that far (a reboot the host has not
        # seen yet), which is no reason to give up the gap; the next TIME_SYNC tells.
        if 0 < ahead < 1 << 31:
            # The strap no longer holds [start, value0): those samples are lost for good. Said as what that gave up
            # of the range asked for (a review: the strap's oldest sample, past a 2-sample gap asked for, read as
            # 454 lost), in seconds for the therapist, with the counters for the technician.
            until = min(start + ahead, end)
            lost = self.stream.strap_lost(max(until, first_available))
            # A hole a resumed run asked for again: the run before may have said its loss already, or crashed while
            # it asked (a review: not saying it hid such losses): said, as found after the restart.
            again = self.stream.resumed_holes.drop_before(max(until, first_available)) > 0
            if lost:
                self.sink.on_link(
                    self.role,
                    "samples-lost",
                    f"{lost / self.stream.rate_hz:.1f} s of its data could not be recovered (samples "
                    f"{start}..{until - 1}{'; asked again after a restart' if again else ''})",
                )
        self._backfill_in_flight = None
        return True
