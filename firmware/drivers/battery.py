"""Battery voltage through a resistor divider on an ADC1 pin, and a rough LiPo state of charge."""

# (mV, %) for a LiPo cell at the strap's light load; approximate, for the Battery Service.
_CURVE = ((4200, 100), (4100, 90), (4000, 78), (3900, 62), (3800, 42), (3700, 20), (3600, 8), (3500, 3), (3300, 0))


class BatteryGauge:
    def __init__(self, adc, divider_num=2, divider_den=1):
        self._adc = adc
        self._num = divider_num
        self._den = divider_den

    def read_mv(self):
        # read_uv is the calibrated reading; < 2.5e6 uV * 2 stays a small int.
        return self._adc.read_uv() * self._num // self._den // 1000

    def percent(self, mv=None):
        if mv is None:
            mv = self.read_mv()
        if mv >= _CURVE[0][0]:
            return 100
        i = 1
        while i < len(_CURVE):
            hi_mv, hi_pct = _CURVE[i - 1]
            lo_mv, lo_pct = _CURVE[i]
            if mv >= lo_mv:
                return lo_pct + (mv - lo_mv) * (hi_pct - lo_pct) // (hi_mv - lo_mv)
            i += 1
        return 0
