"""Pre-session calibration: the therapist's own breathing, alone, before the client arrives.

A couple of quiet minutes wearing the strap give the engine the therapist's baseline (rate, its
variability, depth) before the session, instead of learning it from the session's first minutes
while the client is already in the room. ``breathsync calibrate`` records it from the strap (the
production link) or from a recording (through the strap's own detector) and writes the file that
``breathsync run --therapist-baseline`` reads (``engine.baseline_file``).

Breath times come from the strap's sample counters, never from arrival times (docs/protocol.md: radio
latency varies by tens of milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..engine import Baseline, EngineConfig, learn_baseline
from ..engine.person import MIN_BASELINE_BREATHS, speech_like
from ..engine.replay import reportable
from ..errors import InputError
from ..link.ble import BleOptions
from ..link.sources import close_links, find_by_role, open_link
from ..link.stream import SampleBlock, StrapEvent
from ..protocol import StatusPacket
from ..strap_sim import detect_breaths

MIN_CALIBRATION_S = 30.0
MAX_CALIBRATION_S = 3600.0  # a calibration is minutes of quiet breathing; longer is a typo
PROGRESS_EVERY_S = 10.0
NO_DATA_TIMEOUT_S = 30.0  # a strap that sends nothing this long is off, out of range or misnamed


@dataclass(frozen=True)
class Calibration:
    baseline: Baseline
    duration_s: float  # breathing actually covered (strap samples, or the recording used)
    source: str


def baseline_of(
    peaks_s: np.ndarray,
    depths: np.ndarray,
    duration_s: float,
    source: str,
    breaks_s: tuple[tuple[float, float], ...] = (),
    troughs_s: np.ndarray | None = None,
) -> Calibration:
    """The baseline of these end-inspiration times (no interval across ``breaks_s``; with the end-expirations
    ``troughs_s``, no speech-like breath either), or a one-line ``InputError`` saying why not."""
    order = np.argsort(peaks_s)
    peaks = np.asarray(peaks_s, dtype=np.float64)[order]
    troughs = None if troughs_s is None else np.sort(np.asarray(troughs_s, dtype=np.float64))
    ordered_depths = np.asarray(depths, dtype=np.float64)[order]
    max_breath_s = EngineConfig().max_breath_s
    baseline = learn_baseline(peaks, ordered_depths, max_breath_s, breaks_s, troughs)
    if baseline is None:
        # Enough breaths, had the spoken ones (and the breaths around them) counted: talking is why.
        talked = troughs is not None and learn_baseline(peaks, ordered_depths, max_breath_s, breaks_s) is not None
        speech = 0 if troughs is None else int(np.count_nonzero(speech_like(peaks, troughs)))
        why = (
            f"{speech} of them spoken (quick inhalation, long exhalation): calibrate breathing quietly, not talking"
            if talked
            else "is the strap on the chest and the sensor connected?"
        )
        raise InputError(
            f"{source}: only {len(peaks_s)} breath(s) in {duration_s:.0f} s, need at least {MIN_BASELINE_BREATHS} "
            f"regular ones ({why})"
        )
    return Calibration(baseline, duration_s, source)


def check_calibration_seconds(seconds: float) -> float:
    """How long to calibrate: at least MIN_CALIBRATION_S (a baseline of a few breaths is noise), at most an hour."""
    if not (math.isfinite(seconds) and MIN_CALIBRATION_S <= seconds <= MAX_CALIBRATION_S):
        raise InputError(
            f"--seconds must be within {MIN_CALIBRATION_S:.0f}-{MAX_CALIBRATION_S:.0f} s (got {seconds:g})"
        )
    return seconds


def _missing_s(dropouts_s: tuple[tuple[float, float], ...], end_s: float) -> float:
    """Seconds of [0, end_s) inside the drop-outs, each second once: drop-outs widened to whole sample blocks
    overlap their neighbours (a review: a file with every 200th value present came out as '-19 s of breathing')."""
    total, reached = 0.0, 0.0
    for a, b in sorted(dropouts_s):
        a, b = max(a, reached), min(b, end_s)
        if b > a:
            total += b - a
            reached = b
    return total


def calibrate_recording(
    signal: np.ndarray,
    sampling_rate: float,
    strap_rate_hz: int = 25,
    seconds: float | None = None,
    source: str = "",
    dropouts_s: tuple[tuple[float, float], ...] = (),
) -> Calibration:
    """Baseline of a recording, breaths found by the strap's own detector (as the live strap would); none found
    inside ``dropouts_s`` (where the recording was missing and ``signal`` only bridges it) or confirmed there."""
    if seconds is not None:
        signal = signal[: round(check_calibration_seconds(seconds) * sampling_rate)]
    end_s = len(signal) / sampling_rate
    covered_s = end_s - _missing_s(dropouts_s, end_s)  # breathing actually recorded
    if covered_s < MIN_CALIBRATION_S:
        raise InputError(
            f"{source or 'recording'}: only {covered_s:.0f} s of breathing; a baseline needs at least "
            f"{MIN_CALIBRATION_S:.0f} s"
        )
    found = (reportable(b, dropouts_s) for b in detect_breaths(signal, sampling_rate, strap_rate_hz))
    events = [b for b in found if b is not None]
    breaths = [b for b in events if b.kind == "peak"]
    peaks = np.array([b.t_s for b in breaths], dtype=np.float64)
    depths = np.array([b.amplitude for b in breaths], dtype=np.float64)
    troughs = np.array([b.t_s for b in events if b.kind == "trough"], dtype=np.float64)
    return baseline_of(peaks, depths, end_s, source, dropouts_s, troughs)


class _Collector:
    """Link sink keeping the strap's peaks (by counter: a backfilled duplicate counts once) and sample span."""

    def __init__(self, rate_hz: float) -> None:
        self.rate_hz = rate_hz
        self.peaks: dict[int, int] = {}  # counter -> depth in counts
        self.troughs: set[int] = set()  # counters (end-expirations tell spoken breaths from quiet ones)
        self.first: int | None = None
        self.last: int | None = None

    def on_samples(self, block: SampleBlock) -> None:
        lo, hi = int(block.counters[0]), int(block.counters[-1])
        self.first = lo if self.first is None else min(self.first, lo)
        self.last = hi if self.last is None else max(self.last, hi)

    def on_event(self, event: StrapEvent) -> None:
        if event.kind == "peak":
            self.peaks[event.counter] = event.depth_counts
        else:
            self.troughs.add(event.counter)

    def on_status(self, role: str, status: StatusPacket) -> None:
        pass

    def on_link(self, role: str, kind: str, detail: str) -> None:
        pass

    @property
    def covered_s(self) -> float:
        return 0.0 if self.first is None or self.last is None else (self.last - self.first + 1) / self.rate_hz

    def breaths_per_min(self) -> float | None:
        counters = sorted(self.peaks)
        if len(counters) < 3:
            return None
        return 60.0 * self.rate_hz / float(np.median(np.diff(counters)))


async def calibrate_strap(
    source: str,
    options: BleOptions,
    seconds: float,
    rate_hz: int = 25,
    progress: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    no_data_timeout_s: float = NO_DATA_TIMEOUT_S,
) -> Calibration:
    """Record ``seconds`` of the therapist's strap (``source`` as in ``breathsync run``; ``auto`` finds the
    strap whose role is therapist) and learn the baseline. ``stop`` ends early with what was recorded;
    no sample within ``no_data_timeout_s`` is an ``InputError`` (the link would retry forever)."""
    check_calibration_seconds(seconds)
    if source == "auto":
        found = await find_by_role("therapist", options, timeout_s=30.0)
        source = f"ble:{found.address}"
    collector = _Collector(rate_hz)
    link = open_link(source, "therapist", collector, options, rate_hz, session_rate_hz=int(rate_hz))
    task = asyncio.create_task(link.run())
    stop = stop or asyncio.Event()
    next_report = PROGRESS_EVERY_S
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + no_data_timeout_s
    try:
        while collector.covered_s < seconds and not stop.is_set():
            if task.done():
                task.result()  # a link that gave up raises here
                break
            if collector.first is None and loop.time() > give_up_at:
                raise InputError(
                    f"{source}: no samples in {no_data_timeout_s:.0f} s (is the strap on, in range, and named so?)"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
            if progress is not None and collector.covered_s >= next_report:
                rate = collector.breaths_per_min()
                shown = "-" if rate is None else f"{rate:.1f}/min"
                progress(f"{collector.covered_s:5.0f} s of {seconds:.0f}: {len(collector.peaks)} breaths ({shown})")
                next_report += PROGRESS_EVERY_S
    finally:
        await close_links([link], [task])  # a connect attempt in flight is cancelled, not waited for
    if collector.first is None:
        raise InputError(f"{source}: no samples received")
    counters = np.array(sorted(collector.peaks), dtype=np.float64)
    depths = np.array([collector.peaks[int(c)] for c in counters], dtype=np.float64)
    troughs = np.array(sorted(collector.troughs), dtype=np.float64) / rate_hz
    return baseline_of(counters / rate_hz, depths, collector.covered_s, source, troughs_s=troughs)
