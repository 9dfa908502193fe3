"""The entrainment benchmark's scoring (bench/bench_entrainment.py): what counts as detected, false, and usable time."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from breathsync.scenarios import Scenario

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bench package sits beside host/
from bench.bench_entrainment import Trace, _score


def _trace(kind: str, onset_s: float | None, offset_s: float | None, duration_s: float = 300.0) -> Trace:
    flat = np.zeros(int(duration_s * 10))
    sc = Scenario("t", kind, 0, flat, flat, 10.0, onset_s, offset_s)  # type: ignore[arg-type]
    return Trace(sc, [], [], 0.0)


def test_onset_inside_the_baseline_period_leaves_no_negative_outside_time() -> None:
    # Episode 60-300 s in a 300 s dyad, decisions from 120 s: the whole usable time is inside the episode.
    s = _score([_trace("therapist_follows", 60.0, 300.0)], [[150.0]], 120.0)
    assert s.detected == 1.0
    assert s.latency_median_s == pytest.approx(90.0)
    assert s.hours_outside == pytest.approx(0.0)


def test_outside_time_is_usable_time_minus_the_detection_window() -> None:
    # Episode 200-260 s (+30 s grace): outside = (300 - 120) - (290 - 200) = 90 s; the nudge at 130 s is false.
    s = _score([_trace("client_follows", 200.0, 260.0)], [[130.0, 210.0]], 120.0)
    assert s.hours_outside == pytest.approx(90.0 / 3600.0)
    assert s.fnh_outside == pytest.approx(1 / (90.0 / 3600.0))
    assert s.client_follows_nudged == 1.0


def test_false_nudges_after_an_episode_are_counted_apart_from_those_before_it() -> None:
    # An outside review: 'outside episodes' was nearly all time before onset (episodes ran to the dyad's end), which
    # says nothing of nudges after an episode. Episode 150-200 s (+30 s grace) in a 300 s dyad: after = 70 s.
    s = _score([_trace("therapist_follows", 150.0, 200.0)], [[140.0, 160.0, 231.0, 290.0]], 120.0)
    assert s.detected == 1.0 and s.latency_median_s == pytest.approx(10.0)
    assert s.hours_after == pytest.approx(70.0 / 3600.0)
    assert s.fnh_after == pytest.approx(2 / (70.0 / 3600.0))
    assert s.hours_outside == pytest.approx((30.0 + 70.0) / 3600.0)
    assert s.fnh_outside == pytest.approx(3 / (100.0 / 3600.0))
    ended = _score([_trace("therapist_follows", 150.0, 300.0)], [[200.0]], 120.0)
    assert ended.hours_after == 0.0 and ended.fnh_after != ended.fnh_after  # nothing to measure: NaN


def test_a_nudge_before_onset_is_false_and_one_within_the_grace_period_counts_for_the_episode() -> None:
    # Episode 150-200 s; grace 30 s. A nudge at 140 s is before the onset (false, not a detection); one at 229 s,
    # inside the grace period, detects the episode (the engine's window still holds its breaths).
    early = _score([_trace("therapist_follows", 150.0, 200.0)], [[140.0]], 120.0)
    assert early.detected == 0.0 and early.fnh_outside == pytest.approx(1 / ((30.0 + 70.0) / 3600.0))
    late = _score([_trace("therapist_follows", 150.0, 200.0)], [[229.0]], 120.0)
    assert late.detected == 1.0 and late.latency_median_s == pytest.approx(79.0) and late.fnh_outside == 0.0
    past = _score([_trace("therapist_follows", 150.0, 200.0)], [[231.0]], 120.0)
    assert past.detected == 0.0 and past.fnh_after == pytest.approx(1 / (70.0 / 3600.0))
    # A client-follows episode nudged inside its window counts against the 5 % target, not as a false nudge/h.
    cf = _score([_trace("client_follows", 150.0, 200.0)], [[170.0]], 120.0)
    assert cf.client_follows_nudged == 1.0 and cf.fnh_outside == 0.0


def test_independent_pairs_count_every_nudge_after_the_baseline_period_as_false() -> None:
    s = _score(
        [_trace("independent", None, None), _trace("similar_rate", None, None)], [[200.0], [150.0, 250.0]], 120.0
    )
    assert s.hours_independent == pytest.approx(2 * 180.0 / 3600.0)
    assert s.fnh_independent == pytest.approx(3 / (360.0 / 3600.0))
    assert s.detected != s.detected  # no follow episode: NaN, not 0 %
