"""Scenario generator: seeded, deterministic, ground truth consistent with what it built."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from breathsync.scenarios import (
    KINDS,
    Options,
    RespSource,
    bidmc_sources,
    biopeaks_segments,
    bundled_sources,
    make_scenario,
    scenario_set,
)
from breathsync.scenarios.sources import offline_peaks


@cache
def _src() -> list[RespSource]:
    return bundled_sources()


def _pair() -> tuple[RespSource, RespSource]:
    by = {s.name: s for s in _src()}
    return by["bidmc_04"], by["bidmc_18"]


def test_offline_peaks_match_annotated_rate() -> None:
    from breathsync.datasets import bundled_path, read_breath_annotations

    marks = read_breath_annotations(bundled_path("bidmc_09_breaths.csv.gz"))["ann1"] / 125.0
    src = {s.name: s for s in _src()}["bidmc_09"]
    assert len(src.peaks_s) == pytest.approx(len(marks), rel=0.05)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_scenario(kind: str) -> None:
    a, b = _pair()
    s1 = make_scenario(kind, a, b, 5, 300.0)  # type: ignore[arg-type]
    s2 = make_scenario(kind, a, b, 5, 300.0)  # type: ignore[arg-type]
    s3 = make_scenario(kind, a, b, 6, 300.0)  # type: ignore[arg-type]
    assert np.array_equal(s1.therapist, s2.therapist) and np.array_equal(s1.client, s2.client)
    assert not np.array_equal(s1.therapist, s3.therapist)
    assert len(s1.therapist) == len(s1.client) == int(300.0 * s1.sampling_rate)


def test_ground_truth_fields() -> None:
    a, b = _pair()
    tf = make_scenario("therapist_follows", a, b, 3, 300.0)
    assert tf.follower == "therapist" and tf.onset_s is not None and tf.offset_s is not None
    assert 150.0 <= tf.onset_s < tf.offset_s <= 300.0
    ind = make_scenario("independent", a, b, 3, 300.0)
    assert ind.follower is None and ind.onset_s is None


def _true_plv(x: np.ndarray, y: np.ndarray, fs: float, a_s: float, b_s: float) -> float:
    px, py = offline_peaks(x, fs), offline_peaks(y, fs)
    sel = px[(px >= a_s) & (px <= b_s)]
    j = np.searchsorted(py, sel, side="right") - 1
    ok = (j >= 0) & (j < len(py) - 1)
    ph = (sel[ok] - py[j[ok]]) / (py[j[ok] + 1] - py[j[ok]])
    return float(np.abs(np.mean(np.exp(2j * np.pi * ph))))


def test_follow_episode_is_phase_locked_and_independent_is_not() -> None:
    a, b = _pair()
    opts = Options(coupling_rel=(0.9, 1.0), speech_p=0, gap_p=0, flat_p=0, drift_p=0, min_episode_s=140.0)
    tf = make_scenario("therapist_follows", a, b, 8, 300.0, opts)
    ind = make_scenario("independent", a, b, 8, 300.0, opts)
    assert tf.onset_s is not None and tf.offset_s is not None
    locked = _true_plv(tf.therapist, tf.client, tf.sampling_rate, tf.onset_s + 30, tf.offset_s)
    before = _true_plv(tf.therapist, tf.client, tf.sampling_rate, 20, tf.onset_s)
    free = _true_plv(ind.therapist, ind.client, ind.sampling_rate, 20, 300)
    assert locked > 0.8 and locked > before and locked > free


def _median_trail_s(follower: np.ndarray, leader: np.ndarray, fs: float, a_s: float, b_s: float) -> float:
    """Median time from each of the leader's peaks to the follower's next peak, within [a_s, b_s]."""
    pf, pl = offline_peaks(follower, fs), offline_peaks(leader, fs)
    pl = pl[(pl >= a_s) & (pl <= b_s)]
    j = np.searchsorted(pf, pl)
    ok = j < len(pf)
    return float(np.median(pf[j[ok]] - pl[ok]))


@pytest.mark.parametrize(
    ("kind", "seed"),
    [("therapist_follows", 11), ("client_follows", 12), ("therapist_follows", 13), ("client_follows", 14)],
)
def test_follower_trails_the_leader_by_the_drawn_lag(kind: str, seed: int) -> None:
    """Phase coupling with a lag: once locked, the follower's end-inspiration comes ~lag after the leader's
    (not at an arbitrary phase offset), whichever recording starts where."""
    a, b = _pair()
    opts = Options(coupling_rel=(0.9, 1.0), speech_p=0, gap_p=0, flat_p=0, drift_p=0, min_episode_s=140.0)
    sc = make_scenario(kind, a, b, seed, 300.0, opts)  # type: ignore[arg-type]
    assert sc.onset_s is not None and sc.offset_s is not None
    follower, leader = (sc.therapist, sc.client) if kind == "therapist_follows" else (sc.client, sc.therapist)
    trail = _median_trail_s(follower, leader, sc.sampling_rate, sc.onset_s + 30, sc.offset_s)
    assert trail == pytest.approx(sc.lag_s, abs=0.4), (trail, sc.lag_s)


def test_follower_keeps_its_waveform_amplitude() -> None:
    """Re-timing must not leave an amplitude step at onset a detector could key on."""
    a, b = _pair()
    opts = Options(mimicry_p=0.0, speech_p=0, gap_p=0, flat_p=0, drift_p=0)
    tf = make_scenario("therapist_follows", a, b, 9, 300.0, opts)
    assert tf.onset_s is not None
    fs = tf.sampling_rate
    pre = np.std(tf.therapist[int((tf.onset_s - 60) * fs) : int(tf.onset_s * fs)])
    post = np.std(tf.therapist[int(tf.onset_s * fs) : int((tf.onset_s + 60) * fs)])
    assert 0.6 < post / pre < 1.6


def test_scenario_set_is_seeded(tmp_path: Path) -> None:
    s1 = scenario_set(_src()[:3], ("independent",), 2, 77, 300.0)
    s2 = scenario_set(_src()[:3], ("independent",), 2, 77, 300.0)
    assert [s.name for s in s1] == [s.name for s in s2]


@pytest.mark.shared_data
def test_shared_sources_load(shared_data: Path) -> None:
    bid = bidmc_sources(shared_data, ["bidmc_01", "bidmc_02"])
    bio = biopeaks_segments(shared_data, 0, 20, 10)
    assert len(bid) == 2 and len(bio) == 2
    sc = make_scenario("similar_rate", bid[0], bio[0], 1, 300.0)
    assert sc.kind == "similar_rate" and len(sc.therapist) == len(sc.client)


def test_coupling_is_relative_to_the_followers_breathing_frequency() -> None:
    """K is drawn as a share of the follower's own (converged) 2 pi f, unless an absolute range is asked for."""
    a, b = _pair()
    quiet = {"speech_p": 0.0, "gap_p": 0.0, "flat_p": 0.0, "drift_p": 0.0}
    rel = Options(coupling_rel=(0.5, 0.5), convergence=(1.0, 1.0), **quiet)  # type: ignore[arg-type]
    for seed in (1, 2, 3):
        sc = make_scenario("therapist_follows", a, b, seed, 300.0, rel)
        f_client = b.rate_bpm / 60.0
        assert sc.coupling_rad_s / (2 * np.pi * f_client) == pytest.approx(0.5, rel=0.15)
    absolute = Options(coupling_rel=None, coupling_rad_s=(0.7, 0.7), **quiet)  # type: ignore[arg-type]
    assert make_scenario("client_follows", a, b, 4, 300.0, absolute).coupling_rad_s == pytest.approx(0.7)


def test_upside_down_signals_are_the_same_dyad_negated() -> None:
    """inverted_p turns sensors over without changing anything else the seed draws (existing sets stay as they were)."""
    a, b = _pair()
    seen: set[tuple[str, ...]] = set()
    for seed in range(7, 17):
        plain = make_scenario("therapist_follows", a, b, seed, 300.0)
        turned = make_scenario("therapist_follows", a, b, seed, 300.0, Options(inverted_p=0.5))
        seen.add(turned.inverted)
        assert turned.onset_s == plain.onset_s and plain.inverted == ()
        for role, x, y in (("therapist", plain.therapist, turned.therapist), ("client", plain.client, turned.client)):
            assert np.array_equal(-x if role in turned.inverted else x, y)
    assert len(seen) >= 3  # nobody, one or the other, both: the draw varies


def test_a_follower_may_be_the_one_who_talks_and_stays_coupled() -> None:
    """A therapist who follows while talking to the client (an outside review: only the leader ever talked, which
    made 'the irregular one leads' a rule of the generator): speech on the follower, its breaths still locked."""
    a, b = _pair()
    talking = Options(coupling_rel=(0.9, 1.0), speech_p=1.0, follower_speaks_p=1.0, gap_p=0, flat_p=0, drift_p=0)
    for seed in (21, 22, 23):
        sc = make_scenario("therapist_follows", a, b, seed, 300.0, talking)
        assert list(sc.speech_s) == ["therapist"] and sc.onset_s is not None and sc.offset_s is not None
        # Talking re-times the follower's own breaths: short inhalations, long exhalations inside its stretches.
        fs = sc.sampling_rate
        peaks, troughs = offline_peaks(sc.therapist, fs), offline_peaks(-sc.therapist, fs)
        j = np.searchsorted(troughs, peaks[1:]) - 1  # the trough before each peak
        ok = (j >= 0) & (troughs[np.maximum(j, 0)] > peaks[:-1])
        inhale = (peaks[1:][ok] - troughs[j[ok]]) / (peaks[1:][ok] - peaks[:-1][ok])
        talked = np.zeros(len(inhale), dtype=bool)
        for start, end in sc.speech_s["therapist"]:
            talked |= (peaks[1:][ok] > start) & (peaks[1:][ok] < end)
        assert talked.sum() >= 3 and (~talked).sum() >= 10
        assert np.median(inhale[talked]) < 0.8 * np.median(inhale[~talked]), (seed, inhale[talked], inhale[~talked])
        assert _true_plv(sc.therapist, sc.client, sc.sampling_rate, sc.onset_s + 30, sc.offset_s) > 0.5
    leader_talks = make_scenario("therapist_follows", a, b, 21, 300.0, Options(speech_p=1.0, follower_speaks_p=0.0))
    assert list(leader_talks.speech_s) == ["client"]


def test_similar_rate_pairs_are_only_made_within_the_re_timings_range() -> None:
    """A 6/min source cannot be sped up to 20/min (the re-timing clamps at MAX_SPEED): no such 'similar-rate' pair."""
    slow, fast = (RespSource(f"s{bpm}", np.zeros(1), 25.0, np.arange(0.0, 700.0, 60.0 / bpm)) for bpm in (6.0, 20.0))
    with pytest.raises(ValueError, match="too far apart in rate"):
        make_scenario("similar_rate", slow, fast, 1, 300.0)
