"""firmware/core/haptics.py safety limits, under CPython and the MicroPython unix port.

The fuzz (tests/mp/hw_haptics_fuzz.py) drives the core through drivers/haptic.py's
GuardedMotor into the machine double's PWM and Timer on a virtual clock, with random and
malformed commands, control-loop stalls and host silences, and checks the recorded PWM
timeline against every limit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DOUBLES, RunMicroPython

REPO = Path(__file__).resolve().parents[1]
MP_DIR = REPO / "tests" / "mp"
for _p in (DOUBLES, REPO / "firmware", MP_DIR):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import config  # noqa: E402
import hw_haptics_fuzz as fuzz  # noqa: E402
from core import haptics as hp  # noqa: E402
from core.haptics import CLAMP_INTENSITY, CLAMP_OFF, CLAMP_ON, CLAMP_PULSES, Haptics  # noqa: E402

MP_SEEDS = list(range(1, 13))
CPY_SEEDS = list(range(1, 41))


def drive(h: Haptics, until_ms: int, start_ms: int = 0) -> list[tuple[int, int]]:
    """Tick at the core's own deadlines; returns the output changes [(t, duty)]."""
    changes: list[tuple[int, int]] = []
    t = start_ms
    last = -1
    while t <= until_ms:
        d = h.tick(t)
        if d != last:
            changes.append((t, d))
            last = d
        nxt = h.deadline_ms(t)
        step = hp.ticks_diff(nxt, t)
        t += step if step > 0 else config.HAPTIC_TICK_MS
    return changes


def test_exact_pattern_timing() -> None:
    h = Haptics()
    assert h.start(0, 3, 200, 300, 50) == 0
    assert drive(h, 2000) == [(0, 50), (200, 0), (500, 50), (700, 0), (1000, 50), (1200, 0)]
    assert h.pulses_done == 3 and not h.active


def test_duty_window_defers_pulses() -> None:
    h = Haptics()
    h.start(0, 10, 1000, 50, 60)
    changes = drive(h, 4000)
    ons = [t for t, d in changes if d]
    # 3 s of budget per 10 s: three 1 s pulses, then the fourth waits until it fits the window
    # that ends with it: [1000, 11000] holds 2 s of earlier pulses, so it starts at 10000.
    assert ons[:3] == [0, 1050, 2100]
    assert h.deferrals == 1
    h.host_seen(4000)  # keep the host alive for the test
    for t in range(4000, 10001, 20):
        h.tick(t)
        if t % 2000 == 0:
            h.host_seen(t)
    assert h.on and h._on_since == 10000


@pytest.mark.parametrize("idle_days", [1, 5, 6.3, 7, 10, 12, 13, 20])
def test_a_pattern_days_after_the_last_pulse_plays_at_once(idle_days: float) -> None:
    # ticks_ms wraps every 2**30 ms (12.4 days): a pulse that ended more than 6.2 days ago reads as ending in the
    # future, and the min-off wait after it used to put the next pattern's first pulse ~6 days ahead (OK answered,
    # nothing felt).
    h = Haptics()
    h.start(0, 1, 300, 300, 60)
    assert drive(h, 1000) == [(0, 60), (300, 0)]
    start = int(300 + idle_days * 86_400_000) & hp._MASK
    h.host_seen(start)
    h.start(start, 3, 300, 300, 60)
    changes = drive(h, start + 2000, start_ms=start)
    assert [t - start for t, d in changes if d] == [0, 600, 1200], changes
    assert h.pulses_done == 4


def test_a_replaced_pattern_still_waits_min_off_after_the_pulse_it_cut() -> None:
    h = Haptics()
    h.start(0, 3, 300, 300, 60)
    assert h.tick(0) == 60 and h.tick(100) == 60
    h.start(100, 1, 300, 300, 60)  # cuts the pulse at 100 ms: the next may start min_off after it
    assert h.tick(100) == 0
    changes = drive(h, 1000, start_ms=101)
    assert [t for t, d in changes if d] == [100 + config.HAPTIC_MIN_OFF_MS], changes


def test_stall_and_host_silence_abort() -> None:
    h = Haptics()
    h.start(0, 5, 500, 500, 70)
    assert h.tick(0) == 70 and h.tick(50) == 70
    assert h.tick(50 + config.HAPTIC_STALL_MS + 1) == 0 and h.stalls == 1 and not h.active
    h.start(1000, 10, 500, 500, 70)
    t = 1000
    while t < 1000 + config.HAPTIC_HOST_SILENT_MS:
        h.tick(t)
        t += 20
    assert h.tick(1000 + config.HAPTIC_HOST_SILENT_MS) == 0 and h.host_timeouts == 1


def test_constructor_cannot_loosen_ceilings() -> None:
    h = Haptics(
        max_on_ms=60000,
        min_on_ms=0,
        min_off_ms=0,
        max_off_ms=10**6,
        max_pulses=1000,
        max_intensity_pct=100,
        duty_window_ms=10**6,
        duty_max_pct=100,
        stall_ms=10**6,
        host_silent_ms=10**6,
    )
    assert h.max_on_ms == hp.ABS_MAX_ON_MS and h.min_on_ms == hp.ABS_MIN_ON_MS
    assert h.min_off_ms == hp.ABS_MIN_OFF_MS and h.max_off_ms == hp.ABS_MAX_OFF_MS
    assert h.max_pulses == hp.ABS_MAX_PULSES and h.max_intensity_pct == hp.ABS_MAX_INTENSITY_PCT
    assert h.duty_window_ms == hp.ABS_DUTY_WINDOW_MS and h.duty_max_pct == hp.ABS_DUTY_MAX_PCT
    assert h.stall_ms == hp.ABS_STALL_MS and h.host_silent_ms == hp.ABS_HOST_SILENT_MS


def test_config_matches_core_ceilings() -> None:
    pairs = {
        "HAPTIC_MAX_ON_MS": hp.ABS_MAX_ON_MS,
        "HAPTIC_MIN_ON_MS": hp.ABS_MIN_ON_MS,
        "HAPTIC_MIN_OFF_MS": hp.ABS_MIN_OFF_MS,
        "HAPTIC_MAX_OFF_MS": hp.ABS_MAX_OFF_MS,
        "HAPTIC_MAX_PULSES": hp.ABS_MAX_PULSES,
        "HAPTIC_MAX_INTENSITY_PCT": hp.ABS_MAX_INTENSITY_PCT,
        "HAPTIC_DUTY_WINDOW_MS": hp.ABS_DUTY_WINDOW_MS,
        "HAPTIC_DUTY_MAX_PCT": hp.ABS_DUTY_MAX_PCT,
        "HAPTIC_STALL_MS": hp.ABS_STALL_MS,
        "HAPTIC_HOST_SILENT_MS": hp.ABS_HOST_SILENT_MS,
    }
    for name, ceiling in pairs.items():
        assert getattr(config, name) <= ceiling, name
    assert config.HAPTIC_TICK_MS * 2 < config.HAPTIC_STALL_MS < config.WDT_TIMEOUT_MS
    assert (fuzz.MAX_ON_MS, fuzz.STALL_MS, fuzz.HOST_SILENT_MS) == (
        config.HAPTIC_MAX_ON_MS,
        config.HAPTIC_STALL_MS,
        config.HAPTIC_HOST_SILENT_MS,
    )
    assert fuzz.WINDOW_ON_MS == config.HAPTIC_DUTY_WINDOW_MS * config.HAPTIC_DUTY_MAX_PCT // 100


@settings(max_examples=300, deadline=None)
@given(
    pulses=st.integers(-5, 100),
    on_ms=st.integers(-1000, 100000),
    off_ms=st.integers(-1000, 100000),
    intensity=st.integers(-10, 300),
)
def test_start_clamps_and_reports(pulses: int, on_ms: int, off_ms: int, intensity: int) -> None:
    h = Haptics()
    flags = h.start(5, pulses, on_ms, off_ms, intensity)
    if pulses <= 0 or intensity <= 0:
        assert flags == 0 and not h.active and h.tick(5) == 0
        return
    assert h.active
    assert bool(flags & CLAMP_PULSES) == (pulses > hp.ABS_MAX_PULSES)
    assert bool(flags & CLAMP_ON) == (not hp.ABS_MIN_ON_MS <= on_ms <= hp.ABS_MAX_ON_MS)
    assert bool(flags & CLAMP_OFF) == (not hp.ABS_MIN_OFF_MS <= off_ms <= hp.ABS_MAX_OFF_MS)
    assert bool(flags & CLAMP_INTENSITY) == (intensity > hp.ABS_MAX_INTENSITY_PCT)
    assert 0 < h.tick(5) <= hp.ABS_MAX_INTENSITY_PCT


def test_fuzz_cpython_many_seeds() -> None:
    lines = [fuzz.run(seed) for seed in CPY_SEEDS]
    bad = [line for line in lines if " FAIL " in line]
    assert not bad, bad
    totals = {"stalls": 0, "silences": 0, "deferrals": 0, "clamps": 0, "pulses": 0}
    for line in lines:
        for field in line.split()[2:]:
            key, _, value = field.partition("=")
            if key in totals:
                totals[key] += int(value)
    # The fuzz really exercised every rule.
    assert all(v > 0 for v in totals.values()), totals


def _set(attr: str, value: int) -> Callable[[Haptics], None]:
    def tamper(h: Haptics) -> None:
        setattr(h, attr, value)

    return tamper


@pytest.mark.parametrize(
    ("attr", "value", "reason"),
    [
        ("window_on_ms", 10**6, "window"),
        ("max_on_ms", 5000, "longer than"),
        ("host_silent_ms", 10**6, "host silent"),
        ("stall_ms", 10**6, "stall"),
        ("max_intensity_pct", 100, "duty"),
    ],
)
def test_fuzz_checker_catches_a_loosened_core(attr: str, value: int, reason: str) -> None:
    lines = [fuzz.run(seed, tamper=_set(attr, value)) for seed in range(1, 7)]
    assert any(" FAIL " in line and reason in line for line in lines), lines


@pytest.mark.micropython
def test_fuzz_micropython_matches_cpython(run_micropython: RunMicroPython) -> None:
    proc = run_micropython(MP_DIR / "hw_haptics_fuzz.py", *map(str, MP_SEEDS), path=(DOUBLES, REPO / "firmware"))
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert out.splitlines() == [fuzz.run(seed) for seed in MP_SEEDS]
