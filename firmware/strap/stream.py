"""Notification scheduler: pacing, ENOMEM retry, priorities, live stream and backfill (docs/protocol.md 4, 7).

Pure logic (no asyncio, no radio): the caller passes the time (``now_ms``, a ticks_ms value)
and a *link* with ``connected``, ``spp`` (samples per SAMPLES packet for the MTU),
``min_interval_ms`` (50 over BLE, 0 wired) and ``send(channel, buf, n)`` that returns True when
the stack took the packet and False or ``OSError`` when it refused it. Runs unchanged under
CPython, so its rules are unit-tested there too.

One packet at a time is *held* in ``pkt``: built from the rings when the link may send, then
offered until the stack accepts it. A refused packet keeps its bytes and its ``seq`` and is
retried before anything new is built (its sequence number must stay in order), after 50 ms,
doubling to 400 ms; the backoff resets after a success. Samples leave the ring's pending region
(``commit``) only when their packet was accepted: nothing is ever dropped by the scheduler.

Live stream = real time. ``start()`` (START_STREAM) moves the delivery cursors of the sample
and event rings to their heads: from then on every sample and event is sent live, in order.
What was acquired before (boot, or a disconnect) stays in the ring and reaches the host through
``backfill()`` (BACKFILL), at a lower priority, without duplicating the live stream: an open-ended
backfill ends where the live stream begins. While nobody streams, the cursors stay put, so the
ring counts samples overwritten before they were ever sent (``ring.overflow``, STATUS
``dropped_samples``): that happens only when a disconnect outlasts the ring.

Priority when several are due (section 7): RESPONSE > EVENT > live SAMPLES > backfill
EVENT/SAMPLES > STATUS > battery level. Live SAMPLES are due when a full packet is pending or
the oldest pending sample has waited FLUSH_AFTER_MS (counted in samples: no per-sample clock).
"""

from array import array

from core.detector import EV_CONFIRMED, EV_INDEX, EVENT_FIELDS
from core.haptics import ticks_diff
from core.packets import (
    BACKFILL_OPEN_END,
    BUSY,
    CH_EVENT,
    CH_RESPONSE,
    CH_SAMPLES,
    CH_STATUS,
    FLUSH_AFTER_MS,
    MAX_PAYLOAD_BYTES,
    MAX_SAMPLES,
    NOTIFY_MAX_BACKOFF_MS,
    NOTIFY_MIN_INTERVAL_MS,
    OK,
    RESPONSE_BYTES,
    STATUS_BYTES,
    encode_event,
    encode_samples,
)
from core.ringbuf import mod32

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


IDLE = const(-1)  # pump(): nothing to send until new data, a command or a link change
CH_BATTERY = const(0)  # pseudo channel for link.send: the Battery Level characteristic (BLE only)

_K_NONE = const(0)
_K_RESPONSE = const(1)
_K_EVENT = const(2)
_K_LIVE = const(3)
_K_BF_EVENT = const(4)
_K_BF_SAMPLES = const(5)
_K_STATUS = const(6)
_K_BATTERY = const(7)

# A backfill sends its samples before its events once the oldest it still owes is this close to being
# overwritten (the ring is full and acquisition goes on): events first took ~10 s of a 300 s drop-out's backfill at
# 25 Hz, and 111 promised samples were overwritten meanwhile. The event ring holds 512 (15 min at 17 breaths/min).
_BF_SAFETY_S = const(10)
_SAT = const(0x3FFFFFFF)
_FUTURE = const(0x80000000)
_ACROSS_WRAP = const(-0x40000000)  # a counter difference below this spans the 2**32 wrap (still a small int)
_TICKS_MASK = const(0x3FFFFFFF)


def _copy_bytes(src, start, dst, n):
    """``dst[:n] = src[start:start + n]`` without a slice (which would allocate); returns n."""
    i = 0
    while i < n:
        dst[i] = src[start + i]
        i += 1
    return n


class Streamer:
    """Everything the strap notifies, for one link at a time. See the module docstring."""

    def __init__(self, ring, evring, rate_hz, response_slots=8):
        self.ring = ring
        self.evring = evring
        self.rate_hz = rate_hz
        self.link = None
        self.pkt = bytearray(MAX_PAYLOAD_BYTES)
        self._tmp = array("H", bytes(2 * MAX_SAMPLES))
        self._rec = array("i", bytes(4 * EVENT_FIELDS))
        self._resp = bytearray(RESPONSE_BYTES * response_slots)
        self._resp_slots = response_slots
        self._resp_first = 0
        self._resp_n = 0
        self.responses_dropped = 0
        self.backfill_lost = 0  # promised by a BACKFILL, overwritten before sent (STATUS dropped_samples)
        self.status = bytearray(STATUS_BYTES)
        self.status_due = False
        self.battery = bytearray(1)
        self.battery_due = False
        self.streaming = False
        self.seq_samples = 0
        self.seq_events = 0
        self.retries = 0  # STATUS notify_retries
        self.sent = 0
        self._kind = _K_NONE
        self._n = 0  # length of the held packet (0: none)
        self._count = 0  # samples in the held SAMPLES packet
        self._first = 0  # counter of its first sample (backfill) / event seq (backfill event)
        self._next_ms = 0
        self._backoff_ms = 0
        # Backfill state (one at a time).
        self.backfilling = False
        self._bf_open = False
        self._bf_from = 0  # requested start: events in [from, from + span) go too
        self._bf_ev_span = 0
        self._bf_next = 0  # next sample counter to send
        self._bf_end = 0  # exclusive
        self._bf_ev = 0  # next event seq to examine
        self._bf_ev_end = 0

    # ---- link and stream control ----
    def attach(self, link, now_ms):
        """A link came up (connect, or wired port open): send from now, nothing held."""
        self.link = link
        self._drop_held()
        self._next_ms = now_ms & _TICKS_MASK
        self._backoff_ms = 0

    def detach(self):
        """The link went down: stop streaming, cancel the backfill, forget queued responses."""
        self.streaming = False
        self.backfilling = False
        self._drop_held()
        self._resp_n = 0
        self.status_due = False
        self.battery_due = False
        self.link = None

    def start(self):
        """START_STREAM: live from now (see module docstring); an open backfill follows the cursor."""
        if self.streaming:
            return  # already live: a second START must not skip the pending samples
        self._drop_held()
        self.ring.rewind(self.ring.head())
        self.evring.rewind(self.evring.head)
        if self.backfilling and self._bf_open:
            self._bf_end = self.ring.head()
            self._bf_ev_end = self.evring.head
            self._bf_ev_span = self._event_span(self._bf_end)
        self.streaming = True

    def stop(self):
        """STOP_STREAM: no more live packets; acquisition and the rings continue."""
        if self._kind == _K_LIVE or self._kind == _K_EVENT:
            self._drop_held()
        self.streaming = False

    def set_rate(self, rate_hz):
        self.rate_hz = rate_hz

    def _drop_held(self):
        self._kind = _K_NONE
        self._n = 0

    # ---- what to send ----
    def response_room(self):
        """A RESPONSE can be queued without dropping one (the control task takes no command until then)."""
        return self.link is None or self._resp_n < self._resp_slots

    def respond(self, packet, n):
        """Queue one RESPONSE (``packet[:n]``); the oldest is dropped if the queue is full."""
        if self._resp_n == self._resp_slots:
            self._resp_first = (self._resp_first + 1) % self._resp_slots
            self._resp_n -= 1
            self.responses_dropped += 1
        slot = (self._resp_first + self._resp_n) % self._resp_slots
        base = slot * RESPONSE_BYTES
        i = 0
        while i < n:
            self._resp[base + i] = packet[i]
            i += 1
        self._resp_n += 1

    def backfill(self, first, end):
        """BACKFILL [first, end): returns (result, value0, value1) for the RESPONSE (section 4.4)."""
        if self.backfilling:
            return BUSY, 0, 0
        ring = self.ring
        head = ring.head()
        held = ring.available()
        # Distances back from the head, modulo 2**32 (a counter > 2**31 back is in the future).
        live_back = ring.pending() if self.streaming else 0
        b_from = mod32(head - first)
        if b_from >= _FUTURE:
            b_from = 0
        if b_from > held:
            b_from = held  # older samples were overwritten: the host sees value0 > from
        self._bf_open = end == BACKFILL_OPEN_END
        if self._bf_open:
            b_end = live_back
        else:
            b_end = mod32(head - end)
            if b_end >= _FUTURE:
                b_end = 0
            if b_end < live_back:
                b_end = live_back  # the live stream sends those anyway
        if b_end > b_from:
            b_end = b_from
        value0 = mod32(head - b_from)
        value1 = mod32(head - b_end)
        self._bf_from = first
        # Events go by the requested range, not by the samples' (an overwritten range's value0..value1 lies later).
        self._bf_ev_span = self._event_span(value1 if self._bf_open else end)
        self._bf_next = value0
        self._bf_end = value1
        ev = self.evring
        self._bf_ev = ev.oldest()
        self._bf_ev_end = ev.cursor() if self.streaming else ev.head
        self.backfilling = True
        return OK, value0, value1

    def _event_span(self, end):
        """Events in [from, end) are re-sent too; none when ``end`` is not after ``from`` (a start the strap
        has not reached: the span would wrap to nearly 2**32 and take every buffered event)."""
        span = mod32(end - self._bf_from)
        return 0 if span >= _FUTURE else span

    def pump(self, now_ms):
        """Send at most one packet if the link allows it now.

        Returns the ms to wait before calling again because of pacing or a retry backoff, or
        IDLE when nothing is due (call again when samples, events, commands or status arrive).
        """
        link = self.link
        if link is None or not link.connected:
            return IDLE
        if self._n == 0:
            kind = self._pick(link)
            if kind == _K_NONE:
                return IDLE
            wait = ticks_diff(self._next_ms, now_ms)
            if 0 < wait <= NOTIFY_MAX_BACKOFF_MS:  # longer: a deadline from 6.2+ days ago (ticks wrap), due
                return wait
            self._build(kind, link)
            if self._n == 0:
                return 0  # the pick turned out empty (e.g. a finished backfill): look again
        else:
            wait = ticks_diff(self._next_ms, now_ms)
            if 0 < wait <= NOTIFY_MAX_BACKOFF_MS:  # longer: a deadline from 6.2+ days ago (ticks wrap), due
                return wait
        if self._send(link):
            self._accepted()
            self.sent += 1
            self._backoff_ms = 0
            self._next_ms = (now_ms + link.min_interval_ms) & _TICKS_MASK
            return link.min_interval_ms
        self.retries += 1
        if self._backoff_ms == 0:
            self._backoff_ms = NOTIFY_MIN_INTERVAL_MS
        elif self._backoff_ms < NOTIFY_MAX_BACKOFF_MS:
            self._backoff_ms <<= 1
        self._next_ms = (now_ms + self._backoff_ms) & _TICKS_MASK
        return self._backoff_ms

    def _send(self, link):
        """Hand the held packet to the link; False when it did not take it (a retry follows)."""
        try:
            return link.send(self._channel(), self.pkt, self._n)
        except OSError:
            return False

    def _live_due(self, link):
        p = self.ring.pending()
        return p > 0 and (p >= link.spp or p * 1000 >= FLUSH_AFTER_MS * self.rate_hz)

    def _pick(self, link):
        if self._resp_n:
            return _K_RESPONSE
        if self.streaming:
            if self.evring.pending():
                return _K_EVENT
            if self._live_due(link):
                return _K_LIVE
        if self.backfilling:
            if self._bf_next != self._bf_end and self._bf_samples_at_risk():
                return _K_BF_SAMPLES
            if self._bf_event_ready():
                return _K_BF_EVENT
            if self._bf_next != self._bf_end:
                return _K_BF_SAMPLES
            self.backfilling = False
        if self.status_due:
            return _K_STATUS
        if self.battery_due:
            return _K_BATTERY
        return _K_NONE

    def _bf_samples_at_risk(self):
        """The ring is full and the oldest sample the backfill still owes goes within _BF_SAFETY_S."""
        ring = self.ring
        if ring.available() < ring.capacity:
            return False
        slack = mod32(self._bf_next - ring.oldest())
        return slack >= _FUTURE or slack < self.rate_hz * _BF_SAFETY_S  # (already behind it: some are gone)

    def _bf_lost(self, upto):
        """Samples [_bf_next, upto) were overwritten before the backfill sent them: count those the ring's own
        overflow has not (it counts only samples still pending, at or after the delivery cursor)."""
        lost = mod32(upto - self._bf_next)
        below = mod32(self.ring.cursor() - self._bf_next)
        if below >= _FUTURE:
            return
        if lost > below:
            lost = below
        if lost > _SAT - self.backfill_lost:
            lost = _SAT - self.backfill_lost
        self.backfill_lost += lost

    def _bf_event_ready(self):
        """Skip buffered events outside the requested range; True if the next one is to be sent."""
        ev = self.evring
        rec = self._rec
        span = self._bf_ev_span
        while self._bf_ev < self._bf_ev_end:
            if ev.read_from(self._bf_ev, rec, 1) == 0:
                self._bf_ev = self._bf_ev_end
                return False
            self._bf_ev = ev.read_first
            # Its extremum, or the sample that confirmed it, in range: a breath confirmed during a drop-out whose
            # extremum came before it (the host asks from its first missing sample) was never sent at all.
            d = rec[EV_INDEX] - self._bf_from
            c = rec[EV_CONFIRMED] - self._bf_from
            if 0 <= d < span or 0 <= c < span:
                return True
            # A small negative difference (an event before the range) is never in it, and mod32 would make a big
            # int of it on the ESP32 for every event the scan skips: only a range across the wrap needs mod32.
            if d < _ACROSS_WRAP and (mod32(d) < span or mod32(c) < span):
                return True
            self._bf_ev += 1
        return False

    # Building and sending a packet allocates nothing: each function keeps at most ~11 locals and stack slots,
    # past which MicroPython puts a call's frame on the heap (464 bytes per notification before this split).
    def _build(self, kind, link):
        self._kind = kind
        if kind == _K_RESPONSE:
            self._n = _copy_bytes(self._resp, self._resp_first * RESPONSE_BYTES, self.pkt, RESPONSE_BYTES)
        elif kind == _K_EVENT:
            self.evring.read_pending(self._rec, 1)
            self._n = encode_event(self.pkt, self.seq_events, self._rec, 0)
        elif kind == _K_LIVE:
            self._build_live(link)
        elif kind == _K_BF_EVENT:
            self._first = self._bf_ev  # _bf_event_ready() left the record in _rec
            self._n = encode_event(self.pkt, self.seq_events, self._rec, 0)
        elif kind == _K_BF_SAMPLES:
            self._build_backfill(link)
        elif kind == _K_STATUS:
            self._n = _copy_bytes(self.status, 0, self.pkt, STATUS_BYTES)
        else:
            self.pkt[0] = self.battery[0]
            self._n = 1

    def _build_live(self, link):
        n = self.ring.read_pending(self._tmp, link.spp)
        self._count = n
        self._n = encode_samples(self.pkt, self.seq_samples, self.ring.cursor(), self._tmp, 0, n)

    def _build_backfill(self, link):
        n = mod32(self._bf_end - self._bf_next)  # left to send
        n = self.ring.read_from(self._bf_next, self._tmp, link.spp if link.spp < n else n)
        if n and self.ring.read_first != self._bf_next:
            n = self._skip_overwritten(n)
        if n == 0:
            self._bf_lost(self._bf_end)
            self._bf_next = self._bf_end
            self._n = 0
            return
        self._bf_next = self.ring.read_first
        self._count = n
        self._n = encode_samples(self.pkt, self.seq_samples, self._bf_next, self._tmp, 0, n)

    def _skip_overwritten(self, n):
        """The backfill's next samples were overwritten meanwhile: it goes on from the oldest still held (the host
        sees the gap; STATUS counts it). Returns how many of the ``n`` read it sends."""
        first = self.ring.read_first
        left = mod32(self._bf_end - first)
        if left >= _FUTURE or left == 0:
            return 0
        self._bf_lost(first)
        return left if n > left else n

    def _channel(self):
        k = self._kind
        if k == _K_RESPONSE:
            return CH_RESPONSE
        if k == _K_EVENT or k == _K_BF_EVENT:
            return CH_EVENT
        if k == _K_STATUS:
            return CH_STATUS
        if k == _K_BATTERY:
            return CH_BATTERY
        return CH_SAMPLES

    def _accepted(self):
        k = self._kind
        if k == _K_RESPONSE:
            self._resp_first = (self._resp_first + 1) % self._resp_slots
            self._resp_n -= 1
        elif k == _K_EVENT:
            self.evring.commit(1)
            self.seq_events = (self.seq_events + 1) & 0xFF
        elif k == _K_LIVE:
            self.ring.commit(self._count)
            self.seq_samples = (self.seq_samples + 1) & 0xFF
        elif k == _K_BF_EVENT:
            self._bf_ev = self._first + 1
            self.seq_events = (self.seq_events + 1) & 0xFF
        elif k == _K_BF_SAMPLES:
            self._bf_next = mod32(self._bf_next + self._count)
            self.seq_samples = (self.seq_samples + 1) & 0xFF
            if not self.streaming:
                # Sent by backfill while nobody streams: the ring may forget them.
                if self.ring.cursor() == mod32(self._bf_next - self._count):
                    self.ring.commit(self._count)
        elif k == _K_STATUS:
            self.status_due = False
        else:
            self.battery_due = False
        self._kind = _K_NONE
        self._n = 0

    def buffer_fill_pct(self):
        """Share of the ring holding samples not yet delivered (STATUS buffer_fill_pct)."""
        return self.ring.pending() * 100 // self.ring.capacity
