"""A stored session read into memory once, on one time axis, for exports and the report.

Every research output needs the same derived facts: where the session starts (its zero), each
strap's sampling rate, where samples are missing (drop-outs), which stretches the engine judged
as entrainment. They are computed here, once, so that CSV, EDF+, BIDS and the report cannot
disagree about them.

Time: the daemon stores host times on the wall clock (Unix seconds; strap counters mapped to
it), so the **session zero** ``t0_host_s``, the earliest stored sample of either strap, is its
own wall-clock start. Sessions written with another host clock (an arbitrary origin, as some
tests do) fall back to the store's ``created_unix_s`` for the wall-clock start. Every output
expresses times as seconds since the zero (``session_t_s``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..detector import STRAP_RATES_HZ
from ..engine.baseline_file import BaselineFile, stored_calibration
from ..errors import InputError
from ..roles import ROLES as ROLES
from ..store import SampleSeries, SessionStore, StoredEvent, StoredNudge, StoredState, StrapInfo

_UNIX_2001_S = 1e9  # host times above this are wall-clock Unix seconds
DEFAULT_RATE_HZ = 25
FloatArray = npt.NDArray[np.float64]

# Engine decisions (engine/state.py) grouped into what a reader of a report cares about.
THERAPIST_FOLLOWS_DECISIONS = frozenset({"therapist_follows", "nudge", "nudge_suppressed"})
CLIENT_FOLLOWS_DECISIONS = frozenset({"locked_client_follows"})
LOCKED_DECISIONS = THERAPIST_FOLLOWS_DECISIONS | CLIENT_FOLLOWS_DECISIONS | {"locked_unclear"}


@dataclass(frozen=True)
class Gap:
    """Samples of one strap missing from the store (a radio drop-out that backfill did not close).

    ``start_host_t_s`` is when the first missing sample would have been taken, ``end_host_t_s``
    when the first sample after the gap was.
    """

    role: str
    first_counter: int
    last_counter: int
    start_host_t_s: float
    end_host_t_s: float

    @property
    def missing_samples(self) -> int:
        return self.last_counter - self.first_counter + 1

    @property
    def duration_s(self) -> float:
        return self.end_host_t_s - self.start_host_t_s


@dataclass(frozen=True)
class Episode:
    """A stretch in which the engine's decisions say one person follows the other.

    ``follower`` is ``"therapist"`` (the case breathsync nudges) or ``"client"``
    (therapist-led, good practice). ``nudges`` counts nudges issued inside it.
    """

    follower: str
    start_host_t_s: float
    end_host_t_s: float
    nudges: int

    @property
    def duration_s(self) -> float:
        return self.end_host_t_s - self.start_host_t_s


@dataclass(frozen=True)
class RoleData:
    """One strap's part of a session."""

    role: str
    rate_hz: int
    samples: SampleSeries
    events: tuple[StoredEvent, ...]
    strap: StrapInfo | None
    gaps: tuple[Gap, ...]

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def missing_samples(self) -> int:
        return sum(g.missing_samples for g in self.gaps)


@dataclass(frozen=True)
class Session:
    """Everything a research output needs from one session file."""

    path: Path
    t0_host_s: float
    end_host_s: float
    start_unix_s: float | None
    roles: dict[str, RoleData]
    states: tuple[StoredState, ...]
    nudges: tuple[StoredNudge, ...]
    link_events: tuple[tuple[float, str, str, str], ...]
    config: dict[str, Any]
    meta: dict[str, str] = field(default_factory=dict)
    calibration: BaselineFile | None = None  # the therapist's pre-session calibration, if the run had one

    @property
    def duration_s(self) -> float:
        return self.end_host_s - self.t0_host_s

    @property
    def rate_hz(self) -> int:
        """The common rate for outputs that need one time base: the fastest strap's."""
        return max(r.rate_hz for r in self.roles.values())

    @property
    def missing_roles(self) -> list[str]:
        return [role for role in ROLES if role not in self.roles]

    def rel(self, host_t_s: float) -> float:
        """Seconds since the session zero."""
        return host_t_s - self.t0_host_s

    def gaps(self) -> list[Gap]:
        return sorted((g for r in self.roles.values() for g in r.gaps), key=lambda g: g.start_host_t_s)

    def episodes(self) -> list[Episode]:
        return find_episodes(self.states, self.nudges, self.host_stops())

    def host_stops(self) -> list[tuple[float, float]]:
        """(stopped, resumed) host times of each time no run was recording (a Ctrl-C and a resume, a crash): a run
        that resumes says so ('resumed' link events); it had stopped at its links' 'closed' events, or after a crash at
        its last engine state (nothing later is known of it). The engine decided nothing in between."""
        stops: list[tuple[float, float]] = []
        resumes = sorted({t for t, _role, kind, _detail in self.link_events if kind == "resumed"})
        closes = sorted(t for t, _role, kind, _detail in self.link_events if kind == "closed")
        previous = -math.inf
        for resumed in resumes:
            closed = [t for t in closes if previous < t <= resumed]
            decided = [s.t_s for s in self.states if previous < s.t_s < resumed]  # at the resume: the new run's
            stopped = closed[0] if closed else decided[-1] if decided else resumed
            if not decided or stopped >= decided[-1]:
                stops.append((stopped, resumed))
            else:  # 'closed' before the run's last state: a link closed and reopened, the run went on
                stops.append((decided[-1], resumed))
            previous = resumed
        return stops


def load_session(path: str | Path) -> Session:
    """Read a session file without changing it (read-only).

    Raises ``StoreError`` (an ``InputError``) for a missing, foreign or damaged file and
    ``InputError`` for an empty one.
    """
    path = Path(path)
    with SessionStore.open(path, read_only=True) as store:
        straps = {s.role: s for s in store.straps()}
        roles: dict[str, RoleData] = {}
        for role in store.roles():
            series = store.samples(role)
            if len(series.counters) == 0:
                continue
            rate_hz = _rate_hz(straps.get(role), series)
            roles[role] = RoleData(
                role, rate_hz, series, tuple(store.events(role)), straps.get(role), _gaps(role, series, rate_hz)
            )
        if not roles:
            raise InputError(f"{path}: empty session (no samples from either strap)")
        # t0_unix_s: the engine's clock (states' and nudges' t_s) counts from it (a data review: without it a CSV
        # user could not place an efficacy's nudge_t_s).
        meta = {
            key: value
            for key in ("schema_version", "created_unix_s", "t0_unix_s")
            if (value := store.meta(key)) is not None
        }
        created = store.meta_float("created_unix_s")
        states = tuple(store.states())
        nudges = tuple(store.nudges())
        link_events = tuple(store.link_events())
        config = store.config()
        calibration = stored_calibration(store)
    t0 = min(float(r.samples.host_t_s[0]) for r in roles.values())
    end = max(float(r.samples.host_t_s[-1]) + r.period_s for r in roles.values())
    return Session(
        path=path,
        t0_host_s=t0,
        end_host_s=end,
        start_unix_s=t0 if t0 > _UNIX_2001_S else created,
        roles=dict(sorted(roles.items(), key=lambda kv: _role_order(kv[0]))),
        states=states,
        nudges=nudges,
        link_events=link_events,
        config=config,
        meta=meta,
        calibration=calibration,
    )


def _role_order(role: str) -> tuple[int, str]:
    """Therapist first, then client, then anything else alphabetically (stable output order)."""
    return (ROLES.index(role) if role in ROLES else len(ROLES), role)


def _rate_hz(strap: StrapInfo | None, series: SampleSeries) -> int:
    """The strap's own report wins; without it, the stored times tell (nearest supported rate)."""
    if strap is not None and strap.rate_hz > 0:
        return int(strap.rate_hz)
    if len(series.counters) < 2:
        return DEFAULT_RATE_HZ
    dt = np.diff(series.host_t_s) / np.maximum(np.diff(series.counters), 1)
    measured = 1.0 / float(np.median(dt)) if float(np.median(dt)) > 0 else DEFAULT_RATE_HZ
    return min(STRAP_RATES_HZ, key=lambda r: abs(r - measured))


def _gaps(role: str, series: SampleSeries, rate_hz: int) -> tuple[Gap, ...]:
    counters = series.counters
    if len(counters) < 2:
        return ()
    jumps = np.nonzero(np.diff(counters) > 1)[0]
    period = 1.0 / rate_hz
    return tuple(
        Gap(
            role,
            int(counters[i] + 1),
            int(counters[i + 1] - 1),
            float(series.host_t_s[i]) + period,
            float(series.host_t_s[i + 1]),
        )
        for i in jumps
    )


EPISODE_BRIDGE_S = 10.0  # interruptions up to this long do not split an episode
EPISODE_MIN_S = 5.0  # shorter stretches (without a nudge) are flicker, not episodes


def find_episodes(
    states: Sequence[StoredState], nudges: Sequence[StoredNudge], host_stops: Sequence[tuple[float, float]] = ()
) -> list[Episode]:
    """Stretches in which the engine's decisions say the same person follows.

    A decision holds from its state until the next state (the engine updates at least once per
    breath, and on every pause), or until the run stopped (``host_stops``: (stopped, resumed), ``Session.host_stops``;
    an episode ran on through the minutes no run was recording, an outside review). The decision of a single update
    flickers while locking and direction are near their thresholds, so runs of the same follower less than
    ``EPISODE_BRIDGE_S`` apart are one episode, and what stays shorter than ``EPISODE_MIN_S``
    is left out unless a nudge was issued in it.
    """
    runs: list[tuple[str, float, float]] = []
    current: str | None = None
    start = 0.0
    previous_t = -math.inf
    for state in states:
        follower = _follower(state.decision)
        stop = next((a for a, b in host_stops if previous_t <= a and b <= state.t_s), None)
        if stop is not None and current is not None:  # the run ended before this state: so did its decision
            runs.append((current, start, max(start, stop)))
            current = None
        previous_t = state.t_s
        if follower != current:
            if current is not None:
                runs.append((current, start, state.t_s))
            current, start = follower, state.t_s
    if current is not None and states:
        runs.append((current, start, states[-1].t_s))

    def flicker(run: tuple[str, float, float]) -> bool:
        return run[2] - run[1] < EPISODE_MIN_S and _episode(*run, nudges).nudges == 0

    while True:
        merged: list[tuple[str, float, float]] = []
        for follower, start, end in runs:
            if merged and merged[-1][0] == follower and start - merged[-1][2] <= EPISODE_BRIDGE_S:
                merged[-1] = (follower, merged[-1][1], end)
            else:
                merged.append((follower, start, end))
        # A moment of the other person 'following' inside an episode is flicker too: drop it and merge again.
        inside = [
            i
            for i in range(1, len(merged) - 1)
            if flicker(merged[i])
            and merged[i - 1][0] == merged[i + 1][0] != merged[i][0]
            and merged[i + 1][1] - merged[i - 1][2] <= EPISODE_BRIDGE_S
        ]
        if not inside:
            break
        runs = [run for i, run in enumerate(merged) if i != inside[0]]
    return [_episode(*run, nudges) for run in merged if not flicker(run)]


def _follower(decision: str | None) -> str | None:
    if decision in THERAPIST_FOLLOWS_DECISIONS:
        return "therapist"
    if decision in CLIENT_FOLLOWS_DECISIONS:
        return "client"
    return None


def _episode(follower: str, start: float, end: float, nudges: Sequence[StoredNudge]) -> Episode:
    count = sum(1 for n in nudges if start <= n.t_s <= end) if follower == "therapist" else 0
    return Episode(follower, start, end, count)


def resample(role: RoleData, grid_host_t_s: FloatArray) -> FloatArray:
    """The strap's samples linearly interpolated onto ``grid_host_t_s``; NaN where data is missing.

    A grid point gets a value when it lies between two consecutive samples (counters differ by
    one) or within half a sample period of a stored sample (the edges of the recording and of
    each gap). Everything else is a drop-out or outside the recording: NaN, never invented data.
    """
    # Never decreasing, as interpolation and search need: the link's first clock fit, made from a few packets,
    # dates a strap's first seconds a little late, and host times step back by up to ~20 ms once it settles.
    t = np.maximum.accumulate(role.samples.host_t_s)
    values = role.samples.values.astype(np.float64)
    out = np.interp(grid_host_t_s, t, values)
    i = np.clip(np.searchsorted(t, grid_host_t_s, side="right") - 1, 0, len(t) - 1)
    j = np.minimum(i + 1, len(t) - 1)
    inside = (grid_host_t_s >= t[0]) & (grid_host_t_s <= t[-1])
    consecutive = inside & (role.samples.counters[j] - role.samples.counters[i] == 1)
    near_i = np.abs(grid_host_t_s - t[i]) <= 0.5 * role.period_s + 1e-9
    near_j = np.abs(t[j] - grid_host_t_s) <= 0.5 * role.period_s + 1e-9
    held = np.where(near_i, values[i], values[j])
    result = np.where(consecutive, out, np.where(near_i | near_j, held, np.nan))
    return np.asarray(result, dtype=np.float64)


MAX_GRID_S = 7 * 24 * 3600.0  # one time base over more than a week of host time: a strap's clock far off


def common_grid(session: Session) -> FloatArray:
    """Host times of a common time base at the session rate, from the session zero to its end.

    ``InputError`` when that spans more than ``MAX_GRID_S``: a session continued (``run --name``) days later is
    fine, but sample times years apart (one strap's clock wrong, a hand-edited file) would ask for gigabytes.
    """
    if not session.duration_s <= MAX_GRID_S:
        spans = "; ".join(
            f"{r.role} {float(r.samples.host_t_s[0]):.0f}-{float(r.samples.host_t_s[-1]):.0f} s"
            for r in session.roles.values()
        )
        raise InputError(
            f"{session.path}: its samples span {session.duration_s / 86400:.0f} days of host time ({spans}): too "
            f"long for one time base (at most {MAX_GRID_S / 86400:.0f} days); are a strap's sample times wrong? "
            "The CSV and BIDS exports keep each strap's own times"
        )
    n = max(1, math.ceil(session.duration_s * session.rate_hz - 1e-6))
    return session.t0_host_s + np.arange(n, dtype=np.float64) / session.rate_hz


def breath_rates_bpm(role: RoleData) -> tuple[FloatArray, FloatArray]:
    """Breath-by-breath rate from the strap's peak-to-peak intervals: (host times, breaths/min)."""
    pairs = [
        (e.host_t_s, 60.0 * role.rate_hz / e.interval_samples)
        for e in role.events
        if e.kind == "peak" and e.interval_samples > 0
    ]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    data = np.asarray(pairs, dtype=np.float64)
    return data[:, 0], data[:, 1]
