"""`breathsync scan` and `breathsync stream` as separate processes, against virtual straps over HCI/TCP."""

from __future__ import annotations

import csv
import io
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from strap_model import ModelStrap, served

from breathsync.commands.stream import CsvOutput, Printer
from breathsync.link.stream import SampleBlock, StrapEvent
from breathsync.protocol import Role


@pytest.fixture
def served_strap() -> Iterator[tuple[str, ModelStrap]]:
    async def make(link: object) -> dict[str, ModelStrap]:
        values = [int(v) for v in np.random.default_rng(9).integers(0, 65536, 25 * 600)]
        return {"client": await ModelStrap("strap-cli", values, speed=1.0).start(link)}

    with served(make) as (adapter, straps):
        yield adapter, straps["client"]


def breathsync(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "breathsync", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_scan_lists_role_firmware_battery_rssi(served_strap: tuple[str, ModelStrap]) -> None:
    adapter, _ = served_strap
    proc = breathsync("scan", "--ble", adapter, "--timeout", "1.5")
    assert proc.returncode == 0, proc.stderr
    [line] = [row for row in proc.stdout.splitlines() if row.startswith("strap-cli")]
    fields = line.split()
    assert fields[2] == "client" and fields[4] == "90%" and fields[5] == "25Hz"


def test_stream_to_csv(served_strap: tuple[str, ModelStrap], tmp_path: Path) -> None:
    adapter, strap = served_strap
    out = tmp_path / "stream.csv"
    proc = breathsync("stream", "--ble", adapter, "--client", "ble:strap-cli", "--seconds", "4", "--csv", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "client" in proc.stdout and "link connected" in proc.stdout
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    samples = [r for r in rows if r["kind"] == "sample"]
    assert len(samples) >= 25 * 2  # at least 2 s of a 25 Hz strap
    counters = [int(r["counter"]) for r in samples]
    assert counters == list(range(counters[0], counters[0] + len(counters)))
    assert all(int(r["value"]) == strap.values[int(r["counter"])] for r in samples)


def test_stream_finds_a_strap_by_role_and_says_it_is_looking(served_strap: tuple[str, ModelStrap]) -> None:
    # The search takes seconds before the first line: it is said at once, on stderr (stdout is the data).
    adapter, _ = served_strap
    proc = breathsync("stream", "--ble", adapter, "--client", "auto", "--seconds", "3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[0] == "looking for the client's strap..."
    assert "client" in proc.stdout and "link connected" in proc.stdout


def test_bad_adapter_and_source_are_one_line_errors() -> None:
    proc = breathsync("stream", "--ble", "carrier-pigeon", "--client", "ble:x", "--seconds", "1")
    assert proc.returncode == 2 and "unknown BLE adapter" in proc.stderr and "Traceback" not in proc.stderr
    proc = breathsync("stream", "--ble", "system", "--client", "smoke:signals", "--seconds", "1")
    assert proc.returncode == 2 and "unknown source kind" in proc.stderr and "Traceback" not in proc.stderr


def test_stream_of_a_strap_that_never_answers_stops_when_asked(tmp_path: Path) -> None:
    """A misnamed strap keeps the link retrying; --seconds (like Ctrl-C) must still end the command."""

    async def empty(link: object) -> dict[str, object]:
        return {}

    keep = tmp_path / "keep.csv"
    keep.write_bytes(b"role,kind,counter,host_t_s,value\nclient,sample,0,1.0000,123\n")  # yesterday's stream
    with served(empty) as (adapter, _):  # type: ignore[arg-type]
        # The connect attempt's scan would give up only after 10 s; a stop must not wait for it.
        proc = breathsync(
            "stream", "--ble", adapter, "--client", "ble:nobody", "--seconds", "2", "--csv", str(keep), timeout=9
        )
        # Ctrl-C before the strap connected is the user's choice: no 'never connected' error for it.
        interrupted = subprocess.Popen(
            [sys.executable, "-m", "breathsync", "stream", "--ble", adapter, "--client", "ble:nobody"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        interrupted.send_signal(signal.SIGINT)
        _, stopped_err = interrupted.communicate(timeout=9)
    assert "never connected" not in stopped_err and "Traceback" not in stopped_err, stopped_err
    # Ctrl-C while straps are searched for by role: it ended only with the 10 s search, in an error (exit 2).
    with served(empty) as (adapter, _):  # type: ignore[arg-type]
        searching = subprocess.Popen(
            [sys.executable, "-m", "breathsync", "stream", "--ble", adapter],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        asked = time.monotonic()
        searching.send_signal(signal.SIGINT)
        _, search_err = searching.communicate(timeout=15)
        took_s = time.monotonic() - asked
    assert searching.returncode == 0 and "no strap" not in search_err, search_err
    assert took_s < 5.0  # not the rest of the 10 s search
    # Nothing streamed from a strap it was asked for: an error, not exit 0 with a 'closed' line for a link that
    # never opened.
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "breathsync stream: the client's strap (ble:nobody) never connected: not found in 2 s"
    ), proc.stderr
    assert "connect-failed" not in proc.stdout and "closed" not in proc.stdout
    # No data this time: the old file is left alone.
    assert keep.read_bytes() == b"role,kind,counter,host_t_s,value\nclient,sample,0,1.0000,123\n"


def test_a_stream_whose_strap_never_connected_ends_with_the_links_last_reason() -> None:
    printer = Printer(io.StringIO(), None)
    printer.on_link("therapist", "connect-failed", "therapist: no strap named 'nosuchstrap' in range")
    printer.on_link("therapist", "closed", "")
    printer.on_link("client", "connected", "CC:DD")
    failure = printer.never_connected({"therapist": "ble:nosuchstrap", "client": "auto"}, 12.0)
    assert str(failure) == (
        "the therapist's strap (ble:nosuchstrap) never connected: no strap named 'nosuchstrap' in range"
    )
    assert "closed" not in printer.out.getvalue()  # type: ignore[attr-defined]
    assert printer.never_connected({"client": "auto"}, 12.0) is None


class ReaderGone(io.StringIO):
    """Standard output whose reader went away (`breathsync stream | head` after head's lines)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_stream_lines_for_a_reader_that_went_away_neither_raise_nor_stop_the_csv(tmp_path: Path) -> None:
    # The lines are written from the links' notification callbacks: a BrokenPipeError raised there was logged as
    # a full traceback per callback (`stream | head`), and the CSV being recorded beside it was at its mercy.
    csv_out = CsvOutput(tmp_path / "stream.csv")
    printer = Printer(ReaderGone(), csv_out)
    printer.on_link("client", "connected", "AA:BB")
    assert printer.console_gone.is_set()  # the command ends on this, unless it writes a CSV (this one does)
    printer.on_event(StrapEvent(Role.CLIENT, "peak", 100, 110, 2000, 60, 12.5, False))
    printer.on_samples(SampleBlock(Role.CLIENT, 101, np.array([7, 8]), np.array([12.54, 12.58]), False))
    printer.tick()
    csv_out.close(completed=True)
    with (tmp_path / "stream.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["kind"], r["counter"]) for r in rows] == [("peak", "100"), ("sample", "101"), ("sample", "102")]
