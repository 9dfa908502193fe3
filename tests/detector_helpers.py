"""Helpers shared by the detector tests: synthetic breathing and instrumented firmware runs."""

from __future__ import annotations

import ast
import inspect
import math
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from breathsync.adc import simulate_adc
from breathsync.datasets import bundled_path
from breathsync.evaluation import add_baseline_wander
from breathsync.fwcore import detector as fw_detector
from breathsync.recording import read_column

SMALL_INT_LIMIT = 1 << 30  # ESP32 MicroPython small ints are 31-bit signed


def synthetic_breathing_u16(
    rate_bpm: float,
    duration_s: float,
    sampling_rate: int,
    amplitude_counts: float = 12000.0,
    drift_counts_per_s: float = 0.0,
    noise_counts: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Sinusoidal breathing in u16 counts (peaks at phase 0), optional drift and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * sampling_rate)) / sampling_rate
    wave = amplitude_counts * np.cos(2 * math.pi * rate_bpm / 60.0 * t)
    wave += drift_counts_per_s * t + noise_counts * rng.standard_normal(len(t))
    return np.clip(np.round(32768 + wave), 0, 65535).astype(np.int64)


def peak_just_after_start_u16(rate_hz: int) -> list[int]:
    """Breathing whose first peak comes 0.1 s in: inside the low-pass delay, so its index reaches back before the
    first sample (a recording cut at the end of an inhalation)."""
    t = np.arange(60 * rate_hz) / rate_hz
    wave = 8000 * np.cos(2 * math.pi * 0.25 * (t - 0.1))
    return [int(v) for v in np.round(32768 + wave)]


def ripple_before_breathing_u16(rate_hz: int) -> list[int]:
    """Two seconds of cardiac ripple alone (a strap put on, the wearer still), then 15 breaths/min of 8000 counts
    with that ripple riding on them: the first half-breath the detector confirms is a few dozen counts deep."""
    t = np.arange(60 * rate_hz) / rate_hz
    breathing = np.where(t < 2.0, 0.0, 8000 * np.sin(2 * math.pi * 0.25 * (t - 2.0)))
    ripple = 900 * np.sin(2 * math.pi * 1.3 * t) + np.where(t < 2.0, 60 * np.sin(2 * math.pi * t), 0.0)
    return [int(v) for v in np.round(32768 + breathing + ripple)]


def bundled_counts(record: str, rate_hz: int = 25) -> list[int]:
    signal = read_column(bundled_path(f"{record}_resp.csv.gz"))
    return simulate_adc(signal, 125, rate_hz).counts_u16.tolist()


def wandering_counts(record: str, rate_hz: int = 25) -> list[int]:
    """A bundled record with one breath depth of 60 s wander, as the strap's ADC counts."""
    signal = add_baseline_wander(read_column(bundled_path(f"{record}_resp.csv.gz")), 125, 1.0, 60.0)
    return simulate_adc(signal, 125, rate_hz).counts_u16.tolist()


class _CheckIntermediates(ast.NodeTransformer):
    """Wrap every arithmetic result of the detector in a bounds probe."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        return ast.copy_location(ast.Call(func=ast.Name("__probe", ast.Load()), args=[node], keywords=[]), node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        return ast.copy_location(ast.Call(func=ast.Name("__probe", ast.Load()), args=[node], keywords=[]), node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        target_load = ast.Name(node.target.id, ast.Load()) if isinstance(node.target, ast.Name) else None
        if target_load is None:
            return node
        value = ast.Call(
            func=ast.Name("__probe", ast.Load()),
            args=[ast.BinOp(left=target_load, op=node.op, right=node.value)],
            keywords=[],
        )
        return ast.copy_location(ast.Assign(targets=[node.target], value=value), node)


def instrumented_portable() -> tuple[Callable[..., Any], list[int]]:
    """The firmware's portable detector generator with every intermediate probed.

    Returns (generator function, [max |intermediate| seen]); the list is updated in place.
    """
    tree = ast.parse(inspect.getsource(fw_detector))
    # Every module-level function of the detector: the generator and the helpers it calls.
    funcs = [_CheckIntermediates().visit(n) for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert any(f.name == "_portable" for f in funcs)
    module = ast.fix_missing_locations(ast.Module(body=funcs, type_ignores=[]))
    largest = [0]

    def probe(value: int) -> int:
        magnitude = abs(value)
        if magnitude > largest[0]:
            largest[0] = magnitude
        return value

    namespace: dict[str, Any] = {name: getattr(fw_detector, name) for name in dir(fw_detector)}
    namespace["__probe"] = probe
    exec(compile(module, "<instrumented detector>", "exec"), namespace)
    return namespace["_portable"], largest


def run_generator(generator_function: Callable[..., Any], counts: Sequence[int], rate_hz: int) -> list[tuple[int, ...]]:
    """Run a portable-detector generator over ``counts`` in 25-sample chunks; return event tuples."""
    fields = fw_detector.EVENT_FIELDS
    chunk = 25
    events_buf = array("i", [0] * (fields * chunk))
    io: list[Any] = [None]
    gen = generator_function([fw_detector.coeffs_for(rate_hz), events_buf, io])
    gen.send(None)
    events = []
    for start in range(0, len(counts), chunk):
        io[0] = array("H", counts[start : start + chunk])
        written = gen.send(len(io[0]))
        events.extend(tuple(events_buf[e * fields : (e + 1) * fields]) for e in range(written))
    return events


def run_detector_chunks(counts: Sequence[int], rate_hz: int, chunk: int) -> list[tuple[int, ...]]:
    """The public BreathDetector fed in chunks of ``chunk`` samples (portable path)."""
    detector = fw_detector.BreathDetector(rate_hz, chunk, fast=False)
    samples = array("H", [0] * chunk)
    out = []
    for start in range(0, len(counts), chunk):
        block = counts[start : start + chunk]
        for i, v in enumerate(block):
            samples[i] = v
        written = detector.feed(samples, len(block))
        fields = fw_detector.EVENT_FIELDS
        out.extend(tuple(detector.events[e * fields : (e + 1) * fields]) for e in range(written))
    return out
