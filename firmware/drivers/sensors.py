"""Respiration sensors behind one interface: ``read_u16()`` -> 16-bit counts, rising on inhalation.

- ``AnalogStretch`` (default): conductive-rubber stretch cord in a voltage divider on an ADC1
  pin, 11 dB attenuation. Optionally powers the divider from a GPIO only while it samples.
- ``Lps22Bladder`` (``drivers/lps22.py``, imported only when settings choose it): ST LPS22HB/HH
  barometric sensor reading a small sealed air bladder under the strap.
- ``NullSensor``: mid-scale constant, used (and reported as a fault) when the configured
  sensor is missing, so the strap keeps running instead of crashing or streaming noise.

Every driver keeps ``errors`` (failed reads; the last good value is repeated) and ``kind``.
``read_u16`` allocates nothing on the device (preallocated I2C buffer, small ints only).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


MID_COUNTS = const(32768)


class NullSensor:
    kind = "none"

    def __init__(self):
        self.errors = 0

    def read_u16(self):
        return MID_COUNTS


class AnalogStretch:
    """Stretch cord divider on an ADC1 pin. ``adc`` is a configured machine.ADC.

    ``oversample_shift``: average 2**shift back-to-back conversions per sample (the ESP32
    ADC's noise is several LSB). ``power_pin`` (machine.Pin, output) powers the divider only
    during the reads; ``sleep_us`` (time.sleep_us) waits ``settle_us`` after switching on.
    """

    kind = "stretch"

    def __init__(self, adc, power_pin=None, sleep_us=None, settle_us=100, oversample_shift=2):
        self._adc = adc
        self._read = adc.read_u16  # bound once: loading a method per call allocates a bound method
        self._power = power_pin
        self._sleep_us = sleep_us
        self._settle_us = settle_us
        self._shift = oversample_shift
        self.errors = 0
        if power_pin is not None:
            power_pin.off()

    def read_u16(self):
        p = self._power
        if p is not None:
            p.on()
            if self._sleep_us is not None:
                self._sleep_us(self._settle_us)
        read = self._read
        n = 1 << self._shift
        acc = 0
        while n:
            acc += read()
            n -= 1
        if p is not None:
            p.off()
        return acc >> self._shift
