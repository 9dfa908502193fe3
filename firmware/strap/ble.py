"""GATT server of the strap (docs/protocol.md section 2) on MicroPython's ``bluetooth`` module.

``BleLink(ble, ...)`` takes the radio object from main.py (``bluetooth.BLE()``); nothing here
touches the radio at import time. ``start()`` registers the breathsync service, the Battery
Service (0x180F) and Device Information (0x180A), sizes the attribute buffers, and advertises
the service UUID (scan response: the name).

The IRQ handler only queues work: a write to HAPTIC/CONTROL is copied into the command queue;
connect, disconnect and MTU exchange update a few ints and set bits in ``events``; each sets
``flag`` (a ThreadSafeFlag) so the control task does the rest (stream state, re-advertising).
Every write is validated by the control task with ``packets.decode_command`` whatever the ATT
layer did (a virtual stack does not check permissions).

As a link for ``stream.Streamer``: ``connected``, ``spp`` (samples per SAMPLES packet for the
negotiated MTU), ``min_interval_ms`` (NOTIFY_MIN_INTERVAL_MS) and ``send(channel, buf, n)``,
which lets ``OSError`` (ENOMEM) from ``gatts_notify`` through for the scheduler's retry.

MicroPython gives the peripheral no event when a central subscribes, so the strap cannot tell
a subscribed characteristic from an unsubscribed one: it notifies samples and events only after
START_STREAM (a host subscribes first), and RESPONSE after every command (also kept readable).
"""

from core.packets import (
    CH_CONTROL,
    CH_EVENT,
    CH_HAPTIC,
    CH_RESPONSE,
    CH_SAMPLES,
    CH_STATUS,
    MIN_PAYLOAD_BYTES,
    NOTIFY_MIN_INTERVAL_MS,
    RESPONSE_BYTES,
    STATUS_BYTES,
    samples_per_packet,
)

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)

_FLAG_READ = const(0x0002)
_FLAG_WRITE_NO_RESPONSE = const(0x0004)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)

EV_CONNECT = const(1)
EV_DISCONNECT = const(2)
EV_MTU = const(4)

_DEFAULT_MTU = const(23)
_ADV_TYPE_FLAGS = const(0x01)
_ADV_TYPE_UUID128_COMPLETE = const(0x07)
_ADV_TYPE_NAME_COMPLETE = const(0x09)
_ADV_GENERAL_NO_BREDR = const(0x06)

_BASE = "1291%04x-77c0-430f-a41b-024a72fc885e"
_SERVICE_SHORT = const(0x1000)


def _uuid_text(channel):
    return _BASE % (_SERVICE_SHORT | channel)


def _uuid_le(text):
    """16 little-endian bytes of a 128-bit UUID string (the advertising data's byte order)."""
    digits = text.replace("-", "")
    out = bytearray(16)
    for i in range(16):
        out[15 - i] = int(digits[2 * i : 2 * i + 2], 16)
    return bytes(out)


def advertising_payload(service_text):
    """Flags + complete list of 128-bit service UUIDs (21 bytes)."""
    return bytes((2, _ADV_TYPE_FLAGS, _ADV_GENERAL_NO_BREDR, 17, _ADV_TYPE_UUID128_COMPLETE)) + _uuid_le(service_text)


def scan_response(name):
    raw = name.encode()
    return bytes((len(raw) + 1, _ADV_TYPE_NAME_COMPLETE)) + raw


class BleLink:
    """The breathsync GATT server and advertiser; also the Streamer's link while connected."""

    def __init__(self, bluetooth, ble, commands, flag, name, device_info, adv_interval_us=250_000, mtu=247):
        self._bt = bluetooth  # the module: UUID and flags come from it, so the double can stand in
        self._ble = ble
        self.commands = commands
        self.flag = flag
        self.name = name
        self._info = device_info  # (manufacturer, model, serial, hardware, firmware, software)
        self._adv_interval_us = adv_interval_us
        self._mtu_pref = mtu
        self.connected = False
        self.conn = -1
        self.mtu = _DEFAULT_MTU
        self.spp = samples_per_packet(_DEFAULT_MTU)
        self.min_interval_ms = NOTIFY_MIN_INTERVAL_MS
        self.events = 0  # EV_* bits, set by the IRQ, cleared by take_events()
        self.connects = 0
        self.writes_ignored = 0  # writes to handles that take none (cannot happen with NimBLE)
        self._h = {}
        self._views = {}  # n -> memoryview(pkt)[:n]: made once per length (a handful of sizes)
        self._views_of = None
        self._irq_cb = self._irq  # bound once

    # ---- setup ----
    def start(self):
        bt = self._bt
        ble = self._ble
        ble.active(True)
        ble.config(gap_name=self.name, mtu=self._mtu_pref)
        ble.irq(self._irq_cb)
        notify = _FLAG_NOTIFY
        read_notify = _FLAG_READ | _FLAG_NOTIFY
        write = _FLAG_WRITE | _FLAG_WRITE_NO_RESPONSE
        services = (
            (
                bt.UUID(_uuid_text(0)),
                (
                    (bt.UUID(_uuid_text(CH_SAMPLES)), notify),
                    (bt.UUID(_uuid_text(CH_EVENT)), notify),
                    (bt.UUID(_uuid_text(CH_STATUS)), read_notify),
                    (bt.UUID(_uuid_text(CH_RESPONSE)), read_notify),
                    (bt.UUID(_uuid_text(CH_HAPTIC)), write),
                    (bt.UUID(_uuid_text(CH_CONTROL)), write),
                ),
            ),
            (bt.UUID(0x180F), ((bt.UUID(0x2A19), read_notify),)),
            (
                bt.UUID(0x180A),
                (
                    (bt.UUID(0x2A29), _FLAG_READ),
                    (bt.UUID(0x2A24), _FLAG_READ),
                    (bt.UUID(0x2A25), _FLAG_READ),
                    (bt.UUID(0x2A27), _FLAG_READ),
                    (bt.UUID(0x2A26), _FLAG_READ),
                    (bt.UUID(0x2A28), _FLAG_READ),
                ),
            ),
        )
        ((h_samples, h_event, h_status, h_resp, h_haptic, h_control), (h_battery,), dis) = ble.gatts_register_services(
            services
        )
        self._h = {
            CH_SAMPLES: h_samples,
            CH_EVENT: h_event,
            CH_STATUS: h_status,
            CH_RESPONSE: h_resp,
            CH_HAPTIC: h_haptic,
            CH_CONTROL: h_control,
            0: h_battery,
        }
        self._h_haptic = h_haptic
        self._h_control = h_control
        ble.gatts_set_buffer(h_haptic, MIN_PAYLOAD_BYTES)
        ble.gatts_set_buffer(h_control, MIN_PAYLOAD_BYTES)
        ble.gatts_set_buffer(h_status, STATUS_BYTES)
        ble.gatts_set_buffer(h_resp, RESPONSE_BYTES)
        ble.gatts_write(h_battery, b"\xff")
        for i in range(len(dis)):
            ble.gatts_write(dis[i], self._info[i].encode())
        self.advertise()

    def advertise(self):
        self._ble.gap_advertise(
            self._adv_interval_us,
            adv_data=advertising_payload(_uuid_text(0)),
            resp_data=scan_response(self.name),
        )

    def rename(self, name):
        self.name = name
        self._ble.config(gap_name=name)
        if not self.connected:
            self.advertise()

    # ---- IRQ: only queue work ----
    def _irq(self, event, data):
        if event == _IRQ_GATTS_WRITE:
            handle = data[1]
            if handle == self._h_control:
                value = self._ble.gatts_read(handle)
                self.commands.put(CH_CONTROL, value, len(value))
            elif handle == self._h_haptic:
                value = self._ble.gatts_read(handle)
                self.commands.put(CH_HAPTIC, value, len(value))
            else:
                self.writes_ignored += 1
        elif event == _IRQ_CENTRAL_CONNECT:
            self.conn = data[0]
            self.connected = True
            self.mtu = _DEFAULT_MTU
            self.spp = samples_per_packet(_DEFAULT_MTU)
            self.connects += 1
            self.events |= EV_CONNECT
        elif event == _IRQ_CENTRAL_DISCONNECT:
            if data[0] == self.conn:
                self.connected = False
                self.conn = -1
            self.events |= EV_DISCONNECT
        elif event == _IRQ_MTU_EXCHANGED:
            if data[0] == self.conn:
                self.mtu = data[1]
                self.spp = samples_per_packet(data[1])
            self.events |= EV_MTU
        else:
            return
        self.flag.set()

    def take_events(self):
        ev = self.events
        self.events = 0
        return ev

    # ---- link for the Streamer ----
    def send(self, channel, buf, n):
        if buf is not self._views_of:
            self._views.clear()
            self._views_of = buf
        view = self._views.get(n)
        if view is None:
            view = memoryview(buf)[:n]
            self._views[n] = view
        self._ble.gatts_notify(self.conn, self._h[channel], view)
        return True

    def set_value(self, channel, buf, n):
        """Readable value of a read characteristic (last RESPONSE, current STATUS, battery): ``buf[:n]``. The
        strap's buffers hold exactly one value, so the buffer itself goes (bytes(buf[:n]) allocated twice, once a
        second for STATUS)."""
        self._ble.gatts_write(self._h[channel], buf if n == len(buf) else memoryview(buf)[:n])

    def disconnect(self):
        if self.connected:
            self._ble.gap_disconnect(self.conn)
