"""Bridge link: the ``bluetooth`` double's radio seam spoken over stdin/stdout to a CPython parent.

The parent (``breathsync.sim.VirtualStrap``) runs a Bumble GATT server that mirrors the database
the firmware registered; a real BLE central (bleak on Bumble) talks to that server, and the parent
forwards everything to this link, which calls the ``radio`` methods the in-process test central
calls (``bluetooth.py`` documents the seam). Runs in REAL time: the entry script
(``virtual_strap.py``) calls ``realtime.use_real_time()`` first (see ``realtime.py``).

Not blocking the firmware's asyncio loop: ``on_attach`` registers stdin as a *source* of the
real-time poller (``realtime.add_source``). Every time asyncio polls (before each task step, with a
zero timeout when a task is runnable; with the time to the next task or Timer when idle), the
double polls stdin too and, when it is readable, calls ``_service``: one ``readinto`` of what is
there, then every complete frame is dispatched at once, raising the IRQs MicroPython would
(connect, write, MTU...) outside any task, as a real radio IRQ does. Frames to the parent are
written to stdout in one blocking write each (a pipe the parent drains continuously).

Transmit queue (ENOMEM): like NimBLE's controller buffers, the link holds at most ``tx_slots``
notifications that the parent has not yet acknowledged. ``gatts_notify`` beyond that raises
``OSError(ENOMEM)``, so the firmware's pacing and retry logic run as on the device. The parent
acknowledges a notification (``K``) when it has gone out over the air (its connection events),
and never while notifications are stalled or the link is lost (the queue fills, as it would).
A disconnect frees the queue (whatever was in it is lost). ``enomem_pct`` also refuses at random.

Frame format, both directions::

    0xA5 | type (u8) | length (u16 LE) | payload (length bytes)

All integers little-endian. ``conn`` is the connection handle the parent chose.

Strap -> parent
  ``G`` GATT db      u16 preferred MTU, then per attribute: u16 handle, u8 kind (0 service,
                     1 characteristic, 2 descriptor), u16 flags (bluetooth.FLAG_*), u8 n, n bytes of
                     UUID (little-endian, 2 or 16)
  ``A`` advertise    u32 interval_us (0xFFFFFFFF = stopped), u8 connectable, u8 len(adv), adv, resp
  ``N`` notify       u16 conn, u16 value handle, u8 flags (bit 0 indicate), u64 ticks_us at the
                     gatts_notify call (CLOCK_MONOTONIC on the unix port: comparable with
                     CPython's time.monotonic_ns() // 1000), value
  ``D`` disconnect   u16 conn (gap_disconnect by the strap, or a connect it refused)
  ``M`` MTU request  u16 conn (gattc_exchange_mtu by the strap)
  ``r`` read reply   u16 handle, u8 ok, value
  ``P`` PWM          u8 gpio, u32 strap ms, u16 duty_u16 (sent by virtual_strap.py)
  ``i`` info         JSON (answer to ``I``)
  ``Z`` bye          JSON summary, last frame before exit (sent by virtual_strap.py)

Parent -> strap
  ``C`` connected    u16 conn, u8 addr_type, 6 bytes address        -> _IRQ_CENTRAL_CONNECT
  ``X`` disconnected u16 conn                                      -> _IRQ_CENTRAL_DISCONNECT
  ``U`` MTU          u16 conn, u16 negotiated ATT MTU               -> _IRQ_MTU_EXCHANGED
  ``W`` write        u16 conn, u16 handle, value                    -> _IRQ_GATTS_WRITE
  ``R`` read         u16 handle                                     -> ``r``
  ``B`` subscribe    u16 conn, u16 value handle, u8 CCCD bits
  ``K`` ack          u16 conn, u8 n: n notifications of conn delivered (frees n slots)
  ``O`` options      u8 tx_slots, u8 enomem_pct, u32 seed
  ``T`` drift        i32 ppm: the sampling clock's error from now on (realtime.set_drift_ppm)
  ``V`` battery      u16 mV: the battery voltage the gauge reads from now on (``on_battery``)
  ``H`` hang         u32 ms: the loop blocks without yielding (a stuck driver; the watchdog fires)
  ``I`` info request
  ``Q`` quit         the strap stops (``BridgeQuit``), the entry script reports and exits 0

End of input (the parent went away) also stops the strap.
"""

import struct

import bluetooth
import realtime
import uselect as _uselect
import utime
from xorshift import Rng as _Rng

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


MAGIC = const(0xA5)
ENOMEM = const(12)
ENOTCONN = const(107)
_STOPPED = const(0xFFFFFFFF)


class BridgeQuit(SystemExit):
    """The parent asked the strap to stop (``Q``) or closed the pipe."""


class BridgeLink:
    """The link of ``bluetooth.radio`` for a central in the parent process (see the docstring)."""

    def __init__(self, stdin, stdout, tx_slots=4, enomem_pct=0, seed=1, info=None, on_battery=None):
        self._in = stdin
        self._out = stdout
        self.tx_slots = tx_slots
        self.enomem_pct = enomem_pct
        self.rng = _Rng(seed)
        self.info = info  # callable -> dict, for ``I``
        self.on_battery = on_battery  # callable(mV), for ``V``
        self.radio = None
        self.conn = None
        self.inflight = 0
        self._poll = _uselect.poll()
        self._poll.register(stdin, _uselect.POLLIN)
        self.notified = 0
        self.refused = 0
        self.acked = 0
        self.frames_in = 0
        self.frames_out = 0

    # ---- output ----
    def send(self, kind, payload):
        frame = struct.pack("<BBH", MAGIC, kind, len(payload)) + payload
        mv = memoryview(frame)
        done = 0
        while done < len(frame):
            k = self._out.write(mv[done:])
            done += k if k else 0
        self.frames_out += 1

    def send_pwm(self, gpio, t_ms, duty):
        self.send(ord("P"), struct.pack("<BIH", gpio, t_ms & 0xFFFFFFFF, duty))

    # ---- seam: peripheral -> link ----
    def on_attach(self, radio):
        self.radio = radio
        realtime.add_source(self._in, self._service)

    def on_services(self, radio):
        parts = [struct.pack("<H", radio.preferred_mtu)]
        for a in radio.db:
            le = a.uuid.le_bytes()
            parts.append(struct.pack("<HBHB", a.handle, a.kind, a.flags, len(le)) + le)
        self.send(ord("G"), b"".join(parts))

    def on_advertise(self, interval_us, adv_data, resp_data, connectable):
        interval = _STOPPED if interval_us is None else interval_us
        head = struct.pack("<IBB", interval, 1 if connectable else 0, len(adv_data))
        self.send(ord("A"), head + bytes(adv_data) + bytes(resp_data))

    def on_notify(self, conn_handle, value_handle, data, indicate):
        if conn_handle != self.conn:
            raise OSError(ENOTCONN)
        if self.inflight >= self.tx_slots or (self.enomem_pct and self.rng.below(100) < self.enomem_pct):
            self.refused += 1
            raise OSError(ENOMEM)
        self.inflight += 1
        self.notified += 1
        head = struct.pack("<HHBQ", conn_handle, value_handle, 1 if indicate else 0, utime.ticks_us())
        self.send(ord("N"), head + bytes(data))

    def on_disconnect_request(self, conn_handle):
        self.send(ord("D"), struct.pack("<H", conn_handle))

    def on_mtu_request(self, conn_handle):
        self.send(ord("M"), struct.pack("<H", conn_handle))

    # ---- input: called by the real-time poller (realtime.py) when stdin is readable ----
    def _read_exact(self, n):
        # The unix port's readinto fills the whole buffer (it blocks until then): read exactly
        # what a frame needs. The parent writes every frame with one write() (atomic on a pipe),
        # so once its first byte is readable the rest is there too.
        buf = bytearray(n)
        mv = memoryview(buf)
        got = 0
        while got < n:
            k = self._in.readinto(mv[got:])
            if not k:
                raise BridgeQuit("bridge: end of input")
            got += k
        return buf

    def _service(self):
        while True:
            head = self._read_exact(4)
            if head[0] != MAGIC:
                raise ValueError("bridge: lost frame sync at byte 0x%02x" % head[0])
            length = head[2] | (head[3] << 8)
            payload = bytes(self._read_exact(length)) if length else b""
            self.frames_in += 1
            self._dispatch(head[1], payload)
            if not self._poll.poll(0):
                return

    def _dispatch(self, kind, p):
        radio = self.radio
        if kind == 0x57:  # W
            conn, handle = struct.unpack_from("<HH", p, 0)
            radio.central_write(conn, handle, p[4:])
        elif kind == 0x4B:  # K
            conn, n = struct.unpack_from("<HB", p, 0)
            if conn == self.conn:
                self.acked += n
                self.inflight = self.inflight - n if self.inflight > n else 0
        elif kind == 0x52:  # R
            handle = struct.unpack_from("<H", p, 0)[0]
            try:
                value = radio.central_read(handle)
                ok = 1
            except KeyError:
                value = b""
                ok = 0
            self.send(ord("r"), struct.pack("<HB", handle, ok) + bytes(value))
        elif kind == 0x43:  # C
            conn, addr_type = struct.unpack_from("<HB", p, 0)
            self.conn = conn  # first: the strap may notify from inside the connect IRQ
            self.inflight = 0
            if not radio.central_connected(conn, addr_type, p[3:9]):
                self.conn = None
                self.send(ord("D"), struct.pack("<H", conn))
        elif kind == 0x58:  # X
            conn = struct.unpack_from("<H", p, 0)[0]
            if conn == self.conn:
                self.conn = None
                self.inflight = 0
            radio.central_disconnected(conn)
        elif kind == 0x55:  # U
            conn, mtu = struct.unpack_from("<HH", p, 0)
            if conn in radio.connections:
                radio.mtu_exchanged(conn, mtu)
        elif kind == 0x42:  # B
            conn, handle, cccd = struct.unpack_from("<HHB", p, 0)
            radio.subscribe(conn, handle, cccd != 0)
        elif kind == 0x4F:  # O
            self.tx_slots, self.enomem_pct, seed = struct.unpack_from("<BBI", p, 0)
            self.rng = _Rng(seed)
        elif kind == 0x54:  # T
            realtime.set_drift_ppm(struct.unpack_from("<i", p, 0)[0])
        elif kind == 0x56:  # V: the battery drains (or is charged)
            if self.on_battery is not None:
                self.on_battery(struct.unpack_from("<H", p, 0)[0])
        elif kind == 0x49:  # I
            import json

            self.send(ord("i"), json.dumps(self.info() if self.info is not None else {}).encode())
        elif kind == 0x48:  # H: a hung driver; the loop stops feeding the watchdog
            import utime

            utime.sleep_ms(struct.unpack_from("<I", p, 0)[0])
        elif kind == 0x51:  # Q
            raise BridgeQuit("bridge: quit")

    def stats(self):
        return {
            "notified": self.notified,
            "refused": self.refused,
            "acked": self.acked,
            "inflight": self.inflight,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
        }


def attach(stdin, stdout, **kwargs):
    """Create a BridgeLink and attach it to the bluetooth double's radio."""
    return bluetooth.radio.attach(BridgeLink(stdin, stdout, **kwargs))
