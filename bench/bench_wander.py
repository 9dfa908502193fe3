"""Entrainment under baseline wander: the strap shifting on the chest (issue 5, robustness).

The held-out scenarios of ``bench_entrainment`` (BIDMC 14-26 + BITalino belt minutes 40-80, seeds
2002-2004; 50 therapist-follows, 50 client-follows, 50 independent dyads of 300 s) with a slow sine
added to both people's signals (``breathsync.evaluation.add_baseline_wander``: amplitude drawn per
person from the level's range of breath depths, period 40-120 s), replayed like the bench (strap
simulation, firmware detector, engine) and scored with the shipped settings.

``run()`` writes ``bench/results/wander.md``. Reproduce with ``make bench`` or
``.venv/bin/python -m bench wander``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from breathsync.datasets import shared_data_dir
from breathsync.engine import Config
from breathsync.evaluation import add_baseline_wander
from breathsync.scenarios import Kind, Scenario, bidmc_sources, biopeaks_segments, scenario_set

from .bench_entrainment import DURATION_S, Score, _engine_nudges, _score, _trace

RESULTS = Path(__file__).resolve().parent / "results" / "wander.md"
PER_KIND = 50
# Amplitude ranges in breath depths (the median range of the signal over 4 s windows); (0, 0) is no wander.
LEVELS: tuple[tuple[float, float], ...] = ((0.0, 0.0), (0.25, 0.75), (0.5, 1.5), (1.0, 3.0))
PERIOD_S = (40.0, 120.0)
# The entrainment bench's held-out seeds for these kinds.
SETS: tuple[tuple[int, Kind], ...] = ((2002, "therapist_follows"), (2003, "client_follows"), (2004, "independent"))


def _with_wander(scenario: Scenario, depths: tuple[float, float], seed: int) -> Scenario:
    if depths[1] <= 0:
        return scenario
    rng = np.random.default_rng(seed)
    signals = {}
    for role in ("therapist", "client"):
        amplitude, period_s = float(rng.uniform(*depths)), float(rng.uniform(*PERIOD_S))
        signals[role] = add_baseline_wander(getattr(scenario, role), scenario.sampling_rate, amplitude, period_s)
    return dataclasses.replace(scenario, therapist=signals["therapist"], client=signals["client"])


def _level_score(scenarios: list[Scenario], depths: tuple[float, float], config: Config, workers: int) -> Score:
    wandering = [_with_wander(sc, depths, 7000 + i) for i, sc in enumerate(scenarios)]
    with ProcessPoolExecutor(workers) as pool:
        traces = list(pool.map(_trace, wandering, chunksize=4))
    return _score(traces, _engine_nudges(traces, config), config.engine.baseline_s)


def run() -> str:
    data = shared_data_dir()
    if data is None:
        return "wander: skipped (../shared/data not found)"
    started = time.perf_counter()
    sources = bidmc_sources(data, [f"bidmc_{i:02d}" for i in range(14, 27)]) + biopeaks_segments(data, 40, 80, 10)
    scenarios = [sc for seed, kind in SETS for sc in scenario_set(sources, (kind,), PER_KIND, seed, DURATION_S)]
    config = Config()
    workers = max(1, min(2, os.cpu_count() or 1))
    rows = []
    for depths in LEVELS:
        s = _level_score(scenarios, depths, config, workers)
        level = "none" if depths[1] <= 0 else f"{depths[0]:g}-{depths[1]:g}"
        rows.append(
            f"| {level} | {100 * s.detected:.1f}% | {s.latency_median_s:.1f} / {s.latency_p90_s:.1f} s "
            f"| {100 * s.client_follows_nudged:.1f}% | {s.fnh_independent:.2f} ({s.hours_independent:.1f} h) |"
        )
    lines = [
        "# Entrainment under baseline wander",
        "",
        f"Held-out recordings, {PER_KIND} therapist-follows, {PER_KIND} client-follows and {PER_KIND} independent "
        f"{DURATION_S:.0f} s dyads (the entrainment bench's generator and seeds), a sine added to both people "
        f"(amplitude per person from the range below, in breath depths; period {PERIOD_S[0]:.0f}-{PERIOD_S[1]:.0f} s), "
        "shipped settings. Reproduce: `.venv/bin/python -m bench wander`.",
        "",
        "| wander (breath depths) | therapist-follows nudged | latency median / p90 | client-follows nudged "
        "| false nudges/h, independent |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Run: {time.perf_counter() - started:.0f} s.",
        "",
    ]
    report = "\n".join(lines)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report, encoding="utf-8")
    return report
