"""Real respiration recordings as scenario material: loading, resampling, and each one's phase model.

A scenario never synthesises a waveform: every person is a real recording, only re-timed. The
phase model of a recording comes from its own breaths (offline, whole recording in hand: the
generator may look ahead, the engine may not) and is found with a method deliberately different
from the strap's firmware detector, so the ground truth is not the detector's own view.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..datasets import bidmc_records, bundled_path
from ..errors import InputError
from ..recording import read_column

FloatArray = npt.NDArray[np.float64]
SCENARIO_RATE_HZ = 50.0
BIOPEAKS_RATE_HZ = 1000.0


@dataclass(frozen=True)
class RespSource:
    """One real recording at ``sampling_rate`` with its offline end-inspiration peaks."""

    name: str
    signal: FloatArray
    sampling_rate: float
    peaks_s: FloatArray

    @property
    def duration_s(self) -> float:
        return len(self.signal) / self.sampling_rate

    @property
    def rate_bpm(self) -> float:
        return 60.0 / float(np.median(np.diff(self.peaks_s)))


def resample(signal: FloatArray, sampling_rate: float, target_hz: float = SCENARIO_RATE_HZ) -> FloatArray:
    """Box-average to ~``target_hz`` bins, then interpolate: enough for a < 2 Hz signal, numpy only."""
    factor = sampling_rate / target_hz
    width = max(1, round(factor))
    if width > 1:
        kernel = np.ones(width) / width
        signal = np.convolve(signal, kernel, mode="same")
    n_out = int(np.floor(len(signal) / factor))
    t_in = np.arange(len(signal)) / sampling_rate
    return np.interp(np.arange(n_out) / target_hz, t_in, signal)


def _moving_average(x: FloatArray, width: int) -> FloatArray:
    width = max(1, width)
    pad = width // 2
    xp = np.concatenate([np.full(pad, x[0]), x, np.full(width - pad - 1, x[-1])])
    c = np.concatenate(([0.0], np.cumsum(xp)))
    return (c[width:] - c[:-width]) / width


def offline_peaks(signal: FloatArray, sampling_rate: float) -> FloatArray:
    """End-inspiration times: maxima between hysteresis crossings of the detrended, smoothed signal."""
    smooth = _moving_average(_moving_average(signal, int(0.5 * sampling_rate)), int(0.3 * sampling_rate))
    trend = _moving_average(smooth, int(10.0 * sampling_rate))
    d = smooth - trend
    h = 0.25 * float(np.std(d))
    peaks: list[int] = []
    state = 0  # 0: waiting for an up-crossing, 1: above (tracking the max)
    best = -1
    for i, v in enumerate(d):
        if state == 0 and v > h:
            state, best = 1, i
        elif state == 1:
            if v > d[best]:
                best = i
            if v < -h:
                peaks.append(best)
                state = 0
    t = np.asarray(peaks, dtype=np.float64) / sampling_rate
    if len(t) > 1:  # merge maxima closer than 1.2 s (a notch on one inhalation)
        keep = np.concatenate(([True], np.diff(t) >= 1.2))
        t = t[keep]
    return t


def make_source(name: str, signal: FloatArray, sampling_rate: float) -> RespSource:
    sig = resample(np.asarray(signal, dtype=np.float64), sampling_rate)
    peaks = offline_peaks(sig, SCENARIO_RATE_HZ)
    if len(peaks) < 10:
        raise InputError(f"{name}: too few breaths for a scenario source ({len(peaks)})")
    return RespSource(name, sig, SCENARIO_RATE_HZ, peaks)


def bundled_sources() -> list[RespSource]:
    """The recordings shipped with the package (usable in core tests)."""
    out = [
        make_source(rec, read_column(bundled_path(f"{rec}_resp.csv.gz")), 125.0)
        for rec in ("bidmc_04", "bidmc_09", "bidmc_18")
    ]
    nk = read_column(bundled_path("neurokit_bio_resting_5min_100hz.csv.gz"), "rsp")
    out.append(make_source("neurokit_resting", nk, 100.0))
    return out


def bidmc_sources(data_dir: Path, records: list[str] | None = None) -> list[RespSource]:
    names = records if records is not None else bidmc_records(data_dir)
    return [make_source(n, read_column(data_dir / "bidmc" / f"{n}_resp.csv.gz"), 125.0) for n in names]


def biopeaks_segments(data_dir: Path, start_min: float, stop_min: float, segment_min: float) -> list[RespSource]:
    """Consecutive segments of the 85-min BITalino chest-belt recording (1000 Hz)."""
    raw = read_column(data_dir / "resp_unannotated" / "biopeaks_OSmontage0J.csv.gz", "resp_adc")
    sig = resample(raw, BIOPEAKS_RATE_HZ)
    out: list[RespSource] = []
    t = start_min
    while t + segment_min <= stop_min + 1e-9:
        a = int(t * 60 * SCENARIO_RATE_HZ)
        b = int((t + segment_min) * 60 * SCENARIO_RATE_HZ)
        seg = sig[a:b]
        out.append(RespSource(f"biopeaks_{t:.0f}min", seg, SCENARIO_RATE_HZ, offline_peaks(seg, SCENARIO_RATE_HZ)))
        t += segment_min
    return out
