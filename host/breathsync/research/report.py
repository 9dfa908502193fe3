"""Self-contained HTML session report plus a PNG summary figure.

The report is read by therapists and researchers after a session, often on a clinic laptop
without network access, and is archived with the data. So it is one HTML file that needs
nothing else: CSS inline, figures as base64 PNG ``data:`` URIs, no scripts, no links out.

Figures use matplotlib's object API on an Agg canvas (no pyplot global state, no display).
Long sessions are drawn as a min/max envelope per pixel column, which keeps every breath's
excursion visible at any zoom level without millions of line vertices.
"""

from __future__ import annotations

import base64
import html
import io
import math
import statistics
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .. import __version__
from ..store import StoredNudge, StoredState, battery_level_pct, mute_duration_s
from .output import file_head, write_all_or_nothing
from .session import (
    LOCKED_DECISIONS,
    ROLES,
    Episode,
    FloatArray,
    RoleData,
    Session,
    breath_rates_bpm,
    common_grid,
    resample,
)

COLORS = {"therapist": "#0072B2", "client": "#D55E00"}  # Okabe-Ito blue / vermillion: colour-blind safe
FOLLOW_COLOR = "#CC79A7"  # therapist follows (what breathsync nudges)
LED_COLOR = "#009E73"  # client follows (therapist-led)
NUDGE_COLOR = "#882255"
DROPOUT_COLOR = "#999999"
PENDING_COLOR = "#777777"
DECISION_COLORS = {
    "learning": "#E8E8E8",
    "paused": "#8C8C8C",
    "no_lock": "#F7F7F7",
    "locked_unclear": "#F0E442",
    "locked_client_follows": LED_COLOR,
    "therapist_follows": FOLLOW_COLOR,
    "nudge_suppressed": FOLLOW_COLOR,
    "nudge": NUDGE_COLOR,
}
DECISION_LABELS = {
    "learning": "learning the baselines",
    "paused": "paused (a strap's data missing)",
    "no_lock": "not locked",
    "locked_unclear": "locked, direction unclear",
    "locked_client_follows": "locked, client follows therapist",
    "therapist_follows": "locked, therapist follows client",
    "nudge": "nudge sent",
    "nudge_suppressed": "nudge held back (cooldown, cap or mute)",
}
ENVELOPE_COLUMNS = 1600  # min/max buckets across the overview's width
MAX_NUDGE_PANELS = 8
NUDGE_WINDOW_S = 60.0
MIN_RATE_SPAN_BPM = 8.0
RATE_RANGE_BPM = (2.0, 45.0)  # breath-by-breath rates outside are detector artefacts, not breathing
DPI = 110


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    png: Path


# -- numbers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleSummary:
    role: str
    strap: str
    firmware: str
    rate_hz: int
    samples: int
    missing_samples: int
    dropouts: int
    dropout_s: float
    breaths: int
    median_rate_bpm: float | None
    disconnects: int
    battery_pct: tuple[int, ...] = ()  # levels as recorded, in order (none in older sessions)

    @property
    def battery(self) -> str:
        """'62 % -> 24 %' (first and last level), with the lowest when the strap recovered (charged) in between."""
        if not self.battery_pct:
            return "n/a"
        first, last, lowest = self.battery_pct[0], self.battery_pct[-1], min(self.battery_pct)
        text = f"{first} %" if first == last and lowest == last else f"{first} % \u2192 {last} %"
        return text + (f" (lowest {lowest} %)" if lowest < last else "")

    @property
    def missing_pct(self) -> float:
        total = self.samples + self.missing_samples
        return 100.0 * self.missing_samples / total if total else 0.0


@dataclass(frozen=True)
class Summary:
    duration_s: float
    started: str  # the session zero's wall-clock time, local (the report's machine) and UTC
    roles: tuple[RoleSummary, ...]
    missing_roles: tuple[str, ...]
    nudges: int
    decoupled: int
    evaluated: int
    unjudged: int  # not decoupled, but a strap's data was missing for most of the window: not counted either way
    follow_episodes: int
    follow_s: float
    led_episodes: int
    led_s: float
    median_plv: float | None
    locked_pct: float | None
    decision_s: dict[str, float]
    therapist_baseline: str  # where the therapist's 'own rhythm' came from

    @property
    def efficacy_pct(self) -> float | None:
        return 100.0 * self.decoupled / self.evaluated if self.evaluated else None


def _state_series(session: Session, key: str) -> tuple[FloatArray, FloatArray]:
    """(session minutes, values) of one numeric engine-state field; NaN where absent."""
    t = np.asarray([session.rel(s.t_s) / 60.0 for s in session.states], dtype=np.float64)
    v = np.asarray([s.number(key) for s in session.states], dtype=np.float64)
    return t, v


def _state_spans(session: Session) -> Iterator[tuple[float, float, StoredState]]:
    """(start host s, end host s, state): each state holds until the next one, or until its run stopped
    (``Session.host_stops``: the minutes between a Ctrl-C and a resume were counted as the last decision), within the
    session's samples. The engine's last states can come after the last sample (it pauses 2 s after a strap's data
    stops): counted to the next state, they would give negative shares."""
    ends = [s.t_s for s in session.states[1:]] + [session.end_host_s]
    stops = session.host_stops()
    for state, t_next in zip(session.states, ends[: len(session.states)], strict=True):
        stopped = next((a for a, b in stops if state.t_s <= a and b <= t_next), None)
        if stopped is not None:
            t_next = stopped
        start = min(state.t_s, session.end_host_s)
        yield start, max(start, min(t_next, session.end_host_s)), state


def _decision_runs(session: Session) -> list[tuple[float, float, str]]:
    """(start host s, end host s, decision): each decision holds until the next state; before the first one the
    engine was learning the baselines (it stores no state then)."""
    runs: list[tuple[float, float, str]] = []
    states = session.states
    if states and states[0].t_s > session.t0_host_s:  # clipped to the samples, like every state (_state_spans)
        runs.append((session.t0_host_s, min(states[0].t_s, session.end_host_s), "learning"))
    for t, t_next, state in _state_spans(session):
        decision = state.decision or "unknown"
        if runs and runs[-1][2] == decision and math.isclose(runs[-1][1], t):
            runs[-1] = (runs[-1][0], t_next, decision)
        else:
            runs.append((t, t_next, decision))
    return runs


def _strap_label(name: str | None, address: str | None) -> str:
    """'name (address)'; once when they are the same (a strap found by role is stored by its address alone)."""
    parts = list(dict.fromkeys(x for x in (name, address) if x))
    if not parts:
        return "unknown"
    return parts[0] if len(parts) == 1 else f"{parts[0]} ({parts[1]})"


def _role_summary(session: Session, role: RoleData) -> RoleSummary:
    _, rates = breath_rates_bpm(role)
    rates = rates[(rates >= RATE_RANGE_BPM[0]) & (rates <= RATE_RANGE_BPM[1])]
    strap = role.strap
    return RoleSummary(
        role=role.role,
        strap="unknown" if strap is None else _strap_label(strap.name, strap.address),
        firmware="unknown" if strap is None else f"{strap.firmware} (protocol {strap.protocol_version})",
        rate_hz=role.rate_hz,
        samples=len(role.samples.counters),
        missing_samples=role.missing_samples,
        dropouts=len(role.gaps),
        dropout_s=sum(g.duration_s for g in role.gaps),
        breaths=sum(1 for e in role.events if e.kind == "peak"),
        median_rate_bpm=float(np.median(rates)) if len(rates) else None,
        disconnects=sum(1 for _, r, kind, _ in session.link_events if r == role.role and kind == "disconnected"),
        battery_pct=tuple(
            level
            for _, r, kind, detail in session.link_events
            if r == role.role and kind == "battery" and (level := battery_level_pct(detail)) is not None
        ),
    )


def summarise(session: Session) -> Summary:
    """The numbers at the top of the report."""
    episodes = session.episodes()
    follow = [e for e in episodes if e.follower == "therapist"]
    led = [e for e in episodes if e.follower == "client"]
    window_s = _efficacy_window_s(session)
    evaluated = [n for n in session.nudges if n.decoupled is not None and not _unjudged(n, window_s)]
    plvs = [p for s in session.states if not math.isnan(p := s.number("plv"))]
    decision_s: dict[str, float] = {}
    for start, end, decision in _decision_runs(session):
        decision_s[decision] = decision_s.get(decision, 0.0) + end - start
    return Summary(
        duration_s=session.duration_s,
        started=_started(session.start_unix_s),
        roles=tuple(_role_summary(session, r) for r in session.roles.values()),
        missing_roles=tuple(session.missing_roles),
        nudges=len(session.nudges),
        decoupled=sum(1 for n in evaluated if n.decoupled),
        evaluated=len(evaluated),
        unjudged=sum(1 for n in session.nudges if _unjudged(n, window_s)),
        follow_episodes=len(follow),
        follow_s=sum(e.duration_s for e in follow),
        led_episodes=len(led),
        led_s=sum(e.duration_s for e in led),
        median_plv=statistics.median(plvs) if plvs else None,
        locked_pct=_locked_pct(session),
        decision_s=decision_s,
        therapist_baseline=_baseline_text(session),
    )


def _baseline_text(session: Session) -> str:
    cal = session.calibration
    if cal is None:
        return "learned in the session"
    made = ", ".join(x for x in (cal.source, cal.created) if x)
    return f"{cal.baseline.rate_bpm:.1f}/min, calibrated" + (f" ({made})" if made else "")


def _locked_pct(session: Session) -> float | None:
    """Share of the measured time (states with a PLV) that the engine called locked beyond chance: PLV or time-lag
    locking above its floor and significant (docs/engine.md), whoever led. A locked window whose direction evidence
    is not there yet (right after a drop-out) is 'locked_unclear' and counted; sessions recorded before session 19
    stored it as 'no_lock' (~1 % of updates), so their locked share reads about a point lower.

    Not the time PLV merely beats its surrogate chance level: two independent people do that about a tenth of
    the time by construction. Time-weighted (each state holds until the next) so that fast breathing, which
    brings more updates per minute, does not count for more.
    """
    measured = above = 0.0
    for t, t_next, state in _state_spans(session):
        if math.isnan(state.number("plv")):
            continue
        measured += t_next - t
        above += (t_next - t) if state.decision in LOCKED_DECISIONS else 0.0
    return 100.0 * above / measured if measured > 0 else None


def _started(unix_s: float | None) -> str:
    """Local time (the therapist's clock, a review: the report gave UTC alone), and UTC when they differ."""
    if unix_s is None:
        return "unknown"
    utc = datetime.fromtimestamp(unix_s, UTC)
    local = utc.astimezone()
    if local.utcoffset() == timedelta(0):
        return f"{utc:%Y-%m-%d %H:%M:%S} UTC"
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or local.strftime('%z')} ({utc:%H:%M:%S} UTC)"


def _clock(seconds: float) -> str:
    """h:mm:ss or m:ss: how a therapist reads a session time. Before the first sample (a strap searched for while
    the other was not yet streaming) it is negative: shown at 0:00, such events read as if after the session began."""
    sign = "-" if round(seconds) < 0 else ""
    h, rest = divmod(round(abs(seconds)), 3600)
    m, s = divmod(rest, 60)
    return sign + (f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}")


# -- figures ------------------------------------------------------------------------------------


def _normalised(values: FloatArray) -> FloatArray:
    """Scale the 0.5-99.5 % range to 0.9 of a lane around its centre, clip the rare excursions.

    Each person gets the same lane height whatever their strap's gain, and a cough or a strap
    knock cannot flatten the rest of the trace or spill into the other person's lane.
    """
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return values
    lo, hi = np.percentile(finite, [0.5, 99.5])
    scaled = (values - 0.5 * (lo + hi)) / max(float(hi - lo), 1.0) * 0.9
    return np.asarray(np.clip(scaled, -0.5, 0.5), dtype=np.float64)


def envelope(t: FloatArray, v: FloatArray, columns: int = ENVELOPE_COLUMNS) -> tuple[FloatArray, FloatArray]:
    """Min/max per bucket, interleaved, so a long trace draws as its envelope; NaN buckets stay gaps."""
    if len(v) <= 2 * columns:
        return t, v
    size = math.ceil(len(v) / columns)
    n = math.ceil(len(v) / size) * size
    vv = np.full(n, np.nan)
    vv[: len(v)] = v
    tt = np.interp(np.arange(n, dtype=np.float64), np.arange(len(t), dtype=np.float64), t)
    blocks = vv.reshape(-1, size)
    valid = np.isfinite(blocks)
    any_valid = valid.any(axis=1)
    lo = np.where(valid, blocks, np.inf).min(axis=1)
    hi = np.where(valid, blocks, -np.inf).max(axis=1)
    lo[~any_valid] = np.nan
    hi[~any_valid] = np.nan
    centres = tt.reshape(-1, size).mean(axis=1)
    return np.repeat(centres, 2), np.column_stack([lo, hi]).ravel()


def _lanes(session: Session) -> dict[str, float]:
    """Vertical position of each person's trace: therapist on top."""
    present = [r for r in ROLES if r in session.roles] + [r for r in session.roles if r not in ROLES]
    return {role: float(len(present) - 1 - i) for i, role in enumerate(present)}


def _shade_episodes(ax: Axes, session: Session, episodes: Sequence[Episode], scale: float = 60.0) -> None:
    for ep in episodes:
        color, alpha = (FOLLOW_COLOR, 0.22) if ep.follower == "therapist" else (LED_COLOR, 0.12)
        ax.axvspan(
            session.rel(ep.start_host_t_s) / scale, session.rel(ep.end_host_t_s) / scale, color=color, alpha=alpha, lw=0
        )


def _mark_nudges(ax: Axes, session: Session) -> None:
    for nudge in session.nudges:
        ax.axvline(session.rel(nudge.t_s) / 60.0, color=NUDGE_COLOR, lw=1.1, ls="--", alpha=0.9)


def _plot_traces(ax: Axes, session: Session) -> None:
    grid = common_grid(session)
    minutes = (grid - session.t0_host_s) / 60.0
    lanes = _lanes(session)
    for role, lane in lanes.items():
        data = session.roles[role]
        t, v = envelope(minutes, _normalised(resample(data, grid)))
        ax.plot(t, v + lane, color=COLORS.get(role, "black"), lw=0.6)
        for gap in data.gaps:
            ax.fill_between(
                [session.rel(gap.start_host_t_s) / 60.0, session.rel(gap.end_host_t_s) / 60.0],
                lane - 0.5,
                lane + 0.5,
                color=DROPOUT_COLOR,
                alpha=0.5,
                lw=0,
            )
    ax.set_yticks(list(lanes.values()), [r.capitalize() for r in lanes])
    ax.set_ylim(-0.6, max(lanes.values()) + 0.6)
    ax.set_title(
        "Breathing (chest expansion, each person scaled to their own range; grey = signal lost)",
        loc="left",
        fontsize=10,
    )


def _min_span(ax: Axes, span: float) -> None:
    """Widen the y range to at least ``span``: a steady breather must not look erratic."""
    lo, hi = ax.get_ylim()
    if hi - lo < span:
        mid = 0.5 * (lo + hi)
        ax.set_ylim(mid - 0.5 * span, mid + 0.5 * span)


def _no_data(ax: Axes, session: Session, values: FloatArray) -> bool:
    """Say so on an empty panel (no engine states stored, or one strap missing)."""
    if np.isfinite(values).any():
        return False
    why = f"no {' or '.join(session.missing_roles)} strap data" if session.missing_roles else "no engine states stored"
    ax.text(0.5, 0.5, f"not available: {why}", transform=ax.transAxes, ha="center", va="center", color="#777777")
    return True


def _plot_rates(ax: Axes, session: Session) -> None:
    for role, data in session.roles.items():
        t, rate = breath_rates_bpm(data)
        keep = (rate >= RATE_RANGE_BPM[0]) & (rate <= RATE_RANGE_BPM[1])
        minutes = np.asarray([session.rel(x) / 60.0 for x in t[keep]])
        color = COLORS.get(role, "black")
        ax.plot(minutes, rate[keep], ".", ms=2.5, color=color, alpha=0.35)
        st, sv = _state_series(session, f"{role}_rate_bpm")
        if np.isfinite(sv).any():
            ax.plot(st, sv, color=color, lw=1.6, label=role.capitalize())
        else:
            ax.plot([], [], color=color, lw=1.6, label=role.capitalize())
    _min_span(ax, MIN_RATE_SPAN_BPM)
    ax.set_ylabel("breaths/min")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 0.98), fontsize=8, ncol=2, frameon=False, borderaxespad=0)
    ax.set_title("Breathing rate (dots: each breath; line: engine estimate)", loc="left", fontsize=10)


def _plot_synchrony(ax: Axes, session: Session) -> None:
    t, plv = _state_series(session, "plv")
    _, chance = _state_series(session, "plv_chance")
    if not np.isfinite(chance).any():
        _, chance = _state_series(session, "plv_chance_analytic")
    _no_data(ax, session, plv)
    ax.plot(t, plv, color="black", lw=1.2, label="phase locking (PLV)")
    ax.plot(t, chance, color="#555555", lw=1.0, ls=":", label="chance level")
    ax.fill_between(
        t,
        chance,
        plv,
        where=np.nan_to_num(plv) > np.nan_to_num(chance, nan=1.0),
        color="black",
        alpha=0.12,
        lw=0,
        interpolate=True,
    )
    window_s = _efficacy_window_s(session)
    for nudge in session.nudges:
        minute = session.rel(nudge.t_s) / 60.0
        if not 0.0 <= minute <= session.duration_s / 60.0:
            # Drawn unclipped (above the axes), a marker outside the time axis would land far off
            # the figure and collapse its layout (samples ending before the session's last nudge).
            continue
        decoupled = None if _unjudged(nudge, window_s) else nudge.decoupled
        marker, color = (
            ("^", LED_COLOR) if decoupled else (("X", NUDGE_COLOR) if decoupled is False else ("o", PENDING_COLOR))
        )
        ax.plot([minute], [1.04], marker=marker, color=color, ms=8, clip_on=False)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("PLV")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 0.98), fontsize=8, ncol=2, frameon=False, borderaxespad=0)
    ax.set_title("Synchrony: phase locking of the two breathing rhythms vs. its chance level", loc="left", fontsize=10)


def _plot_direction(ax: Axes, session: Session) -> None:
    t, direction = _state_series(session, "direction")
    _no_data(ax, session, direction)
    ax.axhline(0, color="#555555", lw=0.8)
    ax.plot(t, direction, color="black", lw=1.0)
    pos = np.nan_to_num(direction) > 0
    ax.fill_between(t, 0, direction, where=pos, color=FOLLOW_COLOR, alpha=0.5, lw=0, interpolate=True)
    ax.fill_between(t, 0, direction, where=~pos, color=LED_COLOR, alpha=0.35, lw=0, interpolate=True)
    finite = np.abs(direction[np.isfinite(direction)])
    top = max(1.0, float(finite.max()) * 1.1) if len(finite) else 1.0
    ax.set_ylim(-top, top)
    ax.text(1.003, 0.97, "therapist\nfollows", transform=ax.transAxes, va="top", fontsize=8, color=FOLLOW_COLOR)
    ax.text(1.003, 0.03, "client\nfollows", transform=ax.transAxes, va="bottom", fontsize=8, color=LED_COLOR)
    ax.set_ylabel("direction")
    ax.set_title("Who follows whom (engine follow evidence, therapist minus client)", loc="left", fontsize=10)


def _plot_decisions(ax: Axes, session: Session) -> None:
    for start, end, decision in _decision_runs(session):
        ax.broken_barh(
            [(session.rel(start) / 60.0, (end - start) / 60.0)],
            (0, 1),
            color=DECISION_COLORS.get(decision, "white"),
            lw=0,
        )
    ax.set_yticks([])
    ax.set_ylim(0, 1)
    ax.set_ylabel("engine", rotation=0, ha="right", va="center")


def _legend(fig: Figure, session: Session) -> None:
    handles = [
        Patch(color=FOLLOW_COLOR, alpha=0.5, label="therapist follows client"),
        Patch(color=LED_COLOR, alpha=0.35, label="client follows therapist"),
        Patch(color=DROPOUT_COLOR, alpha=0.5, label="signal lost"),
        Line2D([], [], color=NUDGE_COLOR, ls="--", label=f"nudge ({len(session.nudges)})"),
        Line2D([], [], marker="^", color=LED_COLOR, ls="", label="nudge worked"),
        Line2D([], [], marker="X", color=NUDGE_COLOR, ls="", label="did not decouple"),
        Line2D([], [], marker="o", color=PENDING_COLOR, ls="", label="outcome not evaluated"),
        Patch(color=DECISION_COLORS["paused"], label="engine paused"),
        Patch(color=DECISION_COLORS["learning"], label="learning baseline"),
        Patch(color=DECISION_COLORS["locked_unclear"], label="locked, direction unclear"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8.5, frameon=False)


def summary_figure(session: Session) -> Figure:
    """The one-page overview: traces, rates, synchrony, direction, engine decisions, all on one time axis."""
    # Room at the bottom for the figure legend.
    fig = Figure(figsize=(12, 10.5), dpi=DPI, layout=ConstrainedLayoutEngine(h_pad=0.06, rect=(0, 0.05, 1, 0.95)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(5, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 2, 1.5, 0.35]})
    episodes = session.episodes()
    plotters = (_plot_traces, _plot_rates, _plot_synchrony, _plot_direction, _plot_decisions)
    for ax, plot in zip(axes, plotters, strict=True):
        _shade_episodes(ax, session, episodes)
        plot(ax, session)
        _mark_nudges(ax, session)
        ax.grid(axis="x", color="#DDDDDD", lw=0.5)
    axes[-1].set_xlabel("minutes since session start")
    axes[-1].set_xlim(0, session.duration_s / 60.0)
    title = f"Session {session.path.stem}   ·   {_started(session.start_unix_s)}   ·   {_clock(session.duration_s)}"
    fig.suptitle(title, fontsize=12, x=0.01, ha="left")
    _legend(fig, session)
    return fig


def nudge_figure(session: Session) -> Figure | None:
    """Both traces one minute either side of each nudge (first ``MAX_NUDGE_PANELS``), in seconds."""
    nudges = list(session.nudges)[:MAX_NUDGE_PANELS]
    if not nudges:
        return None
    fig = Figure(figsize=(12, 1.9 * len(nudges) + 0.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(nudges), 1, squeeze=False)[:, 0]
    grid = common_grid(session)
    lanes = _lanes(session)
    traces = {role: _normalised(resample(session.roles[role], grid)) for role in lanes}
    window_s = _efficacy_window_s(session)
    for ax, number, nudge in zip(axes, range(1, len(nudges) + 1), nudges, strict=True):
        window = np.abs(grid - nudge.t_s) <= NUDGE_WINDOW_S
        seconds = grid[window] - nudge.t_s
        for role, lane in lanes.items():
            ax.plot(
                seconds, traces[role][window] + lane, color=COLORS.get(role, "black"), lw=1.0, label=role.capitalize()
            )
        ax.axvline(0, color=NUDGE_COLOR, ls="--", lw=1.2)
        _shade_nudge_window(ax, session, nudge.t_s)
        ax.set_xlim(-NUDGE_WINDOW_S, NUDGE_WINDOW_S)
        ax.set_yticks(list(lanes.values()), [r.capitalize() for r in lanes])
        ax.set_title(
            f"Nudge {number} at {_clock(session.rel(nudge.t_s))}: {_nudge_outcome(nudge, window_s)}",
            loc="left",
            fontsize=10,
        )
    axes[-1].set_xlabel("seconds from the nudge")
    return fig


def _shade_nudge_window(ax: Axes, session: Session, centre_host_s: float) -> None:
    for ep in session.episodes():
        if ep.follower == "therapist":
            ax.axvspan(
                ep.start_host_t_s - centre_host_s, ep.end_host_t_s - centre_host_s, color=FOLLOW_COLOR, alpha=0.22, lw=0
            )
    for gap in session.gaps():
        ax.axvspan(
            gap.start_host_t_s - centre_host_s, gap.end_host_t_s - centre_host_s, color=DROPOUT_COLOR, alpha=0.4, lw=0
        )


# A nudge whose efficacy window lacked a strap's data for at least this share of it is not judged: 'did not
# decouple' then means 'not seen' (an outside review: a client out of range for 29 s of the 60 read as 'nudges that
# worked 0 of 1').
UNJUDGED_SHARE = 0.5


def _efficacy_window_s(session: Session) -> float:
    engine = session.config.get("engine")
    policy = engine.get("policy") if isinstance(engine, dict) else None
    window = policy.get("efficacy_window_s") if isinstance(policy, dict) else None
    return float(window) if isinstance(window, int | float) and 0 < window < math.inf else DEFAULT_EFFICACY_WINDOW_S


DEFAULT_EFFICACY_WINDOW_S = 60.0  # engine.config.PolicyConfig's


def _unjudged(nudge: StoredNudge, window_s: float) -> bool:
    return nudge.decoupled is False and nudge.unseen_s >= UNJUDGED_SHARE * window_s


def _nudge_outcome(nudge: StoredNudge, window_s: float) -> str:
    if nudge.decoupled is None:
        return "outcome not evaluated"
    if nudge.decoupled:
        after = nudge.decoupled_after_s
        return "therapist decoupled" + (f" after {after:.0f} s" if after is not None else "")
    unseen = nudge.unseen_s
    if _unjudged(nudge, window_s):
        return f"not judged: no data from a strap for {unseen:.0f} s of the {window_s:.0f} s efficacy window"
    missing = f" ({unseen:.0f} s of it without a strap's data)" if unseen >= 1.0 else ""
    return f"therapist did not decouple within the efficacy window{missing}"


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # If the layout cannot fit (a figure of a few seconds with long labels), matplotlib keeps
        # its default layout, which is fine to read; its two-line warning would only alarm the user.
        warnings.filterwarnings("ignore", message="constrained_layout not applied", category=UserWarning)
        fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2em auto;max-width:1340px;
color:#222;padding:0 1em;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
.muted{color:#666}.warn{background:#fff4e5;border-left:4px solid #e69f00;padding:.5em 1em}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:9em}
.card b{display:block;font-size:1.4em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.3em .7em;text-align:left}th{background:#f5f5f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{_e(c)}</td>' if isinstance(c, int | float) else f"<td>{_e(c)}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} %"


def _cards(s: Summary) -> str:
    efficacy = f"{s.decoupled} of {s.evaluated} ({_pct(s.efficacy_pct)})" if s.evaluated else "n/a"
    if s.unjudged:
        efficacy += f"; {s.unjudged} not judged (a strap's data missing)"
    cards = [
        ("Duration", _clock(s.duration_s)),
        ("Nudges", str(s.nudges)),
        ("Nudges that worked", efficacy),
        ("Therapist followed client", _episodes_text(s.follow_episodes, s.follow_s)),
        ("Client followed therapist", _episodes_text(s.led_episodes, s.led_s)),
        ("Median PLV", "n/a" if s.median_plv is None else f"{s.median_plv:.2f}"),
        ("Time locked beyond chance", _pct(s.locked_pct)),
        ("Therapist baseline", s.therapist_baseline),
    ]
    inner = "".join(f"<div class='card'>{_e(k)}<b>{_e(v)}</b></div>" for k, v in cards)
    return f'<div class="cards">{inner}</div>'


def _episodes_text(count: int, seconds: float) -> str:
    return f"{count} episode{'' if count == 1 else 's'}, {_clock(seconds)}" if count else "never"


def _straps_table(s: Summary) -> str:
    rows = [
        (
            r.role,
            r.strap,
            r.firmware,
            r.rate_hz,
            r.samples,
            f"{r.missing_samples} ({r.missing_pct:.1f} %)",
            f"{r.dropouts} ({r.dropout_s:.1f} s)",
            r.disconnects,
            r.breaths,
            "n/a" if r.median_rate_bpm is None else f"{r.median_rate_bpm:.1f}",
            r.battery,
        )
        for r in s.roles
    ]
    header = (
        "role",
        "strap",
        "firmware",
        "Hz",
        "samples",
        "lost samples",
        "drop-outs",
        "disconnects",
        "breaths",
        "median rate /min",
        "battery",
    )
    return _table(header, rows)


def _nudges_table(session: Session) -> str:
    if not session.nudges:
        return "<p>No nudges in this session.</p>"
    rows = []
    window_s = _efficacy_window_s(session)
    for number, n in enumerate(session.nudges, 1):
        rows.append(
            (
                number,
                _clock(session.rel(n.t_s)),
                n.detail.get("pattern_name", "n/a"),
                _fmt(n.number("plv")),
                _fmt(n.number("direction")),
                _fmt(n.number("locked_for_s")),
                _nudge_outcome(n, window_s),
            )
        )
    return _table(("#", "time", "pattern", "PLV", "direction", "locked for s", "outcome"), rows)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _episodes_table(session: Session) -> str:
    episodes = session.episodes()
    if not episodes:
        return "<p>The engine found no stretch in which one person followed the other.</p>"
    rows = [
        (
            "therapist follows client" if e.follower == "therapist" else "client follows therapist",
            _clock(session.rel(e.start_host_t_s)),
            _clock(session.rel(e.end_host_t_s)),
            f"{e.duration_s:.0f}",
            e.nudges,
        )
        for e in episodes
    ]
    return _table(("episode", "from", "to", "seconds", "nudges"), rows)


def _dropouts_table(session: Session) -> str:
    gaps = session.gaps()
    # A connection is news only after the strap was lost: without the reconnection a disconnect read as the end of
    # that strap (the start's connections are left out).
    lost: set[str] = set()
    link: list[tuple[float, str, str, str]] = []
    retries: dict[int, tuple[int, float]] = {}  # row -> (tries, last try's time): a strap searched for a while
    last_row: dict[str, int] = {}
    for t, r, k, d in session.link_events:
        if k == "battery":  # levels are in the straps table; a low one is said there, not as a link event
            continue
        if k == "muted" and mute_duration_s(d) == 0.0:  # stored as a mute of 0 min from then
            k, d = "mute ended", "nudges back on"
        if k in ("disconnected", "connect-failed", "resumed"):  # resumed: the host itself was gone
            lost.add(r)
        elif k == "connected":
            if r not in lost:
                continue
            lost.discard(r)
        row = last_row.get(r)
        if k == "connect-failed" and row is not None and link[row][2:] == (k, d):
            # The same failure again (a search every ~10 s): one row, not 33 (a soak review's 5-minute absence).
            retries[row] = (retries.get(row, (1, t))[0] + 1, t)
            continue
        last_row[r] = len(link)
        link.append((t, r, k, d))
    parts = []
    if gaps:
        parts.append(
            _table(
                ("strap", "from", "seconds", "lost samples"),
                (
                    (g.role, _clock(session.rel(g.start_host_t_s)), f"{g.duration_s:.1f}", g.missing_samples)
                    for g in gaps
                ),
            )
        )
    else:
        parts.append("<p>No samples lost.</p>")
    if link:
        parts.append(
            _table(
                ("time", "strap", "link event", "detail"),
                (
                    (_clock(session.rel(t)), r, k, _retried(d, retries.get(i), session))
                    for i, (t, r, k, d) in enumerate(link)
                ),
            )
        )
    return "".join(parts)


def _retried(detail: str, retried: tuple[int, float] | None, session: Session) -> str:
    if retried is None:
        return detail
    tries, last_s = retried
    return f"{detail} ({tries} tries, the last at {_clock(session.rel(last_s))})"


def _decisions_table(s: Summary) -> str:
    total = sum(s.decision_s.values())
    if not total:
        return "<p>No engine states were stored for this session.</p>"
    rows = sorted(s.decision_s.items(), key=lambda kv: -kv[1])
    return _table(
        ("engine decision", "time", "share"),
        ((DECISION_LABELS.get(d, d), _clock(v), f"{100 * v / total:.0f} %") for d, v in rows),
    )


def render_html(session: Session, summary: Summary, overview_png: bytes, nudges_png: bytes | None) -> str:
    warning = ""
    if summary.missing_roles:
        warning = (
            f'<p class="warn">No samples from the {", ".join(summary.missing_roles)} strap: '
            "synchrony could not be measured.</p>"
        )
    nudge_section = _img(nudges_png, "traces around each nudge") if nudges_png else ""
    shown = min(len(session.nudges), MAX_NUDGE_PANELS)
    if len(session.nudges) > shown:
        nudge_section += f'<p class="muted">Traces shown for the first {shown} of {len(session.nudges)} nudges.</p>'
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="breathsync-session" content="{_e(_identity(session))}">
<title>breathsync report: {_e(session.path.stem)}</title>
<style>{_CSS}</style></head>
<body>
<h1>Session report: {_e(session.path.stem)}</h1>
<p class="muted">Started {_e(summary.started)} · duration {_e(_clock(summary.duration_s))} ·
nudge count: {summary.nudges} · file {_e(session.path.name)}</p>
{warning}
{_cards(summary)}
<h2>Overview</h2>
{_img(overview_png, "session overview: breathing, rates, synchrony, direction, engine decisions")}
<h2>Straps</h2>
{_straps_table(summary)}
<h2>Nudges ({summary.nudges})</h2>
<p class="muted">A nudge is sent when the therapist's breathing has followed the client's for a while.
It worked when the therapist stopped following within the efficacy window.</p>
{_nudges_table(session)}
{nudge_section}
<h2>Entrainment episodes</h2>
{_episodes_table(session)}
<h2>Engine decisions</h2>
{_decisions_table(summary)}
<h2>Drop-outs and link events</h2>
{_dropouts_table(session)}
<p class="muted">Made by breathsync {_e(__version__)} on {_e(generated)}. Times are minutes:seconds since the
first stored sample. This file is self-contained: it needs no network connection.</p>
</body></html>
"""


def default_report_dir(session_path: Path) -> Path:
    return session_path.parent


def write_report(session: Session, out_dir: Path) -> ReportFiles:
    """Write ``<stem>_report.html`` and ``<stem>_summary.png`` into ``out_dir``.

    Both are rendered in memory first and then moved into place together (``write_all_or_nothing``):
    a failed run leaves no half-written file and keeps an earlier report of the session intact.
    """
    overview = png_bytes(summary_figure(session))
    nudges = nudge_figure(session)
    page = render_html(session, summarise(session), overview, None if nudges is None else png_bytes(nudges))

    def write(directory: Path) -> list[Path]:
        png = directory / f"{session.path.stem}_summary.png"
        png.write_bytes(overview)
        report = directory / f"{session.path.stem}_report.html"
        report.write_text(page, encoding="utf-8")
        return [report, png]

    report, png = write_all_or_nothing(out_dir, write, lambda existing: _earlier_report(session, existing))
    return ReportFiles(report, png)


def _identity(session: Session) -> str:
    """Which session a report is of: its file's name and its start."""
    return f"{session.path.name} {session.start_unix_s!r}"


def _earlier_report(session: Session, path: Path) -> bool:
    """Whether ``path`` is a report of ``session``, or the summary image beside one. A page names its session in a
    meta tag (session 27 on: a page of another session of the same name is not replaced), an older one only by its
    title."""
    page = path.with_name(f"{session.path.stem}_report.html")
    head = file_head(page)
    meta = b'<meta name="breathsync-session" content="'
    if meta in head:
        ours = meta + _e(_identity(session)).encode() + b'"' in head
    else:
        ours = f"<title>breathsync report: {_e(session.path.stem)}</title>".encode() in head
    if path == page:
        return ours
    return file_head(path, 8) == PNG_MAGIC and (not page.exists() or ours)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
