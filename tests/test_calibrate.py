"""Pre-session calibration: `breathsync calibrate`, the baseline file, and its use by replay and the engine."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from speech import talking
from strap_model import served

from breathsync.cli import main
from breathsync.daemon.calibration import calibrate_strap
from breathsync.datasets import bundled_path
from breathsync.engine import Baseline, EntrainmentEngine, dyad_stream, run_engine
from breathsync.engine.baseline_file import read_baseline, write_baseline
from breathsync.errors import InputError
from breathsync.link.sources import ble_adapter
from breathsync.recording import read_column

A = bundled_path("bidmc_04_resp.csv.gz")
B = bundled_path("bidmc_18_resp.csv.gz")


def annotated_rate_bpm(record: str, seconds: float) -> float:
    """Median breathing rate from the first annotator's breath marks (125 Hz samples) in the first seconds."""
    with gzip.open(bundled_path(f"{record}_breaths.csv.gz"), "rt") as handle:
        marks = [int(row.split(",")[1]) for row in handle.read().splitlines()[1:] if row.startswith("ann1,")]
    t = np.array(marks) / 125.0
    return 60.0 / float(np.median(np.diff(t[t < seconds])))


def test_calibrate_recording_matches_the_annotated_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "me.json"
    code = main(["calibrate", "--recording", str(A), "--rate", "125", "--seconds", "120", "--out", str(out)])
    printed, err = capsys.readouterr()
    assert code == 0 and err == ""
    baseline = read_baseline(out)
    assert baseline.rate_bpm == pytest.approx(annotated_rate_bpm("bidmc_04", 120.0), abs=0.5)
    assert 0.0 < baseline.rate_sd_bpm < 5.0 and baseline.depth > 0 and baseline.n_breaths >= 25
    assert f"{baseline.rate_bpm:.1f} breaths/min" in printed and str(out) in printed
    data = json.loads(out.read_text())
    assert data["format"] == "breathsync-baseline" and data["duration_s"] == pytest.approx(120.0, abs=0.01)


def test_calibrate_rejects_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flat = tmp_path / "flat.csv"
    flat.write_text("resp\n" + "\n".join("0.5" for _ in range(125 * 60)) + "\n")
    short = tmp_path / "short.csv"
    short.write_text("resp\n" + "\n".join(f"{x:.4f}" for x in read_column(A)[: 125 * 24]) + "\n")
    cases = [
        (["--recording", str(A), "--rate", "125", "--seconds", "5"], "--seconds must be within 30-3600 s"),
        (["--recording", str(A), "--rate", "125", "--seconds", "inf"], "--seconds must be within 30-3600 s"),
        (["--recording", str(short), "--rate", "125"], "only 24 s of breathing; a baseline needs at least 30 s"),
        (["--recording", "", "--rate", "125"], "--recording needs a file name"),
        (["--recording", str(A), "--rate", "0.001"], "--rate must be a sampling rate within"),
        (["--seconds", "-5"], "--seconds must be within"),  # strap mode: before 'calibrating for...' is printed
        (["--recording", str(A)], "give --rate HZ (the file does not state its sampling rate)"),
        (["--recording", str(A), "--rate", "125", "--strap", "ble:x"], "either --strap or --recording"),
        (["--recording", str(flat), "--rate", "125"], "breath(s) in 60 s"),
        (["--recording", str(tmp_path / "none.csv"), "--rate", "125"], "no such file"),
        (["--rate", "125"], "--rate belongs to --recording"),
        (["--column", "resp"], "--column belongs to --recording"),
        (["--strap", "bogus"], "bad source 'bogus'"),  # before 'calibrating for...' too
    ]
    for args, message in cases:
        out = tmp_path / "never.json"
        assert main(["calibrate", *args, "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
        assert not out.exists()
        assert captured.out == "", args
    # --out onto a directory: one line, and no temporary file left beside it
    (tmp_path / "taken").mkdir()
    assert main(["calibrate", "--recording", str(A), "--rate", "125", "--out", str(tmp_path / "taken")]) == 2
    assert "taken: a directory; a baseline is written to a file" in capsys.readouterr().err
    assert not (tmp_path / "taken.tmp").exists()
    # asking for more than the recording has: all of it is used, and the user is told
    assert main(["calibrate", "--recording", str(A), "--rate", "125", "--seconds", "600", "--out", str(out)]) == 0
    assert "the recording has only 480 s; used all of it" in capsys.readouterr().err


def test_calibrate_overwrites_an_older_baseline_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --out replaced whatever was there: the recording itself, or a whole session file, became a baseline.
    recording = tmp_path / "me.csv"
    recording.write_text("resp\n" + "\n".join(f"{x:.4f}" for x in read_column(A)[: 125 * 90]) + "\n")
    session = tmp_path / "monday.sqlite"
    session.write_bytes(b"SQLite format 3\x00" + bytes(4096))
    notes = tmp_path / "notes.json"
    notes.write_text('{"client": "A.", "remember": "ask about sleep"}\n')
    for target in (recording, session, notes):
        before = target.read_bytes()
        assert main(["calibrate", "--recording", str(recording), "--rate", "125", "--out", str(target)]) == 2
        err = capsys.readouterr().err
        assert f"{target}: exists and is not a breathsync baseline" in err and len(err.strip().splitlines()) == 1
        assert target.read_bytes() == before
    older = tmp_path / "baseline.json"
    write_baseline(older, Baseline(rate_bpm=9.0, rate_sd_bpm=1.0, depth=1.0, n_breaths=20), "last week")
    assert main(["calibrate", "--recording", str(recording), "--rate", "125", "--out", str(older)]) == 0
    assert read_baseline(older).rate_bpm != 9.0  # a new calibration replaces the old one


def test_devices_and_large_files_are_not_read_as_baselines_or_configs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: /dev/zero as --config or --therapist-baseline was read until the kernel killed the process at 22 GB
    # (st_size of a device is 0); --out /dev/stdout read the command's own output pipe and waited for ever.
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)  # opened for reading, a pipe waits for a writer: never opened
    large = tmp_path / "large.json"
    large.write_bytes(b" " * (1 << 20))
    replay = ["replay", "--therapist", str(A), "--client", str(A), "--rate", "125"]
    cases = [
        ([*replay, "--config", "/dev/zero"], "/dev/zero: a device, not a configuration file"),
        ([*replay, "--therapist-baseline", "/dev/zero"], "/dev/zero: a device, not a breathsync baseline"),
        ([*replay, "--therapist-baseline", str(large)], "large.json: larger than 64 KB, not a breathsync baseline"),
        (["calibrate", "--recording", str(A), "--rate", "125", "--out", "/dev/full"], "--out /dev/full: a device;"),
        (["calibrate", "--recording", str(A), "--rate", "125", "--out", str(pipe)], "pipe: a pipe; a baseline is"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        captured = capsys.readouterr()
        assert message in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
        assert captured.out == ""
    # A pipe is read, up to the limit: `--config <(...)` (a review of the first version: refused).
    read_end, write_end = os.pipe()
    os.write(write_end, b"[policy]\ncooldown_s = 120.0\n")
    os.close(write_end)
    try:
        assert main([*replay, "--config", f"/dev/fd/{read_end}"]) == 0
    finally:
        os.close(read_end)
    capsys.readouterr()


def test_baseline_file_round_trip_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    baseline = Baseline(rate_bpm=12.5, rate_sd_bpm=0.8, depth=1500.0, n_breaths=24)
    write_baseline(path, baseline, "ble:strap-T", 120.0)
    assert read_baseline(path) == baseline
    good = json.loads(path.read_text())
    for change, message in [
        ({"format": "something-else"}, "not a breathsync baseline"),
        ({"version": 2}, "version 2 is not supported"),
        ({"version": True}, "version True is not supported"),
        ({"version": 1.0}, "version 1.0 is not supported"),
        ({"rate_bpm": 0.5}, "rate_bpm must be within"),
        ({"rate_bpm": "fast"}, "rate_bpm must be a finite number"),
        ({"rate_sd_bpm": 0}, "rate_sd_bpm must be within"),
        ({"depth": -1}, "depth must be >= 0"),
        ({"n_breaths": 2}, "n_breaths must be an integer within [6, 100000]"),
        ({"n_breaths": True}, "n_breaths must be an integer"),
        # Integers too large for a float (a hand-edited file) were an OverflowError traceback.
        ({"rate_bpm": 10**400}, f"rate_bpm must be a finite number (got 1{'0' * 36}...)"),
        ({"n_breaths": 10**400}, "n_breaths must be an integer within"),
    ]:
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(InputError, match=re.escape(message)):
            read_baseline(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="invalid JSON"):
        read_baseline(path)
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="expected a JSON object"):
        read_baseline(path)
    path.write_text("[" * 30_000 + "]" * 30_000)
    with pytest.raises(InputError, match="nested too deeply"):
        read_baseline(path)
    path.write_text(json.dumps(good)[:-1] + ', "rate_bpm": 1' + "0" * 5000 + "}")
    with pytest.raises(InputError, match="invalid JSON: a number with too many digits"):
        read_baseline(path)


def test_a_baseline_unwritable_on_a_read_only_file_system_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tidying the temporary file failed too (read-only) and its bare '[Errno 30] ...: me.json.tmp' replaced the line.
    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    baseline = Baseline(rate_bpm=12.0, rate_sd_bpm=1.0, depth=1.0, n_breaths=20)
    with pytest.raises(InputError, match=r"^cannot write .*me\.json: Read-only file system$"):
        write_baseline(tmp_path / "me.json", baseline)


def test_engine_keeps_a_pre_calibrated_therapist_baseline_and_learns_the_client() -> None:
    given = Baseline(rate_bpm=11.0, rate_sd_bpm=0.7, depth=1.0, n_breaths=30)
    engine = EntrainmentEngine(therapist_baseline=given)
    stream = dyad_stream(read_column(A)[: 125 * 150], read_column(B)[: 125 * 150], 125.0)
    states = list(run_engine(stream, engine))
    assert states
    kept = engine.baselines["therapist"]
    assert kept is not None and dataclasses.replace(kept, rate_bpm=given.rate_bpm) == given
    # Only the slow drift tracking (tau 10 min) has moved the rate in the 30 s after learning.
    assert 11.0 < kept.rate_bpm < 11.0 + 0.1 * (16.5 - 11.0)
    client = engine.baselines["client"]
    assert client is not None and client != given and client.n_breaths >= 20


def test_replay_uses_the_therapist_baseline_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A baseline far above how the therapist breathes now (40/min against ~16) reads as 'the therapist has
    left their own rate toward the client' on every update; without the file the learned baseline says not."""
    path = tmp_path / "fast.json"
    write_baseline(path, Baseline(rate_bpm=40.0, rate_sd_bpm=1.0, depth=1.0, n_breaths=30))

    def moves(*extra: str) -> list[float]:
        code = main(["replay", "--therapist", str(A), "--client", str(B), "--rate", "125", *extra])
        out, err = capsys.readouterr()
        assert code == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        return [r["therapist_rate_move"] for r in rows if r["type"] == "state" and r["therapist_rate_move"] is not None]

    with_file = moves("--therapist-baseline", str(path))
    learned = moves()
    # (the baseline then tracks slow drift, tau 10 min, so the move shrinks later in the replay)
    assert len(with_file) > 50 and min(with_file[:50]) >= 0.95 and float(np.median(with_file)) >= 0.9
    assert abs(float(np.median(learned))) < 0.5
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    args = ["replay", "--therapist", str(A), "--client", str(B), "--rate", "125", "--therapist-baseline", str(bad)]
    assert main(args) == 2
    assert "not a breathsync baseline" in capsys.readouterr().err


def test_calibrating_a_strap_that_never_answers_is_a_one_line_error() -> None:
    """A misnamed or switched-off strap: the link would retry for ever; calibration gives up with a reason."""

    async def empty(link: object) -> dict[str, object]:
        return {}

    async def go(adapter: str) -> None:
        async with ble_adapter(adapter) as options:
            with pytest.raises(InputError, match=r"ble:nobody: no samples in 2 s"):
                await calibrate_strap("ble:nobody", options, 30.0, no_data_timeout_s=2.0)

    with served(empty) as (adapter, _):  # type: ignore[arg-type]
        asyncio.run(asyncio.wait_for(go(adapter), 30))


def test_no_breath_interval_is_measured_across_a_recording_drop_out() -> None:
    """A recording's 7 s hole swallowed one breath of a 4 s rhythm: the 8 s from the breath before it to the one
    after it is not a breath."""
    from breathsync.daemon.calibration import baseline_of

    peaks = np.concatenate((np.arange(0.0, 101.0, 4.0), np.arange(108.0, 200.0, 4.0)))
    depths = np.ones(len(peaks))
    across = baseline_of(peaks, depths, 200.0, "test").baseline
    apart = baseline_of(peaks, depths, 200.0, "test", ((101.0, 107.5),)).baseline
    assert apart.n_breaths == across.n_breaths - 1
    assert apart.rate_bpm == 15.0


def test_a_recording_mostly_missing_is_too_short_to_calibrate(tmp_path: Path) -> None:
    from breathsync.daemon.calibration import calibrate_recording

    signal = read_column(bundled_path("bidmc_18_resp.csv.gz"))[: 125 * 100]
    with pytest.raises(InputError, match="only 25 s of breathing"):
        calibrate_recording(signal, 125.0, dropouts_s=((20.0, 95.0),))
    # Drop-outs that overlap (each widened to whole sample blocks) count once: '-19 s of breathing' before.
    overlapping = tuple((float(a), a + 1.5) for a in range(20, 95))
    with pytest.raises(InputError, match="only 24 s of breathing"):
        calibrate_recording(signal, 125.0, dropouts_s=overlapping)


def test_a_calibration_spent_talking_says_so() -> None:
    from breathsync.daemon.calibration import calibrate_recording

    with pytest.raises(InputError, match=r"spoken \(quick inhalation, long exhalation\): calibrate breathing quietly"):
        calibrate_recording(talking(130.0, 50.0, 7), 50.0)
    quiet = read_column(A)[: 125 * 130]
    assert calibrate_recording(quiet, 125.0).baseline.rate_bpm == pytest.approx(
        annotated_rate_bpm("bidmc_04", 130.0), rel=0.1
    )
