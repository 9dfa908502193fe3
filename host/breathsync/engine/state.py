"""What the engine emits: frozen, JSON-ready records (no string-keyed dicts in the API)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

Decision = Literal[
    "learning",  # baselines not learned yet
    "paused",  # a strap is missing samples or breaths: no decision
    "no_lock",  # breathing is not phase locked beyond chance
    "locked_client_follows",  # locked, the client follows (therapist-led: good practice)
    "locked_unclear",  # locked, no clear direction
    "therapist_follows",  # locked and the therapist follows; not yet for min_locked_s
    "nudge",  # a nudge was issued at this update
    "nudge_suppressed",  # would nudge, but cooldown / hourly cap / cap per episode / mute holds it back
]


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 4)
    if value is None or isinstance(value, int | str):  # most fields: no dataclass check (JSON Lines hot path)
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _rounded(getattr(value, name)) for name in _field_names(type(value))}
    return value


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


@dataclass(frozen=True)
class Baseline:
    """A person's own breathing: what 'being themselves' looks like (learned or pre-calibrated)."""

    rate_bpm: float
    rate_sd_bpm: float
    depth: float
    n_breaths: int


@dataclass(frozen=True)
class HapticPattern:
    """A vibration pattern for the therapist's strap."""

    pulse_count: int
    on_ms: int
    off_ms: int
    intensity_pct: int


@dataclass(frozen=True)
class EngineState:
    """The engine's view after one update (at least once per breath of either person).

    Rates in breaths/min, depths in the input's units (inhalation depth). ``phase_diff_deg`` is
    how far the client's breathing cycle is ahead of the therapist's at the therapist's
    end-inspiration (circular mean over the window); ``lag_s`` the same in seconds.
    """

    t_s: float
    decision: Decision
    therapist_rate_bpm: float | None
    client_rate_bpm: float | None
    therapist_depth: float | None
    client_depth: float | None
    phase_diff_deg: float | None
    lag_s: float | None
    plv: float | None
    plv_breaths: int
    phase_known_until_s: float | None  # newest moment both people's phases are known (the window's end)
    plv_chance: float | None  # the PLV this very window must exceed to beat its surrogates (p <= surrogate_p_max)
    plv_p: float | None  # share of surrogates (plus one) at least as locked as the window
    plv_chance_analytic: float | None  # 0.89/sqrt(N)
    lag_locking: float | None  # locking of the therapist's breath times to the client's previous breaths (delay)
    lag_locking_p: float | None  # its surrogate p-value (same surrogates as plv_p)
    lag_asymmetry: float | None  # time-lag locking behind the client minus behind the therapist (longer window)
    rate_convergence_bpm: float | None  # baseline rate gap minus current rate gap
    depth_mimicry: float | None  # correlation of matched breath depths over the direction window
    therapist_rate_move: float | None  # own rate moved from own baseline toward the partner's, -1..1
    client_rate_move: float | None
    therapist_response: float | None  # next period answers the partner's phase lead, -1..1
    client_response: float | None
    therapist_lagged: float | None  # period follows partner's last period (lag < 1 breath), -1..1
    client_lagged: float | None
    therapist_follow: float | None  # weighted follow evidence (config weights)
    client_follow: float | None
    direction: float | None  # therapist_follow - client_follow: > 0 therapist follows
    beat_period_s: float | None  # 1 / |therapist baseline rate - client rate|: drift time if unchanged
    beat_cycles: float | None  # window span / beat period: cycles the pair would have slipped unchanged
    locked_for_s: float
    muted: bool
    # Both have left their baselines past the client's, the therapist first: the therapist changed their own rate and
    # the client followed (slowing down to calm). Never 'therapist follows' then (engine._therapist_moved_first).
    therapist_changed_first: bool = False

    def as_json_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"type": "state"}
        out.update({name: _rounded(getattr(self, name)) for name in _field_names(type(self))})
        return out


@dataclass(frozen=True)
class Nudge:
    """A haptic nudge sent to the therapist."""

    t_s: float
    pattern: HapticPattern
    pattern_name: str
    plv: float
    direction: float
    locked_for_s: float
    therapist_rate_bpm: float
    client_rate_bpm: float
    baseline_rate_bpm: float

    def as_json_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"type": "nudge"}
        out.update({name: _rounded(getattr(self, name)) for name in _field_names(type(self))})
        return out


@dataclass(frozen=True)
class Efficacy:
    """Whether the therapist decoupled within the efficacy window after a nudge."""

    t_s: float
    nudge_t_s: float
    decoupled: bool
    after_s: float | None
    paused_s: float = 0.0  # of the window, the time a strap's data was missing: 'not decoupled' may mean 'not seen'

    def as_json_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"type": "efficacy"}
        out.update({name: _rounded(getattr(self, name)) for name in _field_names(type(self))})
        return out


Output = EngineState | Nudge | Efficacy
