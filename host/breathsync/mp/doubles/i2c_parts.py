"""Simulated I2C parts for the ``machine`` double: attach with ``machine.sim.attach_i2c(addr, part)``.

``Lps22Sim`` (ST LPS22HB/HH pressure sensor) and ``Drv2605Sim`` (TI DRV2605L haptic driver) model
the two I2C parts the firmware supports. Kept out of ``machine.py`` so that a run that does not
use them (the heap-budget test) does not carry their code on its heap.
"""

import machine


class Lps22Sim:
    """ST LPS22HB/HH pressure sensor: register file + a pressure source in hPa * 4096.

    ``source`` is a callable or a sequence of raw 24-bit pressure values; one value is
    consumed per read of PRESS_OUT (0x28). ``whoami`` 0xB1 (HB) or 0xB3 (HH).
    """

    WHO_AM_I = 0x0F
    CTRL_REG1 = 0x10
    CTRL_REG2 = 0x11
    STATUS = 0x27
    PRESS_OUT_XL = 0x28
    TEMP_OUT_L = 0x2B

    def __init__(self, source=None, whoami=0xB1):
        self.regs = bytearray(256)
        self.regs[self.WHO_AM_I] = whoami
        self.regs[self.CTRL_REG2] = 0x10  # IF_ADD_INC default on
        self.source = source
        self._pos = 0
        self.reads = 0
        self.resets = 0
        self.pressure_raw = 1013 * 4096

    def odr_code(self):
        return (self.regs[self.CTRL_REG1] >> 4) & 7

    def _next_pressure(self):
        src = self.source
        if src is None:
            return self.pressure_raw
        if callable(src):
            return int(src())
        i = self._pos if self._pos < len(src) else len(src) - 1
        self._pos = i + 1
        return int(src[i])

    def read(self, reg, n):
        if reg == self.PRESS_OUT_XL:
            p = self._next_pressure() & 0xFFFFFF
            self.reads += 1
            self.regs[0x28] = p & 0xFF
            self.regs[0x29] = (p >> 8) & 0xFF
            self.regs[0x2A] = (p >> 16) & 0xFF
        if reg == self.STATUS:
            return bytes([0x03] + [0] * (n - 1))  # new P and T data available
        return bytes(self.regs[reg : reg + n])

    def write(self, reg, data):
        for i in range(len(data)):
            r = reg + i
            if r == self.WHO_AM_I:
                continue
            if r == self.CTRL_REG2 and data[i] & 0x04:  # SWRESET: back to defaults
                self.resets += 1
                self.regs[self.CTRL_REG1] = 0
                self.regs[self.CTRL_REG2] = 0x10
                continue
            self.regs[r] = data[i]


class Drv2605Sim:
    """TI DRV2605L haptic driver: register file; records the drive level over time.

    ``timeline`` is [(time_ms, level)] where level is the RTP amplitude (0..255, unsigned
    format) while in real-time-playback mode and out of standby, else 0.
    """

    STATUS = 0x00
    MODE = 0x01
    RTP_INPUT = 0x02
    LIBRARY = 0x03
    GO = 0x0C
    OD_CLAMP = 0x17
    FEEDBACK = 0x1A
    CONTROL3 = 0x1D

    def __init__(self, device_id=7):
        self.regs = bytearray(256)
        self.regs[self.STATUS] = (device_id << 5) | 0x00
        self.regs[self.MODE] = 0x40  # standby after power-up
        self.regs[self.OD_CLAMP] = 0x89
        self.regs[self.FEEDBACK] = 0x36  # ERM after reset
        self.regs[self.CONTROL3] = 0xA0
        self.timeline = []
        self.writes = 0

    def level(self):
        mode = self.regs[self.MODE]
        if mode & 0x40 or (mode & 7) != 5:
            return 0
        v = self.regs[self.RTP_INPUT]
        if not self.regs[self.CONTROL3] & 0x08:  # signed format: negative = brake, no drive
            v = 0 if v >= 128 else v * 2
        return v

    def read(self, reg, n):
        return bytes(self.regs[reg : reg + n])

    def write(self, reg, data):
        for i in range(len(data)):
            r = reg + i
            self.writes += 1
            if r == self.MODE and data[i] & 0x80:  # DEV_RESET
                dev = self.regs[self.STATUS]
                self.regs[:] = bytearray(256)
                self.regs[self.STATUS] = dev
                self.regs[self.MODE] = 0x40
                continue
            if r == self.STATUS:
                continue
            self.regs[r] = data[i]
        lv = self.level()
        if not self.timeline or self.timeline[-1][1] != lv:
            self.timeline.append((machine.sim.now_ms(), lv))
