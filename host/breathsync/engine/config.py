"""Engine and nudge-policy configuration: frozen dataclasses with documented defaults, TOML loading.

Every threshold that decides whether a therapist is nudged lives here, so a clinic can tighten
or relax the engine without touching code. The decision thresholds (``plv_min``,
``direction_min``, ``min_locked_s``) were calibrated against surrogate pairs in
``bench/bench_entrainment.py`` (see docs/engine.md); everything else is a physiological or
ergonomic choice explained next to its field.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config_table import read_toml, table_to_dataclass
from ..errors import InputError

HAPTIC_PATTERNS = ("paced", "double", "single")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine measures synchrony and when it calls a therapist-follows episode."""

    baseline_s: float = 120.0
    """Both people's own rate/depth/variability are learned over the first minutes; no decision before. From
    quiet breaths: for a person who talked then, the engine waits for 13 quiet ones, at most 180 s longer
    (``engine.SPEECH_WAIT_S``; docs/engine.md, Baselines)."""
    baseline_tau_s: float = 600.0
    """After that, the baseline follows slow drift (time constant) but only while the pair is not locked."""
    window_s: float = 16.0
    """Phase-locking window in seconds (~4 breaths at 15/min). Relative phase is sampled at every breath
    event of either person (peaks and troughs: 4 anchors per cycle), so a short window still has ~16 samples."""
    window_breaths: float = 4.0
    """Slower breathing than ``window_breaths`` per ``window_s`` (15/min) stretches the locking window, the
    time-lag asymmetry's and the ``min_locked_s`` hold in proportion (up to 3x), so that they span as many breaths
    of the slower person as at 15/min: evidence comes per breath, not per second (docs/engine.md, 'Slow breathing').
    0 keeps every span in seconds whatever the rate."""
    plv_trim: float = 0.2
    """Share of the window's anchors that may deviate most and are left out of the locking value (robust to a
    missed or spurious breath event; a 16 s window holds ~4 breaths, so 0.2 drops about one breath's anchors);
    0 is the plain phase-locking value."""
    min_window_anchors: int = 8
    """Fewer anchors (breath events with both phases known) than this in the window means no locking estimate."""
    direction_breaths: int = 12
    """Window for the directional (who-follows-whom) estimates, in breaths of each person."""
    surrogate_count: int = 24
    """Time-shifted copies of the client's own recent history used as the null (segment surrogates)."""
    surrogate_p_max: float = 0.1
    """Surrogate p-value the window's PLV must reach: share of surrogates at least as locked (calibrated)."""
    surrogate_min_shift_s: float = 20.0
    """Smallest shift: beyond a few breaths, a shifted partner keeps its rate but loses the alignment."""
    history_s: float = 300.0
    """How much of the client's past the surrogates may draw from."""
    plv_min: float = 0.8
    """Absolute floor on the phase-locking value (calibrated)."""
    auto_polarity: bool = True
    """Read a person's breaths upside down when their signal over the baseline period is clearly inverted
    (inspiration pointing down: skewed negative, engine/polarity.py). Off: every signal is taken as it comes."""
    time_lag_locking: bool = True
    """Also count as locked when the therapist's breaths keep a fixed *delay* after the client's (same floor,
    same surrogate test): behind an irregular leader a constant delay is not a constant phase."""
    beat_cycles_min: float = 1.0
    """A window spanning this many beat periods (at the therapist's baseline rate) cannot stay locked by
    chance drift: locking over it is significant even when surrogates cannot tell (regular partners)."""
    weight_rate_move: float = 1.0
    """Weight of 'own rate moved toward the partner' in the follow evidence."""
    weight_response: float = 2.0
    """Weight of the period response to the partner's phase lead."""
    weight_lagged: float = 2.0
    """Weight of the lagged (< one breath) period dependency."""
    weight_lead: float = 0.0
    """Weight of the phase lead: a follower's breaths trail the leader's (phase coupling with a lag), so the
    sine of the client's mean phase lead over the therapist counts toward 'therapist follows'. Calibrated to 0
    since the baselines leave speech out (session 13): the people's own adjustments decide alone, and the lead,
    an assumption about the lag, is only reported."""
    weight_lag_asymmetry: float = 16.0
    """Weight of the time-lag asymmetry (therapist's delay locking behind the client minus the client's behind
    the therapist, -1..1; ``decision.lag_asymmetry``), counted with the people's own adjustments (calibrated: 16
    until session 12, 24 in sessions 13-21, 16 again since the strap model's 14-bit counts in session 22, when 24
    gave 0.29 false nudges/h on the calibration set against its 0.25 budget)."""
    lag_asymmetry_window_s: float = 32.0
    """Window of the time-lag asymmetry: longer than the locking window, as direction evidence builds over breaths
    (16 s: held-out 69 %, 32 s: 74 %, both calibrated; docs/engine.md)."""
    direction_min: float = 1.5
    """Minimum own adjustments (therapist-minus-client follow evidence plus weighted time-lag asymmetry) plus
    weighted phase lead (calibrated; each person's evidence spans +-(weight_rate_move + weight_response +
    weight_lagged), the asymmetry +-weight_lag_asymmetry, the lead +-weight_lead)."""
    adjust_min: float = 1.0
    """...of which at least this much must come from the people's own adjustments (rate move, period response,
    lagged dependency, time-lag asymmetry), whatever the phase lead says. The lead's sign means 'therapist
    follows' only while the follower lags by less than half a breath, an assumption about the lag: it may
    strengthen the evidence but never make it alone (the floor itself is a robustness choice; its value is
    calibrated; docs/engine.md)."""
    min_locked_s: float = 20.0
    """The therapist must stay locked and following this long before a nudge (calibrated; longer for slow
    breathing, ``window_breaths``)."""
    beat_periods: float = 0.0
    """...and at least this many beat periods 1/|therapist baseline rate - client rate|: had the therapist kept
    their own rate, the relative phase would have slipped a full cycle by then (calibrated)."""
    max_beat_lock_s: float = 90.0
    """Cap on the beat-period requirement (pairs whose baselines already match would never qualify)."""
    evidence_gain: float = 0.0
    """Sequential fast path: a following update counts (1 + evidence_gain x strength) times its duration, strength
    0..1 being the weaker of the PLV and direction margins, so strong evidence nudges sooner (calibrated)."""
    lock_leak: float = 0.25
    """Following time is accumulated; an update that is not 'following' removes lock_leak x its duration.
    A single noisy breath does not restart the clock (calibrated)."""
    max_sample_gap_s: float = 2.0
    """No samples from a strap for longer than this pauses decisions (BLE drop-out)."""
    max_breath_gap_s: float = 12.0
    """No breath event for longer than this (or 2.5 periods) pauses decisions (loose strap, apnoea)."""
    max_breath_s: float = 20.0
    """Longest breath cycle measured (3/min): slow paced breathing (4.5-6/min, 10-13 s) is still breathing.
    Longer peak-to-peak intervals are gaps (a drop-out, an apnoea, a missed breath), not breaths."""
    rate_median_breaths: int = 4
    """Breaths in the running median that gives each person's rate and depth."""


@dataclass(frozen=True)
class PolicyConfig:
    """How often and how the therapist may be nudged."""

    cooldown_s: float = 90.0
    """Quiet time after a nudge: give the therapist time to return to their own rhythm."""
    max_per_hour: int = 6
    """Hard cap over any rolling hour: a biofeedback device must not nag."""
    max_per_episode: int = 1
    """Nudges while the therapist keeps following without a break. The count starts again once the pair has been
    apart for ``decoupled_s``: without it, a therapist who rode out an episode was nudged every cooldown, and two
    or three episodes took the hourly cap from the rest of the hour."""
    mute_s: float = 600.0
    """'Mirroring on purpose' mute: the therapist mirrors consciously; nudges resume by themselves after this."""
    efficacy_window_s: float = 60.0
    """A nudge worked if the therapist decoupled within this time."""
    decoupled_s: float = 10.0
    """...that is, stopped following for at least this long (a few breaths: one update that is not 'following',
    or a short drop-out, is not a return to their own rhythm)."""
    pattern: str = "paced"
    """'paced' (slow pulses at the therapist's own baseline breathing rate), 'double' or 'single'."""
    pulse_count: int = 3
    """Pulses of the paced pattern (one per baseline breath would be too long: a few suffice)."""
    intensity_pct: int = 60
    """Motor intensity in percent."""
    pulse_on_ms: int = 400
    """Length of one 'single'/'double' pulse; the paced pattern's on-time is half a baseline breath."""


@dataclass(frozen=True)
class Config:
    """Everything the replay and the live daemon need: ``[engine]`` and ``[policy]`` of a TOML file."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)


_RANGES: dict[str, tuple[float, float]] = {
    "baseline_s": (10.0, 3600.0),
    "baseline_tau_s": (10.0, 36000.0),
    "window_s": (4.0, 300.0),
    "window_breaths": (0.0, 30.0),
    "min_window_anchors": (3, 400),
    "direction_breaths": (4, 100),
    "surrogate_count": (4, 500),
    "surrogate_p_max": (0.001, 1.0),
    "beat_periods": (0.0, 10.0),
    "max_beat_lock_s": (0.0, 600.0),
    "lock_leak": (0.0, 1000.0),
    "evidence_gain": (0.0, 20.0),
    "surrogate_min_shift_s": (2.0, 600.0),
    "history_s": (30.0, 3600.0),
    "plv_min": (0.0, 1.0),
    "direction_min": (-30.0, 30.0),
    "adjust_min": (-10.0, 10.0),
    "beat_cycles_min": (0.0, 100.0),
    "weight_rate_move": (0.0, 10.0),
    "weight_response": (0.0, 10.0),
    "weight_lagged": (0.0, 10.0),
    "weight_lead": (0.0, 10.0),
    "weight_lag_asymmetry": (0.0, 100.0),
    "lag_asymmetry_window_s": (4.0, 300.0),
    "plv_trim": (0.0, 0.5),
    "min_locked_s": (0.0, 600.0),
    "max_sample_gap_s": (1.0, 60.0),  # straps send a block every 8 samples (0.32 s at 25 Hz)
    "max_breath_gap_s": (2.0, 120.0),
    "max_breath_s": (4.0, 120.0),
    "rate_median_breaths": (1, 30),
    "cooldown_s": (0.0, 7200.0),
    "max_per_hour": (0, 120),
    "max_per_episode": (1, 120),
    "mute_s": (1.0, 86400.0),
    "efficacy_window_s": (5.0, 600.0),
    "decoupled_s": (1.0, 300.0),
    "pulse_count": (1, 20),
    "intensity_pct": (1, 100),
    "pulse_on_ms": (20, 5000),
}


def validate_config(config: Config, where: str = "config") -> Config:
    """Cross-field checks that a single range cannot express."""
    eng, pol = config.engine, config.policy
    if eng.surrogate_min_shift_s >= eng.history_s:
        raise InputError(f"{where}: engine.surrogate_min_shift_s must be < engine.history_s")
    if pol.pattern not in HAPTIC_PATTERNS:
        raise InputError(f"{where}: policy.pattern must be one of {', '.join(HAPTIC_PATTERNS)} (got {pol.pattern!r})")
    return config


def config_from_dict(data: dict[str, Any], where: str = "config") -> Config:
    """Build a validated Config from a parsed TOML document."""
    unknown = set(data) - {"engine", "policy"}
    if unknown:
        raise InputError(f"{where}: unknown section(s) {', '.join(sorted(unknown))} (known: engine, policy)")
    engine = table_to_dataclass("engine", EngineConfig, data.get("engine", {}), where, _RANGES)
    policy = table_to_dataclass("policy", PolicyConfig, data.get("policy", {}), where, _RANGES)
    return validate_config(Config(engine=engine, policy=policy), where)


def stored_config(stored: object, where: str) -> tuple[Config | None, list[str]]:
    """The engine and policy settings a session was run with (``stored``: the ``engine`` entry of the whole
    configuration the daemon stores, None when there is none), None if it stored none; and notes on what an
    older version stored differently. Keys this version no longer has
    are left out, keys it has gained take today's defaults: either way said, never an error (an older session
    replayed until it was run with its own settings)."""
    if stored is None:
        return None, [f"{where} stored no engine settings: the defaults were used"]
    if not isinstance(stored, dict):
        raise InputError(f"{where}: its stored engine settings are not a table (give them with --config)")
    notes: list[str] = []
    tables: dict[str, object] = {}
    for name, cls in (("engine", EngineConfig), ("policy", PolicyConfig)):
        table = stored.get(name, {})
        if not isinstance(table, dict):
            raise InputError(f"{where}: its stored [{name}] settings are not a table (give them with --config)")
        known = {f.name for f in fields(cls)}
        gone, new = sorted(set(table) - known), sorted(known - set(table))
        if gone:
            notes.append(f"{where} stored {name} settings this version does not have, left out: {', '.join(gone)}")
        if new:
            notes.append(f"{where} predates {name} settings, at today's defaults: {', '.join(new)}")
        tables[name] = {k: v for k, v in table.items() if k in known}
    try:
        return config_from_dict(tables, f"{where}: its stored engine settings"), notes
    except InputError as exc:
        raise InputError(f"{exc} (give the settings with --config)") from None


RUN_ONLY_SECTIONS = frozenset({"session", "straps", "outputs"})  # breathsync run's own tables


def load_config(path: str | Path) -> Config:
    """Read a TOML file with optional ``[engine]`` and ``[policy]`` tables; InputError on any problem.

    A whole ``breathsync run`` configuration is fine too: its ``[session]``, ``[straps]`` and ``[outputs]``
    tables are left to ``run`` (which checks them), so a session's own file re-runs its engine as it was."""
    data = read_toml(path)
    return config_from_dict({k: v for k, v in data.items() if k not in RUN_ONLY_SECTIONS}, str(path))
