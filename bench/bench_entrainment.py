"""Entrainment benchmark: the engine vs a windowed cross-lagged correlation baseline, same run.

Scenarios come from ``breathsync.scenarios`` (real recordings re-timed with known ground truth).
Thresholds are calibrated on one set of source recordings and seeds and evaluated on held-out
recordings and seeds:

* calibration: BIDMC records 01-13, BITalino belt minutes 0-40 (4 x 10 min), seed 1001;
* evaluation: BIDMC records 14-26, BITalino belt minutes 40-80 (4 x 10 min), seed 2002.

Every dyad goes through the full replay (ADC + firmware detector chunk by chunk, host merge)
once; the engine's per-breath states and the baseline's per-second states are recorded, and the
decision rules (the engine's own ``decide_nudges`` and ``wclc_nudges``) are replayed over them
for each candidate threshold. Writes bench/results/entrainment.md.
"""

from __future__ import annotations

import compileall
import itertools
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

import breathsync
import breathsync.fwcore
from breathsync.datasets import shared_data_dir
from breathsync.engine import Config, EngineState, EntrainmentEngine, dyad_stream, run_engine
from breathsync.engine.decision import Classified, classify_states, decide_nudges
from breathsync.engine.wclc import WclcState, WindowedCrossLag, wclc_nudges
from breathsync.scenarios import KINDS, Options, Scenario, bidmc_sources, biopeaks_segments, scenario_set
from breathsync.scenarios.sources import make_source

RESULTS = Path(__file__).resolve().parent / "results" / "entrainment.md"
DURATION_S = 300.0
# 20 h of independent pairs per set: a false-nudge rate near 0.5/h is a handful of events, so fewer hours
# would make the calibrated threshold and the held-out figure mostly Poisson noise.
# 150 client-follows episodes: the <= 5 % target and the calibration's 2.5 % budget need more than the
# 1-in-50 resolution of a smaller set (one episode moved the held-out figure from 2 % to 6 %).
PER_KIND = {"therapist_follows": 100, "client_follows": 150, "independent": 200, "similar_rate": 200}
# A nudge up to this long after an episode ends still belongs to it: its coupling ramps down over 10 s, and the
# engine's window (16 s, longer for slow breathing) holds the episode's breaths for as long after that.
GRACE_S = 30.0
CAL_FNH_BUDGET = 0.25  # half the 0.5/h target: margin for the held-out set
CAL_CF_BUDGET = 0.025
# Calibration grid: EngineConfig field -> candidate values (weight_response also sets weight_lagged).
GRID: dict[str, tuple[float, ...]] = {
    "plv_min": (0.7, 0.8),
    "surrogate_p_max": (0.1, 0.2),
    "direction_min": (0.5, 1.0, 1.5, 2.0, 2.5),
    "min_locked_s": (10.0, 15.0, 20.0),
    "lock_leak": (0.25, 0.5),
    "weight_response": (1.0, 2.0),  # period response and lagged dependency (rate move has weight 1)
    "weight_lead": (0.0, 0.75, 1.5),
    "adjust_min": (1.0, 2.0),
    "weight_lag_asymmetry": (0.0, 8.0, 16.0, 24.0),
}
TIMER_FIELDS = ("min_locked_s", "lock_leak")  # grid fields that do not change the per-update classification
# The calibration set's follow episodes draw from wider ranges than the generator's defaults: how long a
# follower lags, how fast coupling sets in, how strong it is and how far the rate converges are not known
# for real therapists, so the thresholds must not lean on one guess (the held-out set keeps the defaults,
# and the variants below change one assumption at a time).
CAL_OPTIONS = Options(lag_s=(0.0, 3.0), rise_s=(0.5, 15.0), coupling_rel=(0.3, 1.0), convergence=(0.0, 1.0))
# Follow episodes under other generator assumptions, scored with the calibrated engine (not re-calibrated):
# how much the numbers lean on this generator's choices (onset ramp, lag range, coupling, convergence).
VARIANTS: dict[str, dict[str, object]] = {
    "abrupt onset (coupling ramp 0.5-2 s)": {"rise_s": (0.5, 2.0)},
    "phase coupling only (no rate convergence)": {"convergence": (0.0, 0.0)},
    "weak coupling (K 0.3-0.5 x 2 pi f)": {"coupling_rel": (0.3, 0.5)},
    "no lag (0-0.3 s)": {"lag_s": (0.0, 0.3)},
    "long lag (1.5-3 s, up to most of a breath)": {"lag_s": (1.5, 3.0)},
    "clean (no speech, gaps, flat stretches, drift)": {"speech_p": 0.0, "gap_p": 0.0, "flat_p": 0.0, "drift_p": 0.0},
    # Most episodes above are cut short by the 300 s dyad's end; these end inside it and leave decoupled
    # time after them (session 8: the lock timer's left-over evidence nudged there).
    "episodes ending mid-dyad (480 s dyads, episodes 100-150 s)": {"duration_s": 480.0, "max_episode_s": 150.0},
    # A sensor worn or wired upside down (session 9: engine.auto_polarity reads a clearly inverted one the right
    # way round); each person's signal is inverted with this probability.
    "signals upside down (each person's with p 0.5)": {"inverted_p": 0.5},
    # Onsets from 30 s, before the engine's 120 s baseline period is over: a therapist who starts following at
    # once has the client's rhythm in their own 'baseline' (session 10; an outside probe measured 45 % nudged).
    "early onsets (from 30 s, inside the baseline period)": {"baseline_s": 30.0},
}
VARIANT_PER_KIND = 50
# The held-out recordings re-timed (x their breathing rate): the engine's spans were chosen around 15/min, and
# the people in a real session may breathe at 8/min or 30/min (session 9: slow breathers were harder).
RATE_FACTORS = (0.6, 0.75, 1.6)
RATE_PER_KIND = {"therapist_follows": 50, "client_follows": 50, "independent": 100, "similar_rate": 100}
CLI_SPEED_DYADS = 24  # the held-out dyads slowest in process, timed again through the command line
# ... each the best of this many runs: on this virtual machine identical runs differ by up to 1.6x in CPU
# time (0.14 s and 0.23 s for the same engine replay, minutes apart), so one run measures the machine.
CLI_SPEED_RUNS = 3
WCLC_LOCK_GRID = (0.0, 5.0, 10.0, 20.0, 30.0)
# Fine where the false-nudge rate turns (steps of 0.05 near the top jumped from 0.96/h to 0.04/h: no point of the
# grid was at the engine's rate, an outside review).
R_GRID = tuple(
    sorted({*(round(x, 2) for x in np.arange(0.3, 0.8, 0.05)), *(round(x, 2) for x in np.arange(0.8, 0.99, 0.01))})
)


@dataclass(frozen=True)
class Trace:
    scenario: Scenario
    engine_states: list[EngineState]
    wclc_states: list[WclcState]
    engine_s: float  # CPU time of replay + engine for this dyad (one core)


@dataclass(frozen=True)
class Score:
    detected: float
    latency_median_s: float
    latency_p90_s: float
    fnh_independent: float
    fnh_outside: float
    fnh_all: float
    client_follows_nudged: float
    n_tf: int
    n_cf: int
    hours_independent: float
    hours_outside: float
    fnh_after: float  # of the outside ones: after an episode's window ended (most outside time is before onset)
    hours_after: float


def _trace(scenario: Scenario) -> Trace:
    started = time.process_time()
    stream = list(dyad_stream(scenario.therapist, scenario.client, scenario.sampling_rate, gaps_s=scenario.gaps_s))
    states = [o for o in run_engine(stream, EntrainmentEngine(Config())) if isinstance(o, EngineState)]
    elapsed = time.process_time() - started
    wclc = list(run_engine(stream, WindowedCrossLag()))
    return Trace(scenario, states, wclc, elapsed)


def _replay_speed(scenario: Scenario) -> float:
    """x real time of one dyad's replay (strap simulation, detector, engine), in this process's CPU time.

    Timed one dyad at a time with no other bench process running: the target is per dyad on one
    core, and two replays side by side on this 2-core machine slow each other down (shared caches
    and memory bandwidth; CPU time too, not only wall time).
    """
    started = time.process_time()
    stream = dyad_stream(scenario.therapist, scenario.client, scenario.sampling_rate, gaps_s=scenario.gaps_s)
    for _ in run_engine(stream, EntrainmentEngine(Config())):
        pass
    return scenario.duration_s / (time.process_time() - started)


def _command_line_speed(scenarios: Sequence[Scenario]) -> list[float]:
    """x real time of ``breathsync replay`` as a user runs it on two CSV files: interpreter start-up,
    imports, reading, strap simulation, engine and JSON Lines out, in the child process's CPU time.

    The in-process figure (``_replay_speed``) leaves out what a user pays once per dyad: until session 8
    the command imported the Bluetooth stacks (0.5 s) before reading a byte, and an 8-minute dyad took
    1.1 s (~430x) while the engine alone ran at ~2000x. Radio gaps are not written (timing only)."""
    speeds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="breathsync-speed-") as tmp:
        for sc in scenarios:
            files = []
            for role, signal in (("therapist", sc.therapist), ("client", sc.client)):
                path = Path(tmp) / f"{role}.csv"
                path.write_text("resp\n" + "\n".join(f"{v:.6g}" for v in signal.tolist()) + "\n")
                files.append(str(path))
            args = ["--therapist", files[0], "--client", files[1], "--rate", f"{sc.sampling_rate:g}"]
            speeds.append(sc.duration_s / _command_line_cpu_s(args))
    return speeds


def _compile_package() -> None:
    """The package runs from bytecode, as an installed one does (pip compiles on install, a checkout on first
    import): with PYTHONDONTWRITEBYTECODE set, as on the development VM, every run compiled ~25 modules
    from source first (~20 ms, 7 % of a 300 s dyad's replay)."""
    for package in (breathsync, breathsync.fwcore):
        compileall.compile_dir(Path(str(package.__file__)).parent, quiet=1)


def _command_line_cpu_s(replay_args: list[str]) -> float:
    """CPU time of ``breathsync replay replay_args`` in a child process, best of CLI_SPEED_RUNS."""
    runs_s = []
    for _ in range(CLI_SPEED_RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(  # its notes (missing samples) are not the bench's output
            [sys.executable, "-m", "breathsync", "replay", *replay_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=600,
        )
        if proc.returncode:
            raise RuntimeError(f"breathsync replay {' '.join(replay_args)}: {proc.stderr.strip()}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs_s.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return min(runs_s)


EXPORT_RATE_HZ = 1000.0  # a lab export: BITalino's OpenSignals records at 1000 Hz by default
EXPORT_GAPS_S = (1.0, 2.0, 4.0, 1.5, 3.0, 2.5)  # a logger's missing samples, written as blank rows


def _export_speed(sc: Scenario) -> list[tuple[str, float]]:
    """x real time of ``breathsync replay`` on one dyad written the ways other tools write recordings, twice over
    (two 300 s dyads back to back: a session is minutes long, and the fixed start-up is not what is timed here):
    at EXPORT_RATE_HZ in six columns with a sequence number and a time column, and at the dyad's own rate with
    EXPORT_GAPS_S of blank rows (replayed as drop-outs). The 125 Hz one-column files of ``_command_line_speed``
    are the easiest case for the reader."""
    rate = sc.sampling_rate
    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="breathsync-export-") as tmp:
        signals = {role: np.tile(signal, 2) for role, signal in (("therapist", sc.therapist), ("client", sc.client))}
        duration_s = len(signals["therapist"]) / rate
        files = []
        for role, signal in signals.items():
            t_s = np.arange(int(duration_s * EXPORT_RATE_HZ)) / EXPORT_RATE_HZ
            resp = np.interp(t_s, np.arange(len(signal)) / rate, signal)
            other = np.round(1000 * np.sin(2 * np.pi * 1.1 * t_s))  # an ECG-like channel, unused
            table = np.column_stack((np.arange(len(t_s)), t_s, other, other, resp, other))
            path = Path(tmp) / f"{role}_export.csv"
            np.savetxt(
                path,
                table,
                fmt=["%d", "%.3f", "%d", "%d", "%.6g", "%d"],
                delimiter=",",
                comments="",
                header="nSeq,time_s,ecg,eda,resp,acc",
            )
            files.append(str(path))
        args = ["--therapist", files[0], "--client", files[1], "--rate", f"{EXPORT_RATE_HZ:g}", "--column", "resp"]
        results.append((f"{EXPORT_RATE_HZ:g} Hz, six columns", duration_s / _command_line_cpu_s(args)))
        files = []
        for n, (role, signal) in enumerate(signals.items()):
            cells = [f"{v:.6g}" for v in signal.tolist()]
            for k, gap_s in enumerate(EXPORT_GAPS_S):
                start = int((k + 1 + 0.5 * n) * duration_s / (len(EXPORT_GAPS_S) + 1) * rate)
                cells[start : start + int(gap_s * rate)] = [""] * int(gap_s * rate)
            path = Path(tmp) / f"{role}_gaps.csv"
            path.write_text("resp\n" + "\n".join(cells) + "\n")
            files.append(str(path))
        args = ["--therapist", files[0], "--client", files[1], "--rate", f"{rate:g}"]
        results.append((f"{rate:g} Hz with missing samples", duration_s / _command_line_cpu_s(args)))
    return results


def _score(traces: Sequence[Trace], nudges: Sequence[list[float]], baseline_s: float) -> Score:
    latencies: list[float] = []
    n_tf = n_cf = cf_hit = 0
    false_ind = false_out = false_after = 0
    h_ind = h_out = h_after = 0.0
    for tr, times in zip(traces, nudges, strict=True):
        sc = tr.scenario
        usable_h = (sc.duration_s - baseline_s) / 3600.0
        if sc.onset_s is None or sc.offset_s is None:
            false_ind += len(times)
            h_ind += usable_h
            continue
        end = sc.offset_s + GRACE_S
        inside = [t for t in times if sc.onset_s <= t <= end]
        false_out += len(times) - len(inside)
        false_after += sum(t > end for t in times)
        h_after += max(0.0, sc.duration_s - max(end, baseline_s)) / 3600.0
        # Only the part of the episode's window after the baseline period leaves usable time (an onset may
        # come before the engine decides anything: the early-onset variant).
        h_out += usable_h - max(0.0, min(end, sc.duration_s) - max(sc.onset_s, baseline_s)) / 3600.0
        if sc.kind == "therapist_follows":
            n_tf += 1
            if inside:
                latencies.append(inside[0] - sc.onset_s)
        else:
            n_cf += 1
            cf_hit += bool(inside)
    return Score(
        detected=len(latencies) / n_tf if n_tf else float("nan"),
        latency_median_s=statistics.median(latencies) if latencies else float("nan"),
        latency_p90_s=float(np.percentile(latencies, 90)) if latencies else float("nan"),
        fnh_independent=false_ind / h_ind if h_ind else float("nan"),
        fnh_outside=false_out / h_out if h_out else float("nan"),
        fnh_all=(false_ind + false_out) / (h_ind + h_out) if h_ind + h_out else float("nan"),
        client_follows_nudged=cf_hit / n_cf if n_cf else float("nan"),
        n_tf=n_tf,
        n_cf=n_cf,
        hours_independent=h_ind,
        hours_outside=h_out,
        fnh_after=false_after / h_after if h_after else float("nan"),
        hours_after=h_after,
    )


def _best(
    candidates: Sequence[tuple[object, Score]], fnh_budget: float, cf_budget: float | None
) -> tuple[object, Score]:
    ok = [
        (p, s)
        for p, s in candidates
        if s.fnh_all <= fnh_budget and (cf_budget is None or s.client_follows_nudged <= cf_budget)
    ]
    pool = ok or sorted(candidates, key=lambda c: c[1].fnh_all)[:1]
    # Most episodes nudged, then the shortest latency (to the second); among equals the safer point:
    # fewer client-follows nudges, then fewer false nudges (all on the calibration set).
    return max(pool, key=lambda c: _preference(c[1]))


def _preference(s: Score) -> tuple[float, float, float, float]:
    def known(x: float, missing: float) -> float:
        return x if x == x else missing  # NaN (nothing to measure) ranks last

    latency = known(round(s.latency_median_s) if s.latency_median_s == s.latency_median_s else math.nan, math.inf)
    return (known(s.detected, 0.0), -latency, -known(s.client_follows_nudged, 1.0), -known(s.fnh_all, math.inf))


def _with(base: Config, combo: tuple[float, ...]) -> Config:
    values = dict(zip(GRID, combo, strict=True))
    values["weight_lagged"] = values["weight_response"]
    return replace(base, engine=replace(base.engine, **values))  # type: ignore[arg-type]


_CAL: list[Trace] = []


def _init_grid(cal: list[Trace]) -> None:
    global _CAL
    _CAL = cal


def _grid_group(combos: list[tuple[float, ...]]) -> list[tuple[object, Score]]:
    """Grid points that differ only in TIMER_FIELDS: the updates are classified once for all of them."""
    base = Config()
    classified = [classify_states(t.engine_states, _with(base, combos[0]).engine) for t in _CAL]
    return [
        (combo, _score(_CAL, _engine_nudges(_CAL, _with(base, combo), classified), base.engine.baseline_s))
        for combo in combos
    ]


def _grid_groups() -> list[list[tuple[float, ...]]]:
    groups: dict[tuple[float, ...], list[tuple[float, ...]]] = {}
    for combo in itertools.product(*GRID.values()):
        key = tuple(v for name, v in zip(GRID, combo, strict=True) if name not in TIMER_FIELDS)
        groups.setdefault(key, []).append(combo)
    return list(groups.values())


def _engine_nudges(
    traces: Sequence[Trace], config: Config, classified: Sequence[list[Classified]] | None = None
) -> list[list[float]]:
    if classified is None:
        return [decide_nudges(t.engine_states, config) for t in traces]
    return [decide_nudges(t.engine_states, config, c) for t, c in zip(traces, classified, strict=True)]


def _wclc_nudges(traces: Sequence[Trace], r_min: float, lock_s: float, config: Config) -> list[list[float]]:
    return [wclc_nudges(t.wclc_states, r_min, lock_s, config.policy) for t in traces]


def _build(
    sources_fn: Callable[[], list],  # type: ignore[type-arg]
    seed: int,
    options: Options | None = None,
) -> list[Scenario]:
    sources = sources_fn()
    out: list[Scenario] = []
    for i, kind in enumerate(KINDS):
        out += scenario_set(sources, (kind,), PER_KIND[kind], seed + i, DURATION_S, options)
    return out


def _fmt(x: float, pct: bool = False) -> str:
    if x != x:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.2f}"


def run() -> str:
    data = shared_data_dir()
    if data is None:
        return "entrainment: skipped (../shared/data not found)"
    started = time.perf_counter()
    bidmc = [f"bidmc_{i:02d}" for i in range(1, 27)]
    cal_sc = _build(lambda: bidmc_sources(data, bidmc[:13]) + biopeaks_segments(data, 0, 40, 10), 1001, CAL_OPTIONS)
    eval_sc = _build(lambda: bidmc_sources(data, bidmc[13:]) + biopeaks_segments(data, 40, 80, 10), 2002)
    gen_s = time.perf_counter() - started
    workers = max(1, min(2, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as pool:
        cal = list(pool.map(_trace, cal_sc, chunksize=8))
        ev = list(pool.map(_trace, eval_sc, chunksize=8))
    replay_s = time.perf_counter() - started - gen_s
    base = Config()
    bs = base.engine.baseline_s
    # Engine calibration: grid over the decision thresholds and weights (GRID) on the calibration set.
    with ProcessPoolExecutor(workers, initializer=_init_grid, initargs=(cal,)) as pool:
        scored = dict(c for group in pool.map(_grid_group, _grid_groups(), chunksize=4) for c in group)
    cands: list[tuple[object, Score]] = [(combo, scored[combo]) for combo in itertools.product(*GRID.values())]
    best_combo, cal_score = _best(cands, CAL_FNH_BUDGET, CAL_CF_BUDGET)
    chosen = _with(base, best_combo)  # type: ignore[arg-type]
    chosen_ev_nudges = _engine_nudges(ev, chosen)
    eng_eval = _score(ev, chosen_ev_nudges, bs)
    shipped_eval = _score(ev, _engine_nudges(ev, base), bs)
    # Baseline calibration at the same false-nudge budget.
    wc: list[tuple[object, Score]] = []
    for r_min, w_lock in itertools.product(R_GRID, WCLC_LOCK_GRID):
        wc.append(((r_min, w_lock), _score(cal, _wclc_nudges(cal, r_min, w_lock, base), bs)))
    (r_min, w_lock), w_cal = _best(wc, max(cal_score.fnh_all, 1e-9), None)  # type: ignore[misc]
    w_eval = _score(ev, _wclc_nudges(ev, r_min, w_lock, base), bs)
    speed_shared = [t.scenario.duration_s / t.engine_s for t in ev]  # two replays at once (the pool above)
    speed = [_replay_speed(sc) for sc in eval_sc]  # one at a time: the target's 'one core'
    slowest = sorted(range(len(eval_sc)), key=speed.__getitem__)[:CLI_SPEED_DYADS]
    _compile_package()
    cli_speed = _command_line_speed([eval_sc[i] for i in slowest])
    export_speed = _export_speed(eval_sc[slowest[0]])
    variants = _variants(bidmc_sources(data, bidmc[13:]) + biopeaks_segments(data, 40, 80, 10), chosen, workers)
    by_rate = _rate_variants(bidmc_sources(data, bidmc[13:]) + biopeaks_segments(data, 40, 80, 10), chosen, workers)
    by_pair = [(f"{name} (calibration)", score) for name, score in _by_pair(cal, _engine_nudges(cal, chosen), bs)] + [
        (f"{name} (held-out)", score) for name, score in _by_pair(ev, chosen_ev_nudges, bs)
    ]
    total_s = time.perf_counter() - started
    report = _report(
        cal_score,
        eng_eval,
        shipped_eval,
        w_cal,
        w_eval,
        best_combo,
        (r_min, w_lock),
        speed,
        speed_shared,
        cli_speed,
        export_speed,
        base,
        len(cal),
        len(ev),
        gen_s,
        replay_s,
        total_s,
        variants,
        eng_eval,
        by_pair,
        by_rate,
        _episode_lengths(ev),
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(report)
    return report


def _episode_lengths(traces: Sequence[Trace]) -> str:
    """How long the held-out therapist-follows episodes last, as a sentence for the report."""
    spans = [
        (t.scenario.onset_s, t.scenario.offset_s, t.scenario.duration_s)
        for t in traces
        if t.scenario.kind == "therapist_follows" and t.scenario.onset_s is not None and t.scenario.offset_s is not None
    ]
    if not spans:
        return "No held-out therapist-follows episodes."
    lengths = [off - on for on, off, _ in spans]
    cut = sum(1 for _, off, end in spans if off >= end - 1e-6)
    return (
        f"Held-out therapist-follows episodes last {min(lengths):.0f}-{max(lengths):.0f} s (median "
        f"{statistics.median(lengths):.0f} s); {cut} of {len(spans)} end with the dyad rather than by decoupling, "
        "so their nudge must come within that time (no grace period after the data ends)."
    )


def _pair_kind(trace: Trace) -> str:
    """Which kinds of recording a dyad pairs: ICU impedance (BIDMC, very regular) or the BITalino belt."""
    names = trace.scenario.name.split(":")[1].split("+")
    kinds = sorted("belt" if n.startswith("biopeaks") else "ICU" for n in names)
    return " + ".join(kinds)


def _by_pair(traces: Sequence[Trace], nudges: Sequence[list[float]], baseline_s: float) -> list[tuple[str, Score]]:
    """Follow-episode scores split by the kinds of recording paired (who breathes how regularly)."""
    groups: dict[str, list[int]] = {}
    for i, tr in enumerate(traces):
        if tr.scenario.kind in ("therapist_follows", "client_follows"):
            groups.setdefault(_pair_kind(tr), []).append(i)
    return [
        (kind, _score([traces[i] for i in idx], [nudges[i] for i in idx], baseline_s))
        for kind, idx in sorted(groups.items())
    ]


def _variants(sources: list, config: Config, workers: int) -> list[tuple[str, Score]]:  # type: ignore[type-arg]
    """Held-out follow episodes (both directions) under each generator variant, scored with ``config``."""
    out: list[tuple[str, Score]] = []
    with ProcessPoolExecutor(workers) as pool:
        for i, (name, change) in enumerate(VARIANTS.items()):
            generator = {k: v for k, v in change.items() if k != "duration_s"}
            duration_s = float(change.get("duration_s", DURATION_S))  # type: ignore[arg-type]
            options = replace(Options(), **generator)
            scenarios = scenario_set(sources, ("therapist_follows",), VARIANT_PER_KIND, 2002, duration_s, options)
            scenarios += scenario_set(sources, ("client_follows",), VARIANT_PER_KIND, 2003 + i, duration_s, options)
            traces = list(pool.map(_trace, scenarios, chunksize=4))
            out.append((name, _score(traces, _engine_nudges(traces, config), config.engine.baseline_s)))
    return out


def _rate_variants(sources: list, config: Config, workers: int) -> list[tuple[str, Score]]:  # type: ignore[type-arg]
    """The held-out recordings played faster or slower (all breathing rates x factor), scored with ``config``."""
    out: list[tuple[str, Score]] = []
    with ProcessPoolExecutor(workers) as pool:
        for i, factor in enumerate(RATE_FACTORS):
            retimed = [make_source(f"{s.name}x{factor}", s.signal, s.sampling_rate * factor) for s in sources]
            rates = sorted(s.rate_bpm for s in retimed)
            scenarios = [
                sc
                for j, kind in enumerate(KINDS)
                for sc in scenario_set(retimed, (kind,), RATE_PER_KIND[kind], 2102 + 10 * i + j, DURATION_S)
            ]
            traces = list(pool.map(_trace, scenarios, chunksize=4))
            name = f"x{factor} ({rates[len(rates) // 10]:.0f}-{rates[-len(rates) // 10 - 1]:.0f}/min)"
            out.append((name, _score(traces, _engine_nudges(traces, config), config.engine.baseline_s)))
    return out


def _pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _report(
    cal: Score,
    ev: Score,
    shipped: Score,
    w_cal: Score,
    w_ev: Score,
    engine_params: object,
    wclc_params: tuple[float, float],
    speed: list[float],
    speed_shared: list[float],
    cli_speed: list[float],
    export_speed: list[tuple[str, float]],
    base: Config,
    n_cal: int,
    n_ev: int,
    gen_s: float,
    replay_s: float,
    total_s: float,
    variants: list[tuple[str, Score]],
    reference: Score,
    by_pair: list[tuple[str, Score]],
    by_rate: list[tuple[str, Score]],
    episodes: str,
) -> str:
    med_speed = statistics.median(speed)
    lines = [
        "# Entrainment benchmark",
        "",
        f"Scenarios: {DURATION_S:.0f} s dyads built from real recordings by `breathsync.scenarios` "
        f"({', '.join(f'{k} {v}' for k, v in PER_KIND.items())} per set).",
        "Calibration set: BIDMC 01-13 + BITalino belt min 0-40, seed 1001, follow episodes from wider generator "
        "ranges (lag 0-3 s, coupling ramp 0.5-15 s, K 0.3-1.0 x 2 pi f, rate convergence 0-100 %). "
        "Evaluation set (held out): BIDMC 14-26 + BITalino belt min 40-80, seed 2002.",
        f"Detection window: onset to episode end + {GRACE_S:.0f} s. False nudges: any nudge in independent or "
        "similar-rate dyads, and nudges outside that window in follow dyads; hours counted after the "
        f"{base.engine.baseline_s:.0f} s baseline-learning period.",
        episodes,
        "",
        f"Engine thresholds calibrated (FN/h <= {CAL_FNH_BUDGET} and client-follows <= {100 * CAL_CF_BUDGET:.1f}% "
        f"on the calibration set): ({', '.join(GRID)}) = {engine_params}; weight_lagged = weight_response. "
        f"Shipped defaults: ({', '.join(str(getattr(base.engine, k)) for k in GRID)}).",
        "Baseline (windowed cross-lagged correlation, 30 s window, lags +-2 s, therapist trailing) calibrated on the "
        f"calibration set to at most the engine's false-nudge rate there ({_fmt(cal.fnh_all)}/h; the baseline's "
        f"chosen point: {_fmt(w_cal.fnh_all)}/h): r_min={wclc_params[0]}, min_locked_s={wclc_params[1]:.0f}.",
        "",
        "## Held-out evaluation",
        "",
        "| metric | target | engine | PASS/FAIL | baseline (WCLC) | engine, shipped defaults |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| therapist-follows episodes nudged (n={ev.n_tf}) | >= 95% | {_fmt(ev.detected, True)} | "
        f"{_pf(ev.detected >= 0.95)} | {_fmt(w_ev.detected, True)} | {_fmt(shipped.detected, True)} |",
        f"| latency from onset, median | <= 20 s | {_fmt(ev.latency_median_s)} s | "
        f"{_pf(ev.latency_median_s <= 20)} | {_fmt(w_ev.latency_median_s)} s | {_fmt(shipped.latency_median_s)} s |",
        f"| latency from onset, p90 | - | {_fmt(ev.latency_p90_s)} s | - | {_fmt(w_ev.latency_p90_s)} s | "
        f"{_fmt(shipped.latency_p90_s)} s |",
        f"| false nudges/h, independent pairs ({ev.hours_independent:.1f} h) | <= 0.5 | {_fmt(ev.fnh_independent)} | "
        f"{_pf(ev.fnh_independent <= 0.5)} | {_fmt(w_ev.fnh_independent)} | {_fmt(shipped.fnh_independent)} |",
        f"| false nudges/h, outside episodes ({ev.hours_outside:.1f} h) | <= 0.5 | {_fmt(ev.fnh_outside)} | "
        f"{_pf(ev.fnh_outside <= 0.5)} | {_fmt(w_ev.fnh_outside)} | {_fmt(shipped.fnh_outside)} |",
        f"| ... of which after an episode's window ended ({ev.hours_after:.2f} h: the episodes here end with their "
        "dyads; the variant 'episodes end mid-dyad' below measures this) | <= 0.5 | "
        f"{_fmt(ev.fnh_after)} | {_pf(ev.fnh_after <= 0.5) if ev.hours_after >= 1 else '-'} | "
        f"{_fmt(w_ev.fnh_after)} | {_fmt(shipped.fnh_after)} |",
        f"| client-follows episodes nudged (n={ev.n_cf}) | <= 5% | {_fmt(ev.client_follows_nudged, True)} | "
        f"{_pf(ev.client_follows_nudged <= 0.05)} | {_fmt(w_ev.client_follows_nudged, True)} | "
        f"{_fmt(shipped.client_follows_nudged, True)} |",
        "| replay speed, x real time per dyad (slowest dyad, one at a time, CPU time) | >= 1000x | "
        f"{min(speed):.0f}x | {_pf(min(speed) >= 1000)} | - | - |",
        f"| replay speed, `breathsync replay` on CSV files (slowest of the {len(cli_speed)} slowest dyads above, "
        f"process CPU time from start-up to exit, best of {CLI_SPEED_RUNS}) | >= 1000x | {min(cli_speed):.0f}x | "
        f"{_pf(min(cli_speed) >= 1000)} | - | - |",
        "| replay speed, `breathsync replay` on the slowest dyad written as other tools write recordings (600 s: "
        f"{' and '.join(name for name, _ in export_speed)}; best of {CLI_SPEED_RUNS}) | >= 1000x | "
        f"{min(x for _, x in export_speed):.0f}x | {_pf(min(x for _, x in export_speed) >= 1000)} | - | - |",
        "",
        "## Calibration set (for reference)",
        "",
        "| metric | engine | baseline (WCLC) |",
        "| --- | --- | --- |",
        f"| therapist-follows nudged | {_fmt(cal.detected, True)} | {_fmt(w_cal.detected, True)} |",
        f"| latency median / p90 | {_fmt(cal.latency_median_s)} / {_fmt(cal.latency_p90_s)} s | "
        f"{_fmt(w_cal.latency_median_s)} / {_fmt(w_cal.latency_p90_s)} s |",
        f"| false nudges/h (all) | {_fmt(cal.fnh_all)} | {_fmt(w_cal.fnh_all)} |",
        f"| client-follows nudged | {_fmt(cal.client_follows_nudged, True)} | "
        f"{_fmt(w_cal.client_follows_nudged, True)} |",
        "",
        "## Generator variants (held-out recordings, calibrated engine, not re-calibrated)",
        "",
        "Follow episodes built with one generator assumption changed at a time "
        f"({VARIANT_PER_KIND} therapist-follows + {VARIANT_PER_KIND} client-follows each): how much the numbers "
        "lean on this generator's own choices.",
        "",
        "| generator | therapist-follows nudged | latency median / p90 | client-follows nudged | "
        "false nudges/h outside episodes | ... after episodes |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| as calibrated (held-out set above) | {_fmt(reference.detected, True)} | "
        f"{_fmt(reference.latency_median_s)} / {_fmt(reference.latency_p90_s)} s | "
        f"{_fmt(reference.client_follows_nudged, True)} | {_fmt(reference.fnh_outside)} "
        f"({reference.hours_outside:.1f} h) | {_fmt(reference.fnh_after)} ({reference.hours_after:.2f} h) |",
        *(
            f"| {name} | {_fmt(v.detected, True)} | {_fmt(v.latency_median_s)} / {_fmt(v.latency_p90_s)} s | "
            f"{_fmt(v.client_follows_nudged, True)} | {_fmt(v.fnh_outside)} ({v.hours_outside:.1f} h) | "
            f"{_fmt(v.fnh_after)} ({v.hours_after:.2f} h) |"
            for name, v in variants
        ),
        "",
        "## By recordings paired (same calibrated engine)",
        "",
        "ICU = BIDMC impedance (nearly metronomic), belt = the BITalino chest-belt recording (irregular:",
        "strap-detected breath periods vary with CV 0.34 in its minutes 0-40 and 0.39 in the held-out minutes",
        "40-80, successive differences 0.42 and 0.53 of the mean period).",
        "",
        "| recordings paired | therapist-follows nudged | latency median | client-follows nudged |",
        "| --- | --- | --- | --- |",
        *(
            f"| {name} | {_fmt(v.detected, True)} (n={v.n_tf}) | {_fmt(v.latency_median_s)} s | "
            f"{_fmt(v.client_follows_nudged, True)} (n={v.n_cf}) |"
            for name, v in by_pair
        ),
        "",
        "## Breathing rate (held-out recordings played slower or faster, same calibrated engine)",
        "",
        "Every held-out source re-timed by a factor (its rate x factor; the 10th-90th percentile of the sources' "
        f"rates in brackets), {RATE_PER_KIND['therapist_follows']} therapist-follows, "
        f"{RATE_PER_KIND['client_follows']} client-follows and {RATE_PER_KIND['independent']} + "
        f"{RATE_PER_KIND['similar_rate']} independent / similar-rate dyads each.",
        "",
        "| rates | therapist-follows nudged | latency median / p90 | client-follows nudged | "
        "false nudges/h, independent |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {name} | {_fmt(v.detected, True)} | {_fmt(v.latency_median_s)} / {_fmt(v.latency_p90_s)} s | "
            f"{_fmt(v.client_follows_nudged, True)} | {_fmt(v.fnh_independent)} ({v.hours_independent:.1f} h) |"
            for name, v in by_rate
        ),
        "",
        f"Replay speed: min {min(speed):.0f}x, median {med_speed:.0f}x over {n_ev} evaluation dyads, timed one "
        "at a time (replay = ADC simulation + firmware detector fed 8 samples at a time + engine; process CPU "
        f"time). Two replays at once, as in the bench's pool on this 2-core machine: min {min(speed_shared):.0f}x, "
        f"median {statistics.median(speed_shared):.0f}x. The command line (`breathsync replay` on two CSV files "
        f"of the {len(cli_speed)} dyads slowest in process, best of {CLI_SPEED_RUNS} runs each: start-up, imports, "
        f"reading, strap simulation, engine, JSON Lines): min {min(cli_speed):.0f}x, median "
        f"{statistics.median(cli_speed):.0f}x of "
        f"{DURATION_S:.0f} s dyads; start-up and imports cost a fixed ~0.15 s per run, so longer recordings "
        "replay faster. The slowest dyad twice over (600 s) as other tools write it: "
        + ", ".join(f"{name} {x:.0f}x" for name, x in export_speed)
        + f" ({EXPORT_RATE_HZ:g} Hz: sequence number, time, resp and three other channels; missing samples: "
        f"{len(EXPORT_GAPS_S)} stretches of {min(EXPORT_GAPS_S):g}-{max(EXPORT_GAPS_S):g} s of blank rows per person).",
        f"Run: {n_cal} + {n_ev} dyads; scenario generation {gen_s:.0f} s, replays {replay_s:.0f} s "
        f"(2 processes), total {total_s:.0f} s.",
        "",
    ]
    return "\n".join(lines)
