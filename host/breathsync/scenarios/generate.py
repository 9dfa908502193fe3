"""Seeded dyad scenarios with known ground truth, built from real recordings.

Kinds:

* ``therapist_follows``: from ``onset_s`` the therapist's phase is pulled toward the client's
  (with a lag), the therapist's mean rate converges toward the client's, and optionally the
  therapist's depth mimics the client's; the episode ends at ``offset_s`` (decoupling);
* ``client_follows``: the same with roles swapped (therapist-led: must not be nudged);
* ``independent``: two real people, each with their own tempo drift;
* ``similar_rate``: independent, but the client's tempo is scaled so both breathe at nearly the
  same rate (slow beat drift: the classic false-synchrony trap).

Any scenario may carry speech-like stretches (long, irregular exhalations), drop-outs (radio
gaps and flat, loose-strap stretches) and a therapist clock drift. Everything is drawn from one
``numpy.random.Generator`` seeded by ``seed``: the same seed gives the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..roles import Role
from .sources import SCENARIO_RATE_HZ, FloatArray, RespSource
from .warp import MAX_SPEED, MIN_SPEED, STEP_S, Warped, ou_log_tempo, render, warp

Kind = Literal["therapist_follows", "client_follows", "independent", "similar_rate"]
KINDS: tuple[Kind, ...] = ("therapist_follows", "client_follows", "independent", "similar_rate")
MAX_RATE_RATIO = 1.45  # pairs further apart would need implausible convergence
SIMILAR_SCALE_RANGE = (1.25 * MIN_SPEED, MAX_SPEED / 1.25)  # a similar-rate client's tempo scale (ValueError beyond)


@dataclass(frozen=True)
class Scenario:
    """Two recordings (therapist, client) at ``sampling_rate``, both starting at t = 0, with truth."""

    name: str
    kind: Kind
    seed: int
    therapist: FloatArray
    client: FloatArray
    sampling_rate: float
    onset_s: float | None = None
    offset_s: float | None = None
    coupling_rad_s: float = 0.0
    lag_s: float = 0.0
    convergence: float = 0.0
    mimicry: float = 0.0
    gaps_s: dict[Role, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    flat_s: dict[Role, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    speech_s: dict[Role, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    drift_ppm: float = 0.0
    inverted: tuple[Role, ...] = ()  # whose signal is upside down (inspiration pointing down)

    @property
    def duration_s(self) -> float:
        return len(self.therapist) / self.sampling_rate

    @property
    def follower(self) -> Role | None:
        if self.kind == "therapist_follows":
            return "therapist"
        if self.kind == "client_follows":
            return "client"
        return None


@dataclass(frozen=True)
class Options:
    """Knobs of the generator (probabilities and ranges); defaults describe the benchmark mix."""

    baseline_s: float = 150.0  # earliest onset: the engine must have learned the baselines first
    min_episode_s: float = 100.0
    max_episode_s: float = 240.0
    coupling_rad_s: tuple[float, float] = (0.4, 1.2)  # absolute K, used only when coupling_rel is None
    coupling_rel: tuple[float, float] | None = (0.5, 1.0)  # K as a share of the follower's 2 pi f (see below)
    own_damping: tuple[float, float] = (0.4, 0.8)
    lag_s: tuple[float, float] = (0.0, 1.5)
    rise_s: tuple[float, float] = (3.0, 15.0)  # coupling ramp after onset; onset is the ramp's start
    convergence: tuple[float, float] = (0.5, 1.0)
    mimicry_p: float = 0.5
    speech_p: float = 0.3
    # Of the talking in a follow dyad, the share the follower does (a therapist who catches the client's rhythm while
    # talking to them); the leader talks otherwise. Always the leader made 'the irregular one leads' a rule of the
    # generator, which the time-lag asymmetry cue would learn (an outside review: 80 % nudged with the leader
    # talking, 68 % with the follower).
    follower_speaks_p: float = 0.5
    gap_p: float = 0.3
    flat_p: float = 0.2
    drift_p: float = 0.5
    drift_ppm: tuple[float, float] = (100.0, 600.0)
    tempo_sd: float = 0.06
    tempo_tau_s: float = 40.0
    inverted_p: float = 0.0  # each person's sensor reads inspiration downward (a strap worn or wired upside down)


def _ramp(t: FloatArray, start: float, rise_s: float) -> FloatArray:
    return np.asarray(np.clip((t - start) / max(rise_s, 1e-6), 0.0, 1.0), dtype=np.float64)


def _segments(
    rng: np.random.Generator, duration_s: float, count: int, length_s: tuple[float, float]
) -> tuple[tuple[float, float], ...]:
    out: list[tuple[float, float]] = []
    for _ in range(count):
        length = float(rng.uniform(*length_s))
        start = float(rng.uniform(20.0, max(21.0, duration_s - length - 5.0)))
        out.append((round(start, 3), round(start + length, 3)))
    return tuple(sorted(out))


def _mask(t: FloatArray, segs: tuple[tuple[float, float], ...]) -> FloatArray:
    m = np.zeros(len(t))
    for a, b in segs:
        m[(t >= a) & (t < b)] = 1.0
    return m


def _rate_hz(w: Warped, a_s: float, b_s: float) -> float:
    i, j = int(a_s / STEP_S), min(len(w.phase_cycles) - 1, int(b_s / STEP_S))
    return float((w.phase_cycles[j] - w.phase_cycles[i]) / max((j - i) * STEP_S, 1e-6))


def _envelope(x: FloatArray, sampling_rate: float) -> FloatArray:
    """Breath amplitude envelope: rolling standard deviation over ~10 s."""
    w = int(10 * sampling_rate)
    c1 = np.concatenate(([0.0], np.cumsum(x)))
    c2 = np.concatenate(([0.0], np.cumsum(x * x)))
    idx = np.arange(len(x))
    lo = np.clip(idx - w // 2, 0, len(x))
    hi = np.clip(idx + w // 2, 0, len(x))
    n = np.maximum(hi - lo, 1)
    mean = (c1[hi] - c1[lo]) / n
    var = np.maximum((c2[hi] - c2[lo]) / n - mean * mean, 0.0)
    return np.asarray(np.sqrt(var), dtype=np.float64)


def make_scenario(
    kind: Kind,
    therapist_src: RespSource,
    client_src: RespSource,
    seed: int,
    duration_s: float,
    options: Options | None = None,
) -> Scenario:
    """Build one dyad. Raises ValueError when the sources are too short or too far apart in rate."""
    opt = options or Options()
    rng = np.random.default_rng(seed)
    fs = SCENARIO_RATE_HZ
    n_steps = int(duration_s / STEP_S) + 2
    t = np.asarray(np.arange(n_steps) * STEP_S, dtype=np.float64)
    followers: dict[str, Role] = {"therapist_follows": "therapist", "client_follows": "client"}
    follower = followers.get(kind)
    srcs: dict[Role, RespSource] = {"therapist": therapist_src, "client": client_src}
    ratio = client_src.rate_bpm / therapist_src.rate_bpm
    if kind != "similar_rate" and not 1 / MAX_RATE_RATIO <= ratio <= MAX_RATE_RATIO:
        raise ValueError("sources too far apart in rate")
    tempo: dict[Role, FloatArray] = {r: ou_log_tempo(rng, n_steps, opt.tempo_sd, opt.tempo_tau_s) for r in srcs}
    if kind == "similar_rate":
        # Only within what the re-timing can play (MIN_SPEED..MAX_SPEED, with room for the tempo's own wander): a
        # 6/min source sped up to 20/min was clamped to 8/min, and the pair was not at similar rates at all.
        if not SIMILAR_SCALE_RANGE[0] <= 1.0 / ratio <= SIMILAR_SCALE_RANGE[1]:
            raise ValueError("sources too far apart in rate to bring to a similar rate")
        tempo["client"] = tempo["client"] / ratio * float(rng.uniform(0.96, 1.04))
    for src in srcs.values():
        if src.duration_s < duration_s:
            raise ValueError(f"{src.name} too short for {duration_s:.0f} s")
    tau0 = {r: float(rng.uniform(0.0, max(0.0, srcs[r].duration_s - duration_s * 1.5))) for r in srcs}
    speech: dict[Role, tuple[tuple[float, float], ...]] = {}
    speaker: Role = "client" if follower == "therapist" else "therapist" if follower == "client" else "client"
    if rng.random() < opt.speech_p:
        if follower is not None and rng.random() < opt.follower_speaks_p:
            speaker = follower
        speech[speaker] = _segments(rng, duration_s, int(rng.integers(1, 3)), (20.0, 60.0))
    onset = offset = None
    k_max = lag = conv = mim = 0.0
    if follower is None:
        warped = {r: warp(srcs[r], tau0[r], tempo[r], rng, speech=_mask(t, speech.get(r, ()))) for r in srcs}
    else:
        leader: Role = "client" if follower == "therapist" else "therapist"
        onset = float(rng.uniform(opt.baseline_s, duration_s - opt.min_episode_s))
        offset = min(duration_s, onset + float(rng.uniform(opt.min_episode_s, opt.max_episode_s)))
        k_draw = float(rng.uniform(*(opt.coupling_rel or opt.coupling_rad_s)))
        lag = float(rng.uniform(*opt.lag_s))
        conv = float(rng.uniform(*opt.convergence))
        mim = float(rng.uniform(0.3, 0.8)) if rng.random() < opt.mimicry_p else 0.0
        lead = warp(srcs[leader], tau0[leader], tempo[leader], rng, speech=_mask(t, speech.get(leader, ())))
        rise_s = float(rng.uniform(*opt.rise_s))
        on = _ramp(t, onset, rise_s) * (1.0 - _ramp(t, offset, 10.0))
        f_lead = _rate_hz(lead, onset, offset)
        f_own = 1.0 / float(np.median(np.diff(srcs[follower].peaks_s)))
        own_mean = float(np.mean(tempo[follower][int(onset / STEP_S) : int(offset / STEP_S) + 1]))
        conv_factor = np.exp(conv * on * np.log(f_lead / (f_own * own_mean)))
        # Coupling relative to the follower's own (converged) breathing frequency: the same K pulls a
        # 10/min breather far harder than a 20/min one, and a fixed K leaves highly variable
        # breathers unlocked (not 'phase-locked with a consistent lag'; docs/engine.md).
        f_conv = f_own * own_mean * float(np.exp(conv * np.log(f_lead / (f_own * own_mean))))
        k_max = k_draw * 2 * np.pi * f_conv if opt.coupling_rel is not None else k_draw
        lag_steps = round(lag / STEP_S)
        lead_phase = np.concatenate([np.full(lag_steps, lead.phase_cycles[0]), lead.phase_cycles])[:n_steps]
        follow = warp(
            srcs[follower],
            tau0[follower],
            tempo[follower] * conv_factor,
            rng,
            leader_phase=lead_phase,  # whole cycles: the follower's end-inspiration trails the leader's by the lag
            coupling_rad_s=k_max * on,
            speech=_mask(t, speech.get(follower, ())),
            own_weight=1.0 - float(rng.uniform(*opt.own_damping)) * on,
        )
        warped = {leader: lead, follower: follow}
    for role, person in warped.items():
        if float(person.tau_s[-1]) > srcs[role].duration_s:  # re-timing ran past the recording's end
            raise ValueError(f"{srcs[role].name} too short for this re-timing")
    n_out = int(duration_s * fs)
    signals = {r: render(srcs[r], warped[r], fs, n_out) for r in srcs}
    if follower is not None and mim > 0 and onset is not None and offset is not None:
        leader_r: Role = "client" if follower == "therapist" else "therapist"
        env = _envelope(signals[leader_r], fs)
        rel = env / max(float(np.median(env)), 1e-12)
        t_out = np.arange(n_out) / fs
        w = _ramp(t_out, onset, 20.0) * (1.0 - _ramp(t_out, offset, 10.0)) * mim
        x = signals[follower]
        centre = x - _envelope_mean(x, fs)
        signals[follower] = x + centre * w * (np.clip(rel, 0.4, 2.5) - 1.0)
    gaps: dict[Role, tuple[tuple[float, float], ...]] = {}
    flats: dict[Role, tuple[tuple[float, float], ...]] = {}
    for role in ("therapist", "client"):
        if rng.random() < opt.gap_p:
            gaps[role] = _segments(rng, duration_s, 1, (3.0, 30.0))
        if rng.random() < opt.flat_p:
            flats[role] = _segments(rng, duration_s, 1, (8.0, 30.0))
            for a, b in flats[role]:
                i, j = int(a * fs), int(b * fs)
                x = signals[role]
                x[i:j] = x[i] + rng.normal(0.0, 0.01 * float(np.std(x)), j - i)
    drift = 0.0
    if rng.random() < opt.drift_p:
        drift = float(rng.uniform(*opt.drift_ppm)) * float(rng.choice([-1.0, 1.0]))
        x = signals["therapist"]
        t_out = np.arange(n_out) / fs
        signals["therapist"] = np.interp(t_out * (1.0 + drift * 1e-6), t_out, x)
    inverted: tuple[Role, ...] = ()
    if opt.inverted_p > 0:  # drawn last and only when asked for: every other scenario stays as it was
        inverted = tuple(r for r in ("therapist", "client") if rng.random() < opt.inverted_p)
        for role in inverted:
            signals[role] = -signals[role]
    return Scenario(
        name=f"{kind}:{therapist_src.name}+{client_src.name}:{seed}",
        kind=kind,
        seed=seed,
        therapist=signals["therapist"],
        client=signals["client"],
        sampling_rate=fs,
        onset_s=onset,
        offset_s=offset,
        coupling_rad_s=k_max,
        lag_s=lag,
        convergence=conv,
        mimicry=mim,
        gaps_s=gaps,
        flat_s=flats,
        speech_s=speech,
        drift_ppm=drift,
        inverted=inverted,
    )


def _envelope_mean(x: FloatArray, sampling_rate: float) -> FloatArray:
    w = int(10 * sampling_rate)
    c = np.concatenate(([0.0], np.cumsum(x)))
    idx = np.arange(len(x))
    lo = np.clip(idx - w // 2, 0, len(x))
    hi = np.clip(idx + w // 2, 0, len(x))
    return np.asarray((c[hi] - c[lo]) / np.maximum(hi - lo, 1), dtype=np.float64)


def scenario_set(
    sources: list[RespSource],
    kinds: tuple[Kind, ...],
    per_kind: int,
    seed: int,
    duration_s: float,
    options: Options | None = None,
) -> list[Scenario]:
    """``per_kind`` scenarios of each kind from random pairs of distinct sources (seeded)."""
    rng = np.random.default_rng(seed)
    out: list[Scenario] = []
    for kind in kinds:
        made = attempts = 0
        while made < per_kind and attempts < per_kind * 50:
            attempts += 1
            i, j = rng.choice(len(sources), size=2, replace=False)
            sub_seed = int(rng.integers(0, 2**31 - 1))
            try:
                out.append(make_scenario(kind, sources[int(i)], sources[int(j)], sub_seed, duration_s, options))
            except ValueError:
                continue
            made += 1
    return out
