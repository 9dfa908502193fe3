"""breathsync replay: JSON Lines, exit code 2 on bad input, deterministic output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from breathsync.cli import main
from breathsync.datasets import bundled_path
from breathsync.recording import read_column

A = str(bundled_path("bidmc_04_resp.csv.gz"))
B = str(bundled_path("bidmc_18_resp.csv.gz"))


def _replay(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["replay", "--therapist", A, "--client", B, "--rate", "125", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_breathing_rate_no_adult_has_asks_whether_the_sampling_rate_is_right(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # A 125 Hz recording given as 500 Hz breathes four times as fast (an outside review: a 25 Hz file replayed at
    # --rate 50 ran silently at 41 breaths/min). The replay runs as asked and says what it saw.
    code = main(["replay", "--therapist", A, "--client", B, "--rate", "125", "--therapist-rate", "500"])
    err = capsys.readouterr().err
    assert code == 0
    [rate] = re.findall(
        r"note: the therapist typically breathes (\d+) times a minute in this recording \(read at 500", err
    )
    assert int(rate) > 40 and "the client typically breathes" not in err
    # A long drop-out is no slower breathing (a review: 2.5 min, 20 min of blank rows and 2.5 min read as 2/min).
    values = read_column(Path(A))
    holed = tmp_path / "holed.csv"
    cells = (
        [f"{v:.6g}" for v in values[: 150 * 125]] + [""] * (40 * 60 * 125) + [f"{v:.6g}" for v in values[-150 * 125 :]]
    )
    holed.write_text("resp\n" + "\n".join(cells) + "\n")
    assert main(["replay", "--therapist", str(holed), "--client", B, "--rate", "125"]) == 0
    assert "typically breathes" not in capsys.readouterr().err


def test_replay_prints_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _replay(capsys)
    assert code == 0 and err == ""
    records = [json.loads(line) for line in out.splitlines()]
    states = [r for r in records if r["type"] == "state"]
    assert states and {r["type"] for r in records} <= {"state", "nudge", "efficacy"}
    times = [r["t_s"] for r in states]
    assert times == sorted(times) and times[-1] <= 480.0
    assert all(r["t_s"] >= 0 for r in records if r["type"] == "nudge")


def test_replay_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    assert _replay(capsys)[1] == _replay(capsys)[1]


def test_replay_with_config_and_strap_rate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[engine]\nbaseline_s = 60\n")
    code, out, _ = _replay(capsys, "--config", str(cfg), "--strap-rate", "50")
    first = json.loads(out.splitlines()[0])
    assert code == 0 and first["t_s"] < 100


@pytest.mark.parametrize(
    "args",
    [
        ["--therapist", "/nonexistent.csv", "--client", B, "--rate", "125"],
        ["--therapist", A, "--client", B, "--rate", "125", "--column", "nope"],
        ["--therapist", A, "--client", B, "--rate", "125", "--client-column", "nope"],
        ["--therapist", A, "--client", B, "--rate", "125", "--therapist-column", ""],
        ["--therapist", A, "--client", B, "--rate", "0"],
        ["--therapist", A, "--client", B, "--rate", "125", "--config", "/nonexistent.toml"],
        ["--therapist", A, "--client", B, "--rate", "125", "--strap-rate", "33"],
        ["--therapist", A, "--rate", "125"],
    ],
)
def test_bad_input_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    try:
        code = main(["replay", *args])
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1


def test_short_recording_is_rejected(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    short = tmp_path / "s.csv"
    short.write_text("resp\n" + "\n".join("0.1" for _ in range(100)) + "\n")
    code = main(["replay", "--therapist", str(short), "--client", B, "--rate", "125"])
    _, err = capsys.readouterr()
    assert code == 2 and "too short" in err


def _cut(tmp_path: Path, source: str, seconds: float, name: str) -> str:
    from breathsync.recording import read_column

    path = tmp_path / name
    values = read_column(source)[: int(seconds * 125)]
    path.write_text("resp\n" + "\n".join(f"{v:.5f}" for v in values) + "\n")
    return str(path)


@pytest.mark.parametrize("cut_s", [150.0, 240.0])
def test_recordings_cut_short_replay_the_same_up_to_the_cut(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cut_s: float
) -> None:
    # No look-ahead anywhere on the path, the simulated strap's front end included: what comes out before the cut
    # cannot depend on what the recordings hold after it (the strap's gain once read the whole file).
    def lines(therapist: str, client: str) -> list[dict[str, object]]:
        assert main(["replay", "--therapist", therapist, "--client", client, "--rate", "125"]) == 0
        records = [json.loads(line) for line in capsys.readouterr()[0].splitlines()]
        return [r for r in records if float(r["t_s"]) < cut_s - 1.0]

    whole = lines(_cut(tmp_path, A, 480, "a.csv"), _cut(tmp_path, B, 480, "b.csv"))
    cut = lines(_cut(tmp_path, A, cut_s, "a_cut.csv"), _cut(tmp_path, B, cut_s, "b_cut.csv"))
    assert len(cut) >= 10 and cut == whole


def test_each_file_can_name_its_own_signal_column(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Two devices' exports rarely share a column name: --therapist-column / --client-column over --column.
    from breathsync.recording import read_column

    files = {}
    for name, source, column in (("t.csv", A, "chest"), ("c.csv", B, "Resp_belt")):
        values = read_column(source)[: 200 * 125]
        files[name] = tmp_path / name
        files[name].write_text(f"time_s,{column}\n" + "\n".join(f"{i / 125:.3f},{v:.5f}" for i, v in enumerate(values)))
    plain = {name: _cut(tmp_path, source, 200, f"plain_{name}") for name, source in (("t.csv", A), ("c.csv", B))}
    assert main(["replay", "--therapist", plain["t.csv"], "--client", plain["c.csv"], "--rate", "125"]) == 0
    expected = capsys.readouterr()[0]
    args = ["replay", "--therapist", str(files["t.csv"]), "--client", str(files["c.csv"]), "--rate", "125"]
    assert main([*args, "--therapist-column", "chest", "--client-column", "Resp_belt"]) == 0
    out, err = capsys.readouterr()
    assert out == expected and out and err == ""
    # --column still names both; the per-file option wins for its file only.
    assert main([*args, "--column", "Resp_belt", "--therapist-column", "chest"]) == 0
    assert capsys.readouterr()[0] == expected
    assert main([*args, "--column", "chest"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "c.csv" in err and "'chest'" in err


def _decisions(out: str) -> list[tuple[float, str]]:
    lines = [json.loads(line) for line in out.splitlines()]
    return [(r["t_s"], r.get("decision", r["type"])) for r in lines]


def test_each_file_can_give_its_own_sampling_rate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Two devices rarely share a rate: a 100 Hz file replayed with a 125 Hz one was read at 125 Hz, its breathing
    # sped up by a quarter (an outside probe). The client's recording at 250 Hz, each sample written twice: the
    # strap's ADC averages the same signal, so the replay decides the same (its times are placed 2 ms apart, as an
    # input sample stands for an instant centred in its own, shorter period: a decision at a threshold can tip).
    from breathsync.recording import read_column

    plain = {name: _cut(tmp_path, source, 200, f"plain_{name}") for name, source in (("t.csv", A), ("c.csv", B))}
    assert main(["replay", "--therapist", plain["t.csv"], "--client", plain["c.csv"], "--rate", "125"]) == 0
    expected = _decisions(capsys.readouterr()[0])
    doubled = tmp_path / "c250.csv"
    doubled.write_text("resp\n" + "".join(f"{v!r}\n{v!r}\n" for v in read_column(plain["c.csv"]).tolist()))
    args = ["replay", "--therapist", plain["t.csv"], "--client", str(doubled)]
    assert main([*args, "--rate", "125", "--client-rate", "250"]) == 0
    out, err = capsys.readouterr()
    decisions = _decisions(out)
    assert len(decisions) == len(expected) > 50 and err == ""
    assert max(abs(a - b) for (a, _), (b, _) in zip(decisions, expected, strict=True)) < 0.01
    same = sum(a == b for (_, a), (_, b) in zip(decisions, expected, strict=True))
    assert same >= 0.95 * len(expected)  # a decision at a threshold can tip over
    assert main([*args, "--therapist-rate", "125", "--client-rate", "250"]) == 0  # no shared --rate needed
    assert _decisions(capsys.readouterr()[0]) == decisions
    assert main([*args, "--rate", "125", "--client-rate", "0"]) == 2
    assert "--client-rate must be a sampling rate within" in capsys.readouterr()[1]
    assert main([*args, "--therapist-rate", "125"]) == 2  # the client's rate is given nowhere
    assert f"{doubled}: give --rate HZ or --client-rate HZ (the file does not state" in capsys.readouterr()[1]


def test_recordings_the_engine_cannot_decide_on_are_explained(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Shorter than the baseline period: an error, not silence.
    short = _cut(tmp_path, B, 24, "short.csv")
    assert main(["replay", "--therapist", A, "--client", short, "--rate", "125"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "the client's recording is too short (24 s)" in err and "engine.baseline_s" in err
    # Different lengths: it runs, and says where decisions stop.
    part = _cut(tmp_path, B, 200, "part.csv")
    assert main(["replay", "--therapist", A, "--client", part, "--rate", "125"]) == 0
    out, err = capsys.readouterr()
    assert out and "note: the client's recording ends at 200 s, the other at 480 s" in err
    # A flat line: nothing to decide on, and the user is told why.
    flat = tmp_path / "flat.csv"
    flat.write_text("resp\n" + "0.5\n" * (125 * 300))
    assert main(["replay", "--therapist", A, "--client", str(flat), "--rate", "125"]) == 0
    assert "note: no breaths found for the client" in capsys.readouterr().err


def test_settings_that_would_silence_the_engine_are_rejected(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[engine]\nmax_sample_gap_s = 0.1\n")  # shorter than one BLE block: paused for ever
    code, out, err = _replay(capsys, "--config", str(cfg))
    assert code == 2 and out == "" and "max_sample_gap_s" in err
    cfg.write_bytes("[engine]\nbaseline_s = 60\n".encode("utf-16"))
    code, out, err = _replay(capsys, "--config", str(cfg))
    assert code == 2 and out == "" and "not UTF-8" in err and "Traceback" not in err


def test_replaying_an_empty_session_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from breathsync.store import SessionStore

    path = tmp_path / "empty.sqlite"
    SessionStore.create(path, {}).close()
    assert main(["replay", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "empty session (no samples from either strap)" in err


def _short_session(path: Path, seconds: int = 60) -> Path:
    """Both straps breathing (samples and breath events) for less than the engine's baseline period."""
    from breathsync.store import SessionStore, StoredEvent

    with SessionStore.create(path, {}) as store:
        for role in ("therapist", "client"):
            n = seconds * 25
            store.add_samples(role, list(range(n)), [100.0 + i / 25 for i in range(n)], [30000] * n)
            for k, counter in enumerate(range(50, n - 50, 50)):  # a peak or trough every 2 s
                kind = "peak" if k % 2 == 0 else "trough"
                store.add_event(StoredEvent(role, kind, counter, counter + 10, 500, 100, 100.0 + counter / 25))
    return path


def test_replaying_a_session_shorter_than_the_baseline_says_why_nothing_came(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _short_session(tmp_path / "short.sqlite")
    assert main(["replay", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "the session ends before the engine learned both baselines (the first 120 s" in err


@pytest.mark.parametrize(
    "option", [["--column", "rsp"], ["--therapist-column", "rsp"], ["--client-column", "rsp"], ["--strap-rate", "50"]]
)
def test_recording_options_with_a_session_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, option: list[str]
) -> None:
    path = _short_session(tmp_path / "short.sqlite")
    assert main(["replay", str(path), *option]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"{option[0]}" in err and "are for recordings; a SESSION keeps its straps' own" in err


def _with_missing(tmp_path: Path, source: str, stretches_s: list[tuple[float, float]], style: str) -> str:
    """``source`` with the samples of each stretch written as missing (an empty cell, NaN, or a BIDS n/a)."""
    from breathsync.recording import read_column

    values = read_column(source)
    gone = np.zeros(len(values), dtype=bool)
    for a, b in stretches_s:
        gone[int(a * 125) : int(b * 125)] = True
    path = tmp_path / f"missing_{len(style)}.csv"
    cells = (style if g else f"{v:.5f}" for v, g in zip(values, gone, strict=True))
    path.write_text("t_s,resp\n" + "\n".join(f"{i / 125:.3f},{c}" for i, c in enumerate(cells)) + "\n")
    return str(path)


@pytest.mark.parametrize("style", ["", "NaN", "n/a"])
def test_missing_samples_replay_as_a_drop_out(capsys: pytest.CaptureFixture[str], tmp_path: Path, style: str) -> None:
    # A recording with holes (an exporter's NaN, a loose lead) is not bad input: the strap sent nothing then.
    holed = _with_missing(tmp_path, A, [(200.0, 230.0), (300.0, 300.4)], style)
    # The same values written the same way without holes (the bundled file has a sixth decimal here and there).
    assert main(["replay", "--therapist", _cut(tmp_path, A, 480, "whole.csv"), "--client", B, "--rate", "125"]) == 0
    full = capsys.readouterr()[0]
    assert main(["replay", "--therapist", holed, "--client", B, "--rate", "125"]) == 0
    out, err = capsys.readouterr()
    assert (
        "the therapist's recording has 2 stretch(es) of missing samples (30.4 s in all): 1 replayed as drop-outs "
        "(no data from that strap), 1 shorter than 0.5 s bridged"
    ) in err
    states = [json.loads(line) for line in out.splitlines() if '"state"' in line]
    before = [line for line in full.splitlines() if json.loads(line)["t_s"] < 199.0]
    assert out.splitlines()[: len(before)] == before  # no look-ahead: nothing before the hole changes
    in_hole = [s for s in states if 202.5 <= s["t_s"] <= 230.0]
    assert in_hole and all(s["decision"] == "paused" for s in in_hole)  # > max_sample_gap_s without samples
    assert any(s["decision"] != "paused" for s in states if s["t_s"] > 240.0)  # and it carries on afterwards


def test_a_recording_with_no_samples_at_all_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "nan.csv"
    empty.write_text("resp\n" + "nan\n" * 20000)
    code = main(["replay", "--therapist", str(empty), "--client", B, "--rate", "125"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"breathsync replay: {empty}: the recording has no samples, only missing values"
    ]


def test_infinite_values_are_still_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "inf.csv"
    bad.write_text("resp\n" + "0.5\n" * 100 + "inf\n" + "0.5\n" * 20000)
    code = main(["replay", "--therapist", str(bad), "--client", B, "--rate", "125"])
    _, err = capsys.readouterr()
    assert code == 2 and "row 101: 'resp' is not finite (inf)" in err


def test_recordings_that_end_before_the_baselines_are_learned_say_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The client's strap sends nothing for 160 s, then 40 s of breathing: nothing to decide on, and silence
    # used to be all the user got.
    late = _with_missing(tmp_path, B, [(0.0, 160.0)], "NaN")
    from breathsync.recording import read_column

    values = read_column(late, missing_ok=True)[: 200 * 125]
    short = tmp_path / "late.csv"
    short.write_text("resp\n" + "\n".join("NaN" if np.isnan(v) else f"{v:.5f}" for v in values) + "\n")
    therapist = _cut(tmp_path, A, 200, "therapist.csv")
    assert main(["replay", "--therapist", therapist, "--client", str(short), "--rate", "125"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "note: the recordings end before the engine learned both baselines (the first 120 s in which" in err


def test_rows_left_out_of_a_timed_recording_are_missing_samples(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Rows for 240-250 s deleted from a file with a time column used to pull everything after 240 s 10 s early.
    from breathsync.recording import read_column

    values = read_column(A)
    keep = np.ones(len(values), dtype=bool)
    keep[240 * 125 : 250 * 125] = False
    marked = _with_missing(tmp_path, A, [(240.0, 250.0)], "NaN")
    expected = main(["replay", "--therapist", marked, "--client", B, "--rate", "125"])
    reference = capsys.readouterr().out
    assert expected == 0 and reference
    for unit, scale in (("time_s", 1.0), ("time_ms", 1000.0)):
        cut = tmp_path / f"cut_{unit}.csv"
        rows = (f"{i / 125 * scale:.3f},{v:.5f}" for i, v in enumerate(values) if keep[i])
        cut.write_text(f"{'time' if unit == 'time_ms' else unit},resp\n" + "\n".join(rows) + "\n")
        assert main(["replay", "--therapist", str(cut), "--client", B, "--rate", "125"]) == 0
        out, err = capsys.readouterr()
        assert "the therapist's 'time' column skips 1250 samples in 1 place(s)" in err.replace("'time_s'", "'time'")
        assert out == reference


def test_a_time_column_that_runs_backwards_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from breathsync.recording import read_column

    values = read_column(A)
    times = np.arange(len(values)) / 125
    times[1000] = times[998]
    bad = tmp_path / "back.csv"
    bad.write_text("t_s,resp\n" + "\n".join(f"{t:.3f},{v:.5f}" for t, v in zip(times, values, strict=True)) + "\n")
    assert main(["replay", "--therapist", str(bad), "--client", B, "--rate", "125"]) == 2
    _, err = capsys.readouterr()
    assert err.strip().splitlines() == [f"breathsync replay: {bad}: row 1001: 't_s' goes backwards or repeats"]


def test_a_time_column_in_other_units_is_ignored_with_a_note(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from breathsync.recording import read_column

    values = read_column(A)
    indexed = tmp_path / "indexed.csv"  # 't' counts samples, not seconds: rows stay consecutive samples
    indexed.write_text("t,resp\n" + "\n".join(f"{i},{v:.5f}" for i, v in enumerate(values)) + "\n")
    plain = _cut(tmp_path, A, 480, "plain.csv")
    assert main(["replay", "--therapist", plain, "--client", B, "--rate", "125"]) == 0
    reference = capsys.readouterr().out
    assert main(["replay", "--therapist", str(indexed), "--client", B, "--rate", "125"]) == 0
    out, err = capsys.readouterr()
    assert "the therapist's column 't' does not step by 1/--rate (in s or ms) (its step, 1, is 1 Hz in s" in err
    assert out == reference
    # A time column of a file at another rate than --rate says what rate it shows (a review: 125 Hz as --rate 250).
    timed = tmp_path / "timed.csv"
    timed.write_text("time_s,resp\n" + "\n".join(f"{i / 125:.3f},{v:.5f}" for i, v in enumerate(values)) + "\n")
    assert main(["detect", str(timed), "--rate", "250"]) == 0
    assert "(its step, 0.008, is 125 Hz in s, 125000 Hz in ms)" in capsys.readouterr().err
    # A column that does not move at all states no rate (the first version divided by its step: a traceback).
    still = tmp_path / "still.csv"
    still.write_text("t,resp\n" + "\n".join(f"0,{v:.5f}" for v in values) + "\n")
    assert main(["detect", str(still), "--rate", "125"]) == 0
    assert "column 't' does not step by 1/--rate (in s or ms): rows are taken" in capsys.readouterr().err


def test_an_upside_down_recording_is_read_inverted_with_a_note(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from breathsync.recording import read_column

    flipped = tmp_path / "flipped.csv"
    flipped.write_text("resp\n" + "\n".join(f"{-v:.5f}" for v in read_column(B)) + "\n")
    assert main(["replay", "--therapist", A, "--client", str(flipped), "--rate", "125"]) == 0
    out, err = capsys.readouterr()
    assert out and err.count("note:") == 1
    assert "note: the client's signal looks upside down (inspiration pointing down)" in err
    # Off in the config: taken as it comes, without a note.
    cfg = tmp_path / "c.toml"
    cfg.write_text("[engine]\nauto_polarity = false\n")
    assert main(["replay", "--therapist", A, "--client", str(flipped), "--rate", "125", "--config", str(cfg)]) == 0
    out_as_is, err = capsys.readouterr()
    assert err == "" and out_as_is != out


@pytest.mark.parametrize("strap_rate_hz", [25, 50])
def test_replayed_blocks_are_as_long_as_the_straps_live_packets(strap_rate_hz: int) -> None:
    from breathsync.engine.replay import strap_stream
    from breathsync.engine.stream import StrapBlock
    from breathsync.fwcore import packets as firmware_packets
    from breathsync.protocol import packets as host_packets

    assert firmware_packets.FLUSH_AFTER_MS == host_packets.FLUSH_AFTER_MS
    # The strap's rule (strap/stream.py): live samples leave once FLUSH_AFTER_MS of them are pending.
    live = next(p for p in range(1, 1000) if p * 1000 >= firmware_packets.FLUSH_AFTER_MS * strap_rate_hz)
    signal = np.sin(2 * np.pi * 0.25 * np.arange(0, 60, 0.01))
    blocks = [
        item for _, _, item in strap_stream("therapist", signal, 100.0, strap_rate_hz) if isinstance(item, StrapBlock)
    ]
    assert {len(b.counts) for b in blocks[:-1]} == {live}
