"""The decision rule, separated from feature computation so calibration can replay it exactly.

``classify`` maps one update's features to a decision; ``LockTimer`` measures how long the
therapist has been following without a break; ``decide_nudges`` replays both plus the nudge
policy over a recorded stream of states. The online engine uses the same three pieces, so a
threshold chosen offline on surrogate pairs behaves identically live.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

from .config import Config, EngineConfig
from .policy import NudgePolicy
from .state import Decision, EngineState


def follow_evidence(
    rate_move: float | None, response: float | None, lagged: float | None, config: EngineConfig
) -> float | None:
    """Weighted sum of one person's 'I adjust to the partner' measures."""
    if rate_move is None or response is None or lagged is None:
        return None
    return config.weight_rate_move * rate_move + config.weight_response * response + config.weight_lagged * lagged


def phase_lead(phase_diff_deg: float | None) -> float:
    """How far the client's breathing runs ahead of the therapist's, -1..1 (sine of the mean relative phase).

    A follower's end-inspiration trails the leader's by a lag shorter than half a breath, so a client
    ahead by 0-180 degrees (> 0) points to 'therapist follows'. Near 0 and 180 degrees it says nothing.
    """
    return 0.0 if phase_diff_deg is None else math.sin(math.radians(phase_diff_deg))


def lag_asymmetry(s: EngineState, config: EngineConfig) -> float:
    """How much more tightly the therapist's breaths keep a fixed delay behind the client's than the
    client's behind the therapist's (time-lag locking both ways), -1..1; 0 when unknown.

    Behind an irregular leader the follower's delay stays put while the leader's delay after the
    follower's previous breath carries the leader's own irregularity: locking in time is one-sided.
    Two regular breathers are locked both ways and it says nothing.
    """
    if not config.time_lag_locking or s.lag_asymmetry is None:
        return 0.0
    return s.lag_asymmetry


def direction_of(s: EngineState, config: EngineConfig) -> tuple[float | None, float | None, float | None, float | None]:
    """(therapist evidence, client evidence, own adjustments, direction).

    Own adjustments: therapist minus client evidence plus the weighted time-lag asymmetry (who keeps a
    fixed delay behind whom); direction adds the weighted phase lead to them.
    """
    t = follow_evidence(s.therapist_rate_move, s.therapist_response, s.therapist_lagged, config)
    c = follow_evidence(s.client_rate_move, s.client_response, s.client_lagged, config)
    if t is None or c is None:
        return t, c, None, None
    own = t - c + config.weight_lag_asymmetry * lag_asymmetry(s, config)
    return t, c, own, own + config.weight_lead * phase_lead(s.phase_diff_deg)


# The beat route's premise is that the therapist no longer breathes at their own rate but at the client's: had they
# kept it, the phase would have slipped a beat cycle. It holds only once their current rate has closed at least this
# share of the gap between their baseline and the client's rate. An outside generator's independent pairs at a 2:1
# rate ratio (a calm therapist at 11/min, an anxious client at 22/min: 3-4.5 'beat cycles' of 11/min in a window,
# every other client breath aligned with each therapist breath, time-lag locking 0.84-0.93) were nudged 1.85 times
# an hour on the beat route alone (surrogate p up to 0.83); 0.23/h with the rule. A quarter, not a half: the current
# rate (median of 4 + 4 intervals) trails a real convergence, and with a half the bench's held-out episodes nudged
# fell from 72 % to 70 % (calibration set 83 % to 81 %); with a quarter 71 % and 83 %.
BEAT_CONVERGED_SHARE = 0.25


def beat_route_applies(s: EngineState) -> bool:
    """The window spans beat cycles that the therapist's *own* rate would have slipped, and they no longer
    breathe at it: their rate has closed BEAT_CONVERGED_SHARE of the gap to the client's."""
    if s.beat_cycles is None or s.beat_period_s is None or s.therapist_rate_bpm is None or s.client_rate_bpm is None:
        return False
    gap_bpm = 60.0 / s.beat_period_s  # |therapist baseline - client rate|
    return abs(s.therapist_rate_bpm - s.client_rate_bpm) <= (1.0 - BEAT_CONVERGED_SHARE) * gap_bpm


def _locked_beyond_chance(value: float | None, p: float | None, s: EngineState, config: EngineConfig) -> bool:
    beyond = (p is not None and p <= config.surrogate_p_max) or (
        s.beat_cycles is not None and s.beat_cycles >= config.beat_cycles_min and beat_route_applies(s)
    )
    return value is not None and p is not None and value >= config.plv_min and beyond


def locked(s: EngineState, config: EngineConfig) -> bool:
    """Locked beyond chance by either route (phase or time lag), whatever the direction."""
    return _locked_beyond_chance(s.plv, s.plv_p, s, config) or (
        config.time_lag_locking and _locked_beyond_chance(s.lag_locking, s.lag_locking_p, s, config)
    )


def pair_apart(s: EngineState, config: EngineConfig, decision: Decision) -> bool:
    """Whether the pair has visibly come apart (a nudge's efficacy, the end of an episode): a window, and either
    the client following (the therapist leads again) or neither the phase locking nor the time-lag locking as
    high as ``plv_min``, significant or not. Not merely 'not locked beyond chance': behind a metronomic client the
    surrogate test flickers (its own shifted past is as aligned as the present) while the therapist goes on
    breathing at the same delay after each client breath; an outside review's followers who ignored every nudge
    were reported decoupled in 14 of 23 nudges, and the episode's cap started again for a second nudge."""
    if s.plv is None:  # no window: a drop-out, or none yet after one
        return False
    if decision == "locked_client_follows":
        return True
    # Below plv_min by both routes is also not locked (``locked`` needs plv_min too).
    in_phase = s.plv >= config.plv_min or (
        config.time_lag_locking and s.lag_locking is not None and s.lag_locking >= config.plv_min
    )
    return not in_phase


LockRoute = Literal["phase", "beats", "timing"]


def lock_route(s: EngineState, config: EngineConfig) -> LockRoute | None:
    """Which test found the pair locked beyond chance: the window's phase locking against its surrogates
    (``phase``), the same locking held over enough beat periods that drift would have broken it (``beats``: its
    PLV can sit below the surrogates' chance level), or the time-lag locking of one person's breaths behind the
    other's (``timing``); None when not locked."""
    if s.plv is not None and s.plv_p is not None and s.plv >= config.plv_min and s.plv_p <= config.surrogate_p_max:
        return "phase"
    if _locked_beyond_chance(s.plv, s.plv_p, s, config):
        return "beats"
    if config.time_lag_locking and _locked_beyond_chance(s.lag_locking, s.lag_locking_p, s, config):
        return "timing"
    return None


def classify(s: EngineState, config: EngineConfig) -> Decision:
    """Locked beyond chance, then direction (with enough of it from the people's own adjustments).

    Locked: PLV above an absolute floor, and beyond chance either against the window's surrogates
    (p-value) or because the window spans enough beat periods that drift would have broken it; or the
    same for the time-lag locking (``time_lag_locking``): a fixed reaction delay behind an irregular
    leader.
    """
    if not locked(s, config):
        return "no_lock"
    own, direction = direction_of(s, config)[2:]
    if own is None or direction is None:  # too few breaths for the direction cues yet
        return "locked_unclear"
    # The people's own adjustments must point the same way on their own: the phase lead only adds to them.
    if direction >= config.direction_min and own >= config.adjust_min:
        # The therapist moved first and the client after: their rate moves and the therapist's period response read
        # a therapist who slowed down to calm, with the client following, as the therapist following.
        return "locked_unclear" if s.therapist_changed_first else "therapist_follows"
    if direction <= -config.direction_min and -own >= config.adjust_min:
        return "locked_client_follows"
    return "locked_unclear"


def evidence_strength(s: EngineState, config: EngineConfig) -> float:
    """How far beyond the thresholds a 'therapist follows' update is, 0..1: the weaker of the locking
    margin (PLV above ``plv_min``) and the direction margin (one unit of evidence above ``direction_min``).
    Strong evidence accumulates following time faster (``evidence_gain``): the sequential fast path."""
    direction = direction_of(s, config)[3]
    values = [v for v in (s.plv, s.lag_locking if config.time_lag_locking else None) if v is not None]
    if not values or direction is None:
        return 0.0
    lock = (max(values) - config.plv_min) / max(1.0 - config.plv_min, 1e-6)
    return float(min(max(min(lock, direction - config.direction_min), 0.0), 1.0))


def significantly_locked(p: float | None) -> bool:
    """Fixed criterion (p <= 0.1, not a tuned threshold) that freezes baseline adaptation (PLV or time lag)."""
    return p is not None and p <= 0.1


MAX_SLOW_SCALE = 3.0


def slow_breathing_scale(
    therapist_rate_bpm: float | None, client_rate_bpm: float | None, config: EngineConfig
) -> float:
    """How much longer than configured the windows and the hold are for this pair: ``window_breaths`` breaths of
    the slower person in the locking window (1 at ~15 breaths/min and faster, at most MAX_SLOW_SCALE)."""
    if config.window_breaths <= 0:
        return 1.0
    rates = [r for r in (therapist_rate_bpm, client_rate_bpm) if r is not None and r > 0]
    if not rates:
        return 1.0
    return min(MAX_SLOW_SCALE, max(1.0, config.window_breaths * 60.0 / min(rates) / config.window_s))


def required_lock_s(beat_period_s: float | None, config: EngineConfig, scale: float = 1.0) -> float:
    """Minimum following time: the configured floor (times the slow-breathing scale), and long enough to outlast
    beat drift."""
    beat = config.max_beat_lock_s if beat_period_s is None else min(beat_period_s, config.max_beat_lock_s)
    return max(config.min_locked_s * scale, config.beat_periods * beat)


MAX_STEP_S = 6.0


class LockTimer:
    """Accumulated following evidence, in seconds: a one-sided CUSUM of 'therapist follows'.

    Each following update adds its duration times ``1 + gain * strength`` (strength 0..1 from
    ``evidence_strength``), so clear evidence reaches the threshold sooner than marginal evidence;
    any other update removes ``leak`` times its duration (floored at 0). With an infinite leak it is
    the plain 'time since following started'; a finite leak keeps one noisy breath from restarting
    the clock while a real break still drains it quickly.
    """

    def __init__(self, leak: float = float("inf"), gain: float = 0.0) -> None:
        self.leak = leak
        self.gain = gain
        self.locked_s = 0.0
        self._last_s: float | None = None

    def update(self, now_s: float | None, following: bool, strength: float = 0.0) -> float:
        """One update at evidence time ``now_s`` (None: no new evidence, the sum stays as it is)."""
        if now_s is None:
            return self.locked_s
        dt = 0.0 if self._last_s is None else min(max(now_s - self._last_s, 0.0), MAX_STEP_S)
        self._last_s = now_s
        if following:
            self.locked_s += dt * (1.0 + self.gain * min(max(strength, 0.0), 1.0))
        else:
            self.locked_s = max(0.0, self.locked_s - self.leak * dt) if self.leak != float("inf") else 0.0
        return self.locked_s

    def reset(self) -> None:
        self.locked_s = 0.0
        self._last_s = None

    def settle(self, required_s: float, nudged: bool) -> None:
        """After an update with following enough for a nudge. A nudge spends the evidence: the next one needs
        ``required_s`` of new following. One held back (cooldown, either cap, mute) keeps no more than a nudge
        needs, so the sum drains within ``required_s / leak`` once following stops: left to grow through a long
        episode, it would take minutes to drain, and one stray 'following' update after the episode had ended
        would fire a nudge as soon as the cooldown was over."""
        self.locked_s = 0.0 if nudged else min(self.locked_s, required_s)


def gate_nudge(
    timer: LockTimer, policy: NudgePolicy, state: EngineState, following: bool, strength: float, config: EngineConfig
) -> tuple[float, bool | None]:
    """One update's following evidence into the lock timer, and the policy's word once it is enough for a nudge:
    (accumulated following, None while not enough / True: nudge / False: held back). The same step online
    (``EntrainmentEngine``) and offline (``decide_nudges``). The timer runs on the window's end, not the clock:
    while one person's next breath is still awaited, updates re-score the same window and must not count the
    wait as more following."""
    locked_for = timer.update(state.phase_known_until_s, following, strength)
    scale = slow_breathing_scale(state.therapist_rate_bpm, state.client_rate_bpm, config)
    required = required_lock_s(state.beat_period_s, config, scale)
    if not following or locked_for < required:
        return locked_for, None
    allowed = policy.check(state.t_s).allowed
    timer.settle(required, allowed)
    return locked_for, allowed


Classified = tuple[bool, bool, float, bool]


def classify_states(states: Iterable[EngineState], config: EngineConfig) -> list[Classified]:
    """Per recorded state: (resets the timer, therapist follows, evidence strength, the pair is apart). Depends
    only on the classification thresholds and weights, so a calibration grid computes it once for all lock
    timers. Apart as the engine tells its policy: a window, and not locked or locked with the client following;
    a state without a window (a drop-out, or none yet after it) is not apart."""
    out: list[Classified] = []
    for s in states:
        if s.decision in ("paused", "learning"):
            out.append((True, False, 0.0, False))
            continue
        decision = classify(s, config)
        following = decision == "therapist_follows"
        apart = pair_apart(s, config, decision)
        out.append((False, following, evidence_strength(s, config) if following else 0.0, apart))
    return out


def decide_nudges(
    states: Sequence[EngineState], config: Config, classified: Sequence[Classified] | None = None
) -> list[float]:
    """Nudge times that ``config`` would give on a recorded state stream (calibration helper).

    Paused and learning updates reset the timer exactly as online. Mute is not replayed. ``classified``:
    ``classify_states(states, config.engine)`` when already computed.
    """
    eng = config.engine
    timer = LockTimer(eng.lock_leak, eng.evidence_gain)
    policy = NudgePolicy(config.policy)
    out: list[float] = []
    for s, (reset, following, strength, apart) in zip(states, classified or classify_states(states, eng), strict=True):
        if reset:
            timer.reset()
            policy.observe(s.t_s, apart=False)
            continue
        if gate_nudge(timer, policy, s, following, strength, eng)[1]:
            policy.record(s.t_s)
            out.append(s.t_s)
        policy.observe(s.t_s, apart)
    return out
