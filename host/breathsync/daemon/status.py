"""The therapist's one status line of ``breathsync run``: what each strap and the engine say now, formatted.

Pure formatting of what the daemon knows (no I/O), so that every wording rule is tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..engine import EntrainmentEngine
from ..engine.decision import lock_route
from ..engine.state import EngineState
from ..roles import ROLES, Role

# Said beside the chance level when the pair was found locked by another test than the phase value against it.
LOCK_GROUNDS = {"beats": "; steady too long for chance", "timing": "; locked in breath timing"}
# The engine's decision as the therapist reads it (a soak review: 'locked_unclear', 'nudge_suppressed' were
# explained nowhere); the stored states keep the engine's own names.
DECISION_WORDS = {
    "learning": "learning",
    "paused": "paused",
    "no_lock": "no lock",
    "locked_client_follows": "client follows you",
    "locked_unclear": "together, no leader",
    "therapist_follows": "you follow",
    "nudge": "you follow: NUDGE",
    "nudge_suppressed": "you follow (nudge held back)",
}


@dataclass
class PersonView:
    """What the status line shows about one strap."""

    link: str = "searching"
    battery_pct: int | None = None
    rate_bpm: float | None = None
    samples: int = 0
    firmware: str = ""
    last_data_s: float | None = None  # daemon clock when its last live samples arrived


def status_due(now_s: float, last_s: float | None, zero_s: float | None, interval_s: float) -> bool:
    """A new status line is due at ``now_s`` (the daemon's clock; the last one was at ``last_s``). On the session
    clock (from ``zero_s``) once per ``interval_s`` step: the daemon looks every 0.25 s, and 'interval_s since the
    last line' drifted by up to a tick per line, so the clock shown skipped a second now and then (02:04, 02:06)."""
    if last_s is None:
        return True
    if zero_s is None or last_s < zero_s:
        return now_s - last_s >= interval_s or (zero_s is not None and now_s >= zero_s)
    return math.floor((now_s - zero_s) / interval_s) > math.floor((last_s - zero_s) / interval_s)


def status_line(
    now_s: float,
    zero_s: float | None,
    views: Mapping[Role, PersonView],
    state: EngineState | None,
    engine: EntrainmentEngine,
    session_now_s: float,
    nudge_count: int,
) -> str:
    """The line at ``now_s`` (the daemon's clock): ``zero_s`` is the session's first sample (the report's 0:00),
    ``session_now_s`` the engine's session time now."""
    # The session clock the report uses: from the session's first sample (before it: not started yet).
    if zero_s is None:
        parts = ["--:--"]
    else:
        elapsed = max(0.0, now_s - zero_s)
        parts = [f"{int(elapsed // 60):02d}:{int(elapsed % 60):02d}"]
    for role in ROLES:
        v = views[role]
        battery = "?" if v.battery_pct is None else f"{v.battery_pct}%"
        # Before the first engine update (the baselines being learned) the rate is the strap's breaths' own.
        rate_bpm = v.rate_bpm if v.rate_bpm is not None else engine.people[role].rate_bpm()
        rate = "--" if rate_bpm is None else f"{rate_bpm:4.1f}/min"
        link = v.link
        silent_s = None if v.last_data_s is None else now_s - v.last_data_s
        if link == "ok" and silent_s is not None and silent_s > engine.config.engine.max_sample_gap_s:
            # Connected but sending nothing (a hung strap): 'ok' with its last rate frozen read as healthy. Said as
            # soon as the silence pauses the engine's decisions, so 'paused' never comes without a reason.
            link, rate = f"no data {silent_s:.0f}s", "--"
        elif link != "ok":  # lost or reconnecting: its last battery and rate are not news, and read as healthy
            battery, rate = "", "--"
        parts.append(" ".join(x for x in (f"{role[0].upper()}:", link, battery, rate) if x))
    s = state
    if s is None:  # no engine update yet: the baselines are being learned
        parts.append("sync -- learning")
    elif any(views[role].link != "ok" for role in ROLES):
        # The engine pauses only after 2 s without samples; until then its last reading is stale, not live.
        parts.append("sync -- paused")
    elif s.plv is None and s.decision == "no_lock":
        # Too few breaths in the phase window to judge (after a gap or a stall the engine starts a new one):
        # 'no_lock' here read as a verdict that the pair is apart.
        parts.append("sync -- gathering")
    else:
        plv = "--" if s.plv is None else f"{s.plv:.2f}"
        # Locked on another ground than the phase value against its chance level: say which, or a value below
        # its chance read as a contradiction ('sync 0.91 (chance 0.95) therapist_follows').
        why = LOCK_GROUNDS.get(lock_route(s, engine.config.engine) or "", "") if s.decision != "no_lock" else ""
        # No chance level yet (too little history since a drop-out for the shifted copies): said, not left out.
        chance = f" (chance --{why})" if s.plv_chance is None else f" (chance {s.plv_chance:.2f}{why})"
        parts.append(f"sync {plv}{chance} {DECISION_WORDS.get(s.decision, s.decision)}")
    nudges = f"nudges {nudge_count}"
    muted_s = engine.policy.muted_for_s(session_now_s)
    if muted_s > 0:  # the therapist pressed m: say so until nudges resume by themselves
        nudges += f" (muted, {math.ceil(muted_s / 60):.0f} min left)"
    parts.append(nudges)
    return " | ".join(parts)
