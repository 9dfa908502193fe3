"""Counter-to-host-time mapping under drift and arrival jitter."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from breathsync.link.clock import MAX_DRIFT_PPM, CounterClock, lower_hull

RATE_HZ = 25.0
SAMPLES_PER_PACKET = 7


def simulate(
    clock: CounterClock,
    drift_ppm: float,
    offset_s: float,
    duration_s: float,
    seed: int,
    jitter_s: tuple[float, float] = (0.01, 0.1),
) -> np.ndarray:
    """Feed live packets; return the online mapping error (s) of each packet's last sample."""
    rng = np.random.default_rng(seed)
    true_rate = RATE_HZ * (1 + drift_ppm * 1e-6)
    n = int(duration_s * RATE_HZ)
    errors = []
    for counter in range(SAMPLES_PER_PACKET - 1, n, SAMPLES_PER_PACKET):
        sampled_s = offset_s + counter / true_rate
        clock.observe(counter, sampled_s + rng.uniform(*jitter_s))
        errors.append(clock.host_time_s(counter) - sampled_s)
    return np.asarray(errors)


@pytest.mark.parametrize(("drift_a", "drift_b"), [(100.0, -100.0), (-100.0, 100.0), (40.0, 35.0)])
def test_two_straps_align_within_20_ms_under_drift_and_jitter(drift_a: float, drift_b: float) -> None:
    a = simulate(CounterClock(RATE_HZ), drift_a, 12.0, 1800, seed=1)
    b = simulate(CounterClock(RATE_HZ), drift_b, 40.5, 1800, seed=2)
    settled = slice(len(a) // 20, None)  # after the first 90 s
    inter_rms_s = float(np.sqrt(np.mean((a[settled] - b[settled]) ** 2)))
    assert inter_rms_s <= 0.020
    # Each mapping sits at (about) the minimum latency, never before the true sampling time.
    assert np.all(a[settled] > 0) and np.all(a[settled] < 0.1)


def test_drift_is_recovered() -> None:
    clock = CounterClock(RATE_HZ)
    simulate(clock, 80.0, 0.0, 1200, seed=3)
    assert clock.fit is not None
    assert clock.fit.drift_ppm == pytest.approx(80.0, abs=5.0)


def test_late_outliers_do_not_pull_the_mapping() -> None:
    clock = CounterClock(RATE_HZ)
    simulate(clock, 0.0, 0.0, 600, seed=4)
    before = clock.host_time_s(15000)
    # A burst of very late packets (a stalled link flushing its queue).
    for counter in range(15000, 15070, 7):
        clock.observe(counter, counter / RATE_HZ + 3.0)
    assert clock.host_time_s(15000) == pytest.approx(before, abs=0.005)


def test_a_drift_that_changes_is_followed_within_the_window_and_the_points_stay_bounded() -> None:
    # A strap warming up changes its crystal's drift: the fit follows over the sliding window (600 s), keeping
    # one point per 2 s bucket of it rather than every packet since the session began.
    clock = CounterClock(RATE_HZ)
    rng = np.random.default_rng(6)
    sampled_s = 0.0
    for counter in range(SAMPLES_PER_PACKET - 1, int(2400 * RATE_HZ), SAMPLES_PER_PACKET):
        ppm = 100.0 if sampled_s < 1200 else -100.0
        sampled_s += SAMPLES_PER_PACKET / (RATE_HZ * (1 + ppm * 1e-6))
        clock.observe(counter, sampled_s + rng.uniform(0.01, 0.1))
    assert clock.fit is not None
    assert clock.fit.drift_ppm == pytest.approx(-100.0, abs=10.0)
    assert clock.fit.n_points <= 600 / 2 + 2


def test_an_implausible_early_slope_is_held_to_the_drift_a_crystal_can_have() -> None:
    # Three scattered arrivals in the first seconds (a busy host) would read as a clock a third slow; no strap's
    # crystal is more than MAX_DRIFT_PPM off, so the fit keeps within that until better points come.
    clock = CounterClock(RATE_HZ)
    for counter, arrival_s in ((6, 0.3), (100, 4.0), (200, 10.0)):  # 8 s of samples in 9.7 s
        clock.observe(counter, arrival_s)
    assert clock.fit is not None and abs(clock.fit.drift_ppm) <= MAX_DRIFT_PPM + 1e-6


def test_counter_restart_resets_the_fit() -> None:
    clock = CounterClock(RATE_HZ)
    simulate(clock, 0.0, 100.0, 60, seed=5)
    clock.observe(6, 500.0)  # the strap rebooted: counter back near zero
    assert clock.fit is not None and clock.fit.n_points == 1
    assert clock.host_time_s(6) == pytest.approx(500.0 - 6 / RATE_HZ + 6 / RATE_HZ, abs=1e-9)


def test_unobserved_clock_raises() -> None:
    with pytest.raises(LookupError):
        CounterClock(RATE_HZ).host_time_s(0)


def test_lower_hull_is_below_all_points() -> None:
    rng = np.random.default_rng(6)
    x = np.sort(rng.uniform(0, 100, 200))
    y = rng.normal(0, 1, 200)
    hull = lower_hull(x, y)
    assert hull[0] == 0 and hull[-1] == len(x) - 1
    for a, b in itertools.pairwise(hull):
        slope = (y[b] - y[a]) / (x[b] - x[a])
        line = y[a] + slope * (x - x[a])
        assert np.all(y >= line - 1e-9)
