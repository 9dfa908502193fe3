"""`breathsync detect` as a user runs it: JSON Lines out, one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from breathsync.datasets import bundled_path

RECORD = bundled_path("bidmc_18_resp.csv.gz")


def breathsync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "breathsync", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_prints_one_json_event_per_line() -> None:
    proc = breathsync("detect", str(RECORD), "--rate", "125")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(events) > 200  # 8 minutes at ~18 breaths/min, peaks and troughs
    for event in events:
        assert set(event) >= {"kind", "t_s", "reported_t_s", "amplitude", "interval_s"}
        assert event["kind"] in ("peak", "trough")
        assert 0 <= event["t_s"] < event["reported_t_s"] <= 480
    peaks = [e for e in events if e["kind"] == "peak"]
    intervals = [e["interval_s"] for e in peaks[1:]]
    assert all(1.0 <= i <= 15.0 for i in intervals)
    # The interval is the distance between successive extremum times, not confirmation times.
    for prev, cur in itertools.pairwise(peaks):
        assert cur["interval_s"] == pytest.approx(cur["t_s"] - prev["t_s"], abs=1e-6)


def test_strap_rate_50_and_gzip_and_plain_csv_agree(tmp_path: Path) -> None:
    plain = tmp_path / "resp.csv"
    plain.write_bytes(gzip.decompress(RECORD.read_bytes()))
    a = breathsync("detect", str(plain), "--rate", "125", "--strap-rate", "50")
    b = breathsync("detect", str(RECORD), "--rate", "125", "--strap-rate", "50")
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout


def test_other_column_names(tmp_path: Path) -> None:
    path = tmp_path / "belt.csv"
    lines = gzip.decompress(bundled_path("neurokit_bio_resting_5min_100hz.csv.gz").read_bytes()).decode()
    path.write_text(lines)
    proc = breathsync("detect", str(path), "--rate", "100", "--column", "rsp")
    assert proc.returncode == 0, proc.stderr
    assert sum(json.loads(line)["kind"] == "peak" for line in proc.stdout.splitlines()) > 50


@pytest.mark.micropython
def test_micropython_interpreter_prints_identical_lines(micropython: str) -> None:
    cpython = breathsync("detect", str(RECORD), "--rate", "125")
    mp = breathsync("detect", str(RECORD), "--rate", "125", "--interpreter", "micropython")
    assert mp.returncode == 0, mp.stderr
    assert mp.stdout == cpython.stdout


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, ["--rate", "125"], "no such file"),
        ("resp\n" + "0.5\n" * 2000, ["--rate", "0"], "--rate must be a sampling rate within 4-10000 Hz"),
        ("resp\n" + "0.5\n" * 2000, ["--rate", "-3"], "--rate must be a sampling rate within"),
        # a mistyped rate would stretch 2000 samples to 23 days (it used to exhaust the memory resampling them)
        ("resp\n" + "0.5\n" * 2000, ["--rate", "1e-3"], "--rate must be a sampling rate within"),
        ("resp\n" + "0.5\n" * 2000, ["--rate", "inf"], "--rate must be a sampling rate within"),
        ("resp\n" + "0.5\n" * 2000, ["--rate", "1e9"], "--rate must be a sampling rate within"),
        ("resp\n" + "-0,298\n" * 2000, ["--rate", "125"], "row 1: 2 cells for 1 columns (a decimal comma?"),
        ("resp\n" + "0.5\n" * 2000, ["--rate", "125", "--column", "chest"], "no column 'chest'"),
        ("resp\n0.1\n0.2\nabc\n", ["--rate", "125"], "row 3"),
        ("resp\n0.1\ninf\n", ["--rate", "125"], "not finite"),  # missing is fine (NaN), infinite is not
        # Values whose sums overflow: a traceback deep in the ADC model before (one wild sample is a glitch that
        # clips at the rail instead: test_one_wild_sample_does_not_set_the_simulated_adc_gain).
        ("resp\n" + "1e308\n" * 2000 + "-1e308\n" * 2000, ["--rate", "125"], "values reach -1e+308 .. 1e+308 (central"),
        ("resp\n" + "1" * 5001 + "\n", ["--rate", "125"], "row 1: 'resp' is not finite (111111111111111111111111...)"),
        ("resp,resp\n" + "0.5,0.6\n" * 2000, ["--rate", "125"], "column 'resp' appears 2 times in the header"),
        ("t;resp\n" + "0;0,5\n" * 2000, ["--rate", "125"], "'0,5' (a decimal comma? values need a decimal point)"),
        ("resp\n" + "nan\n" * 2000, ["--rate", "125"], "only missing values"),
        ("0.20626\n" + "0.5\n" * 2000, ["--rate", "125"], "no header row (its first line is numbers)"),
        ("resp\n0.1\n0.2\n", ["--rate", "125"], "recording too short (2 samples, 0.016 s at 125 Hz; at least 10 s"),
        ("x" * (1 << 21), ["--rate", "125"], "no line end in its first 1048576 characters: not a CSV file"),
        ("\x00" * (1 << 21), ["--rate", "125"], "not a text (CSV) file"),  # /dev/zero was read until memory ran out
        ("", ["--rate", "125"], "empty"),
        ("resp\n", ["--rate", "125"], "no samples after the header row"),  # not 'needs finite values'
        ("time,resp\n\n", ["--rate", "125"], "no samples after the header row (only 1 empty row)"),
        ("resp\n" + "\n" * 3000, ["--rate", "125"], "no samples after the header row (only 3000 empty rows)"),
        ("resp\n" + "0.5\n" * 2000, ["--rate", "125", "--strap-rate", "30"], "invalid choice"),
        ("resp\n" + "0.5\n" * 2000, ["--rate", "fast"], "invalid float"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path: Path, content: str | None, args: list[str], message: str) -> None:
    path = tmp_path / "input.csv"
    if content is not None:
        path.write_text(content)
    proc = breathsync("detect", str(path), *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert message in lines[-1]
    assert "Traceback" not in proc.stderr


def _assert_detects_like(plain: Path, other: Path) -> None:
    """``other`` (the same recording written another way) gives exactly the events of ``plain``."""
    first = breathsync("detect", str(plain), "--rate", "125")
    second = breathsync("detect", str(other), "--rate", "125")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout and first.stdout.count("\n") > 100


def test_a_signal_that_drifts_off_the_strap_scale_is_said(tmp_path: Path) -> None:
    # A level drifting by 30 breath ranges over 10 minutes: from some point on every breath is at the simulated
    # converter's rail and lost, as on a real strap. Half the recording gave no breath and no word about it.
    t_s = np.arange(600 * 125) / 125
    drifting = tmp_path / "drift.csv"
    drifting.write_text("resp\n" + "".join(f"{v:.5f}\n" for v in np.sin(2 * np.pi * 0.25 * t_s) + 0.05 * t_s))
    proc = breathsync("detect", str(drifting), "--rate", "125")
    assert proc.returncode == 0 and proc.stdout.count("\n") < 160  # ~300 breaths in the file
    [note] = proc.stderr.splitlines()
    found = re.fullmatch(
        r"breathsync detect: note: the signal is beyond the simulated strap's range for (\d+) s \((\d+) %\), from "
        r"(\d+) s: its level moved more than 3.5 breath ranges of its first 30 s away \(drift, a step\), and breaths "
        r"there are lost; high-pass or detrend it first",
        note,
    )
    assert found is not None, note
    seconds, share, first = (int(g) for g in found.groups())
    assert 250 <= seconds <= 350 and share == round(100 * seconds / 600) and 250 <= first <= 350
    last_breath_s = json.loads(proc.stdout.splitlines()[-1])["t_s"]
    assert first <= last_breath_s <= first + 60  # breaths end soon after it first touches the rail
    steady = tmp_path / "steady.csv"
    steady.write_text("resp\n" + "".join(f"{v:.5f}\n" for v in np.sin(2 * np.pi * 0.25 * t_s)))
    assert breathsync("detect", str(steady), "--rate", "125").stderr == ""


def test_the_decimal_comma_hint_comes_only_where_a_comma_separates_cells(tmp_path: Path) -> None:
    # A tab-separated row with a cell too many (an OpenSignals row, a spreadsheet's extra column) was blamed on a
    # decimal comma that was nowhere in it.
    path = tmp_path / "extra.tsv"
    path.write_text("t\tresp\n" + "0\t1.5\t2\n" * 2000)
    proc = breathsync("detect", str(path), "--rate", "125")
    assert proc.returncode == 2 and proc.stderr.strip() == f"breathsync detect: {path}: row 1: 3 cells for 2 columns"


def test_blank_lines_before_the_header_row_are_passed_over(tmp_path: Path) -> None:
    # They were 'empty file (expected a header row)'.
    plain = tmp_path / "plain.csv"
    with gzip.open(RECORD, "rt", encoding="utf-8") as handle:
        plain.write_text(handle.read())
    padded = tmp_path / "padded.csv"
    padded.write_text("\n \n\r\n" + plain.read_text())
    _assert_detects_like(plain, padded)


def test_spreadsheet_byte_order_mark_is_not_part_of_the_column_name(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    with gzip.open(RECORD, "rt", encoding="utf-8") as handle:
        plain.write_text(handle.read())
    marked = tmp_path / "excel.csv"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    _assert_detects_like(plain, marked)


def test_a_trailing_comma_is_not_an_extra_value(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    with gzip.open(RECORD, "rt", encoding="utf-8") as handle:
        plain.write_text(handle.read())
    trailing = tmp_path / "logger.csv"
    trailing.write_text("".join(line + ",\n" for line in plain.read_text().splitlines()))
    _assert_detects_like(plain, trailing)


def test_damaged_gzip_and_directory_are_one_line_errors(tmp_path: Path) -> None:
    data = bytearray(RECORD.read_bytes())
    for i in range(200, len(data) - 200, 97):  # damage the compressed body, keep the header valid
        data[i] ^= 0x55
    damaged = tmp_path / "damaged.csv.gz"
    damaged.write_bytes(bytes(data))
    proc = breathsync("detect", str(damaged), "--rate", "125")
    assert proc.returncode == 2 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr
    proc = breathsync("detect", str(tmp_path), "--rate", "125")
    assert proc.returncode == 2 and "is a directory" in proc.stderr and "Traceback" not in proc.stderr


def test_not_gzip_despite_name(tmp_path: Path) -> None:
    path = tmp_path / "input.csv.gz"
    path.write_text("resp\n1\n")
    proc = breathsync("detect", str(path), "--rate", "125")
    assert proc.returncode == 2 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr


def test_gzip_despite_plain_name_says_so(tmp_path: Path) -> None:
    path = tmp_path / "input.csv"
    path.write_bytes(RECORD.read_bytes())
    proc = breathsync("detect", str(path), "--rate", "125")
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "is gzip-compressed; name it input.csv.gz (or decompress it)"
    )


def test_a_recording_from_a_pipe(tmp_path: Path) -> None:
    """`zcat a.csv.gz | breathsync detect /dev/stdin`: a pipe is a file to read, like any other."""
    text = gzip.decompress(RECORD.read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "breathsync", "detect", "/dev/stdin", "--rate", "125"],
        input=text,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == breathsync("detect", str(RECORD), "--rate", "125").stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/full is Linux's")
@pytest.mark.parametrize("unbuffered", [False, True])
@pytest.mark.parametrize("command", ["detect", "replay", "help", "replay-help"])
def test_output_that_cannot_be_written_is_one_line(command: str, unbuffered: bool) -> None:
    """stdout on a full disk (/dev/full always is): one line and exit 2, not a traceback - with
    Python's usual buffered stdout, where a short output only fails when it is flushed, and unbuffered, where
    argparse's own write of a help text fails (and argparse swallowed it: exit 0, nothing written)."""
    args = {
        "detect": ["detect", str(RECORD), "--rate", "125"],
        "replay": ["replay", "--therapist", str(RECORD), "--client", str(RECORD), "--rate", "125"],
        "help": ["--help"],
        "replay-help": ["replay", "--help"],
    }[command]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | (
        {"PYTHONUNBUFFERED": "1"} if unbuffered else {}
    )
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "breathsync", *args], stdout=full, stderr=subprocess.PIPE, text=True, env=env
        )
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "cannot write output" in line and "Traceback" not in proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/full is Linux's")
def test_a_usage_error_with_nowhere_to_say_it_still_exits_2() -> None:
    # Raising a failed write of standard error too (for `--help > /dev/full`) turned this into a traceback, exit 1.
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "breathsync", "replay", "--rate", "x"], stderr=full, check=False)
    assert proc.returncode == 2
    closed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.stderr.close(); from breathsync.cli import main; main(['replay', '--rate', 'x'])",
        ],
        check=False,
    )
    assert closed.returncode == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("resp\n0.1\n\n0.3\n", [0.1, None, 0.3]),  # pandas writes NaN in a one-column file as an empty line
        ("t,resp\n0,0.1\n1,\n2,NaN\n3,NA\n4,n/a\n5,0.6\n", [0.1, None, None, None, None, 0.6]),
        ("resp\n0.1\n0.2\n\n\n", [0.1, 0.2]),  # trailing empty lines are the end of the file, not samples
    ],
)
def test_missing_samples_are_nan_only_where_the_caller_allows_them(
    tmp_path: Path, content: str, expected: list[float | None]
) -> None:
    from breathsync.errors import InputError
    from breathsync.recording import read_column

    path = tmp_path / "holes.csv"
    path.write_text(content)
    values = read_column(path, missing_ok=True)
    assert [None if np.isnan(v) else v for v in values] == expected
    if None in expected:
        with pytest.raises(InputError, match=r"row \d"):
            read_column(path)


def _variant(plain: str, kind: str) -> bytes:
    """The bundled recording (columns ``resp``) written the way other tools write CSV files."""
    lines = plain.splitlines()
    if kind == "tab":
        return ("time\t" + lines[0] + "\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(lines[1:]))).encode()
    if kind == "semicolon":
        return ("time;" + lines[0] + "\n" + "".join(f"{i};{v}\n" for i, v in enumerate(lines[1:]))).encode()
    if kind == "upper":  # BIDMC's own column name
        return ("RESP\n" + "\n".join(lines[1:]) + "\n").encode()
    if kind == "latin1":  # a degree sign in another column's name, from a Windows logger
        return ("temp \u00b0C," + lines[0] + "\n" + "".join(f"36.6,{v}\n" for v in lines[1:])).encode("latin-1")
    if kind == "utf16":  # a spreadsheet's 'Unicode text': UTF-16 with a byte-order mark, tab-separated
        return ("time\t" + lines[0] + "\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(lines[1:]))).encode("utf-16")
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["tab", "semicolon", "upper", "latin1", "utf16", "GZ"])
def test_csv_files_as_other_tools_write_them(tmp_path: Path, kind: str) -> None:
    with gzip.open(RECORD, "rt", encoding="utf-8") as handle:
        plain_text = handle.read()
    plain = tmp_path / "plain.csv"
    plain.write_text(plain_text)
    if kind == "GZ":
        other = tmp_path / "EXPORT.CSV.GZ"
        other.write_bytes(gzip.compress(plain_text.encode()))
    else:
        other = tmp_path / f"{kind}.csv"
        other.write_bytes(_variant(plain_text, kind))
    _assert_detects_like(plain, other)


def test_any_spelling_of_nan_is_a_missing_sample_where_allowed(tmp_path: Path) -> None:
    from breathsync.recording import read_column

    path = tmp_path / "nans.csv"
    path.write_text("resp\n0.1\n-nan\n+NaN\n#N/A\nNULL\n0.2\n")
    assert np.isnan(read_column(path, missing_ok=True)[1:5]).all()


def _timed(tmp_path: Path, times: np.ndarray, name: str = "time_s") -> Path:
    path = tmp_path / "timed.csv"
    values = np.sin(2 * np.pi * 0.25 * np.arange(len(times)) / 125)
    path.write_text(f"{name},resp\n" + "".join(f"{float(t)!r},{v:.5f}\n" for t, v in zip(times, values, strict=True)))
    return path


@pytest.mark.parametrize("clock", ["jitter", "slow", "fast"])
def test_timestamp_jitter_and_clock_error_are_not_rows_left_out(tmp_path: Path, clock: str) -> None:
    # Rounding every step used to add a row for each late stamp (2 ms jitter at 125 Hz: 480 s became 586 s).
    from breathsync.recording import read_recording, rows_on_the_time_grid

    rng = np.random.default_rng(5)
    n = 480 * 125
    times = np.arange(n) / 125
    if clock == "jitter":
        times = times + rng.uniform(-0.0035, 0.0035, n)  # +-3.5 ms at an 8 ms step: still increasing
    else:
        times = times * (1.015 if clock == "slow" else 0.985)
    path = _timed(tmp_path, times)
    grid = rows_on_the_time_grid(read_recording(path, missing_ok=True), 125.0, path)
    assert grid is not None and grid.unit == "s" and grid.rows_added == 0 and len(grid.values) == n


def test_rows_left_out_are_counted_in_the_clock_of_their_moment_not_of_the_whole_file(tmp_path: Path) -> None:
    # The rows put back at a jump were counted in the file's median step: a logger clock 0.5 % fast until 200 s and
    # 1.5 % after it put back 2475 rows for 20 s left out at 100 s, 2500 once the file was cut at 300 s, and moved
    # every later breath (an outside probe). Nothing read later in a file may change how its start is read.
    from breathsync.recording import read_recording, rows_on_the_time_grid

    k = np.arange(480 * 125)
    clock = np.concatenate(([0.0], np.cumsum(np.where(k < 200 * 125, 0.008 * 1.005, 0.008 * 1.015)[:-1])))
    kept = (k < 100 * 125) | (k >= 120 * 125)
    whole = _timed(tmp_path, clock[kept])
    cut = tmp_path / "cut.csv"
    cut.write_text("\n".join(Path(whole).read_text().splitlines()[: 1 + 280 * 125]) + "\n")
    grids = [rows_on_the_time_grid(read_recording(p, missing_ok=True), 125.0, p) for p in (whole, str(cut))]
    assert [g.rows_added for g in grids if g is not None] == [2500, 2500]


def test_an_odd_early_stamp_is_no_jump_and_a_printf_nan_stamp_is_missing(tmp_path: Path) -> None:
    # An outside review: a jump's rows were counted in the mean of the steps before it, which for the third row was
    # one step: stamps 0, 0.05, 0.18 at 10 Hz put back 2 rows. And '-nan' was an error in the time column only.
    from breathsync.recording import read_recording, rows_on_the_time_grid

    times = np.arange(3000) / 10.0
    times[1] = 0.05
    path = _timed(tmp_path, times)
    grid = rows_on_the_time_grid(read_recording(path, missing_ok=True), 10.0, path)
    assert grid is not None and grid.unit == "s" and grid.rows_added == 0
    lines = path.read_text().splitlines()
    lines[100] = "-nan," + lines[100].split(",")[1]
    path.write_text("\n".join(lines) + "\n")
    recording = read_recording(path, missing_ok=True)
    assert recording.time is not None and np.flatnonzero(np.isnan(recording.time)).tolist() == [99]


def test_a_time_column_with_one_bad_cell_is_an_error_not_dropped(tmp_path: Path) -> None:
    # One cell that is not a number (a footer, a logger's note) dropped the whole time column without a word: rows
    # left out earlier were no longer put back, and every later breath moved.
    path = tmp_path / "footer.csv"
    path.write_text("time,resp\n" + "".join(f"{i / 125:.3f},{np.sin(i / 50):.4f}\n" for i in range(3000)) + "end,0.1\n")
    proc = breathsync("detect", str(path), "--rate", "125")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        f"breathsync detect: {path}: row 3001: 'time' is not a time: 'end' "
        "(a time column needs a number, or nothing, in each row)"
    )
    clock = tmp_path / "clock.csv"  # a clock-time column from the start is no time column: read as before
    clock.write_text("time,resp\n" + "".join(f"12:00:{i // 125:02d},{np.sin(i / 50):.4f}\n" for i in range(3000)))
    assert breathsync("detect", str(clock), "--rate", "125").returncode == 0


def test_a_time_column_that_jumps_beyond_any_recording_is_one_line(tmp_path: Path) -> None:
    from breathsync.errors import InputError
    from breathsync.recording import read_recording, rows_on_the_time_grid

    times = np.arange(2000) / 125
    times[1000:] += 1e6  # eleven days
    path = _timed(tmp_path, times)
    with pytest.raises(InputError, match=r"row 1001: 'time_s' jumps by 1e\+06 s: the recording would last more"):
        rows_on_the_time_grid(read_recording(path, missing_ok=True), 125.0, path)
    times[-1] = np.inf  # after rows of numbers: a damaged cell, not a column of clock times to leave unused
    path = _timed(tmp_path, times)
    with pytest.raises(InputError, match=r"row 2000: 'time_s' is not a time: 'inf' \(a time column needs a number"):
        read_recording(path, missing_ok=True)


@pytest.mark.parametrize(
    ("header", "separator"),
    [("time;resp;note (a, b)", ";"), ('"time, s"\tresp', "\t"), ("resp,temp", ",")],
)
def test_the_separator_is_the_one_that_finds_the_column(tmp_path: Path, header: str, separator: str) -> None:
    from breathsync.recording import read_column

    path = tmp_path / "sep.csv"
    cells = len(header.split(separator))
    path.write_text(header + "\n" + "".join(separator.join([f"{i}.5"] * cells) + "\n" for i in range(5)))
    assert list(read_column(path, missing_ok=True)) == [0.5, 1.5, 2.5, 3.5, 4.5]


@pytest.mark.parametrize("named", ["sep=;", "SEP=;"])
def test_a_spreadsheets_separator_line_names_the_separator(tmp_path: Path, named: str) -> None:
    # An outside evaluator's Excel export: 'sep=;' before the header was read as the header ("no column 'resp'
    # (columns: sep=;)"). With the separator named, a header holding commas in a name stays one cell.
    from breathsync.recording import read_column

    path = tmp_path / "excel.csv"
    path.write_text(f"{named}\nt (s, from start);resp\n0;0.5\n1;1.5\n")
    assert list(read_column(path)) == [0.5, 1.5]


def test_a_row_without_the_column_is_not_a_missing_sample(tmp_path: Path) -> None:
    # A comma row in a tab-separated file used to become a silent 'missing sample'.
    from breathsync.errors import InputError
    from breathsync.recording import read_column

    path = tmp_path / "mixed.tsv"
    path.write_text("time\tresp\n0\t0.5\n1,0.6\n2\t0.7\n")
    with pytest.raises(InputError, match="row 2: 1 cell"):
        read_column(path, missing_ok=True)


def test_utf16_inside_gzip(tmp_path: Path) -> None:
    from breathsync.recording import read_column

    path = tmp_path / "unicode.csv.gz"
    path.write_bytes(gzip.compress("time\tresp\n0\t0.5\n1\t0.6\n".encode("utf-16")))
    assert list(read_column(path)) == [0.5, 0.6]


def test_long_files_read_alike_whichever_way_each_part_is_parsed(tmp_path: Path) -> None:
    # Plain stretches are parsed by numpy a chunk at a time, anything unusual row by row: a NaN, a quoted
    # cell and an error far into a long file must come out as if every row had been read one by one.
    from breathsync.errors import InputError
    from breathsync.recording import read_recording

    n = 300_000  # several chunks
    times = np.arange(n) / 125
    values = np.round(np.sin(2 * np.pi * 0.25 * times), 5)
    rows = [f"{t},{v}" for t, v in zip(times.tolist(), values.tolist(), strict=True)]
    rows[150_000] = f"{times[150_000]},NaN"
    rows[250_000] = f'{times[250_000]},"{values[250_000]}"'
    path = tmp_path / "long.csv"
    path.write_text("time,resp\n" + "\n".join(rows) + "\n")
    recording = read_recording(path, missing_ok=True)
    expected = values.copy()
    expected[150_000] = np.nan
    np.testing.assert_array_equal(recording.values, expected)
    assert recording.time is not None
    np.testing.assert_array_equal(recording.time, times)
    with pytest.raises(InputError, match=r"row 150001: 'resp' is not finite \(NaN\)$"):
        read_recording(path)
    rows[150_000] = f"{times[150_000]},0.1x"
    path.write_text("time,resp\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError, match=r"^.*long\.csv: row 150001: 'resp' is not a number: '0\.1x'$"):
        read_recording(path, missing_ok=True)


def _read_or_error(path: Path, missing_ok: bool) -> tuple[object, ...]:
    from breathsync.errors import InputError
    from breathsync.recording import read_recording

    try:
        rec = read_recording(path, missing_ok=missing_ok)
    except InputError as exc:
        return ("error", str(exc))
    return ("ok", rec.values.tobytes(), None if rec.time is None else rec.time.tobytes(), rec.time_column)


def test_the_fast_and_the_row_by_row_reader_agree_on_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Plain chunks are parsed by numpy, the rest row by row: random files of every shape (one or more
    # columns, a time column that stops being a number, NaN spellings, blank lines, quotes, extra or missing
    # cells, separators, line ends) must read identically, errors included, when every chunk goes row by row.
    # A row with a cell too many next to one with a cell too few must not pass as two whole rows.
    import random

    from breathsync import recording

    rng = random.Random(8)
    cells = ["1.5", " 2.25 ", "-3e-2", "nan", "", "n/a", "NULL", "inf", "abc", "1,5", '"4.5"', "7_0", "-nan", "12:00"]
    cells += ["1\xa0000", "1\x0c5", "2\x1c0", "3\u20280"]  # characters str.split() cuts at inside a cell
    monkeypatch.setattr(recording, "_CHUNK_CHARS", 64)  # many chunks per file
    for trial in range(300):
        names = rng.choice([["resp"], ["time", "resp"], ["resp", "other"], ["t", "resp", "x"]])
        delim = "," if len(names) == 1 else rng.choice([",", "\t", ";"])
        odd = rng.random() < 0.5
        trailing = rng.random() < 0.2  # every row ends in a separator (as OpenSignals writes them)
        lines = [delim.join(names)]
        for i in range(rng.randint(0, 40)):
            row = []
            for name in names:
                good = f"{i * 0.04:.2f}" if name in ("time", "t") else f"{np.sin(i / 3):.4f}"
                row.append(rng.choice(cells) if odd and rng.random() < 0.08 else good)
            if odd and rng.random() < 0.1:
                row = row[:-1] if rng.random() < 0.5 else [*row, f"{i:.1f}"]
            blank = rng.choice(["", "", delim * (len(names) - 1), "  "])  # a blank row, or one of empty cells
            lines.append(
                blank
                if odd and rng.random() < 0.05
                else delim.join(row) + (delim if trailing or rng.random() < 0.02 else "")
            )
        path = tmp_path / f"f{trial}.csv"
        path.write_text(rng.choice(["\n", "\r\n", "\r"]).join(lines) + rng.choice(["\n", "\n\n", ""]), newline="")
        for missing_ok in (False, True):
            fast = _read_or_error(path, missing_ok)
            with monkeypatch.context() as m:
                m.setattr(recording._Rows, "add_plain", lambda self, chunk, delimiter: False)
                assert _read_or_error(path, missing_ok) == fast, path.read_text()
            with monkeypatch.context() as m:  # chunks cut anywhere, inside a '\r\n' too: whole lines all the same
                m.setattr(recording, "_CHUNK_CHARS", rng.choice([1, 2, 3, 5, 1 << 20]))
                assert _read_or_error(path, missing_ok) == fast, path.read_text()


def test_plain_decimals_read_as_float_reads_them_bit_for_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Plain decimal cells (sign, digits, one point, an exponent: how loggers write) are read a character position at
    # a time over the whole chunk, not by numpy's reader: every value must be float()'s to the bit, and only such
    # chunks may take that path (a 1000 Hz export replays 12 % faster with it; exponents: another 10 % for '%g').
    import random

    from breathsync import recording

    rng = random.Random(11)

    def decimal() -> str:
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 15)))
        point = rng.randint(0, len(digits))
        text = digits if rng.random() < 0.2 else f"{digits[:point]}.{digits[point:]}"
        if rng.random() < 0.3:  # within 10**22 of the digits, where one operation on exact numbers rounds as float()
            text += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randint(0, 7)).zfill(rng.randint(1, 3))
        return rng.choice(["", "", "-", "+"]) + text

    cells = [decimal() for _ in range(3000)] + ["-0", "-0.0", "+.5", "7.", "000123.4500", "999999999999999"]
    cells += ["1.5e-05", "-0e5", "1E+010", "7.e3", ".5E2", "1e-0", "123456789012345e-22", "9e22"]
    rows = [f"{i * 0.001:.3f},{cell},x" for i, cell in enumerate(cells)]
    path = tmp_path / "plain.csv"
    path.write_text("time_s,resp,note\n" + "\n".join(rows) + "\n")
    with monkeypatch.context() as m:
        m.setattr(recording.np, "loadtxt", lambda *a, **k: pytest.fail("numpy's reader read plain decimals"))
        got = recording.read_recording(path)
    want = np.array([float(cell) for cell in cells])
    assert got.values.tobytes() == want.tobytes()  # signed zeros included
    assert got.time is not None and got.time.tobytes() == np.array([float(r.split(",")[0]) for r in rows]).tobytes()
    # One cell that is not a plain decimal sends its chunk to numpy's reader (or row by row), read all the same.
    odd_cells = [" 0.5", "0.5 ", "1_0", "1234567890123456", "1.2.3", "--1", "+", ".", "nan", "1,5"]
    odd_cells += ["1e", "e5", ".e5", "1e5.0", "1e5e3", "1e+-5", "1e 5", "5e-324", "1e400", "1e23", "1e0000000000000005"]
    for odd in odd_cells:
        text = "resp,note\n0.25,a\n" + f'"{odd}"' * (odd == "1,5") + odd * (odd != "1,5") + ",b\n-0.75,c\n"
        path.write_text(text)
        fast = _read_or_error(path, missing_ok=True)
        with monkeypatch.context() as m:
            m.setattr(recording._Rows, "add_plain", lambda self, chunk, delimiter: False)
            assert _read_or_error(path, missing_ok=True) == fast, odd


def test_digit_grouping_is_not_a_number_on_any_path(tmp_path: Path) -> None:
    # float() and numpy read '1_000' as 1000 (Python's literal grouping); no recorder writes it, and in a signal
    # column it is more likely two numbers run together. Refused by every reader path; fine in a column not read.
    path = tmp_path / "grouped.csv"
    for text, where, cell in (
        ("resp\n1\n1_000\n3\n", "row 2", "1_000"),  # one column
        ("time,resp,note\n0,1,a_b\n0.04,,x_y\n0.08,1_0,z\n", "row 3", "1_0"),  # a missing cell: past the fast paths
        ("time,resp\n0,1\n0.04,2_5\n", "row 2", "2_5"),
    ):
        path.write_text(text)
        assert _read_or_error(path, missing_ok=True) == ("error", f"{path}: {where}: 'resp' is not a number: {cell!r}")
    path.write_text("time,resp,note\n" + "".join(f"{i * 0.04:.2f},{i % 7},a_b\n" for i in range(300)))
    assert _read_or_error(path, missing_ok=True)[0] == "ok"


def test_missing_samples_do_not_send_a_file_row_by_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A logger's missing samples (blank lines, empty cells, NaN spellings) sent every chunk holding one through the
    # row-by-row rules: the slowest of an outside evaluator's replays (600 s at 100 Hz with six gaps) spent a third of
    # its time there. Such chunks are parsed at once; blank rows at a chunk's end wait for the next one.
    from breathsync import recording

    monkeypatch.setattr(recording, "_CHUNK_CHARS", 40)  # chunk ends between the blank rows
    one = tmp_path / "one.csv"
    one.write_text("resp\n0.5\n\n\n0.7\n NaN \nn/a\n-nan\n0.9\n\n\n0.3\n\n\n")
    two = tmp_path / "two.csv"
    two.write_text("time;resp\n0;0.5\n;\n\n0.03;0.7\n0.04;\n;NULL\n0.06;0.9\n\n\n0.09;0.3\n\n\n")

    def no_rows(*args: object) -> None:
        raise AssertionError("read row by row")

    monkeypatch.setattr(recording._Rows, "add_checked", no_rows)
    nan = np.nan
    one_values = recording.read_recording(one, missing_ok=True).values
    np.testing.assert_array_equal(one_values, [0.5, nan, nan, 0.7, nan, nan, nan, 0.9, nan, nan, 0.3])
    assert not np.signbit(one_values).any()  # '-nan' is the same NaN as a blank row
    timed = recording.read_recording(two, missing_ok=True)
    np.testing.assert_array_equal(timed.values, [0.5, nan, nan, 0.7, nan, nan, 0.9, nan, nan, 0.3])
    np.testing.assert_array_equal(timed.time, [0, nan, nan, 0.03, 0.04, nan, 0.06, nan, nan, 0.09])


@pytest.mark.parametrize(
    "text",
    [
        "resp\n1\n" + " " * 131_073 + "\n2\n",  # a blank row longer than the csv module's field limit
        "resp,x\n1," + "a" * 131_073 + "\n2,b\n",  # a long cell in a column that is not read
        "resp\n" + "0" * 131_073 + "1\n",  # a long number
        "resp,x\n1," + "a" * 131_073 + '\n2,"b"\n',  # ... and a quote in a later chunk
    ],
)
def test_a_row_longer_than_the_csv_field_limit_reads_alike_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    # A review: the row-by-row reader refuses a cell over csv.field_size_limit() (131072 characters), the fast path
    # read such rows, so a file's result depended on which path (or which chunk size) took the row.
    from breathsync import recording

    path = tmp_path / "long.csv"
    path.write_text(text)
    for missing_ok in (False, True):
        results = []
        for chunk_chars in (64, 1 << 20):
            monkeypatch.setattr(recording, "_CHUNK_CHARS", chunk_chars)
            results.append(_read_or_error(path, missing_ok))
            with monkeypatch.context() as m:
                m.setattr(recording._Rows, "add_plain", lambda self, chunk, delimiter: False)
                results.append(_read_or_error(path, missing_ok))
        assert results[0][0] == "error" and "field larger than field limit" in str(results[0][1])
        assert all(r == results[0] for r in results)


@pytest.mark.parametrize("odd", ["1\xa0000", "1\x0c5", "1\x0b5", "1\x1c5", "1\x855", "1\u20285"])
def test_a_cell_with_a_character_split_cuts_at_is_not_read_as_two_cells(tmp_path: Path, odd: str) -> None:
    # A review found the whole-chunk split reading '1<no-break space>000' as two cells: with an empty cell in the
    # next row the count still matched, and every later cell moved up one (the time column's 5 became a value).
    path = tmp_path / "odd.csv"
    path.write_text(f"time,resp\n0,{odd}\n,2\n0.2,3\n", encoding="utf-8")
    assert _read_or_error(path, missing_ok=False)[0] == "error"
    assert _read_or_error(path, missing_ok=True)[0] == "error"


def _events(proc: subprocess.CompletedProcess[str]) -> list[dict[str, float]]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_rows_left_out_of_a_timed_file_keep_every_later_breath_in_place(tmp_path: Path) -> None:
    """A logger lost 8 s (1000 rows at 125 Hz) and its time column says so: events after the gap keep their
    times (they came 8 s early when rows were taken as consecutive), none is invented inside it."""
    values = gzip.decompress(RECORD.read_bytes()).decode().splitlines()[1:]
    full = tmp_path / "full.csv"
    full.write_text("t_s,resp\n" + "".join(f"{i / 125:.3f},{v}\n" for i, v in enumerate(values)))
    holed = tmp_path / "holed.csv"
    holed.write_text(
        "t_s,resp\n" + "".join(f"{i / 125:.3f},{v}\n" for i, v in enumerate(values) if not 25_000 <= i < 26_000)
    )
    proc = breathsync("detect", str(holed), "--rate", "125")
    assert "skips 1000 samples in 1 place(s)" in proc.stderr and "1 replayed as drop-outs" in proc.stderr
    got, want = _events(proc), _events(breathsync("detect", str(full), "--rate", "125"))
    gap = (200.0, 208.0 + 2.0)  # the missing rows, and a strap block (and the detector's settling) after them
    assert not [e for e in got if 200.0 <= e["t_s"] <= 208.0]
    later = [(e["kind"], round(e["t_s"], 2)) for e in want if e["t_s"] > gap[1] + 10.0]
    assert later and set(later) <= {(e["kind"], round(e["t_s"], 2)) for e in got}
    across = [e for e in got if e["t_s"] > 208.0 and e["interval_s"] is not None and e["t_s"] - e["interval_s"] < 208]
    assert not across  # no interval measured across the missing time


def test_missing_samples_are_drop_outs_as_in_replay(tmp_path: Path) -> None:
    values = gzip.decompress(RECORD.read_bytes()).decode().splitlines()[1:]
    values[5000:5002] = ["", "NaN"]  # a 16 ms glitch: bridged
    values[20_000:21_250] = ["n/a"] * 1250  # 10 s lost: a drop-out
    path = tmp_path / "holes.csv"
    path.write_text("resp\n" + "\n".join(values) + "\n")
    proc = breathsync("detect", str(path), "--rate", "125")
    events = _events(proc)
    assert "2 stretch(es) of missing samples (10.0 s in all): 1 replayed as drop-outs" in proc.stderr
    assert "1 shorter than 0.5 s bridged" in proc.stderr
    assert not [e for e in events if 160.0 <= e["t_s"] <= 170.0] and len(events) > 200
    calibrated = subprocess.run(
        [
            sys.executable,
            "-m",
            "breathsync",
            "calibrate",
            "--recording",
            str(path),
            "--rate",
            "125",
            "--out",
            str(tmp_path / "b.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert calibrated.returncode == 0, calibrated.stderr
    assert "breathsync calibrate: note: the recording has 2 stretch(es)" in calibrated.stderr


def test_detect_and_replay_report_the_same_breaths_around_holes(tmp_path: Path) -> None:
    # detect kept a breath whose extremum lay just before a hole but which was confirmed on the line bridging it (its
    # report time set by the first sample after the hole), and replay fed in one found on the bridge, with an
    # interval spanning the hole: the same recording gave the two commands different breaths (an outside probe).
    from breathsync.commands.recording_input import read_strap_input
    from breathsync.engine.replay import strap_stream
    from breathsync.engine.stream import StrapBreath

    values = gzip.decompress(RECORD.read_bytes()).decode().splitlines()[1:]
    for start_s, stop_s in ((50.0, 52.4), (175.0, 182.4), (310.0, 322.0), (395.5, 396.9)):
        values[int(start_s * 125) : int(stop_s * 125)] = ["NaN"] * (int(stop_s * 125) - int(start_s * 125))
    path = tmp_path / "holes.csv"
    path.write_text("resp\n" + "\n".join(values) + "\n")
    detected = _events(breathsync("detect", str(path), "--rate", "125"))
    strap = read_strap_input(str(path), "resp", 125, "the", "replay")
    replayed = [
        item.breath.as_json_dict()
        for _, _, item in strap_stream("client", strap.signal, 125, 25, strap.dropouts_s, holes=True)
        if isinstance(item, StrapBreath)
    ]
    assert detected == replayed and len(detected) > 200
    for event in detected:
        for a, b in strap.dropouts_s:
            assert not a <= event["t_s"] <= b and not a <= event["reported_t_s"] <= b
            assert event["interval_s"] is None or not event["t_s"] - event["interval_s"] <= b <= event["t_s"]


def test_a_constant_recording_has_no_breaths(tmp_path: Path) -> None:
    # A constant's strap means differ in their last bits, and the front end blew that up to full scale: 7 'breaths'.
    path = tmp_path / "flat.csv"
    path.write_text("resp\n" + "0.03912\n" * 7500)
    proc = breathsync("detect", str(path), "--rate", "125")
    assert proc.returncode == 0 and proc.stdout == "" and "no breaths found" in proc.stderr


def test_a_binary_file_is_named_as_such_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "firmware.csv"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
    proc = breathsync("detect", str(path), "--rate", "125")
    assert proc.returncode == 2 and proc.stderr.strip() == f"breathsync detect: {path}: not a text (CSV) file"


def _opensignals(devices: dict[str, dict[str, object]], rows: list[str]) -> str:
    header = "# OpenSignals Text File Format. Version 1\n# " + json.dumps(devices) + "\n# EndOfHeader\n"
    return header + "".join(rows)


def test_an_opensignals_export_is_read_by_its_sensor_names(tmp_path: Path) -> None:
    # BITalino's own software writes '#' header lines (the device's settings as JSON) and tab-separated rows with
    # no header row, each ending in a tab. 'resp' (the default) finds the channel of its respiration sensor.
    values = gzip.decompress(RECORD.read_bytes()).decode().splitlines()[1:]
    adc = np.round(512 + 200 * np.asarray(values, dtype=float) / np.ptp(np.asarray(values, dtype=float))).astype(int)
    ecg = (512 + 100 * np.sin(np.arange(len(adc)) * 0.07)).astype(int)
    device = {
        "column": ["nSeq", "I1", "I2", "O1", "O2", "A2", "A3"],
        "sampling rate": 125,
        "label": ["A2", "A3"],
        "sensor": ["RESPBIT", "ECGBIT"],
        "resolution": [4, 1, 1, 1, 1, 10, 10],
    }
    rows = [
        f"{i % 16}\t0\t0\t1\t1\t{a}\t{e}\t\n" for i, (a, e) in enumerate(zip(adc.tolist(), ecg.tolist(), strict=True))
    ]
    exported = tmp_path / "opensignals_00-07-80-4D-2E-76_2024-05-06_10-37-01.txt"
    exported.write_text(_opensignals({"00:07:80:4D:2E:76": device}, rows))
    plain = tmp_path / "plain.csv"
    plain.write_text("resp\n" + "".join(f"{a}\n" for a in adc.tolist()))
    want = _events(breathsync("detect", str(plain), "--rate", "125"))
    assert len(want) > 100
    for column in ((), ("--column", "RESPBIT"), ("--column", "A2")):
        assert _events(breathsync("detect", str(exported), "--rate", "125", *column)) == want, column
    ecg_events = breathsync("detect", str(exported), "--rate", "125", "--column", "ECGBIT")
    assert ecg_events.returncode == 0 and _events(ecg_events) != want  # the other channel, not the default
    wrong_rate = breathsync("detect", str(exported), "--rate", "100")
    assert wrong_rate.returncode == 2
    assert wrong_rate.stderr.strip().endswith("its header says it was recorded at 125 Hz, not 100 Hz")
    from breathsync.errors import InputError
    from breathsync.sim import recording_counts

    with pytest.raises(InputError, match="recorded at 125 Hz, not 100 Hz"):  # the library's reader checks it too
        recording_counts(exported, 100.0)
    assert len(recording_counts(exported, 125.0)) == len(adc) // 5


def test_a_file_that_states_its_sampling_rate_needs_no_rate_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An OpenSignals export says how fast it was recorded: every command that reads a recording takes it from there.
    from breathsync.cli import main
    from breathsync.commands.sim import configs_from

    values = np.asarray(gzip.decompress(RECORD.read_bytes()).decode().splitlines()[1:], dtype=float)
    adc = np.round(512 + 200 * values / np.ptp(values)).astype(int)
    device = {"column": ["nSeq", "A1"], "sampling rate": 125, "label": ["A1"], "sensor": ["RESPBIT"]}
    exported = tmp_path / "export.txt"
    exported.write_text(_opensignals({"00:07:80:4D:2E:76": device}, [f"{i % 16}\t{a}\t\n" for i, a in enumerate(adc)]))
    plain = tmp_path / "plain.csv"
    plain.write_text("resp\n" + "".join(f"{a}\n" for a in adc.tolist()))

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert run("detect", str(exported)) == run("detect", str(plain), "--rate", "125")
    replayed = run("replay", "--therapist", str(exported), "--client", str(plain), "--client-rate", "125")
    assert replayed[0] == 0 and replayed[1].count('"type": "state"') > 100
    assert replayed == run("replay", "--therapist", str(plain), "--client", str(exported), "--rate", "125")
    calibrated = run("calibrate", "--recording", str(exported), "--out", str(tmp_path / "a.json"))
    assert calibrated[0] == 0 and calibrated[1].startswith("baseline: ")
    given = run("calibrate", "--recording", str(plain), "--rate", "125", "--out", str(tmp_path / "b.json"))
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    assert a.pop("created") <= b.pop("created")  # to the second: the two runs may straddle one (a flaky test)
    assert a.pop("source").replace("export.txt", "plain.csv") == b.pop("source") and a == b
    assert given[1].replace("b.json", "a.json") == calibrated[1]
    feeds = argparse.Namespace(
        synthetic=False,
        therapist_input=str(exported),
        client_input=str(plain),
        column="resp",
        strap_rate=25,
        therapist_drift_ppm=0.0,
        client_drift_ppm=0.0,
    )
    with_rate = configs_from(argparse.Namespace(**vars(feeds), rate=125.0))
    from_header = configs_from(argparse.Namespace(**{**vars(feeds), "client_input": str(exported)}, rate=None))
    assert len(with_rate[0].counts) == len(adc) * 25 // 125  # the strap's 25 Hz from the file's 125 Hz
    assert all(list(a.counts) == list(b.counts) for a, b in zip(with_rate, from_header, strict=True))

    # Without --rate, a file that does not state its rate is a one-line error naming it; so is a rate out of range.
    no_rate = tmp_path / "no_rate.txt"
    no_rate.write_text(_opensignals({"a": {"column": ["nSeq", "A1"]}}, ["0\t1\n"] * 10))
    too_fast = tmp_path / "too_fast.txt"
    too_fast.write_text(_opensignals({"a": {"column": ["nSeq", "A1"], "sampling rate": 50000}}, ["0\t1\n"] * 10))
    two = tmp_path / "two.txt"
    two.write_text(_opensignals({"a": {"column": ["nSeq", "A1"]}, "b": {"column": ["nSeq", "A1"]}}, ["0\t1\t1\t2\n"]))
    for args, message in [
        (("detect", str(plain)), f"{plain}: give --rate HZ (the file does not state its sampling rate)"),
        (("detect", str(no_rate)), f"{no_rate}: give --rate HZ (the file does not state its sampling rate)"),
        (("detect", str(too_fast)), "recorded at 50000 Hz; breathsync reads 4-10000 Hz"),
        (("detect", str(two)), "OpenSignals file of 2 devices"),
        (("detect", str(tmp_path / "none.csv")), "none.csv: no such file"),
        (
            ("replay", "--therapist", str(exported), "--client", str(plain)),
            f"{plain}: give --rate HZ or --client-rate HZ",
        ),
        (("replay", "--therapist", str(plain), "--client", str(exported), "--client-rate", "125"), "give --rate HZ"),
        (("calibrate", "--recording", str(plain), "--out", str(tmp_path / "c.json")), "give --rate HZ"),
        (("sim", "--therapist-input", str(exported), "--client-input", str(plain)), f"{plain}: give --rate HZ"),
    ]:
        code, out, err = run(*args)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err, (args, err)
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            _opensignals({"a": {"column": ["nSeq", "A1"]}, "b": {"column": ["nSeq", "A1"]}}, ["0\t1\t1\t2\n"]),
            "2 devices",
        ),
        ("# OpenSignals Text File Format. Version 1\n# {}\n0\t1\n", "without '# EndOfHeader'"),
        ("# OpenSignals Text File Format. Version 1\n# {not json\n# EndOfHeader\n0\t1\n", "are not JSON"),
        (_opensignals({"a": {"column": ["nSeq", "A1"], "label": ["A1"], "sensor": ["ECG"]}}, ["0\t1\n"]), "no column"),
        (
            _opensignals(
                {"a": {"column": ["nSeq", "A1", "A2"], "label": ["A1", "A2"], "sensor": ["RESPBIT", "RESPBIT"]}},
                ["0\t1\t2\n"],
            ),
            "2 respiration channels (A1, A2): pick one",
        ),
        ('# OpenSignals Text File Format\n# {"a": ' + "[" * 3000 + "]" * 3000 + "}\n# EndOfHeader\n", "not JSON"),
        (_opensignals({"a": {"column": ["nSeq", "A1"], "sampling rate": "fast"}}, ["0\t1\n"]), "not a rate"),
        (_opensignals({"a": {"column": ["nSeq", "A1"], "sampling rate": True}}, ["0\t1\n"]), "not a rate"),
        (_opensignals({"a": {"column": ["nSeq", "A1"], "sampling rate": "2_5"}}, ["0\t1\n"]), "not a rate"),
        (_opensignals({"a": {"column": ["nSeq", "A1"], "sampling rate": -5}}, ["0\t1\n"]), "not a rate"),
        (_opensignals({"a": {"column": ["nSeq", "A1"], "sensor": ["EMG"]}}, ["0\t1\n"]), "(channels: A1=EMG)"),
    ],
)
def test_a_damaged_opensignals_header_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    from breathsync.errors import InputError
    from breathsync.recording import read_recording

    path = tmp_path / "export.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=None) as caught:
        read_recording(path, missing_ok=True)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("device", "column", "expected"),
    [
        ({"column": ["nSeq", "I1", "A1", "A2"], "sensor": ["ECGBIT", "PZTBITREV"]}, "resp", 2.0),  # a piezo belt
        ({"column": ["nSeq", "A1", "A2"], "label": ["x", "y"], "sensor": ["EDA", "RIP"]}, "resp", 2.0),  # renamed
        ({"label": ["CH1", "CH2"], "sampling rate": "100"}, "CH2", 2.0),  # bioplux, 2015: no 'column'
        ({"column": ["nSeq", "CH1", "CH2"], "sensor": ["XYZ", "RESPIRATION"]}, "XYZ", 1.0),
    ],
)
def test_opensignals_channels_are_found_by_position_and_sensor(
    tmp_path: Path, device: dict[str, object], column: str, expected: float
) -> None:
    from breathsync.recording import read_recording

    path = tmp_path / "export.txt"
    width = len(device.get("column", ["nSeq", "CH1", "CH2"]))  # type: ignore[arg-type]
    path.write_text(_opensignals({"": device}, ["\t".join(["0", *(["1.0"] * (width - 2)), "2.0"]) + "\t\n"] * 3))
    assert list(read_recording(path, column).values) == [expected] * 3
