"""The online entrainment engine: causal, event-driven, indifferent to live or replayed data.

Inputs arrive in host-time order: sample blocks (only their times matter here: they prove a strap
is connected) and breath events as the straps report them. The engine never looks at an event
before its ``reported_t_s``. After every breath event (peak or trough) of either person it emits an
``EngineState``; nudges and efficacy reports are emitted when they happen.

Method in brief (docs/engine.md has the reasoning):

* phase of each person from their own breath peaks and troughs; the relative phase at every
  breath event of either person, and its trimmed mean resultant length over the last ``window_s``
  (robust to one spurious breath) is the phase-locking value (PLV);
* chance level of *that* window from segment surrogates: the same therapist breaths against the
  client's own history shifted back by 20 s or more. Two independent people at similar rates keep
  their slow beat drift in every surrogate, so they do not beat it;
* the same locking statistic on the *delay* of each therapist breath after the client's previous one
  (time-lag locking, same surrogates): behind an irregular leader a fixed reaction delay is not a fixed
  phase; either route can make the window 'locked';
* direction from three kinds of 'who adjusts' evidence per person: rate moved away from their
  own baseline toward the partner's; period response to the partner's phase lead; lagged
  dependency of their breath periods on the partner's most recent breath (lag < one breath);
  plus, for the pair, who keeps a fixed delay behind whom (time-lag asymmetry over 32 s) and the
  phase lead (a follower's breaths trail the leader's);
* a nudge only when the therapist is locked beyond chance, follows (evidence clearly larger than
  the client's), and stays so for ``min_locked_s``; the policy then applies cooldown, cap and mute.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import numpy as np

from ..detector import TimedBreath
from ..roles import ROLES, Role
from .config import Config
from .decision import (
    LockTimer,
    classify,
    direction_of,
    evidence_strength,
    gate_nudge,
    locked,
    pair_apart,
    significantly_locked,
    slow_breathing_scale,
)
from .person import FloatArray, IntArray, PersonTracker, learn_baseline
from .phase import (
    circular_mean_cycles,
    lagged_period_dependency,
    locking_and_shifted,
    passing_level,
    period_response,
    phase_at,
    phase_locking_value,
    plv_chance_level,
    time_lag_cycles,
    track_phase_at,
    trimmed_locking_and_rows,
)
from .policy import NudgePolicy, haptic_pattern
from .state import Baseline, Decision, Efficacy, EngineState, Nudge, Output
from .stream import Mute, NudgeUndelivered, StrapBlock, StrapBreath, StreamItem

MIN_SURROGATES = 8
MIN_LAG_EVENTS = 4  # therapist breath events (peaks and troughs) in the window for a time-lag locking value
BREATH_GAP_PERIODS = 2.5
RATE_MOVE_SCALE_SD = 2.0  # a move of two baseline SDs toward the partner counts fully
RATE_DRIFT_FLOOR = 0.06  # ... with the SD at least 6 % of the baseline rate (slow tempo drift)
# 'Went first' stretches (_therapist_moved_first) survive flickers of their rate test this long.
MOVE_STRETCH_HOLD_S = 10.0
# ... and the therapist's move counts as first only if it began at most this long before the client's: a therapist who
# has followed the client for minutes and follows them again when the client speeds up began their move long before.
# (30 s let 2 more of the outside evaluator's 55 calming episodes through; 60 s 1 more than no limit.)
MOVE_FIRST_WITHIN_S = 60.0
MIN_DIRECTION_PEAKS = 5  # end-inspirations of each person since the last gap before their cues mean anything
# How long past the baseline period (``baseline_s``) the baseline of a person who talked waits for their quiet
# breaths (person.SPEECH_SHARE_TALKING); someone who did not talk has theirs at the end of the period.
SPEECH_WAIT_S = 180.0
QUIET_BASELINE_BREATHS = 13  # quiet breaths for a baseline: a median of a few irregular breaths is noise
_NO_SHIFT = np.zeros(1)  # the real delays, as the first row of a surrogate call


@dataclasses.dataclass(frozen=True)
class _Window:
    anchors_s: FloatArray  # breath events of either person, oldest first
    phases: FloatArray  # relative phase at each: client minus therapist, cycles (unwrapped)
    own_phase: FloatArray  # the therapist's phase there (for surrogates)


class _Cues(NamedTuple):
    """An update's evidence beyond the window's phase locking, named as in ``EngineState`` (None: not known).
    A NamedTuple, not a frozen dataclass: as immutable and typed, and ~0.6 ms less of every replay's start-up."""

    therapist_rate_move: float | None = None
    client_rate_move: float | None = None
    therapist_response: float | None = None
    client_response: float | None = None
    therapist_lagged: float | None = None
    client_lagged: float | None = None
    rate_convergence_bpm: float | None = None
    depth_mimicry: float | None = None
    beat_period_s: float | None = None
    beat_cycles: float | None = None
    lag_locking: float | None = None
    lag_locking_p: float | None = None
    lag_asymmetry: float | None = None
    therapist_changed_first: bool = False


_NO_CUES = _Cues()


@dataclasses.dataclass
class _PendingEfficacy:
    nudge_s: float
    quiet_since_s: float | None = None  # start of the current run of updates where the pair is apart
    seen_s: float | None = None  # the last update counted in paused_s
    paused_s: float = 0.0  # of the efficacy window, the time without a strap's data (the engine paused)


class EntrainmentEngine:
    """Feed with ``add_samples`` / ``add_breath`` in time order, call ``advance`` as the clock moves."""

    def __init__(self, config: Config | None = None, therapist_baseline: Baseline | None = None) -> None:
        self.config = config or Config()
        eng = self.config.engine
        keep_s = eng.history_s + 120.0
        self.people: dict[Role, PersonTracker] = {
            r: PersonTracker(keep_s, eng.rate_median_breaths, eng.max_breath_s) for r in ROLES
        }
        if not eng.auto_polarity:
            for person in self.people.values():
                person.skip_polarity()
        self.baselines: dict[Role, Baseline | None] = {"therapist": therapist_baseline, "client": None}
        self._pre_calibrated = therapist_baseline is not None
        self._learned = False
        # People whose baseline was learned, at the end of the wait, from fewer than QUIET_BASELINE_BREATHS quiet
        # breaths (they talked throughout): learned again once that many are there (_relearn_provisional), with
        # the number of end-inspirations last tried and when it was learned.
        self._provisional: dict[Role, tuple[int, float]] = {}
        self._locked_spans: list[list[float]] = []  # while one is provisional: when the pair was locked
        self.policy = NudgePolicy(self.config.policy)
        self._now_s = -math.inf
        self._paused = True
        self._valid_since_s = -math.inf
        self._timer = LockTimer(self.config.engine.lock_leak, self.config.engine.evidence_gain)
        self._last_adapt_s: float | None = None
        self._pending_efficacy: list[_PendingEfficacy] = []
        self.nudges: list[Nudge] = []
        self._peak_cue_cache: tuple[tuple[float, ...], dict[Role, tuple[float, float]], float | None] | None = None
        # Each person's current move off their own baseline, the way from the therapist's baseline through the
        # client's (_therapist_moved_first): [start, last seen]
        self._stretches: dict[Role, list[float]] = {}

    # ----------------------------------------------------------------- inputs
    def add_samples(
        self, role: Role, first_t_s: float, last_t_s: float, counts: IntArray | None = None, period_s: float = 0.0
    ) -> list[Output]:
        """A block of samples from ``role``'s strap spanning [first_t_s, last_t_s] arrived. Their ``counts``
        (one every ``period_s``) are only kept until the polarity verdict (``engine/polarity.py``), normally
        when the baselines are learned: which way up is the signal?"""
        person = self.people[role]
        person.add_samples(last_t_s, first_t_s)
        if counts is not None and person.polarity_pending:
            person.keep_signal(counts, period_s)
            if self._learned and person.polarity_ready():
                self._late_polarity(person, last_t_s)
        return self.advance(last_t_s)

    def _late_polarity(self, person: PersonTracker, now_s: float) -> None:
        """Drop-outs left too little signal for a verdict when the baselines were learned: it comes now. A flip
        starts a new window (none may mix the two readings) and the following evidence afresh."""
        if person.judge_polarity():
            self._valid_since_s = now_s
            self._timer.reset()

    def add_breath(self, role: Role, breath: TimedBreath) -> list[Output]:
        """A breath event as reported by ``role``'s strap (at ``breath.reported_t_s``)."""
        out = self.advance(breath.reported_t_s)
        if breath.kind != "peak" and breath.kind != "trough":
            return out
        if not self.people[role].add_breath(breath.kind, breath.t_s, breath.reported_t_s, breath.amplitude):
            return out  # out of order (the strap's clock stepped back) or a restarted detector's ripple
        out.extend(self.advance(breath.reported_t_s))
        out.extend(self._evaluate(self._now_s))
        return out

    @property
    def inverted(self) -> dict[Role, bool]:
        """Whose signal the engine reads upside down (decided when the baselines are learned)."""
        return {role: person.inverted for role, person in self.people.items()}

    def feed(self, item: StreamItem) -> list[Output]:
        """Dispatch one stream record (the replay and the live daemon both call this)."""
        if isinstance(item, StrapBlock):
            return self.add_samples(item.role, item.first_t_s, item.last_t_s, item.counts, item.period_s)
        if isinstance(item, StrapBreath):
            return self.add_breath(item.role, item.breath)
        if isinstance(item, Mute):
            out = self.advance(item.t_s)
            self.mute(item.duration_s, item.t_s)
            return out
        if isinstance(item, NudgeUndelivered):
            out = self.advance(item.t_s)
            # The stored time went through the host clock and back: the engine's own nudge within a second of it.
            given = [n.t_s for n in self.nudges if abs(n.t_s - item.nudge_t_s) < 1.0]
            if given:
                self.nudge_undelivered(min(given, key=lambda t: abs(t - item.nudge_t_s)))
            return out
        raise TypeError(f"not a stream item: {item!r}")

    def mute(self, duration_s: float | None = None, now_s: float | None = None) -> float:
        """'Mirroring on purpose': hold nudges from now (``now_s``, default the engine's clock; before any input,
        the session start at 0); they resume by themselves. Returns the end time."""
        start = self._now_s if now_s is None else max(now_s, self._now_s)
        return self.policy.mute(0.0 if start == -math.inf else start, duration_s)

    def nudge_undelivered(self, nudge_t_s: float) -> None:
        """The nudge at ``nudge_t_s`` never reached the therapist: it holds back no later nudge (cooldown,
        hourly cap, cap per episode) and gets no efficacy report."""
        self.policy.forget(nudge_t_s)
        self._pending_efficacy = [p for p in self._pending_efficacy if p.nudge_s != nudge_t_s]

    def advance(self, now_s: float) -> list[Output]:
        """Move the clock: detect drop-outs (pause) and close efficacy windows."""
        if now_s < self._now_s:
            return []
        self._now_s = now_s
        out: list[Output] = []
        paused = self._missing(now_s)
        if paused != self._paused:
            self._paused = paused
            if paused:
                self._timer.reset()
            else:
                self._valid_since_s = now_s  # no phase window may straddle the gap
            if self._learned:
                out.append(self._state(now_s, "paused" if paused else "no_lock", None))
                self.policy.observe(now_s, apart=False)  # a gap, or no window yet after it
        if paused:
            self._last_adapt_s = None  # no adaptation across the gap: the drift clock restarts afterwards
        self._track_efficacy(now_s, out, apart=False if paused else None)
        return out

    # ----------------------------------------------------------------- internals
    def _missing(self, now_s: float) -> bool:
        eng = self.config.engine
        for role in ROLES:
            person = self.people[role]
            if person.last_sample_s is None or now_s - person.last_sample_s > eng.max_sample_gap_s:
                return True
            if person.first_sample_s is None:
                return True
            period = person.period_s()
            limit = max(eng.max_breath_gap_s, BREATH_GAP_PERIODS * period) if period else eng.max_breath_gap_s
            last = person.last_event_reported_s
            since = person.first_sample_s if last is None else last
            if now_s - since > limit:
                return True
        return False

    def _learn(self, now_s: float) -> bool:
        if self._learned:
            return True
        eng = self.config.engine
        starts = [p.first_sample_s for p in self.people.values()]
        if any(s is None for s in starts):
            return False
        start = max(s for s in starts if s is not None)
        if now_s < start + eng.baseline_s:
            return False
        learned: dict[Role, Baseline | None] = {}
        for role in ROLES:
            person = self.people[role]
            person.judge_polarity()  # before the baseline: it is learned from the true end-inspirations
            if role == "therapist" and self._pre_calibrated:
                learned[role] = self.baselines[role]
                continue
            # Quiet breathing only (QUIET_BASELINE_BREATHS of them if the person talked), while there may still be
            # some to come: a person who talks through the first minutes is judged on their quiet breaths
            # afterwards; after SPEECH_WAIT_S more, on what there is.
            learned[role] = self._quiet_baseline(role)
            if learned[role] is None and now_s >= start + eng.baseline_s + SPEECH_WAIT_S:
                # The quiet breaths there are, if a few; only then every breath. Both are provisional.
                breaths = (person.peaks_s, person.depths, eng.max_breath_s, tuple(person.breaks_s))
                learned[role] = learn_baseline(*breaths, person.troughs_s) or learn_baseline(*breaths)
                self._provisional[role] = (len(person.peaks_s), now_s)
        if any(b is None for b in learned.values()):
            self._provisional.clear()
            return False
        self.baselines = learned
        self._learned = True
        self._last_adapt_s = now_s
        return True

    def _quiet_baseline(self, role: Role, since_s: float = -math.inf) -> Baseline | None:
        """``role``'s baseline from quiet breathing (QUIET_BASELINE_BREATHS quiet breaths if they talked): from breaths
        after ``since_s``, and outside the moments the pair was locked (``_locked_spans``, kept while a baseline is
        provisional)."""
        person, eng = self.people[role], self.config.engine
        breaks = (*person.breaks_s, *((a, b) for a, b in self._locked_spans), (-math.inf, since_s))
        return learn_baseline(
            person.peaks_s, person.depths, eng.max_breath_s, breaks, person.troughs_s, QUIET_BASELINE_BREATHS
        )

    def _note_locked(self, start_s: float, end_s: float) -> None:
        """[start_s, end_s] held a lock (the window that showed it): merged into ``_locked_spans``; spans older than
        the kept history are dropped."""
        spans = self._locked_spans
        if spans and start_s <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end_s)
        else:
            spans.append([start_s, end_s])
        keep_from_s = end_s - self.config.engine.history_s - 120.0
        while spans and spans[0][1] < keep_from_s:
            spans.pop(0)

    def _relearn_provisional(self) -> None:
        """A person who talked past the wait got a baseline of what there was, much of it speech (an outside review:
        14.9/min for a 23.4/min quiet breather who talked for 260 s); once they have breathed quietly long enough,
        that breathing is their baseline. Tried at each new end-inspiration, only while the pair is clearly not
        locked (as the slow adaptation), and from breaths outside the moments it was locked: an episode's breathing
        must not become the therapist's own (a review: 19.1/min learned, for a 12/min breather, from the breaths of
        an episode just ended)."""
        for role, (tried, since_s) in list(self._provisional.items()):
            seen = len(self.people[role].peaks_s)
            if seen == tried:
                continue
            self._provisional[role] = (seen, since_s)
            # Breaths since the provisional baseline only: a talker's phrases before it can pass for quiet breaths
            # (only some look like speech), and they were what the baseline was learned from.
            quiet = self._quiet_baseline(role, since_s)
            if quiet is not None:
                self.baselines[role] = quiet
                del self._provisional[role]

    def _window_span_s(self, span_s: float) -> float:
        """``span_s`` (a window set for ~15 breaths/min), widened in proportion for slower breathing so that it
        holds ``window_breaths`` breaths of the slower person."""
        therapist, client = self.people["therapist"].rate_bpm(), self.people["client"].rate_bpm()
        return span_s * slow_breathing_scale(therapist, client, self.config.engine)

    def _window(self, now_s: float) -> _Window:
        """Relative phase (client minus therapist, cycles) at every breath event of either person
        since the last gap, over the last ``window_s`` seconds in which both phases are known."""
        eng = self.config.engine
        span_s = self._window_span_s(eng.window_s)
        since = max(self._valid_since_s, now_s - span_s - 3.0 * eng.max_breath_gap_s)
        tt, tph = self.people["therapist"].phase_track(since)
        ct, cph = self.people["client"].phase_track(since)
        anchors = np.concatenate((tt, ct))
        if len(anchors) == 0:
            return _Window(np.zeros(0), np.zeros(0), np.zeros(0))
        anchors.sort()
        pt = track_phase_at(tt, tph, anchors, eng.max_breath_gap_s)
        pc = track_phase_at(ct, cph, anchors, eng.max_breath_gap_s)
        both_known = ~(np.isnan(pt) | np.isnan(pc))
        known = np.flatnonzero(both_known)
        if len(known) == 0:
            return _Window(np.zeros(0), np.zeros(0), np.zeros(0))
        last = int(known[-1])
        # The run of known anchors ending at the newest one, trimmed to the last window_s of it.
        unknown = np.flatnonzero(~both_known[:last])
        run_start = int(unknown[-1]) + 1 if len(unknown) else 0
        in_window = int(np.argmax(anchors[last] - anchors[: last + 1] <= span_s))
        sl = slice(max(run_start, in_window), last + 1)
        return _Window(anchors[sl], pc[sl] - pt[sl], pt[sl])

    def _evaluate(self, now_s: float) -> list[Output]:
        if not self._learn(now_s):
            return []
        if self._paused:
            held: list[Output] = [self._state(now_s, "paused", None)]
            self._track_efficacy(now_s, held, apart=False)
            self.policy.observe(now_s, apart=False)
            return held
        eng = self.config.engine
        tp = self.people["therapist"].peaks_s
        cp = self.people["client"].peaks_s
        win = self._window(now_s)
        n = len(win.phases)
        plv: float | None = None
        chance: float | None = None
        plv_p: float | None = None
        if n >= eng.min_window_anchors:
            ct, cph = self.people["client"].phase_track(-math.inf)
            max_shift = min(eng.history_s, float(win.anchors_s[0] - ct[0]) if len(ct) else 0.0)
            if max_shift <= eng.surrogate_min_shift_s:
                plv = phase_locking_value(win.phases, eng.plv_trim)
            else:
                shifts = _surrogate_shifts(eng.surrogate_min_shift_s, max_shift, eng.surrogate_count)
                plv, sur = locking_and_shifted(
                    win.phases, win.anchors_s, win.own_phase, ct, cph, shifts, eng.max_breath_gap_s, eng.plv_trim
                )
                sur = sur[~np.isnan(sur)]
                if len(sur) >= MIN_SURROGATES:
                    chance = passing_level(sur, eng.surrogate_p_max)
                    plv_p = float((1 + np.count_nonzero(sur >= plv)) / (1 + len(sur)))
        timed = eng.time_lag_locking and n >= eng.min_window_anchors
        lag_lock, lag_p = self._time_lag_locking(win) if timed else (None, None)
        span = float(win.anchors_s[-1] - win.anchors_s[0]) if n >= 2 else 0.0
        cues = self._direction(tp, cp, span, lag_lock, lag_p, self._lag_asymmetry(now_s) if timed else None, now_s)
        draft = self._state(now_s, "no_lock", win, plv, chance, plv_p, cues)
        decision = classified = classify(draft, eng)
        out: list[Output] = []
        following = decision == "therapist_follows"
        strength = evidence_strength(draft, eng) if following else 0.0
        locked_for, allowed = gate_nudge(self._timer, self.policy, draft, following, strength, eng)
        if allowed is not None:
            decision = "nudge" if allowed else "nudge_suppressed"
        estimated = plv is not None  # right after a gap there is no window yet: no evidence either way
        is_locked = locked(draft, eng)
        apart = pair_apart(draft, eng, classified)
        self._track_efficacy(now_s, out, apart=apart)
        self.policy.observe(now_s, apart)
        if not estimated or is_locked or significantly_locked(plv_p) or significantly_locked(lag_p):
            self._last_adapt_s = None  # frozen: no estimate of the lock, or locked by any route
            if self._provisional:  # a provisional baseline is never learned again from these breaths
                self._note_locked(float(win.anchors_s[0]) if n else now_s - self._window_span_s(eng.window_s), now_s)
        else:
            self._relearn_provisional()
            self._adapt_baselines(now_s)
        state = dataclasses.replace(draft, decision=decision, locked_for_s=locked_for)  # before a nudge spent it
        out.insert(0, state)
        if decision == "nudge":
            out.append(self._nudge(state))
        return out

    def _time_lag_locking(self, win: _Window) -> tuple[float | None, float | None]:
        """Locking of the therapist's breath times to the client's previous breath of the same kind, in
        seconds (as cycles of the client's current period), over the window, and its surrogate p-value.

        The relative phase divides a follower's reaction delay by the length of each of the leader's
        cycles, which scatters it when the leader breathes irregularly (speech, a restless client); the
        delay itself stays put. Same trimmed statistic and the same segment surrogates as the PLV.
        """
        eng = self.config.engine
        therapist, client = self.people["therapist"], self.people["client"]
        start, end = float(win.anchors_s[0]), float(win.anchors_s[-1])
        first_client = min((float(a[0]) for a in (client.peaks_s, client.troughs_s) if len(a)), default=start)
        max_shift = min(eng.history_s, start - first_client)
        shifts = (
            _surrogate_shifts(eng.surrogate_min_shift_s, max_shift, eng.surrogate_count)
            if max_shift > eng.surrogate_min_shift_s
            else np.zeros(0)
        )
        delays, sur = self._delays(therapist, client, start, end, shifts)
        if len(delays) < MIN_LAG_EVENTS:
            return None, None
        if sur is not None and len(shifts):
            sur = sur[~np.logical_or.reduce(np.isnan(sur), axis=1)]
        if sur is None or len(sur) < MIN_SURROGATES:
            return phase_locking_value(delays, eng.plv_trim), None
        lock, sur_lock = trimmed_locking_and_rows(delays, sur, eng.plv_trim)
        return lock, float((1 + np.count_nonzero(sur_lock >= lock)) / (1 + len(sur_lock)))

    def _lag_asymmetry(self, now_s: float) -> float | None:
        """Time-lag locking of the therapist's breaths behind the client's minus the client's behind the
        therapist's, over the last ``lag_asymmetry_window_s`` (``decision.lag_asymmetry``). No surrogates:
        only the sign and size of the difference count, as direction evidence."""
        eng = self.config.engine
        therapist, client = self.people["therapist"], self.people["client"]
        start = max(self._valid_since_s, now_s - self._window_span_s(eng.lag_asymmetry_window_s))
        behind_client = self._delays(therapist, client, start, now_s, None)[0]
        behind_therapist = self._delays(client, therapist, start, now_s, None)[0]
        if len(behind_client) < MIN_LAG_EVENTS or len(behind_therapist) < MIN_LAG_EVENTS:
            return None
        return phase_locking_value(behind_client, eng.plv_trim) - phase_locking_value(behind_therapist, eng.plv_trim)

    def _delays(
        self, person: PersonTracker, partner: PersonTracker, start_s: float, end_s: float, shifts_s: FloatArray | None
    ) -> tuple[FloatArray, FloatArray | None]:
        """``person``'s breath events (peaks, then troughs) in [start_s, end_s] as delays after ``partner``'s
        previous event of the same kind (cycles of the partner's period), the unknown ones left out; with
        ``shifts_s`` also the same events against the partner's shifted history (one row per shift)."""
        eng = self.config.engine
        period = partner.period_s()
        if period is None:
            return np.zeros(0), None
        real: list[FloatArray] = []
        surrogate: list[FloatArray] = []
        for own, theirs in ((person.peaks_s, partner.peaks_s), (person.troughs_s, partner.troughs_s)):
            # Slices of the sorted times, not masks: this runs 6 times per update.
            mine = own[own.searchsorted(start_s) : own.searchsorted(end_s, side="right")]
            since_gap = theirs[theirs.searchsorted(self._valid_since_s) :]  # no delay measured across a drop-out
            if shifts_s is not None and len(since_gap) == len(theirs):  # no gap in the history: one call, shift 0 first
                both = time_lag_cycles(mine, theirs, period, eng.max_breath_s, np.concatenate((_NO_SHIFT, shifts_s)))
                real.append(both[0])
                surrogate.append(both[1:])
                continue
            real.append(time_lag_cycles(mine, since_gap, period, eng.max_breath_s)[0])
            if shifts_s is not None:
                surrogate.append(time_lag_cycles(mine, theirs, period, eng.max_breath_s, shifts_s))
        delays = np.concatenate(real)
        known = ~np.isnan(delays)
        return delays[known], None if shifts_s is None else np.concatenate(surrogate, axis=1)[:, known]

    def _direction(
        self,
        tp: FloatArray,
        cp: FloatArray,
        span_s: float,
        lag_locking: float | None,
        lag_locking_p: float | None,
        lag_asymmetry: float | None,
        now_s: float,
    ) -> _Cues:
        """Who follows whom: each person's rate move, period response and lagged dependency, with the pair's rate
        convergence, depth mimicry and beat; the window's time-lag cues (``lag_*``) are passed through."""
        tpv = tp[tp.searchsorted(self._valid_since_s) :]
        cpv = cp[cp.searchsorted(self._valid_since_s) :]
        rates: dict[Role, float | None] = {r: self.people[r].rate_bpm() for r in ROLES}
        own = {"therapist": tpv, "client": cpv}
        peak_cues, mimicry = self._peak_cues(tpv, cpv)
        move: dict[Role, float] = {}
        pairs: tuple[tuple[Role, Role], ...] = (("therapist", "client"), ("client", "therapist"))
        for role, other in pairs:
            mine, theirs = own[role], own[other]
            base, base_other = self.baselines[role], self.baselines[other]
            rate, rate_other = rates[role], rates[other]
            if (
                len(mine) < MIN_DIRECTION_PEAKS
                or len(theirs) < MIN_DIRECTION_PEAKS
                or base is None
                or base_other is None
            ):
                continue
            if rate is None or rate_other is None:  # no current rate for one of them (after a gap)
                continue
            # How far this person left their own baseline toward the partner's baseline (not the partner's
            # current rate: once locked a leader sits at its own rate, the follower wherever the leader is),
            # as a share of the gap between the two baselines, measured against their own variability:
            # a move smaller than RATE_MOVE_SCALE_SD own SDs never counts fully, a full one needs the gap closed.
            # Slow tempo drift of a few percent is normal even for metronomic breathers, whose
            # breath-by-breath SD is tiny: the scale never drops below RATE_DRIFT_FLOOR of their rate.
            ref_other = base_other.rate_bpm
            toward = math.copysign(1.0, ref_other - base.rate_bpm) if ref_other != base.rate_bpm else 0.0
            gap = abs(ref_other - base.rate_bpm)
            moved = (rate - base.rate_bpm) * toward / max(gap, _move_scale(base))
            move[role] = min(max(moved, -1.0), 1.0)  # np.clip on one float: ~15x dearer
        changed_first = self._therapist_moved_first(rates, now_s)
        convergence = beat_period = None
        bt, bc = self.baselines["therapist"], self.baselines["client"]
        rt, rc = rates["therapist"], rates["client"]
        if bt and bc and rt and rc:
            convergence = abs(bt.rate_bpm - bc.rate_bpm) - abs(rt - rc)
            gap_hz = abs(bt.rate_bpm - rc) / 60.0
            beat_period = 1.0 / gap_hz if gap_hz > 1e-6 else math.inf
        t_cues, c_cues = peak_cues.get("therapist"), peak_cues.get("client")
        t_known, c_known = "therapist" in move, "client" in move
        return _Cues(
            therapist_rate_move=move.get("therapist"),
            client_rate_move=move.get("client"),
            therapist_response=t_cues[0] if t_known and t_cues else None,
            client_response=c_cues[0] if c_known and c_cues else None,
            therapist_lagged=t_cues[1] if t_known and t_cues else None,
            client_lagged=c_cues[1] if c_known and c_cues else None,
            rate_convergence_bpm=convergence,
            depth_mimicry=mimicry,
            beat_period_s=beat_period,
            beat_cycles=None if beat_period is None else span_s / beat_period,
            lag_locking=lag_locking,
            lag_locking_p=lag_locking_p,
            lag_asymmetry=lag_asymmetry,
            therapist_changed_first=changed_first,
        )

    def _therapist_moved_first(self, rates: dict[Role, float | None], now_s: float) -> bool:
        """Both have left their baselines the same way, past the client's, and the therapist got there first: the
        therapist changed their own rate (slowing down to calm, say) and the client followed. Both rate moves then
        read the wrong way round: the therapist's 'toward the client's baseline' (+1: they went through it), the
        client's 'away from the therapist's' (-1: toward where the therapist went). An outside evaluator's clients
        following a therapist who slowed down were nudged 10 times in 55 (6 in 20 with the client's baseline just
        below the therapist's); the therapist's period response read their own steady slowing as following too.
        Its mirror, a client who speeds up and a therapist who follows past the client's baseline, comes the other
        way round in time: the client leaves first. (``decision.classify``: no 'therapist follows' while it holds.)"""
        bt, bc = self.baselines["therapist"], self.baselines["client"]
        rt, rc = rates["therapist"], rates["client"]
        if bt is None or bc is None or rt is None or rc is None or bt.rate_bpm == bc.rate_bpm:
            return False
        way = 1.0 if bc.rate_bpm > bt.rate_bpm else -1.0  # from the therapist's baseline through the client's
        scale_t, scale_c = _move_scale(bt), _move_scale(bc)
        past = (rt - bc.rate_bpm) * way > scale_t
        left = (rc - bc.rate_bpm) * way > scale_c
        # Who started first: each one's move that way off their own baseline (the therapist's has further to go).
        t_since = self._stretch("therapist", (rt - bt.rate_bpm) * way > scale_t, now_s)
        c_since = self._stretch("client", left, now_s)
        return past and left and c_since - MOVE_FIRST_WITHIN_S <= t_since < c_since

    def _stretch(self, key: Role, flag: bool, now_s: float) -> float:
        """Start of the current stretch in which ``flag`` held (gaps up to MOVE_STRETCH_HOLD_S bridged); inf if none."""
        entry = self._stretches.get(key)
        if entry is not None and now_s - entry[1] > MOVE_STRETCH_HOLD_S:
            del self._stretches[key]  # ended
            entry = None
        if flag:
            if entry is None:
                entry = self._stretches[key] = [now_s, now_s]
            entry[1] = now_s
        return entry[0] if entry is not None else math.inf

    def _peak_cues(self, tpv: FloatArray, cpv: FloatArray) -> tuple[dict[Role, tuple[float, float]], float | None]:
        """Each person's period response and lagged dependency, and depth mimicry: functions of the two peak
        series alone, so recomputed only when a peak came or went (half the updates are troughs)."""
        key = tuple(float(v) for a in (tpv, cpv) for v in ((len(a), a[0], a[-1]) if len(a) else (0, 0.0, 0.0)))
        if self._peak_cue_cache is not None and self._peak_cue_cache[0] == key:
            return self._peak_cue_cache[1], self._peak_cue_cache[2]
        eng = self.config.engine
        d, mx = eng.direction_breaths, eng.max_breath_s
        cues: dict[Role, tuple[float, float]] = {}
        people: tuple[tuple[Role, FloatArray, FloatArray], ...] = (("therapist", tpv, cpv), ("client", cpv, tpv))
        for role, mine, theirs in people:
            if len(mine) < MIN_DIRECTION_PEAKS or len(theirs) < MIN_DIRECTION_PEAKS:
                continue
            seg = mine[-(d + 1) :]
            response = period_response(np.diff(seg), phase_at(theirs, seg[:-1], mx))
            cues[role] = (response, lagged_period_dependency(mine, theirs, d, mx))
        mimicry = None
        if len(tpv) >= MIN_DIRECTION_PEAKS and len(cpv) >= 2:
            seg = tpv[-d:]
            j = cpv.searchsorted(seg, side="right") - 1
            ok = j >= 0
            if np.count_nonzero(ok) >= MIN_DIRECTION_PEAKS:
                tdep = self.people["therapist"].depths[-len(seg) :][ok]
                cdep = self.people["client"].depths[len(self.people["client"].depths) - len(cpv) + j[ok]]
                mimicry = _safe_corr(tdep, cdep)
        self._peak_cue_cache = (key, cues, mimicry)
        return cues, mimicry

    def _adapt_baselines(self, now_s: float) -> None:
        """Track slow drift of each person's own rate while the pair is clearly not locked."""
        if self._last_adapt_s is None:
            self._last_adapt_s = now_s
            return
        eng = self.config.engine
        alpha = min(1.0, max(0.0, now_s - self._last_adapt_s) / eng.baseline_tau_s)
        self._last_adapt_s = now_s
        for role in ROLES:
            base = self.baselines[role]
            rate = self.people[role].rate_bpm()
            if base is not None and rate is not None:
                new_rate = base.rate_bpm + alpha * (rate - base.rate_bpm)
                self.baselines[role] = dataclasses.replace(base, rate_bpm=new_rate)

    def _track_efficacy(self, now_s: float, out: list[Output], apart: bool | None = None) -> None:
        """Did the therapist decouple after each recent nudge? ``apart``: True for an update whose pair is not
        locked (or locked with the client following: the therapist leads again), False for one that is locked
        or has no estimate (a drop-out, the updates without a window after it), None when only the clock moved.

        Decoupled = ``decoupled_s`` of updates apart in a row, starting within ``efficacy_window_s`` of the
        nudge (``after_s`` is when it started). An update merely not 'following' is not enough: after a drop-out
        the direction evidence rebuilds from scratch while the pair is as locked as before. Not decoupled once
        the window has passed with no such stretch under way."""
        pol = self.config.policy
        keep: list[_PendingEfficacy] = []
        for pending in self._pending_efficacy:
            # Time without data counts as 'not apart' (nothing says the pair decoupled), and is reported: a nudge
            # not followed by decoupling because the strap was away is not one that did not work.
            window_end_s = pending.nudge_s + pol.efficacy_window_s
            seen_s = pending.nudge_s if pending.seen_s is None else pending.seen_s
            if self._paused:
                pending.paused_s += max(0.0, min(now_s, window_end_s) - seen_s)
            pending.seen_s = max(seen_s, now_s)
            if apart is False:
                pending.quiet_since_s = None
            elif apart and pending.quiet_since_s is None:
                pending.quiet_since_s = now_s
            quiet = pending.quiet_since_s
            if quiet is not None and now_s - quiet >= pol.decoupled_s:
                out.append(Efficacy(now_s, pending.nudge_s, True, quiet - pending.nudge_s, pending.paused_s))
            elif now_s - pending.nudge_s > pol.efficacy_window_s and (
                quiet is None or quiet - pending.nudge_s > pol.efficacy_window_s
            ):
                out.append(Efficacy(now_s, pending.nudge_s, False, None, pending.paused_s))
            else:
                keep.append(pending)
        self._pending_efficacy = keep

    def _nudge(self, state: EngineState) -> Nudge:
        base = self.baselines["therapist"]
        base_rate = base.rate_bpm if base else float("nan")
        pattern = haptic_pattern(self.config.policy, base_rate if base else None)
        self.policy.record(state.t_s)
        self._pending_efficacy.append(_PendingEfficacy(state.t_s))
        nudge = Nudge(
            t_s=state.t_s,
            pattern=pattern,
            pattern_name=self.config.policy.pattern,
            plv=state.plv if state.plv is not None else float("nan"),
            direction=state.direction if state.direction is not None else float("nan"),
            locked_for_s=state.locked_for_s,
            therapist_rate_bpm=state.therapist_rate_bpm or float("nan"),
            client_rate_bpm=state.client_rate_bpm or float("nan"),
            baseline_rate_bpm=base_rate,
        )
        self.nudges.append(nudge)
        return nudge

    def _state(
        self,
        now_s: float,
        decision: Decision,
        win: _Window | None,
        plv: float | None = None,
        chance: float | None = None,
        plv_p: float | None = None,
        cues: _Cues = _NO_CUES,
    ) -> EngineState:
        eng = self.config.engine
        t, c = self.people["therapist"], self.people["client"]
        phase_diff = lag = None
        n = 0 if win is None else len(win.phases)
        if win is not None and n:
            mean = circular_mean_cycles(win.phases)
            phase_diff = ((mean + 0.5) % 1.0 - 0.5) * 360.0
            period = c.period_s()
            lag = phase_diff / 360.0 * period if period else None
        st = EngineState(
            t_s=now_s,
            decision=decision,
            therapist_rate_bpm=t.rate_bpm(),
            client_rate_bpm=c.rate_bpm(),
            therapist_depth=t.depth(eng.rate_median_breaths),
            client_depth=c.depth(eng.rate_median_breaths),
            phase_diff_deg=phase_diff,
            lag_s=lag,
            plv=plv,
            plv_breaths=n,
            phase_known_until_s=float(win.anchors_s[-1]) if win is not None and n else None,
            plv_chance=chance,
            plv_p=plv_p,
            plv_chance_analytic=plv_chance_level(_breaths_spanned(win, t.period_s())) if n else None,
            lag_locking=cues.lag_locking,
            lag_locking_p=cues.lag_locking_p,
            lag_asymmetry=cues.lag_asymmetry,
            rate_convergence_bpm=cues.rate_convergence_bpm,
            depth_mimicry=cues.depth_mimicry,
            therapist_rate_move=cues.therapist_rate_move,
            client_rate_move=cues.client_rate_move,
            therapist_response=cues.therapist_response,
            client_response=cues.client_response,
            therapist_lagged=cues.therapist_lagged,
            client_lagged=cues.client_lagged,
            therapist_follow=None,
            client_follow=None,
            direction=None,
            beat_period_s=cues.beat_period_s,
            beat_cycles=cues.beat_cycles,
            locked_for_s=self._timer.locked_s,
            muted=self.policy.is_muted(now_s),
            therapist_changed_first=cues.therapist_changed_first,
        )
        t_ev, c_ev, _, direction = direction_of(st, eng)
        return dataclasses.replace(st, therapist_follow=t_ev, client_follow=c_ev, direction=direction)


def _move_scale(base: Baseline) -> float:
    """A rate move of this much (bpm) off ``base`` counts fully: RATE_MOVE_SCALE_SD of the person's own SDs, the SD
    at least RATE_DRIFT_FLOOR of their rate."""
    return RATE_MOVE_SCALE_SD * max(base.rate_sd_bpm, RATE_DRIFT_FLOOR * base.rate_bpm)


def _breaths_spanned(win: _Window | None, period_s: float | None) -> int:
    """Roughly independent breaths in a window: events of both people are 4 anchors per cycle."""
    if win is None or len(win.anchors_s) < 2 or not period_s:
        return 1
    return 1 + int((win.anchors_s[-1] - win.anchors_s[0]) / period_s)


def _safe_corr(a: FloatArray, b: FloatArray) -> float | None:
    """Pearson correlation; None for fewer than 3 pairs or a constant side (SD < 1e-12)."""
    if len(a) < 3:
        return None
    da, db = a - np.add.reduce(a) / len(a), b - np.add.reduce(b) / len(b)
    ssa, ssb = float(np.dot(da, da)), float(np.dot(db, db))
    if ssa < 1e-24 * len(a) or ssb < 1e-24 * len(b):
        return None
    return float(np.dot(da, db)) / math.sqrt(ssa * ssb)


@functools.lru_cache(maxsize=4)
def _surrogate_shifts(min_shift_s: float, max_shift_s: float, count: int) -> FloatArray:
    """The surrogates' shifts of the partner's history. An update's PLV and time-lag locking, and most updates
    while the window's first anchor stays put, ask for the same ones (np.linspace: ~8 us a call).
    Read-only, as they are shared."""
    shifts = np.linspace(min_shift_s, max_shift_s, count)
    shifts.flags.writeable = False
    return shifts
