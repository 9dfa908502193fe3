"""The firmware breath detector under CPython: behaviour on synthetic and real breathing."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from breathsync.datasets import BIDMC_RATE_HZ, BUNDLED_BIDMC_RECORDS, bundled_path, read_breath_annotations
from breathsync.detector import detect_cpython
from breathsync.evaluation import add_baseline_wander, match_events
from breathsync.fwcore import detector as fw_detector
from breathsync.fwcore import detector_coeffs
from breathsync.recording import read_column
from breathsync.strap_sim import detect_breaths

from detector_helpers import (
    SMALL_INT_LIMIT,
    bundled_counts,
    instrumented_portable,
    peak_just_after_start_u16,
    run_detector_chunks,
    run_generator,
    synthetic_breathing_u16,
)

REPO = Path(__file__).resolve().parents[1]
PEAK, TROUGH = fw_detector.PEAK, fw_detector.TROUGH


def test_firmware_constants_equal_design_script_output() -> None:
    generated = subprocess.run(
        [sys.executable, str(REPO / "tools" / "design_filters.py")], capture_output=True, text=True, check=True
    ).stdout
    committed = (REPO / "firmware" / "core" / "detector_coeffs.py").read_text()
    assert committed == generated, "firmware/core/detector_coeffs.py is stale: run `make coeffs`"


@pytest.mark.parametrize("rate_hz", [25, 50])
def test_lowpass_has_unity_dc_gain_and_is_stable(rate_hz: int) -> None:
    b0, b1, b2, a1, a2 = detector_coeffs.coeffs_for(rate_hz)[:5]
    assert b0 + b1 + b2 == (1 << 14) + a1 + a2
    assert np.all(np.abs(np.roots([1 << 14, a1, a2])) < 1)


@pytest.mark.parametrize("rate_hz", [25, 50])
@pytest.mark.parametrize("rate_bpm", [4, 6, 10, 15, 20, 30, 45, 60])
def test_every_breath_found_from_4_to_60_per_minute(rate_hz: int, rate_bpm: float) -> None:
    duration_s = max(120.0, 12 * 60.0 / rate_bpm)
    counts = synthetic_breathing_u16(rate_bpm, duration_s, rate_hz, noise_counts=40)
    events = detect_cpython(counts.tolist(), rate_hz)
    period = rate_hz * 60.0 / rate_bpm
    peaks = [e for e in events if e.kind == "peak"]
    # True peaks at k * period; the first breath may be missed while the amplitude is learned.
    expected = math.floor((len(counts) - 1) / period) + 1
    assert expected - 2 <= len(peaks) <= expected
    # Timing within 0.1 s, or 2% of the period for slow breaths whose crests are flat and noisy.
    tolerance = max(0.1 * rate_hz, 0.02 * period) + 1
    for peak in peaks[1:]:
        phase = peak.index / period
        assert abs(phase - round(phase)) * period <= tolerance
        assert peak.interval_samples == pytest.approx(period, abs=tolerance)


def test_events_alternate_and_are_causal() -> None:
    counts = bundled_counts("bidmc_09")
    events = detect_cpython(counts)
    kinds = [e.kind for e in events]
    assert all(a != b for a, b in itertools.pairwise(kinds))
    for event in events:
        # The extremum precedes the sample that confirmed it; its index is not the confirm index.
        assert event.index < event.confirmed_index
    confirmed = [e.confirmed_index for e in events]
    assert confirmed == sorted(confirmed)


def test_no_look_ahead_prefix_gives_prefix_of_events() -> None:
    counts = bundled_counts("bidmc_04")
    full = detect_cpython(counts)
    cut = len(counts) * 2 // 3
    partial = detect_cpython(counts[:cut])
    assert partial == [e for e in full if e.confirmed_index < cut]


@pytest.mark.parametrize("chunk", [1, 7, 25, 32])
def test_chunk_size_does_not_change_events(chunk: int) -> None:
    counts = bundled_counts("bidmc_18")
    reference = run_detector_chunks(counts, 25, 32)
    assert run_detector_chunks(counts, 25, chunk) == reference


@pytest.mark.parametrize("gain", [0.05, 0.3, 1.0])
def test_detection_independent_of_sensor_gain(gain: float) -> None:
    rng = np.random.default_rng(3)
    rate_bpm = 14.0
    t = np.arange(0, 180, 1 / 25)
    wave = np.cos(2 * math.pi * rate_bpm / 60 * t) + 0.05 * rng.standard_normal(len(t))
    counts = np.clip(np.round(32768 + gain * 20000 * wave), 0, 65535).astype(int)
    peaks = [e for e in detect_cpython(counts.tolist()) if e.kind == "peak"]
    assert abs(len(peaks) - 180 * rate_bpm / 60) <= 2


def test_baseline_drift_is_removed() -> None:
    # Drift of half the breath amplitude per 10 s (a strap slowly sliding) must not hide breaths.
    counts = synthetic_breathing_u16(12, 240, 25, amplitude_counts=6000, drift_counts_per_s=300 / 10)
    peaks = [e for e in detect_cpython(counts.tolist()) if e.kind == "peak"]
    assert abs(len(peaks) - 48) <= 2


@pytest.mark.parametrize("record", BUNDLED_BIDMC_RECORDS)
def test_breaths_carried_below_the_baseline_by_wander_are_found(record: str) -> None:
    # A 60 s wander of one breath depth: the ~10 s baseline follows it only in part, so whole
    # breaths sit below it in the wander's valleys (F1 0.57-0.68 when peaks had to be above it).
    signal = add_baseline_wander(read_column(bundled_path(f"{record}_resp.csv.gz")), BIDMC_RATE_HZ, 1.0, 60.0)
    marks = read_breath_annotations(bundled_path(f"{record}_breaths.csv.gz"))
    peaks = [b.t_s for b in detect_breaths(signal, BIDMC_RATE_HZ, 25) if b.kind == "peak"]
    for annotator in ("ann1", "ann2"):
        score = match_events(peaks, marks[annotator] / BIDMC_RATE_HZ, 0.5)
        assert score.f1 >= 0.95, f"{record} vs {annotator}: F1 {score.f1:.3f}"


@pytest.mark.parametrize("rate_hz", [25, 50])
def test_no_event_is_placed_before_the_first_sample(rate_hz: int) -> None:
    # A peak inside the first low-pass delay was reported at a negative index (t = -0.144 s on bidmc_01), and the
    # next peak's interval came out 0 ('no previous peak') because that index was below the 'none yet' mark.
    events = detect_cpython(peak_just_after_start_u16(rate_hz), rate_hz)
    assert events and min(e.index for e in events) >= 0
    peaks = [e for e in events if e.kind == "peak"]
    assert peaks[0].interval_samples == 0 and all(p.interval_samples > 0 for p in peaks[1:])


def test_breathing_that_resumes_shallower_after_a_pause_is_found_again() -> None:
    # Deep breaths, 15 s without any (the amplitude estimate then decays), then breaths 1/8 as deep: without the
    # decay the hysteresis stays sized for the deep ones and not one shallow breath is found (a mutation review).
    rate = 25
    deep = synthetic_breathing_u16(15, 60, rate, amplitude_counts=12000, noise_counts=20, seed=1)
    pause = 32768 + np.round(np.random.default_rng(2).normal(0, 20, 15 * rate)).astype(np.int64)
    shallow = synthetic_breathing_u16(15, 80, rate, amplitude_counts=1500, noise_counts=20, seed=3)
    events = detect_cpython(np.concatenate((deep, pause, shallow)).tolist(), rate)
    found = [e for e in events if e.kind == "peak" and e.index >= 75 * rate]
    assert len(found) >= 80 * 15 / 60 - 2


def test_the_amplitude_estimate_takes_a_first_depth_ignores_ripples_and_clamps_artefacts() -> None:
    track = fw_detector.track_amplitude
    assert track(0, 777, 3) == 777  # the first half-breath sets it
    assert track(1000, 400, 3) == 1000  # under half of it: a ripple, ignored
    assert track(1000, 1800, 3) == 1000 + (800 >> 3)
    assert track(1000, 10000, 3) == 1000 + (2000 - 1000 >> 3)  # a movement artefact counts as twice the estimate


def test_flat_signal_gives_no_breaths() -> None:
    counts = synthetic_breathing_u16(12, 120, 25, amplitude_counts=0, noise_counts=2)
    assert detect_cpython(counts.tolist()) == []


def test_minimum_interval_limit_between_peaks() -> None:
    # Breathing at 90/min exceeds the physiologic range: no two peaks closer than the limit.
    counts = synthetic_breathing_u16(90, 60, 25)
    peaks = [e for e in detect_cpython(counts.tolist()) if e.kind == "peak"]
    min_interval = detector_coeffs.coeffs_for(25)[7]
    assert all(p.interval_samples >= min_interval for p in peaks[1:])


@pytest.mark.parametrize("record", BUNDLED_BIDMC_RECORDS)
def test_bundled_records_match_annotators(record: str) -> None:
    signal = read_column(bundled_path(f"{record}_resp.csv.gz"))
    marks = read_breath_annotations(bundled_path(f"{record}_breaths.csv.gz"))
    peaks = [b.t_s for b in detect_breaths(signal, BIDMC_RATE_HZ, 25) if b.kind == "peak"]
    for annotator in ("ann1", "ann2"):
        score = match_events(peaks, marks[annotator] / BIDMC_RATE_HZ, 0.5)
        assert score.f1 >= 0.95, f"{record} vs {annotator}: F1 {score.f1:.3f}"


@pytest.mark.parametrize("record", BUNDLED_BIDMC_RECORDS)
@pytest.mark.parametrize("rate_hz", [25, 50])
def test_integer_intermediates_fit_esp32_small_ints_bundled(record: str, rate_hz: int) -> None:
    generator_function, largest = instrumented_portable()
    counts = bundled_counts(record, rate_hz)
    events = run_generator(generator_function, counts, rate_hz)
    assert events == run_generator(fw_detector._portable, counts, rate_hz)  # probing changes nothing
    assert 0 < largest[0] < SMALL_INT_LIMIT


def test_integer_intermediates_fit_at_full_scale_extremes() -> None:
    # Rail-to-rail square wave: the worst case the ADC can deliver.
    generator_function, largest = instrumented_portable()
    counts = ([0] * 40 + [65535] * 40) * 40
    run_generator(generator_function, counts, 25)
    assert largest[0] < SMALL_INT_LIMIT


@pytest.mark.shared_data
def test_integer_intermediates_fit_esp32_small_ints_all_records(shared_data: Path) -> None:
    from breathsync.adc import simulate_adc
    from breathsync.datasets import bidmc_records

    generator_function, largest = instrumented_portable()
    for record in bidmc_records(shared_data):
        signal = read_column(shared_data / "bidmc" / f"{record}_resp.csv.gz")
        for rate_hz in (25, 50):
            counts = simulate_adc(signal, BIDMC_RATE_HZ, rate_hz).counts_u16.tolist()
            run_generator(generator_function, counts, rate_hz)
            assert largest[0] < SMALL_INT_LIMIT, f"{record} at {rate_hz} Hz: |x| reached {largest[0]}"


@pytest.mark.parametrize("at", [1000, 5000])  # inside the 30 s the front end is fitted to, and after it
@pytest.mark.parametrize("glitch", [-50.0, 50.0, 1e300, -1.7e308])
def test_one_wild_sample_does_not_set_the_simulated_adc_gain(glitch: float, at: int) -> None:
    # The range used to be the record's min..max: one sample at zero or a spike squeezed every breath into a
    # few counts (a real converter just clips it at the rail). A value of 1e300 (a corrupt cell) swamped the
    # box integration's running sum: every breath after it read as flat.
    from breathsync.adc import simulate_adc

    signal = read_column(bundled_path("bidmc_04_resp.csv.gz"))
    wild = signal.copy()
    span = float(np.ptp(signal))
    wild[at] = float(np.mean(signal)) + glitch * span if abs(glitch) < 1e3 else glitch
    clean = simulate_adc(signal, BIDMC_RATE_HZ, 25).counts_u16
    glitched = simulate_adc(wild, BIDMC_RATE_HZ, 25).counts_u16
    near = np.arange(len(clean))
    far = np.abs(near - at * 25 / BIDMC_RATE_HZ) > 2
    assert np.array_equal(clean[far], glitched[far])
    assert glitched[~far].min() == 0 or glitched[~far].max() == 65535  # the glitch itself clips at a rail


def test_the_simulated_front_end_is_fitted_to_the_start_and_to_breathing_not_to_a_flat_lead_in() -> None:
    # The gain comes from the first 30 s, so later input cannot change earlier counts; a strap still lying on the
    # table (flat) fits it to the first stretch that moves, not to nothing (which would clip every breath).
    from breathsync.adc import FIT_S, simulate_adc

    signal = read_column(bundled_path("bidmc_04_resp.csv.gz"))
    fit = int(FIT_S * BIDMC_RATE_HZ)
    deeper = signal.copy()
    deeper[fit:] = signal[fit:] * 1.5
    plain = simulate_adc(signal, BIDMC_RATE_HZ, 25)
    changed = simulate_adc(deeper, BIDMC_RATE_HZ, 25)
    n_fit = int(FIT_S * 25) - 1
    assert np.array_equal(plain.counts_u16[:n_fit], changed.counts_u16[:n_fit])
    assert plain.units_per_count14 == changed.units_per_count14
    assert not np.array_equal(plain.counts_u16[n_fit + 1 :], changed.counts_u16[n_fit + 1 :])
    lead_in = np.concatenate([np.full(40 * BIDMC_RATE_HZ, signal[0]), signal])
    late = simulate_adc(lead_in, BIDMC_RATE_HZ, 25).counts_u16[40 * 25 :]
    assert late.min() > 0 and late.max() < 65535 and np.ptp(late) > 10000  # neither clipped nor squeezed
    lead_in[100] = signal[0] + 5.0  # one glitch on the flat lead-in: no movement (it divided by a zero range)
    late = simulate_adc(lead_in, BIDMC_RATE_HZ, 25).counts_u16[40 * 25 :]
    assert late.min() > 0 and late.max() < 65535 and np.ptp(late) > 10000
    # A strap on the table picks up sensor noise, not exactly flat: fitted to that noise, every breath after it sat
    # at both rails (until session 22). Noise at 1 % of a breath's depth, then the breathing: neither clipped nor
    # squeezed, and the detector finds the breaths after the lead-in, whether the breathing starts in the next 30 s
    # block or two blocks later.
    plain_peaks = [e.t_s for e in detect_breaths(signal, BIDMC_RATE_HZ, 25) if e.kind == "peak" and e.t_s > 10.0]
    for lead_s in (40, 90):
        noise = np.random.default_rng(3).normal(signal[0], 0.01 * float(np.ptp(signal[:fit])) / 4, lead_s * 125)
        noisy = np.concatenate([noise, signal])
        late = simulate_adc(noisy, BIDMC_RATE_HZ, 25).counts_u16[lead_s * 25 :]
        assert late.min() > 0 and late.max() < 65535 and np.ptp(late) > 10000
        found = [e for e in detect_breaths(noisy, BIDMC_RATE_HZ, 25) if e.kind == "peak" and e.t_s > lead_s + 10.0]
        assert len(found) >= 0.95 * len(plain_peaks)
    # ... but a movement burst of a few seconds after the first 30 s of breathing does not take the gain (the fit
    # compared 0.5-99.5 % ranges at first: half the later breaths were lost).
    burst = signal.copy()
    burst[40 * 125 : 43 * 125] += 20 * float(np.ptp(signal[:fit])) * np.sin(np.linspace(0, 6 * np.pi, 3 * 125))
    assert (
        simulate_adc(burst, BIDMC_RATE_HZ, 25).units_per_count14
        == simulate_adc(signal, BIDMC_RATE_HZ, 25).units_per_count14
    )


def test_a_step_in_the_signal_level_after_the_fit_is_still_measured_not_clipped() -> None:
    # A strap re-tightened, or a change of posture: the level jumps by two breath ranges and the breaths grow by half.
    # With one range of headroom (until session 22) the breaths after the step sat at the top rail and the strap
    # reported none of them: an outside generator's steps left a person without breaths for up to 135 s.
    from breathsync.adc import simulate_adc

    signal = read_column(bundled_path("bidmc_04_resp.csv.gz"))
    step_at = 60 * BIDMC_RATE_HZ
    span = float(np.quantile(signal[: 30 * BIDMC_RATE_HZ], 0.995) - np.quantile(signal[: 30 * BIDMC_RATE_HZ], 0.005))
    centre = float(np.median(signal))
    stepped = signal.copy()
    stepped[step_at:] = centre + 2.0 * span + 1.5 * (signal[step_at:] - centre)
    after = simulate_adc(stepped, BIDMC_RATE_HZ, 25).counts_u16[60 * 25 :]
    assert after.min() > 0 and after.max() < 65535

    def peaks_after_step(x: np.ndarray) -> int:
        return sum(1 for e in detect_breaths(x, BIDMC_RATE_HZ, 25) if e.kind == "peak" and e.t_s > 70.0)

    plain = peaks_after_step(signal)
    assert plain > 50
    assert abs(peaks_after_step(stepped) - plain) <= 0.05 * plain


def test_the_strap_model_refuses_a_signal_it_cannot_measure_in_one_line() -> None:
    from breathsync.adc import check_signal_magnitude, simulate_adc
    from breathsync.errors import InputError

    for signal, message in (
        (np.full(1000, 1e300), "too large for a respiration signal"),  # its sums overflowed to inf
        (np.full(1000, np.nan), "needs finite values"),
        (np.zeros(0), "needs finite values"),
    ):
        with pytest.raises(InputError, match=message):
            check_signal_magnitude(signal)
    with pytest.raises(InputError, match="too large"):
        simulate_adc(np.full(1000, 1e300), BIDMC_RATE_HZ, 25)
