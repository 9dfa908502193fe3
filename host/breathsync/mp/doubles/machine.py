"""Test double of MicroPython's ``machine`` module (ESP32-S3 flavour) for the unix port and CPython.

Put ``tests/doubles`` first on MICROPYPATH (MicroPython) or sys.path (CPython) and firmware
code imports it as ``machine`` unchanged. Everything the test controls or inspects lives on
the module-level ``sim`` object:

Time. ``sim`` keeps a *virtual* millisecond clock (``sim.now_ms()``), starting at
``sim.reset()``'s ``start_ms``. Only the test moves it: ``sim.advance_ms(n)`` /
``sim.advance_to(t)`` step through every due Timer callback and the WDT deadline in time
order, with the clock set to each event's exact time while it runs. Timers never fire on
their own and real time plays no part (deterministic). ``machine.idle()`` and
``lightsleep(ms)`` behave like the device: idle runs whatever is due now; lightsleep advances
the clock. PWM timelines, WDT feeds and resets are stamped with this clock. ``time`` is not
virtualised here: firmware under test should take its ms clock from a passed-in callable
(``machine.sim.now_ms`` in tests, ``time.ticks_ms`` on the device) or a ``time`` double.

ADC. ``sim.set_adc_source(gpio, source)``: a callable returning u16 counts, or a sequence
of u16 (consumed one per read; the last value repeats once exhausted), or
``sim.adc_from_file(gpio, path)`` (text, one int per line; or ``.u16`` raw little-endian).
Like the ESP32-S3, only ADC1 pins (GPIO1-10) are accepted when ``sim.adc1_only``: ADC2
collides with the radio.

PWM. Every duty change is appended to ``sim.pwm_timeline(gpio)`` as (time_ms, duty_u16),
deinit and resets included. With ``RECORD_MAX`` set (a virtual strap sets it; tests keep every entry),
only the newest entries are kept, of the timelines and of the WDT feeds below: a virtual strap runs for
hours, and a list grown without end needed ever larger blocks of the strap's own heap (a MemoryError
after ~20 min of nudges at 10x speed).

I2C. ``sim.attach_i2c(addr, device)`` puts a simulated device on every bus; a device has
``read(reg, n) -> bytes`` and ``write(reg, data)``. ``i2c_parts.Lps22Sim`` and
``i2c_parts.Drv2605Sim`` (a module of their own, so the heap-budget run does not load them)
model the two parts the firmware supports. ``sim.fail_i2c(addr, n)`` makes the next n transfers
to ``addr`` raise OSError(ETIMEDOUT) like a glitching bus. Missing devices raise
OSError(ENODEV) like the real port.

WDT. ``WDT(timeout=ms)`` records feeds in ``sim.wdt_feeds``. If the clock passes the last
feed + timeout, the chip "resets": ``sim.resets`` gets (time_ms, "wdt"), ``reset_cause()``
becomes WDT_RESET, every PWM output drops to 0 (pins float; the gate pull-down holds the
motor off) and, when ``sim.raise_on_reset`` (default), ``DeviceReset`` is raised out of
``advance_ms`` (the program is gone). ``machine.reset()`` raises it too.
"""

try:
    import umachine as _um  # the unix port's built-in machine (Signal, mem*, ...)
except ImportError:
    _um = None

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)

_ENODEV = const(19)
_ETIMEDOUT = const(110)
_GPIO_MAX = const(48)
_ADC1_GPIOS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
_FREQS_HZ = (20_000_000, 40_000_000, 80_000_000, 160_000_000, 240_000_000)


class DeviceReset(SystemExit):
    """The simulated chip reset (watchdog or machine.reset()): the program ends here."""


class _Sim:
    def __init__(self):
        self.reset()

    def reset(self, start_ms=0):
        """Fresh chip: clock at ``start_ms``, no devices, no timers, no history."""
        self._now_ms = start_ms
        self.adc1_only = True
        self.raise_on_reset = True
        self.cause = PWRON_RESET
        self.uid = b"\x24\x58\x7c\xb5\x1e\x42"
        self.cpu_hz = 160_000_000
        self.pins = {}  # gpio -> level (0/1)
        self.pin_modes = {}
        self._adc = {}  # gpio -> source
        self._adc_pos = {}
        self.adc_reads = {}  # gpio -> count
        self._pwm = {}  # gpio -> timeline list
        self._pwm_live = []
        self._timers = []  # active Timer objects
        self.i2c_devices = {}
        self._i2c_fail = {}
        self.wdt = None
        self.wdt_feeds = []
        self.resets = []
        self.idle_calls = 0

    # ---- time ----
    def now_ms(self):
        return self._now_ms

    def advance_ms(self, ms):
        self.advance_to(self._now_ms + ms)

    def advance_to(self, t_ms):
        """Move the clock to ``t_ms``, running every due event at its own time, in order."""
        while True:
            due, kind, obj = self._next_event()
            if kind is None or due > t_ms:
                break
            if due > self._now_ms:
                self._now_ms = due
            if kind == "wdt":
                self._chip_reset("wdt")
            else:
                obj._fire()
        if t_ms > self._now_ms:
            self._now_ms = t_ms

    def run_due(self):
        """Run what is due at the current time (machine.idle())."""
        self.advance_to(self._now_ms)

    def _next_event(self):
        best = (0, None, None)
        for t in self._timers:
            if best[1] is None or t._due_ms < best[0]:
                best = (t._due_ms, "timer", t)
        w = self.wdt
        if w is not None and w._armed:
            due = w._last_ms + w.timeout_ms
            if best[1] is None or due <= best[0]:
                best = (due, "wdt", w)
        return best

    def _chip_reset(self, why):
        self.resets.append((self._now_ms, why))
        self.cause = WDT_RESET if why == "wdt" else HARD_RESET
        for p in self._pwm_live:
            p._record(0)
        self._pwm_live = []
        self._timers = []
        if self.wdt is not None:
            self.wdt._armed = False
        self.wdt = None
        if self.raise_on_reset:
            raise DeviceReset(why)

    # ---- ADC ----
    def set_adc_source(self, gpio, source):
        self._adc[gpio] = source
        self._adc_pos[gpio] = 0

    def adc_from_file(self, gpio, path):
        if path.endswith(".u16"):
            from array import array

            with open(path, "rb") as f:
                raw = f.read()
            values = array("H", raw)
        else:
            values = []
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        values.append(int(line))
        self.set_adc_source(gpio, values)

    def _adc_read(self, gpio):
        self.adc_reads[gpio] = self.adc_reads.get(gpio, 0) + 1
        src = self._adc.get(gpio)
        if src is None:
            return 32768  # floating input: mid-scale
        if callable(src):
            v = src()
        else:
            i = self._adc_pos[gpio]
            if i >= len(src):
                i = len(src) - 1
            else:
                self._adc_pos[gpio] = i + 1
            v = src[i]
        v = int(v)
        return 0 if v < 0 else 65535 if v > 65535 else v  # the converter saturates

    # ---- PWM / I2C ----
    def pwm_timeline(self, gpio):
        """[(time_ms, duty_u16), ...] for every change on ``gpio`` (empty list if never used)."""
        return self._pwm.get(gpio, [])

    def attach_i2c(self, addr, device):
        self.i2c_devices[addr] = device

    def fail_i2c(self, addr, count):
        self._i2c_fail[addr] = count

    def _i2c_dev(self, addr):
        n = self._i2c_fail.get(addr, 0)
        if n > 0:
            self._i2c_fail[addr] = n - 1
            raise OSError(_ETIMEDOUT)
        dev = self.i2c_devices.get(addr)
        if dev is None:
            raise OSError(_ENODEV)
        return dev


sim = _Sim()


def _gpio(pin):
    gpio = pin.id if isinstance(pin, Pin) else pin
    if not isinstance(gpio, int) or gpio < 0 or gpio > _GPIO_MAX:
        raise ValueError("invalid pin")
    return gpio


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = _gpio(id)
        self._irq = None
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None):
        if mode != -1:
            sim.pin_modes[self.id] = mode
        if value is not None:
            self.value(value)
        elif self.id not in sim.pins:
            sim.pins[self.id] = 1 if pull == Pin.PULL_UP else 0

    def value(self, v=None):
        if v is None:
            return sim.pins.get(self.id, 0)
        sim.pins[self.id] = 1 if v else 0
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3):
        self._irq = (handler, trigger)
        return None


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_12BIT = 12

    def __init__(self, pin, atten=None):
        gpio = _gpio(pin)
        if sim.adc1_only and gpio not in _ADC1_GPIOS:
            raise ValueError("invalid Pin for ADC (ADC1 = GPIO1-10; ADC2 conflicts with the radio)")
        self.gpio = gpio
        self._atten = ADC.ATTN_0DB if atten is None else atten

    def atten(self, atten):
        self._atten = atten

    def read_u16(self):
        return sim._adc_read(self.gpio)

    def read(self):
        return sim._adc_read(self.gpio) >> 4

    def read_uv(self):
        # 11 dB: the ESP32-S3's usable span ~150..2450 mV mapped linearly (calibrated reading).
        return 150_000 + sim._adc_read(self.gpio) * 2_300_000 // 65535


class PWM:
    def __init__(self, dest, freq=None, duty_u16=None, duty_ns=None):
        self.gpio = _gpio(dest)
        self._freq = 5000
        self._duty = 0
        self._live = False
        sim._pwm.setdefault(self.gpio, [])
        self.init(freq=freq, duty_u16=duty_u16, duty_ns=duty_ns)

    def init(self, freq=None, duty_u16=None, duty_ns=None):
        if freq is not None:
            self.freq(freq)
        if not self._live:
            self._live = True
            sim._pwm_live.append(self)
        if duty_u16 is not None:
            self.duty_u16(duty_u16)
        elif duty_ns is not None:
            self.duty_ns(duty_ns)

    def freq(self, f=None):
        if f is None:
            return self._freq
        if not 1 <= f <= 40_000_000:
            raise ValueError("frequency out of range")
        self._freq = f
        return None

    def duty_u16(self, d=None):
        if d is None:
            return self._duty
        if not 0 <= d <= 65535:
            raise ValueError("duty_u16 must be 0..65535")
        self._record(d)
        return None

    def duty(self, d=None):
        if d is None:
            return self._duty >> 6
        self.duty_u16(min(1023, max(0, d)) * 65535 // 1023)
        return None

    def duty_ns(self, ns=None):
        period_ns = 1_000_000_000 // self._freq
        if ns is None:
            return self._duty * period_ns // 65535
        self.duty_u16(min(65535, ns * 65535 // period_ns))
        return None

    def deinit(self):
        self._record(0)
        self._live = False
        if self in sim._pwm_live:
            sim._pwm_live.remove(self)

    def _record(self, d):
        self._duty = d
        line = sim._pwm.setdefault(self.gpio, [])
        if not line or line[-1][1] != d:
            _keep_newest(line)
            line.append((sim._now_ms, d))


class I2C:
    def __init__(self, id=0, scl=None, sda=None, freq=400_000, timeout=50_000):
        self.id = id
        self.scl = scl
        self.sda = sda
        self.freq = freq

    def scan(self):
        return sorted(sim.i2c_devices)

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        return bytes(sim._i2c_dev(addr).read(memaddr, nbytes))

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        data = sim._i2c_dev(addr).read(memaddr, len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        sim._i2c_dev(addr).write(memaddr, bytes(buf))

    def writeto(self, addr, buf, stop=True):
        buf = bytes(buf)
        if buf:
            sim._i2c_dev(addr).write(buf[0], buf[1:])
        else:
            sim._i2c_dev(addr)
        return 1

    def readfrom(self, addr, nbytes, stop=True):
        dev = sim._i2c_dev(addr)
        return bytes(dev.read(getattr(dev, "pointer", 0), nbytes))

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]


SoftI2C = I2C


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id, mode=PERIODIC, period=-1, freq=-1, callback=None):
        if not 0 <= id <= 3:
            raise ValueError("timer id 0..3 on the ESP32-S3")
        self.id = id
        self.callback = None
        self.fired = 0
        if period > 0 or freq > 0:
            self.init(mode=mode, period=period, freq=freq, callback=callback)

    def init(self, mode=PERIODIC, period=-1, freq=-1, callback=None):
        if freq > 0:
            period = max(1, 1000 // freq)
        if period < 0:
            raise ValueError("period")
        self.deinit()
        self.mode = mode
        self.period_ms = period
        self.callback = callback
        self._due_ms = sim._now_ms + period
        sim._timers.append(self)

    def deinit(self):
        if self in sim._timers:
            sim._timers.remove(self)

    def _fire(self):
        if self.mode == Timer.PERIODIC:
            self._due_ms += self.period_ms if self.period_ms > 0 else 1
        else:
            self.deinit()
        self.fired += 1
        if self.callback is not None:
            self.callback(self)


class _WdtState:
    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self._armed = True
        self._last_ms = sim._now_ms


class WDT:
    """The one hardware watchdog: once started it cannot be stopped, only re-timed."""

    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("timeout")
        if sim.wdt is None:
            sim.wdt = _WdtState(timeout)
        else:
            sim.wdt.timeout_ms = timeout
        self._s = sim.wdt
        self.feed()

    @property
    def timeout_ms(self):
        return self._s.timeout_ms

    def feed(self):
        if self._s is not sim.wdt:  # a WDT object from before a simulated reset
            return
        self._s._last_ms = sim._now_ms
        _keep_newest(sim.wdt_feeds)
        sim.wdt_feeds.append(sim._now_ms)


RECORD_MAX = None  # entries kept per record list; None: all (see the module docstring)


def _keep_newest(record):
    """Make room in a record list: past ``RECORD_MAX`` entries the older half goes (in place)."""
    if RECORD_MAX is not None and len(record) >= RECORD_MAX:
        del record[: RECORD_MAX // 2]


# ---- module functions ----
def reset_cause():
    return sim.cause


def unique_id():
    return sim.uid


def freq(hz=None):
    if hz is None:
        return sim.cpu_hz
    if hz not in _FREQS_HZ:
        raise ValueError("frequency must be 20/40/80/160/240 MHz")
    sim.cpu_hz = hz
    return None


def idle():
    sim.idle_calls += 1
    sim.run_due()


def lightsleep(ms=0):
    sim.advance_ms(ms)


def reset():
    sim._chip_reset("machine.reset")
    raise DeviceReset("machine.reset")


def soft_reset():
    raise DeviceReset("soft_reset")


def disable_irq():
    return 0


def enable_irq(state=0):
    return None


if _um is not None:
    Signal = _um.Signal
    mem8 = _um.mem8
    mem16 = _um.mem16
    mem32 = _um.mem32
    time_pulse_us = _um.time_pulse_us
