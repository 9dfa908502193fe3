"""In-process test central for the ``bluetooth`` double, on the virtual clock of ``machine.sim``.

Attach it with ``bluetooth.radio.attach(TestCentral(...))``; see ``bluetooth.py`` for the link
seam it implements (``on_attach``, ``on_advertise``, ``on_notify``, ``on_disconnect_request``,
``on_mtu_request``) and the ``radio`` calls it makes.

What it models (deterministic, seeded):

- **Connection events** every ``conn_interval_ms`` while connected; each delivers up to
  ``per_event`` queued notifications, stamped with the event's virtual time.
- **Controller transmit queue** of ``tx_slots`` notifications: ``gatts_notify`` beyond it raises
  ``OSError(ENOMEM)``, like NimBLE when notifications come faster than the link drains them.
  ``refuse(n)`` refuses the next n notifications; ``refuse_pct`` refuses at random.
- **Link loss** (``drop_link``): nothing is delivered any more, but the strap learns about it only
  after ``supervision_ms`` (the central's supervision timeout); notifications it queues meanwhile
  and those still queued are lost. ``disconnect()`` is a clean termination (queue discarded too).

Scheduling: ``at(t_ms, fn)`` / ``after(ms, fn)`` put an action into ``machine.sim``'s event
queue, so it runs at its exact virtual time, interleaved with the strap's timer interrupts
(the select double steps asyncio through them).

Recording: every happening goes to ``log(kind, t_ms, handle, data)`` as it happens; ``FileLog``
writes binary records (``<BIHH`` kind, time, handle, length, then the bytes) to a file, so a long
run needs no memory on the 64 KB heap. ``on_packet(t_ms, handle, data)`` is the host logic's hook
for delivered notifications.
"""

import struct

import bluetooth
import machine

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


ENOMEM = const(12)
ENOTCONN = const(107)

# Log record kinds
K_NOTIFY = const(1)  # delivered to the central
K_LOST = const(2)  # accepted by the strap's stack, never delivered (link lost)
K_REFUSED = const(3)  # gatts_notify raised ENOMEM
K_CONNECT = const(4)
K_DISCONNECT = const(5)
K_WRITE = const(6)  # data = bytes written; handle = value handle
K_WRITE_REJECTED = const(7)
K_MTU = const(8)  # handle = negotiated MTU
K_ADVERTISE = const(9)  # handle = 1 advertising, 0 stopped; data = adv + resp
K_NOTE = const(10)  # free text from the scenario
K_DROP = const(11)  # link lost (radio silence starts)
K_ACCEPT = const(12)  # gatts_notify took the packet (queued for the next connection event)
K_ATTR = const(13)  # GATT database after registration: handle, data = flags u16 + UUID text

_HEADER = "<BIHH"


class FileLog:
    """Append binary records to ``path``: struct ``<BIHH`` (kind, t_ms, handle, n) + n bytes."""

    def __init__(self, path):
        self._f = open(path, "wb")
        self._hdr = bytearray(9)

    def __call__(self, kind, t_ms, handle, data):
        struct.pack_into(_HEADER, self._hdr, 0, kind, t_ms & 0xFFFFFFFF, handle & 0xFFFF, len(data))
        self._f.write(self._hdr)
        if data:
            self._f.write(data)

    def flush(self):
        self._f.flush()

    def close(self):
        self._f.close()


class _At:
    """One action in machine.sim's event queue (duck-typed like a one-shot machine.Timer)."""

    def __init__(self, due_ms, fn):
        self._due_ms = due_ms
        self._fn = fn

    def _fire(self):
        timers = machine.sim._timers
        if self in timers:
            timers.remove(self)
        self._fn()


class _Rng:
    # xorshift.Rng's stream in one method: the virtual-time firmware tests run at a heap so tight
    # that importing the shared module (and its unused methods) starves the strap's flash writes.
    def __init__(self, seed):
        self.s = (seed * 2654435761 + 7) & 0xFFFFFFFF or 1

    def below(self, n):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x % n


def _no_log(kind, t_ms, handle, data):
    pass


class TestCentral:
    """A central (the host's BLE adapter) for one strap, on virtual time."""

    def __init__(self, log=None, conn_interval_ms=30, per_event=2, tx_slots=4, supervision_ms=420, seed=1):
        self.log = log if log is not None else _no_log
        self.conn_interval_ms = conn_interval_ms
        self.per_event = per_event
        self.tx_slots = tx_slots
        self.supervision_ms = supervision_ms
        self.rng = _Rng(seed)
        self.refuse_pct = 0
        self._refuse_next = 0
        self.radio = None
        self.conn = None  # connection handle while connected (strap's view)
        self.link_up = False  # radio link alive (False during a supervision timeout)
        self.mtu = 23
        self.queue = []
        self._next_conn = 1
        self._epoch = 0  # invalidates scheduled connection events of older connections
        self.on_packet = None
        self.on_disconnected = None
        self.accepted = 0
        self.delivered = 0
        self.lost = 0
        self.refused = 0

    # ---- time and scheduling ----
    def now_ms(self):
        return machine.sim.now_ms()

    def at(self, t_ms, fn):
        machine.sim._timers.append(_At(t_ms, fn))

    def after(self, ms, fn):
        self.at(machine.sim.now_ms() + ms, fn)

    def note(self, text):
        self.log(K_NOTE, self.now_ms(), 0, text.encode())

    # ---- link seam: peripheral -> link ----
    def on_attach(self, radio):
        self.radio = radio

    def on_services(self, radio):
        for a in radio.db:
            self.log(K_ATTR, self.now_ms(), a.handle, struct.pack("<H", a.flags) + a.uuid.text().encode())

    def on_advertise(self, interval_us, adv_data, resp_data, connectable):
        self.log(K_ADVERTISE, self.now_ms(), 0 if interval_us is None else 1, adv_data + resp_data)

    def on_notify(self, conn_handle, value_handle, data, indicate):
        if conn_handle != self.conn:
            raise OSError(ENOTCONN)
        refuse = False
        if self._refuse_next > 0:
            self._refuse_next -= 1
            refuse = True
        elif self.refuse_pct and self.rng.below(100) < self.refuse_pct:
            refuse = True
        elif len(self.queue) >= self.tx_slots:
            refuse = True
        if refuse:
            self.refused += 1
            self.log(K_REFUSED, self.now_ms(), value_handle, data)
            raise OSError(ENOMEM)
        self.accepted += 1
        data = bytes(data)
        self.log(K_ACCEPT, self.now_ms(), value_handle, data)
        self.queue.append((value_handle, data))

    def on_disconnect_request(self, conn_handle):
        if conn_handle == self.conn:
            self.after(0, self._terminated)

    def on_mtu_request(self, conn_handle):
        if conn_handle == self.conn:
            self._exchange_mtu()

    # ---- central actions ----
    def refuse(self, n):
        """Refuse (ENOMEM) the next ``n`` notifications."""
        self._refuse_next = n

    def connect(self, mtu=23):
        """Connect if the strap advertises connectably; exchange the MTU; subscribe to everything."""
        if self.conn is not None:
            return False
        conn = self._next_conn
        self.conn = conn  # set first: the strap may notify from inside the connect IRQ
        if not self.radio.central_connected(conn):
            self.conn = None
            return False
        self._next_conn += 1
        self.link_up = True
        self.queue = []
        self._epoch += 1
        self.log(K_CONNECT, self.now_ms(), conn, b"")
        self.mtu = mtu
        self._exchange_mtu()
        for a in self.radio.db:
            if a.kind == bluetooth.CHARACTERISTIC and a.flags & bluetooth.FLAG_NOTIFY:
                self.radio.subscribe(conn, a.handle)
        self._schedule_event(self._epoch)
        return True

    def _exchange_mtu(self):
        mtu = self.radio.mtu_exchanged(self.conn, self.mtu)
        self.log(K_MTU, self.now_ms(), mtu, b"")

    def drop_link(self):
        """Link loss: silence now, the strap sees the disconnect after the supervision timeout."""
        if self.conn is None or not self.link_up:
            return
        self.link_up = False
        self.log(K_DROP, self.now_ms(), self.conn, b"")
        epoch = self._epoch
        self.after(self.supervision_ms, lambda: self._terminated(epoch))

    def disconnect(self):
        """Clean termination by the central: the queue is discarded."""
        if self.conn is not None:
            self._terminated()

    def _terminated(self, epoch=None):
        if self.conn is None or (epoch is not None and epoch != self._epoch):
            return
        t = self.now_ms()
        for handle, data in self.queue:
            self.lost += 1
            self.log(K_LOST, t, handle, data)
        self.queue = []
        conn = self.conn
        self.conn = None
        self.link_up = False
        self._epoch += 1
        self.log(K_DISCONNECT, t, conn, b"")
        self.radio.central_disconnected(conn)
        if self.on_disconnected is not None:
            self.on_disconnected(t)

    def write(self, uuid_or_handle, data):
        """ATT write; returns False if not connected, link down, or rejected by the ATT layer."""
        if self.conn is None or not self.link_up:
            return False
        h = uuid_or_handle if isinstance(uuid_or_handle, int) else self.radio.handle_of(uuid_or_handle)
        ok = self.radio.central_write(self.conn, h, data)
        self.log(K_WRITE if ok else K_WRITE_REJECTED, self.now_ms(), h, bytes(data))
        return ok

    def read(self, uuid_or_handle):
        h = uuid_or_handle if isinstance(uuid_or_handle, int) else self.radio.handle_of(uuid_or_handle)
        return self.radio.central_read(h)

    # ---- connection events ----
    def _schedule_event(self, epoch):
        self.after(self.conn_interval_ms, lambda: self._conn_event(epoch))

    def _conn_event(self, epoch):
        if epoch != self._epoch or self.conn is None:
            return
        if self.link_up:
            t = self.now_ms()
            k = 0
            while k < self.per_event and self.queue:
                handle, data = self.queue.pop(0)
                self.delivered += 1
                self.log(K_NOTIFY, t, handle, data)
                if self.on_packet is not None:
                    self.on_packet(t, handle, data)
                k += 1
        self._schedule_event(epoch)
