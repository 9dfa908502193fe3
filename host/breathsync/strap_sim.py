"""Simulate a strap on a recording: its ADC, then its firmware detector, with times in seconds."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .adc import StrapSignal, simulate_adc
from .detector import BreathEvent, Interpreter, TimedBreath, check_rate, run_detector
from .errors import InputError
from .recording import check_input_rate

MIN_DURATION_S = 10.0


def detect_breaths(
    signal: npt.NDArray[np.float64],
    sampling_rate: float,
    rate_hz: int = 25,
    interpreter: Interpreter = "cpython",
    strap: StrapSignal | None = None,
) -> list[TimedBreath]:
    """Run the strap (ADC + firmware detector) on ``signal`` sampled at ``sampling_rate`` Hz; ``strap``: its ADC
    simulation, when the caller has it already."""
    check_rate(rate_hz)
    check_input_rate(sampling_rate, len(signal))
    duration_s = len(signal) / sampling_rate
    if duration_s < MIN_DURATION_S:
        raise InputError(f"recording too short: {duration_s:.1f} s of data, need at least {MIN_DURATION_S:.0f} s")
    if strap is None:
        strap = simulate_adc(signal, sampling_rate, rate_hz)
    events = run_detector(strap.counts_u16.tolist(), rate_hz, interpreter)
    return [_place(event, strap.t0_s, rate_hz, strap.units_per_count14) for event in events]


def _place(event: BreathEvent, t0_s: float, rate_hz: int, units_per_count14: float) -> TimedBreath:
    period_s = 1.0 / rate_hz
    return TimedBreath(
        kind=event.kind,
        t_s=t0_s + event.index * period_s,
        reported_t_s=t0_s + (event.confirmed_index + 0.5) * period_s,
        amplitude=event.depth_counts * units_per_count14,
        amplitude_counts=event.depth_counts,
        interval_s=event.interval_samples * period_s if event.interval_samples else None,
    )
