"""The same firmware detector inside the real MicroPython unix port: identical, allocation-free."""

from __future__ import annotations

import sys
from array import array
from pathlib import Path

import pytest

from breathsync.adc import simulate_adc
from breathsync.datasets import BIDMC_RATE_HZ, BUNDLED_BIDMC_RECORDS, bidmc_records
from breathsync.detector import detect_cpython, detect_micropython
from breathsync.recording import read_column

from conftest import RunMicroPython
from detector_helpers import bundled_counts, peak_just_after_start_u16, ripple_before_breathing_u16, wandering_counts

pytestmark = pytest.mark.micropython
MP_SCRIPTS = Path(__file__).resolve().parent / "mp"


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The bundled records back to back as u16 little-endian files (36k samples at 25 Hz)."""
    files = {}
    for rate_hz in (25, 50):
        counts = [v for record in BUNDLED_BIDMC_RECORDS for v in bundled_counts(record, rate_hz)]
        path = tmp_path_factory.mktemp("alloc") / f"samples_{rate_hz}.u16"
        payload = array("H", counts)
        if sys.byteorder == "big":
            payload.byteswap()
        path.write_bytes(payload.tobytes())
        files[rate_hz] = path
    return files


@pytest.mark.parametrize(("path_name", "emit"), [("fast", None), ("portable", "bytecode"), ("portable", "native")])
@pytest.mark.parametrize("rate_hz", [25, 50])
def test_zero_bytes_allocated_per_sample(
    run_micropython: RunMicroPython, long_recording: dict[int, Path], path_name: str, emit: str | None, rate_hz: int
) -> None:
    proc = run_micropython(
        MP_SCRIPTS / "detector_alloc.py", str(long_recording[rate_hz]), path_name, str(rate_hz), emit=emit
    )
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    word, samples, delta_bytes, locked_chunks = proc.stdout.decode().split()
    assert word == "ok"
    assert int(samples) >= 10_000
    assert int(delta_bytes) == 0, f"{delta_bytes} bytes allocated over {samples} samples"
    assert int(locked_chunks) >= 10


@pytest.mark.parametrize("record", BUNDLED_BIDMC_RECORDS)
@pytest.mark.parametrize("rate_hz", [25, 50])
def test_bit_identical_to_cpython_on_bundled_records(micropython: str, record: str, rate_hz: int) -> None:
    counts = bundled_counts(record, rate_hz)
    reference = detect_cpython(counts, rate_hz)
    assert len(reference) > 100
    assert detect_micropython(counts, rate_hz, fast=True) == reference
    assert detect_micropython(counts, rate_hz, fast=False) == reference


@pytest.mark.parametrize("rate_hz", [25, 50])
def test_bit_identical_to_cpython_under_baseline_wander(micropython: str, rate_hz: int) -> None:
    # Wander puts breaths below the baseline, where only the last breath's midpoint admits them.
    counts = wandering_counts("bidmc_04", rate_hz)
    reference = detect_cpython(counts, rate_hz)
    assert len(reference) > 200
    assert detect_micropython(counts, rate_hz, fast=True) == reference
    assert detect_micropython(counts, rate_hz, fast=False) == reference


@pytest.mark.parametrize("rate_hz", [25, 50])
def test_bit_identical_to_cpython_at_start_up(micropython: str, rate_hz: int) -> None:
    # An extremum before the first sample is no event; ripple before the breathing sets a small first amplitude.
    for counts in (peak_just_after_start_u16(rate_hz), ripple_before_breathing_u16(rate_hz)):
        reference = detect_cpython(counts, rate_hz)
        assert len(reference) > 20
        assert detect_micropython(counts, rate_hz, fast=True) == reference
        assert detect_micropython(counts, rate_hz, fast=False) == reference


def test_runs_in_a_64k_heap(micropython: str) -> None:
    counts = bundled_counts("bidmc_09")
    assert detect_micropython(counts, 25, fast=True, heapsize="64K") == detect_cpython(counts, 25)


def test_viper_memory_layout_matches_the_coefficients(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    script = tmp_path / "layout.py"
    script.write_text(
        "from core import detector, detector_viper, detector_coeffs\n"
        "print(len(detector_coeffs.COEFFS_25HZ), detector.COEFF_FIELDS, detector_viper.CAPACITY_AT,"
        " detector_viper.EVENTS_AT)\n"
    )
    proc = run_micropython(script)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    n_coeffs, coeff_fields, capacity_at, events_at = (int(v) for v in proc.stdout.split())
    assert n_coeffs == coeff_fields == capacity_at
    assert events_at > capacity_at + 1


def test_both_paths_refuse_a_chunk_larger_than_they_were_built_for(
    run_micropython: RunMicroPython, tmp_path: Path
) -> None:
    # The viper path used to clamp the count: the samples past max_chunk were dropped without a word.
    script = tmp_path / "oversized.py"
    script.write_text(
        "from array import array\n"
        "from core.detector import BreathDetector\n"
        "for fast in (True, False):\n"
        "    det = BreathDetector(25, 8, fast)\n"
        "    try:\n"
        "        det.feed(array('H', [8192] * 9), 9)\n"
        "        print(det.fast, 'accepted')\n"
        "    except ValueError as exc:\n"
        "        print(det.fast, exc)\n"
        "    print(det.feed(array('H', [8192] * 8), 8))\n"
    )
    proc = run_micropython(script)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.decode().split("\n")[:4] == [
        "True chunk larger than max_chunk",
        "0",
        "False chunk larger than max_chunk",
        "0",
    ]


@pytest.mark.shared_data
@pytest.mark.parametrize("rate_hz", [25, 50])
def test_bit_identical_on_every_bidmc_record(micropython: str, shared_data: Path, rate_hz: int) -> None:
    records = bidmc_records(shared_data)
    assert len(records) >= 20
    for record in records:
        signal = read_column(shared_data / "bidmc" / f"{record}_resp.csv.gz")
        counts = simulate_adc(signal, BIDMC_RATE_HZ, rate_hz).counts_u16.tolist()
        reference = detect_cpython(counts, rate_hz)
        assert detect_micropython(counts, rate_hz, fast=True) == reference, f"viper differs on {record}"
        assert detect_micropython(counts, rate_hz, fast=False) == reference, f"bytecode differs on {record}"


def test_precompiled_mpy_gives_identical_events(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    """The .mpy files a developer deploys (here built for the unix port's x64) behave the same."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "build"
    subprocess.run(
        [sys.executable, str(repo / "tools" / "build_firmware.py"), "--march", "x64", "--out", str(out), "--quiet"],
        check=True,
    )
    assert (out / "core" / "detector_viper.mpy").is_file()
    assert not (out / "core" / "detector.py").exists()
    counts = bundled_counts("bidmc_04")
    payload = array("H", counts)
    if sys.byteorder == "big":
        payload.byteswap()
    runner = repo / "host" / "breathsync" / "mp" / "detector_runner.py"
    proc = run_micropython(runner, "core", "25", "fast", path=(out,), stdin=payload.tobytes(), heapsize="64K")
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [tuple(int(v) for v in line.split()) for line in proc.stdout.decode().splitlines()]
    reference = detect_cpython(counts, 25)
    assert lines == [
        (1 if e.kind == "peak" else 2, e.index, e.depth_counts, e.interval_samples, e.confirmed_index)
        for e in reference
    ]


def test_a_viper_detector_built_for_another_chip_falls_back_to_the_portable_one(
    run_micropython: RunMicroPython, tmp_path: Path
) -> None:
    """A board whose MicroPython cannot load the viper .mpy ('incompatible .mpy arch': a build for another chip or
    .mpy version) raised ValueError at boot, and main.py reset the strap at every boot (a review). The portable
    detector takes over: the same events, a little slower."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "build"
    subprocess.run(  # for the ESP32-S3: the unix port (x64) cannot load its native code
        [
            sys.executable,
            str(repo / "tools" / "build_firmware.py"),
            "--march",
            "xtensawin",
            "--out",
            str(out),
            "--quiet",
        ],
        check=True,
    )
    script = tmp_path / "boot.py"  # what the app does at boot: the detector, fast where the board can
    script.write_text("from core.detector import BreathDetector\nd = BreathDetector(25, 8)\nprint('fast', d.fast)\n")
    proc = run_micropython(script, path=(out,), heapsize="64K")
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.decode().split() == ["fast", "False"]  # the portable detector: bit-identical (tests above)
