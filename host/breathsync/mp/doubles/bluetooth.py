"""Test double of MicroPython's ``bluetooth`` module (the NimBLE peripheral subset the strap uses).

Runs under the MicroPython unix port (put this folder first on MICROPYPATH) and under CPython.

Peripheral API (as documented for ``bluetooth.BLE``): ``active``, ``config`` (``mac``,
``gap_name``, ``mtu``, ``addr_mode``, ``rxbuf``...), ``irq``, ``gap_advertise``,
``gap_disconnect``, ``gatts_register_services`` (returns the value handles, service by service,
characteristic by characteristic, then descriptors, like the real port; the CCCD is implicit),
``gatts_read`` / ``gatts_write`` (``send_update`` notifies subscribed centrals) /
``gatts_set_buffer`` / ``gatts_notify`` / ``gatts_indicate``, ``gattc_exchange_mtu``, ``UUID``,
``FLAG_*``. Behaviour copied from NimBLE: a write longer than the attribute buffer is truncated
to it (default 20 bytes); there is no IRQ when a central subscribes (MicroPython has none);
``gatts_notify`` on a connection that is not up raises ``OSError(ENOTCONN)``; a notification the
link cannot take raises ``OSError(ENOMEM)``; advertising stops when a central connects.

The seam: a pluggable link (the "central side")
-----------------------------------------------
Everything that would cross the radio goes through one object, the *link*, attached with
``bluetooth.radio.attach(link)``. Two implementations are planned:

- ``ble_central.TestCentral`` (in this folder): an in-process central on the virtual clock of
  ``machine.sim`` that records every notification with its virtual time, models the
  controller's transmit queue (ENOMEM when full), link loss with a supervision timeout, and can
  connect, exchange the MTU, subscribe, write and read.
- later, a bridge to a Bumble GATT server in another process over stdin/stdout (real time:
  ``time.use_real_time()``). It needs nothing else from this module.

Peripheral -> link (the double calls these on the attached link; all optional except notify)::

    link.on_attach(radio)                         radio = this module's ``radio`` (below)
    link.on_services(radio)                       after gatts_register_services: radio.db is final
    link.on_advertise(interval_us, adv_data, resp_data, connectable)   interval_us None = stopped
    link.on_notify(conn_handle, value_handle, data, indicate)          raise OSError(ENOMEM) to refuse
    link.on_disconnect_request(conn_handle)       gap_disconnect() by the strap
    link.on_mtu_request(conn_handle)              gattc_exchange_mtu() by the strap

Link -> peripheral (the ``radio`` object; each call raises the IRQ MicroPython would)::

    radio.central_connected(conn_handle, addr_type=0, addr=b"...")  -> _IRQ_CENTRAL_CONNECT (1)
    radio.central_disconnected(conn_handle)                       -> _IRQ_CENTRAL_DISCONNECT (2)
    radio.mtu_exchanged(conn_handle, central_mtu) -> negotiated   -> _IRQ_MTU_EXCHANGED (21)
    radio.central_write(conn_handle, value_handle, data) -> bool  -> _IRQ_GATTS_WRITE (3)
    radio.central_read(value_handle) -> bytes
    radio.subscribe(conn_handle, value_handle, notify=True)        CCCD write (no IRQ, as on NimBLE)
    radio.db            [Attr(handle, uuid, flags, kind)]; radio.handle_of(uuid) / radio.attr(handle)
    radio.advertising   (interval_us, adv_data, resp_data, connectable) or None
    radio.preferred_mtu ble.config(mtu=...) value; radio.connections: {conn_handle: mtu}

Times are the link's business (the test central reads ``machine.sim``); this module keeps none.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


FLAG_BROADCAST = const(0x0001)
FLAG_READ = const(0x0002)
FLAG_WRITE_NO_RESPONSE = const(0x0004)
FLAG_WRITE = const(0x0008)
FLAG_NOTIFY = const(0x0010)
FLAG_INDICATE = const(0x0020)
FLAG_AUTHENTICATED_SIGNED_WRITE = const(0x0040)
FLAG_AUX_WRITE = const(0x0100)
FLAG_READ_ENCRYPTED = const(0x0200)
FLAG_READ_AUTHENTICATED = const(0x0400)
FLAG_READ_AUTHORIZED = const(0x0800)
FLAG_WRITE_ENCRYPTED = const(0x1000)
FLAG_WRITE_AUTHENTICATED = const(0x2000)
FLAG_WRITE_AUTHORIZED = const(0x4000)

IRQ_CENTRAL_CONNECT = const(1)
IRQ_CENTRAL_DISCONNECT = const(2)
IRQ_GATTS_WRITE = const(3)
IRQ_MTU_EXCHANGED = const(21)

ENOMEM = const(12)
ENOTCONN = const(107)
_DEFAULT_BUFFER = const(20)
_DEFAULT_MTU = const(23)
_MAX_MTU = const(517)

_HEX = "0123456789abcdef"
# Bluetooth base UUID 0000xxxx-0000-1000-8000-00805f9b34fb, little-endian, without the 16-bit part.
_BASE_LE_LOW = bytes((0xFB, 0x34, 0x9B, 0x5F, 0x80, 0x00, 0x00, 0x80, 0x00, 0x10, 0x00, 0x00))


class UUID:
    """16-bit (int) or 128-bit (str ``xxxxxxxx-xxxx-...``, or 16 little-endian bytes) UUID."""

    def __init__(self, value):
        if isinstance(value, UUID):
            self._le = value._le
        elif isinstance(value, int):
            if not 0 <= value <= 0xFFFF:
                raise ValueError("invalid UUID")
            self._le = bytes((value & 0xFF, value >> 8))
        elif isinstance(value, str):
            digits = value.replace("-", "").lower()
            if len(digits) != 32:
                raise ValueError("invalid UUID")
            raw = bytes(int(digits[i : i + 2], 16) for i in range(0, 32, 2))
            self._le = bytes(reversed(raw))
        else:
            raw = bytes(value)
            if len(raw) not in (2, 16):
                raise ValueError("invalid UUID")
            self._le = raw
        if len(self._le) == 16 and self._le[:12] == _BASE_LE_LOW and self._le[14:] == b"\x00\x00":
            self._le = self._le[12:14]  # a SIG UUID spelled in 128 bits is its 16-bit form

    def le_bytes(self):
        """Little-endian bytes (what the real UUID's buffer protocol gives)."""
        return self._le

    def __eq__(self, other):
        return isinstance(other, UUID) and other._le == self._le

    def __hash__(self):
        return hash(self._le)

    def __str__(self):
        if len(self._le) == 2:
            return "UUID(0x%04x)" % (self._le[0] | (self._le[1] << 8))
        h = "".join(_HEX[b >> 4] + _HEX[b & 15] for b in reversed(self._le))
        return "UUID('%s-%s-%s-%s-%s')" % (h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])

    __repr__ = __str__

    def text(self):
        """Lowercase 128-bit form (16-bit UUIDs on the Bluetooth base), as bleak spells them."""
        if len(self._le) == 2:
            return "0000%02x%02x-0000-1000-8000-00805f9b34fb" % (self._le[1], self._le[0])
        return str(self)[6:-2]


# Attribute kinds in radio.db
SERVICE = const(0)
CHARACTERISTIC = const(1)
DESCRIPTOR = const(2)


class Attr:
    """One attribute of the GATT database: value handle, UUID, flags, kind, value, buffer size."""

    def __init__(self, handle, uuid, flags, kind, service):
        self.handle = handle
        self.uuid = uuid
        self.flags = flags
        self.kind = kind
        self.service = service  # UUID of the service it belongs to
        self.value = b""
        self.size = _DEFAULT_BUFFER
        self.append = False


class NullLink:
    """No central in range: notifications fail as on an idle radio."""

    def on_notify(self, conn_handle, value_handle, data, indicate):
        raise OSError(ENOTCONN)


class Radio:
    """The peripheral's controller state, shared by BLE() and the attached link."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.link = NullLink()
        self.is_active = False
        self.handler = None
        self.db = []
        self._by_handle = {}
        self.advertising = None
        self._adv = b""
        self._resp = b""
        self.preferred_mtu = _DEFAULT_MTU
        self.gap_name = "MPY"
        self.mac = b"\x24\x58\x7c\xb5\x1e\x42"
        self.connections = {}  # conn_handle -> negotiated MTU
        self.subscriptions = {}  # (conn_handle, value_handle) -> True
        self.irq_count = 0
        self.failed_activations = 0  # this many active(True) calls raise OSError, as a controller that fails to start

    def attach(self, link):
        self.link = link
        hook = getattr(link, "on_attach", None)
        if hook is not None:
            hook(self)
        return link

    def _call(self, name, *args):
        hook = getattr(self.link, name, None)
        if hook is not None:
            return hook(*args)
        return None

    def _irq(self, event, data):
        self.irq_count += 1
        if self.handler is not None:
            self.handler(event, data)

    # ---- lookups ----
    def attr(self, handle):
        return self._by_handle[handle]

    def handle_of(self, uuid, service=None):
        u = uuid if isinstance(uuid, UUID) else UUID(uuid)
        for a in self.db:
            if a.kind != SERVICE and a.uuid == u and (service is None or a.service == service):
                return a.handle
        raise KeyError(str(u))

    # ---- link -> peripheral ----
    def central_connected(self, conn_handle, addr_type=0, addr=b"\xc0\xff\xee\x00\x00\x01"):
        """A central connects; False if the strap is not advertising connectably."""
        if not self.is_active or self.advertising is None or not self.advertising[3]:
            return False
        self.advertising = None  # NimBLE stops advertising on connect
        self.connections[conn_handle] = _DEFAULT_MTU
        self._irq(IRQ_CENTRAL_CONNECT, (conn_handle, addr_type, memoryview(bytes(addr))))
        return True

    def central_disconnected(self, conn_handle, addr_type=0, addr=b"\xc0\xff\xee\x00\x00\x01"):
        if conn_handle not in self.connections:
            return False
        del self.connections[conn_handle]
        for key in list(self.subscriptions):
            if key[0] == conn_handle:
                del self.subscriptions[key]
        self._irq(IRQ_CENTRAL_DISCONNECT, (conn_handle, addr_type, memoryview(bytes(addr))))
        return True

    def mtu_exchanged(self, conn_handle, central_mtu):
        mtu = min(central_mtu, self.preferred_mtu)
        if mtu < _DEFAULT_MTU:
            mtu = _DEFAULT_MTU
        self.connections[conn_handle] = mtu
        self._irq(IRQ_MTU_EXCHANGED, (conn_handle, mtu))
        return mtu

    def central_write(self, conn_handle, value_handle, data):
        """ATT write from the central; False (ATT error, no IRQ) if the attribute is not writable."""
        a = self._by_handle.get(value_handle)
        if conn_handle not in self.connections or a is None:
            return False
        if not a.flags & (FLAG_WRITE | FLAG_WRITE_NO_RESPONSE):
            return False
        data = bytes(data)
        if a.append:
            a.value = (a.value + data)[: a.size]
        else:
            a.value = data[: a.size]
        self._irq(IRQ_GATTS_WRITE, (conn_handle, value_handle))
        return True

    def central_read(self, value_handle):
        return self._by_handle[value_handle].value

    def subscribe(self, conn_handle, value_handle, notify=True):
        if notify:
            self.subscriptions[(conn_handle, value_handle)] = True
        else:
            self.subscriptions.pop((conn_handle, value_handle), None)


radio = Radio()


class BLE:
    """The strap's view of the controller. Like MicroPython, BLE() returns the one radio."""

    def __init__(self):
        self._r = radio

    def active(self, state=None):
        if state is None:
            return self._r.is_active
        if state and self._r.failed_activations > 0:
            self._r.failed_activations -= 1
            raise OSError(110)  # ETIMEDOUT: the controller did not answer
        self._r.is_active = bool(state)
        if not state:
            self._r.advertising = None
        return self._r.is_active

    def config(self, *args, **kwargs):
        r = self._r
        if args:
            key = args[0]
            if key == "mac":
                if not r.is_active:  # as NimBLE (modbluetooth_nimble.c): no address while the radio is off
                    raise OSError(19)  # ENODEV
                return (0, r.mac)
            if key == "gap_name":
                return r.gap_name.encode()
            if key == "mtu":
                return r.preferred_mtu
            if key == "addr_mode":
                return 0
            raise ValueError("unknown config param")
        for key in kwargs:
            value = kwargs[key]
            if key == "mtu":
                if not _DEFAULT_MTU <= value <= _MAX_MTU:
                    raise ValueError("invalid MTU")
                r.preferred_mtu = value
            elif key == "gap_name":
                r.gap_name = value if isinstance(value, str) else bytes(value).decode()
            elif key in ("rxbuf", "addr_mode", "io", "le_secure", "mitm", "bond", "gap_appearance"):
                pass
            else:
                raise ValueError("unknown config param")
        return None

    def irq(self, handler):
        self._r.handler = handler

    def gap_advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True):
        r = self._r
        if not r.is_active:
            raise OSError(ENOTCONN)
        if interval_us is None:
            r.advertising = None
        else:
            if adv_data is not None:
                r._adv = bytes(adv_data)
            if resp_data is not None:
                r._resp = bytes(resp_data)
            if len(r._adv) > 31 or len(r._resp) > 31:
                raise ValueError("advertising payload > 31 bytes")
            r.advertising = (interval_us, r._adv, r._resp, connectable)
        r._call("on_advertise", interval_us, r._adv, r._resp, connectable)

    def gap_disconnect(self, conn_handle):
        r = self._r
        if conn_handle not in r.connections:
            return False
        r._call("on_disconnect_request", conn_handle)
        return True

    def gatts_register_services(self, services):
        r = self._r
        if not r.is_active:
            raise OSError(ENOTCONN)
        r.db = []
        r._by_handle = {}
        handle = 1
        out = []
        for svc in services:
            svc_uuid = UUID(svc[0])
            r.db.append(Attr(handle, svc_uuid, 0, SERVICE, svc_uuid))
            handle += 1
            handles = []
            for ch in svc[1]:
                uuid = UUID(ch[0])
                flags = ch[1]
                handle += 1  # characteristic declaration
                a = Attr(handle, uuid, flags, CHARACTERISTIC, svc_uuid)
                r.db.append(a)
                r._by_handle[handle] = a
                handles.append(handle)
                handle += 1
                if flags & (FLAG_NOTIFY | FLAG_INDICATE):
                    handle += 1  # implicit CCCD
                for d in ch[2] if len(ch) > 2 else ():
                    a = Attr(handle, UUID(d[0]), d[1], DESCRIPTOR, svc_uuid)
                    r.db.append(a)
                    r._by_handle[handle] = a
                    handles.append(handle)
                    handle += 1
            out.append(tuple(handles))
        r._call("on_services", r)
        return tuple(out)

    def gatts_read(self, value_handle):
        return self._r._by_handle[value_handle].value

    def gatts_write(self, value_handle, data, send_update=False):
        r = self._r
        a = r._by_handle[value_handle]
        a.value = bytes(data)[: a.size] if len(data) > a.size else bytes(data)
        if send_update:
            for conn, h in list(r.subscriptions):
                if h == value_handle:
                    r.link.on_notify(conn, value_handle, a.value, False)

    def gatts_set_buffer(self, value_handle, length, append=False):
        a = self._r._by_handle[value_handle]
        a.size = length
        a.append = append

    def gatts_notify(self, conn_handle, value_handle, data=None):
        r = self._r
        if conn_handle not in r.connections:
            raise OSError(ENOTCONN)
        a = r._by_handle[value_handle]
        payload = a.value if data is None else bytes(data)
        limit = r.connections[conn_handle] - 3
        if len(payload) > limit:
            payload = payload[:limit]  # NimBLE truncates to ATT_MTU - 3
        r.link.on_notify(conn_handle, value_handle, payload, False)

    def gatts_indicate(self, conn_handle, value_handle, data=None):
        r = self._r
        if conn_handle not in r.connections:
            raise OSError(ENOTCONN)
        a = r._by_handle[value_handle]
        r.link.on_notify(conn_handle, value_handle, a.value if data is None else bytes(data), True)

    def gattc_exchange_mtu(self, conn_handle):
        if conn_handle not in self._r.connections:
            raise OSError(ENOTCONN)
        self._r._call("on_mtu_request", conn_handle)
