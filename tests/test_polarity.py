"""Signal polarity: an upside-down respiration signal is recognised and its breaths read the right way round."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest

from breathsync.adc import simulate_adc
from breathsync.datasets import bundled_path
from breathsync.engine import (
    Config,
    EngineConfig,
    EngineState,
    EntrainmentEngine,
    Nudge,
    Output,
    dyad_stream,
    run_engine,
)
from breathsync.engine.person import PersonTracker
from breathsync.engine.polarity import MIN_POLARITY_S, looks_inverted, skewness
from breathsync.recording import read_column
from breathsync.scenarios import Options, Scenario, bundled_sources, make_scenario

STRAP_HZ = 25
WINDOW_S = 120


@cache
def _bundled_counts() -> dict[str, np.ndarray]:
    """The bundled recordings as a 25 Hz strap measures them (float counts)."""
    records = {
        "bidmc_04": (read_column(bundled_path("bidmc_04_resp.csv.gz")), 125.0),
        "bidmc_09": (read_column(bundled_path("bidmc_09_resp.csv.gz")), 125.0),
        "bidmc_18": (read_column(bundled_path("bidmc_18_resp.csv.gz")), 125.0),
        "neurokit": (read_column(bundled_path("neurokit_bio_resting_5min_100hz.csv.gz"), "rsp"), 100.0),
    }
    return {name: simulate_adc(sig, fs, STRAP_HZ).counts_u16.astype(np.float64) for name, (sig, fs) in records.items()}


def _windows(counts: np.ndarray) -> list[np.ndarray]:
    n, step = WINDOW_S * STRAP_HZ, 20 * STRAP_HZ
    return [counts[a : a + n] for a in range(0, len(counts) - n + 1, step)]


def test_upright_recordings_are_never_called_inverted() -> None:
    """Every 120 s window of every bundled recording (the neurokit one has windows whose moment skewness is
    negative: one deep breath or artefact dominates them) is taken as it comes."""
    for name, counts in _bundled_counts().items():
        for w in _windows(counts):
            assert not looks_inverted(w, STRAP_HZ), name


def test_upside_down_recordings_are_recognised() -> None:
    """The BIDMC records breathe with a clear end-expiratory pause: turned over, every window says so."""
    for name in ("bidmc_04", "bidmc_09", "bidmc_18"):
        counts = _bundled_counts()[name]
        flipped = [looks_inverted(65535.0 - w, STRAP_HZ) for w in _windows(counts)]
        assert all(flipped), name


def test_no_verdict_on_too_little_or_flat_signal() -> None:
    counts = _bundled_counts()["bidmc_04"]
    short = 65535.0 - counts[: int((MIN_POLARITY_S - 1) * STRAP_HZ)]
    assert not looks_inverted(short, STRAP_HZ)
    assert not looks_inverted(np.full(WINDOW_S * STRAP_HZ, 1000.0), STRAP_HZ)
    assert skewness(np.full(100, 3.0)) == (0.0, 0.0)


def test_inverting_a_person_swaps_peaks_and_troughs_with_their_depths() -> None:
    person = PersonTracker(keep_s=600.0)
    for k in range(6):
        person.add_breath("peak", 4.0 * k, 4.0 * k + 0.5, 10.0 + k)
        person.add_breath("trough", 4.0 * k + 2.5, 4.0 * k + 3.0, 20.0 + k)
    peaks, troughs = person.peaks_s.copy(), person.troughs_s.copy()
    person.invert()
    assert person.inverted
    assert list(person.peaks_s) == list(troughs) and list(person.troughs_s) == list(peaks)
    assert list(person.depths) == [20.0 + k for k in range(6)]
    # The exhale share is measured on the new peaks: inspiration was 1.5 s of each 4 s breath.
    assert person.trough_fraction() == pytest.approx(1.5 / 4.0)
    t, phase = person.phase_track(-np.inf)
    assert list(t[:3]) == [0.0, 2.5, 4.0]  # an end-expiration, then the first end-inspiration: cycle 0
    assert list(phase[:3]) == pytest.approx([-1.0 + 1.5 / 4.0, 0.0, 1.5 / 4.0])
    person.add_breath("peak", 24.0, 24.5, 16.0)  # the strap's 'peak' of an inverted signal is an end-expiration
    assert person.troughs_s[-1] == 24.0 and person.peaks_s[-1] == pytest.approx(22.5)


@cache
def _follow(kind: str) -> Scenario:
    src = {s.name: s for s in bundled_sources()}
    opts = Options(
        coupling_rel=(0.9, 1.0),
        convergence=(0.9, 1.0),
        min_episode_s=150.0,
        max_episode_s=180.0,
        own_damping=(0.5, 0.6),
        speech_p=0.0,
        gap_p=0.0,
        flat_p=0.0,
        drift_p=0.0,
    )
    return make_scenario(kind, src["bidmc_04"], src["bidmc_18"], 21, 330.0, opts)  # type: ignore[arg-type]


def _replay(
    sc: Scenario, therapist_sign: float, client_sign: float, auto: bool = True
) -> tuple[EntrainmentEngine, list[Output]]:
    engine = EntrainmentEngine(Config(engine=dataclasses.replace(EngineConfig(), auto_polarity=auto)))
    stream = dyad_stream(therapist_sign * sc.therapist, client_sign * sc.client, sc.sampling_rate)
    return engine, list(run_engine(stream, engine))


def _phase_diffs(outputs: list[Output]) -> np.ndarray:
    states = [o for o in outputs if isinstance(o, EngineState)]
    return np.array([s.phase_diff_deg for s in states if s.phase_diff_deg is not None and s.plv and s.plv > 0.8])


def _circular_mean_gap_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between the circular means of two sets of angles (degrees)."""
    mean_a, mean_b = (np.mean(np.exp(1j * np.radians(x))) for x in (a, b))
    return float(abs(np.degrees(np.angle(mean_a / mean_b))))


@pytest.mark.parametrize(("therapist_sign", "client_sign"), [(-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0)])
def test_an_upside_down_signal_gives_the_upright_phase_relation(therapist_sign: float, client_sign: float) -> None:
    """Read as it comes, one signal upside down moves the relative phase by the exhale share of a breath (the
    phase lead, hence direction, can turn round); read inverted, the relation is the upright one again."""
    sc = _follow("therapist_follows")
    upright, upright_out = _replay(sc, 1.0, 1.0)
    assert upright.inverted == {"therapist": False, "client": False}
    fixed, fixed_out = _replay(sc, therapist_sign, client_sign)
    assert fixed.inverted == {"therapist": therapist_sign < 0, "client": client_sign < 0}
    assert _circular_mean_gap_deg(_phase_diffs(fixed_out), _phase_diffs(upright_out)) < 20.0
    if therapist_sign != client_sign:
        as_is, as_is_out = _replay(sc, therapist_sign, client_sign, auto=False)
        assert as_is.inverted == {"therapist": False, "client": False}
        assert _circular_mean_gap_deg(_phase_diffs(as_is_out), _phase_diffs(upright_out)) > 60.0


def test_an_upside_down_therapist_who_follows_is_still_nudged() -> None:
    sc = _follow("therapist_follows")
    assert sc.onset_s is not None
    nudges = [o for o in _replay(sc, -1.0, 1.0)[1] if isinstance(o, Nudge)]
    assert nudges and nudges[0].t_s >= sc.onset_s


def test_an_upright_signal_clipped_at_its_top_is_not_called_inverted() -> None:
    """Flat tops (a sensor at its rail) dwell at the top like the pauses of an upside-down signal."""
    for name, counts in _bundled_counts().items():
        for w in _windows(counts):
            for share in (0.05, 0.1, 0.2, 0.3):
                assert not looks_inverted(np.minimum(w, np.quantile(w, 1.0 - share)), STRAP_HZ), (name, share)


def test_a_drop_out_during_the_baseline_defers_the_verdict_until_there_is_signal_enough() -> None:
    sc = _follow("therapist_follows")
    engine = EntrainmentEngine()
    gaps = {"client": ((10.0, 100.0),)}  # 90 s of the 120 s baseline period lost: 30 s of signal is too little
    stream = dyad_stream(sc.therapist, -sc.client, sc.sampling_rate, gaps_s=gaps)
    learned_at = None
    for item in stream:
        if engine.feed(item) and learned_at is None:
            learned_at = engine._now_s
            assert engine.inverted == {"therapist": False, "client": False}  # no verdict yet: too little signal
    assert learned_at is not None and engine.inverted == {"therapist": False, "client": True}
