"""Research outputs on real SessionStore files built from bundled recordings.

Each session is two real respiration records (BIDMC) through the strap's ADC model and the
firmware breath detector at 25 Hz, stored the way the daemon stores them (counters, host times,
events), with radio drop-outs cut out, engine states and nudges from the engine's own record
types. The checks compare every output with what the store holds, not with fixed numbers.
"""

from __future__ import annotations

import base64
import copy
import csv
import gzip
import html
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyedflib
import pytest

from breathsync.adc import simulate_adc
from breathsync.cli import main
from breathsync.datasets import BIDMC_RATE_HZ, bundled_path
from breathsync.detector import BreathEvent, detect_cpython
from breathsync.engine.baseline_file import BaselineFile, store_baseline
from breathsync.engine.state import Baseline, Efficacy, EngineState, HapticPattern, Nudge
from breathsync.errors import InputError
from breathsync.recording import read_column
from breathsync.research import load_session
from breathsync.research.export_bids import default_bids_names, export_bids
from breathsync.research.export_csv import export_csv, unflatten
from breathsync.research.export_edf import EDF_GAP_DIGITAL, EDF_PHYSICAL_MIN, export_edf
from breathsync.research.report import summarise
from breathsync.research.session import common_grid, find_episodes, resample
from breathsync.store import SessionStore, StoredEvent, StoredNudge, StoredState, StrapInfo

RATE_HZ = 25
HOST_T0_S = 5000.0  # the host's monotonic clock has an arbitrary origin
CREATED_UNIX_S = 1_750_000_000.25
RECORDS = {"therapist": "bidmc_04", "client": "bidmc_18"}
COUNTER_START = {"therapist": 70_000, "client": 12}  # straps count from power-on, not from the session
START_OFFSET_S = {"therapist": 0.0, "client": 0.37}
GAPS = {"therapist": [(2000, 2100)], "client": [(5000, 5040), (9000, 9013)]}  # sample indices [a, b)


@dataclass(frozen=True)
class Strap:
    counts: list[int]
    events: list[BreathEvent]


@cache
def strap(record: str) -> Strap:
    """A 25 Hz strap on a bundled 125 Hz record: u16 ADC counts and the firmware's events."""
    signal = read_column(bundled_path(f"{record}_resp.csv.gz"))
    counts = simulate_adc(signal, BIDMC_RATE_HZ, RATE_HZ).counts_u16.tolist()
    return Strap(counts, detect_cpython(counts, RATE_HZ))


def host_t(role: str, index: int) -> float:
    return HOST_T0_S + START_OFFSET_S[role] + index / RATE_HZ


def _lost(role: str, index: int) -> bool:
    return any(a <= index < b for a, b in GAPS[role])


def _store_strap(store: SessionStore, role: str) -> None:
    data = strap(RECORDS[role])
    c0 = COUNTER_START[role]
    kept = [i for i in range(len(data.counts)) if not _lost(role, i)]
    for start in range(0, len(kept), 8):  # one BLE notification at a time, as the daemon does
        block = kept[start : start + 8]
        store.add_samples(
            role, [c0 + i for i in block], [host_t(role, i) for i in block], [data.counts[i] for i in block]
        )
    for e in data.events:
        if not _lost(role, e.index):
            store.add_event(
                StoredEvent(
                    role,
                    e.kind,
                    c0 + e.index,
                    c0 + e.confirmed_index,
                    e.depth_counts,
                    e.interval_samples,
                    host_t(role, e.index),
                )
            )
    store.set_strap(
        StrapInfo(role, f"AA:BB:CC:DD:EE:0{len(role)}", f"strap-{role[0].upper()}", "0.3.1", 1, RATE_HZ), HOST_T0_S
    )


def _decision(t_rel_s: float) -> str:
    if t_rel_s < 120:
        return "learning"
    if 200 <= t_rel_s < 290 and t_rel_s != 260:
        return "therapist_follows"
    if t_rel_s == 260:
        return "nudge"
    if 330 <= t_rel_s < 380:
        return "locked_client_follows"
    return "no_lock"


def engine_state(t_rel_s: float) -> dict[str, object]:
    """An engine state as the daemon stores it (EngineState.as_json_dict), plausible numbers."""
    decision = _decision(t_rel_s)
    locked = decision in ("therapist_follows", "nudge", "locked_client_follows")
    learning = decision == "learning"
    state = EngineState(
        t_s=HOST_T0_S + t_rel_s,
        decision=decision,  # type: ignore[arg-type]
        therapist_rate_bpm=None if learning else 14.0 + (t_rel_s % 7) / 7,
        client_rate_bpm=None if learning else 18.5,
        therapist_depth=None,
        client_depth=None,
        phase_diff_deg=None if learning else 35.0,
        lag_s=None if learning else 0.4,
        plv=None if learning else (0.85 if locked else 0.3),
        plv_breaths=7,
        phase_known_until_s=None if learning else HOST_T0_S + t_rel_s - 1.0,
        plv_chance=None if learning else 0.55,
        plv_p=None if learning else (0.04 if locked else 0.6),
        plv_chance_analytic=0.335,
        lag_locking=None if learning else (0.9 if locked else 0.2),
        lag_locking_p=None if learning else (0.04 if locked else 0.7),
        lag_asymmetry=None,
        rate_convergence_bpm=None,
        depth_mimicry=None,
        therapist_rate_move=None,
        client_rate_move=None,
        therapist_response=None,
        client_response=None,
        therapist_lagged=None,
        client_lagged=None,
        therapist_follow=None,
        client_follow=None,
        direction=None
        if learning
        else (1.2 if decision in ("therapist_follows", "nudge") else -0.9 if locked else 0.1),
        beat_period_s=None,
        beat_cycles=None,
        locked_for_s=25.0 if locked else 0.0,
        muted=False,
    )
    return state.as_json_dict()


def _nudge(t_rel_s: float) -> dict[str, object]:
    pattern = HapticPattern(pulse_count=3, on_ms=2000, off_ms=2000, intensity_pct=60)
    return Nudge(HOST_T0_S + t_rel_s, pattern, "paced", 0.85, 1.2, 25.0, 18.0, 18.5, 14.0).as_json_dict()


NUDGES = [(260.0, True, 18.0), (420.0, False, None), (470.0, None, None)]  # (time, decoupled, after_s); None = pending


def build_session(path: Path, roles: tuple[str, ...] = ("therapist", "client"), engine: bool = True) -> Path:
    with SessionStore.create(path, config={"engine": {"engine": {"min_locked_s": 20.0}, "policy": {}}}) as store:
        store.set_meta("created_unix_s", repr(CREATED_UNIX_S))
        for role in roles:
            _store_strap(store, role)
        if not engine:
            return path
        for state_t in range(0, 480, 5):
            store.add_state(HOST_T0_S + state_t, engine_state(float(state_t)))
        for t_rel, decoupled, after in NUDGES:
            nudge_id = store.add_nudge(HOST_T0_S + t_rel, _nudge(t_rel))
            if decoupled is not None:
                efficacy = Efficacy(HOST_T0_S + t_rel + 60, HOST_T0_S + t_rel, decoupled, after)
                store.set_nudge_efficacy(nudge_id, efficacy.as_json_dict())
        store.add_link_event(host_t("therapist", 2000), "therapist", "disconnected", "supervision timeout")
        store.add_link_event(host_t("therapist", 2100), "therapist", "connected", "AA:BB")
        store.add_link_event(HOST_T0_S - 0.07, "client", "connected", "CC:DD")  # before the first sample
        store.add_link_event(HOST_T0_S - 10.64, "therapist", "connect-failed", "no strap answered")
        store.add_link_event(host_t("client", 900), "client", "battery", "12 % (about 25 min left at this rate)")
    return path


@pytest.fixture(scope="module")
def session_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_session(tmp_path_factory.mktemp("session") / "dyad01.sqlite")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# -- the session model -----------------------------------------------------------------------------


def test_session_zero_gaps_and_episodes(session_file: Path) -> None:
    session = load_session(session_file)
    assert session.t0_host_s == HOST_T0_S
    assert session.start_unix_s == CREATED_UNIX_S
    assert sorted(g.missing_samples for g in session.gaps()) == sorted(b - a for gs in GAPS.values() for a, b in gs)
    for gap in session.gaps():
        assert gap.duration_s == pytest.approx(gap.missing_samples / RATE_HZ)
    episodes = session.episodes()
    assert [e.follower for e in episodes] == ["therapist", "client"]
    assert episodes[0].nudges == 1
    assert session.rel(episodes[0].start_host_t_s) == 200 and session.rel(episodes[0].end_host_t_s) == 290


def test_flickering_decisions_make_one_episode_not_many() -> None:
    """A few non-following updates inside a stretch of following (decisions flicker near their
    thresholds) do not split it; a lone update is not an episode; a stretch with a nudge always is."""
    decisions = {100: "therapist_follows", 104: "locked_unclear", 106: "therapist_follows", 130: "no_lock"}
    decisions |= {131: "therapist_follows", 140: "no_lock", 200: "therapist_follows", 201: "no_lock"}
    decisions |= {300: "nudge", 301: "no_lock", 400: "locked_client_follows", 420: "no_lock"}
    decisions |= {500: "therapist_follows", 530: "locked_client_follows", 532: "therapist_follows", 560: "no_lock"}
    states = [StoredState(float(t), {"decision": d}) for t, d in sorted(decisions.items())]
    nudge = StoredNudge(id=1, t_s=300.0, detail={}, efficacy=None)
    episodes = find_episodes(states, [nudge])
    assert [(e.follower, e.start_host_t_s, e.end_host_t_s, e.nudges) for e in episodes] == [
        ("therapist", 100.0, 140.0, 0),  # 104-106 and 130-131 bridged
        ("therapist", 300.0, 301.0, 1),  # short, but it was nudged
        ("client", 400.0, 420.0, 0),
        ("therapist", 500.0, 560.0, 0),  # 2 s of 'client follows' inside it is flicker too
    ]  # 200-201 (one update) is flicker, not an episode


def test_the_time_no_run_was_recording_is_no_decision(tmp_path: Path) -> None:
    """A Ctrl-C at 282 s and a resume at 307 s (an outside review): the report counted the 25 s between as the last
    decision's, so an episode ran on through minutes nobody recorded. A crash (no 'closed') stops at the last state."""
    from breathsync.research.report import summarise

    path = tiny_session(tmp_path / "stopped.sqlite", seconds=400.0)
    t0 = HOST_T0_S
    with SessionStore.open(path) as store:
        for t, decision in ((240, "therapist_follows"), (260, "therapist_follows"), (282, "therapist_follows")):
            store.add_state(t0 + t, engine_state(t) | {"decision": decision})
        for role in ("therapist", "client"):
            store.add_link_event(t0 + 282.6, role, "closed", "stopped")
            store.add_link_event(t0 + 307.4, role, "resumed", "continued after the run before had ended it")
        for t, decision in ((307.4, "therapist_follows"), (318, "no_lock"), (330, "therapist_follows")):
            store.add_state(t0 + t, engine_state(t) | {"decision": decision})
        store.add_link_event(t0 + 345.0, "therapist", "resumed", "the run before ended without closing it")
        store.add_state(t0 + 345.0, engine_state(345.0) | {"decision": "no_lock"})
    session = load_session(path)
    assert [(round(a - t0, 1), round(b - t0, 1)) for a, b in session.host_stops()] == [(282.6, 307.4), (330.0, 345.0)]
    episodes = [
        (e.follower, round(e.start_host_t_s - t0, 1), round(e.end_host_t_s - t0, 1)) for e in session.episodes()
    ]
    assert episodes == [("therapist", 240.0, 282.6), ("therapist", 307.4, 318.0)]
    decided = summarise(session).decision_s
    assert sum(decided.values()) == pytest.approx(400.0 - (307.4 - 282.6) - (345.0 - 330.0), abs=0.1)


@pytest.mark.parametrize(
    ("unseen_s", "outcome", "card"),
    [
        (0.0, "therapist did not decouple within the efficacy window</td>", "0 of 1 (0 %)"),
        (29.4, "therapist did not decouple within the efficacy window (29 s of it without a strap's data)", "0 of 1"),
        (45.0, "not judged: no data from a strap for 45 s of the 60 s efficacy window", "n/a; 1 not judged"),
    ],
)
def test_a_nudge_whose_efficacy_window_was_not_seen_is_not_called_a_failure(
    tmp_path: Path, unseen_s: float, outcome: str, card: str
) -> None:
    # An outside review: the client out of range for 29 s of the 60 after a nudge, and the report said 'nudges that
    # worked 0 of 1' with no word of it.
    from breathsync.research.report import write_report

    path = tiny_session(tmp_path / "unseen.sqlite", seconds=120.0, nudge_at_s=30.0)
    with SessionStore.open(path) as store:
        store.set_nudge_efficacy(1, {"decoupled": False, "after_s": None, "paused_s": unseen_s})
    page = html.unescape(write_report(load_session(path), tmp_path / "report").html.read_text())
    assert outcome in page
    assert card in page


def test_the_report_gives_the_start_in_local_time_and_utc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A therapist's review: the report said when the session started in UTC only.
    import time

    from breathsync.research.report import write_report

    path = tiny_session(tmp_path / "local.sqlite", seconds=30.0)
    utc = datetime.fromtimestamp(CREATED_UNIX_S, UTC)  # the zero's wall clock: host times here are not Unix times
    try:
        monkeypatch.setenv("TZ", "CET-1")  # POSIX rule: no zoneinfo files needed
        time.tzset()
        page = write_report(load_session(path), tmp_path / "cet").html.read_text()
        local = utc + timedelta(hours=1)
        assert f"Started {local:%Y-%m-%d %H:%M:%S} CET ({utc:%H:%M:%S} UTC)" in page
        monkeypatch.setenv("TZ", "UTC0")
        time.tzset()
        page = write_report(load_session(path), tmp_path / "utc").html.read_text()
        assert f"Started {utc:%Y-%m-%d %H:%M:%S} UTC ·" in page
    finally:
        monkeypatch.undo()
        time.tzset()


def test_resample_keeps_stored_values_and_leaves_gaps_empty(session_file: Path) -> None:
    session = load_session(session_file)
    therapist = session.roles["therapist"]
    grid = common_grid(session)
    values = resample(therapist, grid)
    # The therapist defines the session zero, so its samples sit on the grid exactly.
    stored = therapist.samples
    idx = np.round((stored.host_t_s - session.t0_host_s) * RATE_HZ).astype(int)
    assert np.array_equal(values[idx], stored.values.astype(float))
    assert np.isnan(values).sum() == sum(b - a for a, b in GAPS["therapist"]) + (len(grid) - idx[-1] - 1)


# -- CSV ------------------------------------------------------------------------------------------


def test_csv_round_trip_equals_the_store(session_file: Path, tmp_path: Path) -> None:
    session = load_session(session_file)
    files = export_csv(session, tmp_path)
    assert {p.name for p in files} >= {
        "samples_therapist.csv",
        "samples_client.csv",
        "events.csv",
        "nudges.csv",
        "states.csv",
        "link_events.csv",
        "dropouts.csv",
        "session.json",
    }
    with SessionStore.open(session_file) as store:
        for role in ("therapist", "client"):
            rows = read_csv(tmp_path / f"samples_{role}.csv")
            stored = store.samples(role)
            assert [int(r["counter"]) for r in rows] == stored.counters.tolist()
            assert [float(r["host_t_s"]) for r in rows] == stored.host_t_s.tolist()  # exact: repr floats
            assert [int(r["value"]) for r in rows] == stored.values.tolist()
            assert float(rows[0]["session_t_s"]) == pytest.approx(START_OFFSET_S[role])
        events = read_csv(tmp_path / "events.csv")
        expected = sorted(store.events(), key=lambda e: e.host_t_s)
        assert [
            StoredEvent(
                r["role"],
                r["kind"],
                int(r["counter"]),
                int(r["confirmed_counter"]),
                int(r["depth_counts"]),
                int(r["interval_samples"]),
                float(r["host_t_s"]),
            )
            for r in events
        ] == expected
        nudges = read_csv(tmp_path / "nudges.csv")
        for row, nudge in zip(nudges, store.nudges(), strict=True):
            assert int(row["id"]) == nudge.id and float(row["host_t_s"]) == nudge.t_s
            detail = {
                k: v
                for k, v in unflatten(row).items()
                if k not in ("id", "host_t_s", "session_t_s", "evaluated", "efficacy")
            }
            assert detail == nudge.detail
            efficacy = unflatten(row, "efficacy.") if row["evaluated"] == "true" else None
            assert efficacy == nudge.efficacy
        states = read_csv(tmp_path / "states.csv")
        for row, state in zip(states, store.states(), strict=True):
            assert float(row["host_t_s"]) == state.t_s
            assert {k: v for k, v in unflatten(row).items() if k not in ("host_t_s", "session_t_s")} == state.fields
        links = read_csv(tmp_path / "link_events.csv")
        assert [(float(r["host_t_s"]), r["role"], r["kind"], r["detail"]) for r in links] == store.link_events()
    dropouts = read_csv(tmp_path / "dropouts.csv")
    assert sorted(int(r["missing_samples"]) for r in dropouts) == sorted(b - a for g in GAPS.values() for a, b in g)
    info = json.loads((tmp_path / "session.json").read_text())
    assert info["start_unix_s"] == CREATED_UNIX_S and [s["role"] for s in info["straps"]] == ["therapist", "client"]


# -- EDF+ -----------------------------------------------------------------------------------------


def test_edf_read_back(session_file: Path, tmp_path: Path) -> None:
    session = load_session(session_file)
    path = export_edf(session, tmp_path)
    grid = common_grid(session)
    with pyedflib.EdfReader(str(path)) as edf:
        assert edf.getSignalLabels() == ["Resp therapist", "Resp client"]
        assert [edf.getSampleFrequency(i) for i in range(2)] == [RATE_HZ, RATE_HZ]
        assert edf.getPhysicalDimension(0) == "counts"
        assert edf.getPatientName() in ("", "X") and edf.getPatientCode() in ("", "X")
        # EDF start = the session zero's wall clock, written as UTC (EDF has no time zone field).
        start = datetime.fromtimestamp(CREATED_UNIX_S, UTC).replace(tzinfo=None, microsecond=0)
        assert edf.getStartdatetime().replace(microsecond=0) == start
        for i, role in enumerate(("therapist", "client")):
            expected = resample(session.roles[role], grid)
            signal = edf.readSignal(i)[: len(grid)]
            digital = edf.readSignal(i, digital=True)[: len(grid)]
            finite = np.isfinite(expected)
            assert np.max(np.abs(signal[finite] - expected[finite])) <= 0.51  # one quantisation step
            assert np.array_equal(digital[~finite] == EDF_GAP_DIGITAL, np.ones((~finite).sum(), dtype=bool))
            assert np.all(signal[~finite] == EDF_PHYSICAL_MIN)
            assert not np.any(digital[finite] == EDF_GAP_DIGITAL)
        onsets, durations, texts = edf.readAnnotations()
    texts = list(texts)
    for role in ("therapist", "client"):
        for kind in ("peak", "trough"):
            stored = [e for e in session.roles[role].events if e.kind == kind]
            times = onsets[[t == f"{kind} {role}" for t in texts]]
            assert len(times) == len(stored)
            assert np.allclose(times, [session.rel(e.host_t_s) for e in stored], atol=1e-3)
    assert sorted(t for t in texts if t.startswith("nudge")) == [
        "nudge decoupled",
        "nudge not decoupled",
        "nudge pending",
    ]
    dropouts = [(o, d) for o, d, t in zip(onsets, durations, texts, strict=True) if t.startswith("dropout")]
    assert sorted(round(d * RATE_HZ) for _, d in dropouts) == sorted(b - a for g in GAPS.values() for a, b in g)
    assert "therapist follows client" in texts and "link therapist disconnected" in texts
    early = [o for o, t in zip(onsets, texts, strict=True) if t == "link client connected (at -0.07 s)"]
    assert early == [0.0]  # EDF+ cannot start an annotation before the file: kept at 0, not dropped
    # Texts longer than edflib keeps are cut on purpose, the real time of a pre-zero event kept whole (a review).
    assert "link therapist connect-fa~ (at -10.64 s)" in texts
    assert "battery client 12 % (about 25 min left ~" in texts

    # -- BIDS -----------------------------------------------------------------------------------------
    # The start is the session zero to the fraction of a second, which EDF+ keeps in the first data record's
    # time-keeping annotation (the header has whole seconds): 1_750_000_000.25 starts at hh:mm:ss + 0.25 s.
    raw = path.read_bytes()
    stamp = re.search(rb"\+(\d+(?:\.\d+)?)\x14\x14\x00", raw[int(raw[184:192]) :])
    assert stamp is not None and float(stamp.group(1)) == pytest.approx(0.25)
    with pyedflib.EdfReader(str(path)) as edf:
        assert edf.starttime_subsecond == 2_500_000  # EDFlib's unit: 100 ns (pyedflib's getStartdatetime misreads it)


def test_bids_files_are_structurally_valid(session_file: Path, tmp_path: Path) -> None:
    session = load_session(session_file)
    names = default_bids_names(session, tmp_path, subject="dyad-01", ses="1")
    files = export_bids(session, names)
    beh = tmp_path / "sub-dyad01" / "ses-1" / "beh"
    description = json.loads((tmp_path / "dataset_description.json").read_text())
    assert description["BIDSVersion"] and description["DatasetType"] == "raw"
    assert description["Name"] == "breathsync therapist-client respiration"  # the dataset's, not one session's
    description.update(Name="Dyads of clinic A", Authors=["A. Researcher"])  # a later export keeps what they wrote
    (tmp_path / "dataset_description.json").write_text(json.dumps(description))
    export_bids(session, default_bids_names(session, tmp_path, subject="dyad-02", ses="1"))
    again = json.loads((tmp_path / "dataset_description.json").read_text())
    assert again["Name"] == "Dyads of clinic A" and again["Authors"] == ["A. Researcher"]
    assert again["BIDSVersion"] == description["BIDSVersion"]
    for role in ("therapist", "client"):
        stem = f"sub-dyad01_ses-1_task-therapy_recording-{role}_physio"
        sidecar = json.loads((beh / f"{stem}.json").read_text())
        assert sidecar["SamplingFrequency"] == RATE_HZ
        assert sidecar["StartTime"] == pytest.approx(START_OFFSET_S[role])
        columns = sidecar["Columns"]
        assert columns == ["respiratory"] and {"Units", "Description"} <= set(sidecar["respiratory"])
        with gzip.open(beh / f"{stem}.tsv.gz", "rt") as handle:
            rows = [line.rstrip("\n").split("\t") for line in handle]
        assert all(len(row) == len(columns) for row in rows)  # no header line, one cell per column
        assert len(rows) == len(strap(RECORDS[role]).counts)
        values = [row[0] for row in rows]
        assert values.count("n/a") == sum(b - a for a, b in GAPS[role])
        counts = strap(RECORDS[role]).counts
        assert all(v == "n/a" or int(v) == counts[i] for i, v in enumerate(values))
    with (beh / "sub-dyad01_ses-1_task-therapy_events.tsv").open() as handle:
        events = list(csv.DictReader(handle, delimiter="\t"))
    assert list(events[0])[:2] == ["onset", "duration"]
    assert [float(e["onset"]) for e in events] == sorted(float(e["onset"]) for e in events)
    assert sum(e["trial_type"] == "nudge" for e in events) == len(NUDGES)
    sidecar = json.loads((beh / "sub-dyad01_ses-1_task-therapy_events.json").read_text())
    assert set(events[0]) <= set(sidecar)
    scans = (tmp_path / "sub-dyad01" / "ses-1" / "sub-dyad01_ses-1_scans.tsv").read_text().splitlines()
    assert scans[0] == "filename\tacq_time" and len(scans) == 3
    assert all(p.exists() for p in files)


def test_a_bids_export_into_a_dataset_keeps_its_participant_columns_and_lists_each_subject_once(
    session_file: Path, tmp_path: Path
) -> None:
    # Exporting into a researcher's dataset replaced their participants.json (the age and sex descriptions were
    # lost), appended a row with one cell under a three-column header, and listed a subject twice.
    (tmp_path / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t34\tF\nsub-03\t40\tM\n")
    described = {"age": {"Description": "age of the therapist", "Units": "years"}, "sex": {"Description": "sex"}}
    (tmp_path / "participants.json").write_text(json.dumps(described))
    session = load_session(session_file)
    export_bids(session, default_bids_names(session, tmp_path, subject="02", ses="1"))
    export_bids(session, default_bids_names(session, tmp_path, subject="03", ses="1"))
    rows = [line.split("\t") for line in (tmp_path / "participants.tsv").read_text().splitlines()]
    assert rows == [
        ["participant_id", "age", "sex"],
        ["sub-01", "34", "F"],
        ["sub-03", "40", "M"],
        ["sub-02", "n/a", "n/a"],
    ]
    sidecar = json.loads((tmp_path / "participants.json").read_text())
    assert {k: sidecar[k] for k in described} == described and "Description" in sidecar["participant_id"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "participants.tsv").write_text("subject\tage\n01\t30\n")
    with pytest.raises(InputError, match="first column is 'subject', not participant_id"):
        export_bids(session, default_bids_names(session, tmp_path / "other", subject="02", ses="1"))
    assert (tmp_path / "other" / "participants.tsv").read_text() == "subject\tage\n01\t30\n"
    assert not (tmp_path / "other" / "sub-02").exists()
    (tmp_path / "bom").mkdir()  # saved by a spreadsheet, with a byte-order mark
    (tmp_path / "bom" / "participants.tsv").write_text("\ufeffparticipant_id\tage\nsub-01\t34\n", encoding="utf-8")
    export_bids(session, default_bids_names(session, tmp_path / "bom", subject="02", ses="1"))
    assert (tmp_path / "bom" / "participants.tsv").read_text().splitlines()[-1] == "sub-02\tn/a"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_an_export_ended_by_a_signal_leaves_nothing_behind(session_file: Path, tmp_path: Path, signum: int) -> None:
    # SIGTERM (a kill, a logout) and SIGHUP (the terminal closed) during an export left its half-written files in
    # a hidden .breathsync-partial-* directory in --out, which later exports never removed. The writer is made
    # slow here (a long session's export takes minutes) so that the signal comes while it writes.
    out = tmp_path / "out"
    out.mkdir()  # a folder the researcher made: it stays, empty
    script = textwrap.dedent(
        f"""
        import sys, time
        import breathsync.research.export_csv as export_csv
        from breathsync.cli import main
        files = export_csv._csv_files
        def slow(session, directory):
            written = files(session, directory)
            print("written", flush=True)
            time.sleep(60)
            return written
        export_csv._csv_files = slow
        sys.exit(main(["export", {str(session_file)!r}, "--format", "csv", "--out", {str(out)!r}]))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "written\n"
        assert any(p.name.startswith(".breathsync-partial-") for p in out.iterdir())
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == (130 if signum == signal.SIGINT else 128 + signum), err
    assert list(out.iterdir()) == []


def test_a_session_name_without_ascii_letters_asks_for_a_bids_subject(session_file: Path, tmp_path: Path) -> None:
    # '日本' are letters, yet 'needs letters or digits' said otherwise and named no way out.
    named = tmp_path / "日本.sqlite"
    shutil.copy(session_file, named)
    session = load_session(named)
    with pytest.raises(InputError, match=re.escape("only the ASCII letters A-Z, a-z and the digits 0-9): give one")):
        default_bids_names(session, tmp_path / "out")
    assert default_bids_names(session, tmp_path / "out", subject="jp01").subject == "jp01"


def test_an_export_never_overwrites_a_session_file(session_file: Path, tmp_path: Path) -> None:
    # A session renamed x.edf and exported to EDF beside itself was replaced by its own export (exit 0).
    renamed = tmp_path / "x.edf"
    shutil.copy(session_file, renamed)
    before = renamed.read_bytes()
    with pytest.raises(InputError, match=re.escape(f"{renamed}: is a SQLite database (a stored session?)")):
        export_edf(load_session(renamed), tmp_path)
    assert renamed.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.edf"]


@pytest.mark.parametrize(("fmt", "name"), [("csv", "events.csv"), ("csv", "session.json"), ("edf", "monday.edf")])
def test_an_export_replaces_an_earlier_export_of_its_session_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, name: str
) -> None:
    # An input review: a user's own events.csv and session.json (notes), or a hand-made monday.edf, were replaced
    # by an export without a word, and a second session's CSV export into the same folder replaced the first's.
    monday = tiny_session(tmp_path / "monday.sqlite")
    out = tmp_path / "out"
    out.mkdir()
    mine = out / name
    mine.write_text("my own notes\n")
    assert main(["export", str(monday), "--format", fmt, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{mine}: exists and is not an earlier output of this session; not overwritten" in err, err
    assert len(err.strip().splitlines()) == 1 and mine.read_text() == "my own notes\n"
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing else was written either
    mine.unlink()
    assert main(["export", str(monday), "--format", fmt, "--out", str(out)]) == 0
    first = snapshot(out)
    assert main(["export", str(monday), "--format", fmt, "--out", str(out)]) == 0  # again: its own export is replaced
    assert snapshot(out).keys() == first.keys()
    other = tiny_session(tmp_path / "other" / "monday.sqlite", seconds=4.0)  # another session of the same name
    with SessionStore.open(other) as store:
        store.set_meta("created_unix_s", repr(CREATED_UNIX_S + 86_400))
    capsys.readouterr()
    assert main(["export", str(other), "--format", fmt, "--out", str(out)]) == 2
    assert "exists and is not an earlier output of this session" in capsys.readouterr().err
    assert snapshot(out) == first


def test_a_strap_searched_for_is_one_row_of_the_report_not_one_per_try(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A soak review: a 5-minute absence was 33 identical 'connect-failed' rows in the report's link table.
    path = tiny_session(tmp_path / "s.sqlite")
    with SessionStore.open(path) as store:
        store.add_link_event(HOST_T0_S + 1.0, "client", "disconnected", "")
        for k in range(5):
            store.add_link_event(HOST_T0_S + 2.0 + 10 * k, "client", "connect-failed", "no strap in range")
            store.add_link_event(HOST_T0_S + 3.0 + 10 * k, "therapist", "battery", "80%")  # interleaved: no matter
        store.add_link_event(HOST_T0_S + 60.0, "client", "connect-failed", "cannot connect (timeout)")
        store.add_link_event(HOST_T0_S + 70.0, "client", "connected", "AA:BB")
    assert main(["report", str(path)]) == 0
    page = (tmp_path / "s_report.html").read_text()
    assert page.count("no strap in range") == 1 and "no strap in range (5 tries, the last at 0:42)" in page
    assert page.count("cannot connect (timeout)") == 1 and "cannot connect (timeout) (" not in page


def test_a_report_replaces_an_earlier_report_of_its_session_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monday = tiny_session(tmp_path / "monday.sqlite")
    page = tmp_path / "monday_report.html"
    page.write_text("<html>my own page about monday</html>\n")
    assert main(["report", str(monday)]) == 2
    assert f"{page}: exists and is not an earlier output of this session" in capsys.readouterr().err
    assert page.read_text() == "<html>my own page about monday</html>\n"
    page.unlink()
    assert main(["report", str(monday)]) == 0
    assert main(["report", str(monday)]) == 0  # its own report is replaced
    assert "breathsync report: monday" in page.read_text()
    other = tiny_session(tmp_path / "other" / "monday.sqlite", seconds=4.0)  # another session of the same name
    with SessionStore.open(other) as store:
        store.set_meta("created_unix_s", repr(CREATED_UNIX_S + 86_400))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(["report", str(other), "--out", str(tmp_path)]) == 2
    assert "exists and is not an earlier output of this session" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["dataset_description.json", "participants.json"])
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"Name": "My study", "Authors": ["A", "B",], "License": "CC-BY-4.0"}\n', "not valid JSON (Expecting value"),
        ("[1, 2]\n", "not a JSON object"),
    ],
)
def test_a_bids_dataset_file_that_is_not_a_json_object_is_an_error_not_replaced(
    session_file: Path, tmp_path: Path, name: str, text: str, message: str
) -> None:
    # A trailing comma from hand editing made the researcher's file count as absent: the export wrote breathsync's
    # defaults over it (their name, authors and licence gone), exit 0.
    session = load_session(session_file)
    export_bids(session, default_bids_names(session, tmp_path, subject="01", ses="1"))
    (tmp_path / name).write_text(text)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(InputError) as caught:
        export_bids(session, default_bids_names(session, tmp_path, subject="02", ses="1"))
    assert str(caught.value).startswith(f"{tmp_path / name}: {message}") and "\n" not in str(caught.value)
    assert (tmp_path / name).read_text() == text
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name", ["dataset_description.json", "participants.tsv"])
def test_a_bids_dataset_file_that_is_a_device_is_refused_not_read_for_ever(
    session_file: Path, tmp_path: Path, name: str
) -> None:
    # Read whole, a participants.tsv linked to /dev/zero would never end (a review: unbounded reads).
    session = load_session(session_file)
    (tmp_path / name).symlink_to("/dev/zero")
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / name}: a device, not a")):
        export_bids(session, default_bids_names(session, tmp_path, subject="01", ses="1"))


def test_parallel_bids_exports_into_one_dataset_list_every_subject(session_file: Path, tmp_path: Path) -> None:
    # Four sessions exported at once into one dataset: each read participants.tsv before the others wrote it
    # back, and the file listed one to three of the four subjects.
    out = tmp_path / "dataset"
    export = [sys.executable, "-m", "breathsync", "export", str(session_file), "--format", "bids", "--out", str(out)]
    runs = [
        subprocess.Popen([*export, "--subject", f"t{i}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    errors = [run.communicate(timeout=120)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], errors
    listed = (out / "participants.tsv").read_text().splitlines()
    assert listed[0] == "participant_id" and sorted(listed[1:]) == [f"sub-t{i}" for i in range(4)]


# -- report and commands --------------------------------------------------------------------------


def test_report_is_self_contained(session_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(session_file), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    report = tmp_path / "dyad01_report.html"
    png = tmp_path / "dyad01_summary.png"
    assert str(report) in out and str(png) in out
    page = report.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "<script" not in page and "url(" not in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    for source in sources:
        assert base64.b64decode(source.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert f"nudge count: {len(NUDGES)}" in page
    assert "1 of 2 (50 %)" in page  # one of the two evaluated nudges worked
    assert "learned in the session" in page  # no pre-session calibration in this run
    # The link table shows the therapist's reconnection after the disconnect, not each strap's first connection.
    assert re.search(r"<td>therapist</td><td>connected</td><td>AA:BB</td>", page)
    assert "<td>client</td><td>connected</td>" not in page
    import matplotlib.image

    image = matplotlib.image.imread(str(png))
    assert image.ndim == 3 and image.shape[0] > 600 and image.shape[1] > 1000


def test_report_and_export_name_the_pre_session_calibration(tmp_path: Path) -> None:
    path = build_session(tmp_path / "calibrated.sqlite")
    calibration = BaselineFile(Baseline(13.8, 1.2, 2140.0, 28), "ble:strap-T", "2026-11-22T09:58:00+00:00", 120.0)
    with SessionStore.open(path) as store:
        store_baseline(store, calibration)
    session = load_session(path)
    assert session.calibration == calibration
    assert summarise(session).therapist_baseline == "13.8/min, calibrated (ble:strap-T, 2026-11-22T09:58:00+00:00)"
    export_csv(session, tmp_path / "csv")
    info = json.loads((tmp_path / "csv" / "session.json").read_text())
    assert info["therapist_calibration"]["source"] == "ble:strap-T"
    assert info["therapist_calibration"]["rate_bpm"] == 13.8 and info["therapist_calibration"]["duration_s"] == 120.0
    undated = BaselineFile(Baseline(13.8, 1.2, 2140.0, 28), "", "", None)  # a file that did not say when
    with SessionStore.open(path) as store:
        store_baseline(store, undated)
    assert load_session(path).calibration == undated  # not stamped with the session's own time


@pytest.mark.parametrize("fmt", ["csv", "edf", "bids"])
def test_export_command(session_file: Path, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(session_file), "--format", fmt, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote ") and str(tmp_path) in out
    listed = [Path(line.strip()) for line in out.splitlines()[1:]]
    assert listed and all(p.exists() for p in listed)


def test_a_bids_export_says_when_it_meets_a_subject_or_session_already_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: 'simA.sqlite' and 'sim_A.sqlite' both default to subject 'simA' and merged into one without a word;
    # a session with the same start second replaced the other's files.
    dataset = tmp_path / "dataset"
    first = tiny_session(tmp_path / "simA.sqlite")
    assert main(["export", str(first), "--format", "bids", "--out", str(dataset)]) == 0
    assert "note:" not in capsys.readouterr().err
    assert main(["export", str(first), "--format", "bids", "--out", str(dataset)]) == 0
    assert re.search(r"note: .*sub-simA/ses-\w+ is already in the dataset: replaced", capsys.readouterr().err)
    other = tiny_session(tmp_path / "sim_A.sqlite")
    assert main(["export", str(other), "--format", "bids", "--out", str(dataset), "--bids-session", "2"]) == 0
    err = capsys.readouterr().err
    assert "subject 'simA' (from the file name sim_A.sqlite) is already in the dataset" in err
    assert main(["export", str(other), "--format", "bids", "--out", str(dataset), "--subject", "dyad2"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_one_missing_role_exports_and_reports_the_other(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = build_session(tmp_path / "solo.sqlite", roles=("therapist",), engine=False)
    assert main(["export", str(path), "--format", "edf", "--out", str(tmp_path / "edf")]) == 0
    assert "no client samples" in capsys.readouterr().err
    with pyedflib.EdfReader(str(tmp_path / "edf" / "solo.edf")) as edf:
        assert edf.getSignalLabels() == ["Resp therapist"]
    assert main(["report", str(path), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "solo_report.html").read_text()
    assert "No samples from the client strap" in page and "nudge count: 0" in page
    assert main(["replay", str(path)]) == 0  # one strap's session is not an empty one
    assert "breathsync replay: note: no client samples in this session" in capsys.readouterr().err


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int, pattern: str) -> None:
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), captured.err


@pytest.mark.parametrize("command", [["report"], ["export", "--format", "csv"], ["replay"]])
def test_bad_sessions_give_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    _one_line_error(capsys, main([*command, str(tmp_path / "missing.sqlite")]), "no such session file")
    _one_line_error(capsys, main([*command, os.devnull]), "not a session file [(]not a regular file[)]")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 50)
    _one_line_error(capsys, main([*command, str(junk)]), "not a breathsync session")
    SessionStore.create(tmp_path / "empty.sqlite").close()
    _one_line_error(capsys, main([*command, str(tmp_path / "empty.sqlite")]), "empty session")


def test_replay_session_reruns_the_engine_with_other_settings(
    session_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from breathsync.cli import main

    assert main(["replay", str(session_file)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    states = [r for r in records if r["type"] == "state"]
    assert states, "the engine produced no state from the stored session"
    assert all(s["t_s"] >= 0 for s in states)
    # Other settings give other decisions at the same points in time (here: no nudges allowed).
    config = tmp_path / "strict.toml"
    config.write_text("[policy]\nmax_per_hour = 0\n")
    assert main(["replay", str(session_file), "--config", str(config)]) == 0
    strict = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert not [r for r in strict if r["type"] == "nudge"]
    # A session started with a pre-session calibration replays with that baseline: one far above how the
    # therapist breathes here reads as 'moved away from their own rate' on every update.
    import shutil

    calibrated = tmp_path / "calibrated.sqlite"
    shutil.copy(session_file, calibrated)
    with SessionStore.open(calibrated) as store:
        fast = Baseline(rate_bpm=40.0, rate_sd_bpm=1.0, depth=1.0, n_breaths=30)
        store_baseline(store, BaselineFile(fast, "", "", None))
    assert main(["replay", str(calibrated)]) == 0
    moved = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    learned = [s["therapist_rate_move"] for s in states if s["therapist_rate_move"] is not None]
    stored = [r["therapist_rate_move"] for r in moved if r["type"] == "state" and r["therapist_rate_move"] is not None]
    assert stored and min(stored[:20]) >= 0.95 and max(abs(v) for v in learned[:20]) < 0.95
    assert main(["replay", str(session_file), "--rate", "125"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["replay"]) == 2
    assert "need a SESSION" in capsys.readouterr().err


def test_the_csv_export_names_the_engine_clocks_zero(tmp_path: Path) -> None:
    # states.csv and nudges.csv give the engine's t_s, which counts from meta.t0_unix_s: session.json did not carry
    # it, so a CSV user could not place an efficacy's nudge_t_s (a data review).
    path = _stored_dyad(tmp_path / "dyad.sqlite")
    export_csv(load_session(path), tmp_path / "csv")
    info = json.loads((tmp_path / "csv" / "session.json").read_text())
    assert float(info["meta"]["t0_unix_s"]) == HOST_T0_S


def _stored_dyad(path: Path, config: dict[str, Any] | None = None) -> Path:
    """A therapist-follows dyad (bundled recordings) stored as a session, as the daemon stores what straps send."""
    from breathsync.engine import StrapBlock, StrapBreath, dyad_stream
    from breathsync.scenarios import bundled_sources, make_scenario

    src = {s.name: s for s in bundled_sources()}
    sc = make_scenario("therapist_follows", src["bidmc_04"], src["bidmc_18"], 21, 330.0)
    period = 1.0 / RATE_HZ
    with SessionStore.create(path, config) as store:
        store.set_meta("t0_unix_s", repr(HOST_T0_S))
        for role in ("therapist", "client"):
            store.set_strap(StrapInfo(role, "AA:BB", f"strap-{role}", "0.3.1", 1, RATE_HZ), HOST_T0_S)
        for item in dyad_stream(sc.therapist, sc.client, sc.sampling_rate):
            if isinstance(item, StrapBlock):
                first = round(item.first_t_s / period)
                counters = range(first, first + len(item.counts))
                store.add_samples(item.role, counters, [HOST_T0_S + c * period for c in counters], item.counts.tolist())
            elif isinstance(item, StrapBreath) and item.breath.kind in ("peak", "trough"):
                b = item.breath
                counter = round(b.t_s / period)
                interval = round(b.interval_s / period) if b.interval_s else 0
                confirmed = round(b.reported_t_s / period - 0.5)
                event = StoredEvent(
                    item.role, b.kind, counter, confirmed, b.amplitude_counts, interval, HOST_T0_S + b.t_s
                )
                store.add_event(event)
    return path


def test_the_locked_card_counts_what_the_engine_called_locked_not_plv_above_its_chance_level(tmp_path: Path) -> None:
    # Two independent people beat the surrogates' 90th percentile about a tenth of the time by construction: a
    # probe read 'Time locked beyond chance 7 %' for a session the engine never called locked.
    path = tiny_session(tmp_path / "s.sqlite", seconds=20.0)
    with SessionStore.open(path) as store:
        for k, decision in enumerate(["no_lock", "no_lock", "locked_unclear", "no_lock"]):
            state = {**engine_state(2.0 + k), "decision": decision, "plv": 0.9, "plv_chance": 0.6}
            store.add_state(HOST_T0_S + 2.0 + 4.0 * k, state)
    summary = summarise(load_session(path))
    # Measured from the first state with a PLV (2 s) to the last sample (20 s); the locked_unclear one holds 4 s.
    assert summary.locked_pct == pytest.approx(100.0 * 4.0 / 18.0, abs=0.5)
    # The time before the engine's first state is learning (the daemon stores no state then): from the first
    # sample to the first state's 1 s, then the fixture's own 'learning' state up to 2 s.
    assert summary.decision_s["learning"] == pytest.approx(2.0)


def test_replay_session_and_a_resumed_run_hold_nudges_back_while_muted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A probe muted a session live (0 nudges), then `replay SESSION` nudged in the muted stretch and a run resumed
    # after a crash had forgotten the mute: the stored 'muted' event was never read back.
    import json
    import shutil

    from breathsync.cli import main
    from breathsync.daemon import Daemon, DaemonConfig
    from breathsync.daemon.config import SessionConfig
    from breathsync.daemon.rebuild import session_t0_s

    following = _stored_dyad(tmp_path / "following.sqlite")
    assert main(["replay", str(following)]) == 0
    nudges = [r["t_s"] for r in map(json.loads, capsys.readouterr().out.splitlines()) if r["type"] == "nudge"]
    assert nudges, "the stored session must nudge for this test to mean anything"
    muted = tmp_path / "muted.sqlite"
    shutil.copy(following, muted)
    pressed_s = nudges[0] - 30.0
    with SessionStore.open(muted) as store:
        t0 = session_t0_s(store)
        store.add_link_event(t0 + pressed_s, "therapist", "muted", "2.5 min")
    assert main(["replay", str(muted)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    held = [r["t_s"] for r in records if r["type"] == "nudge" and pressed_s <= r["t_s"] < pressed_s + 150.0]
    assert held == []
    states = [r for r in records if r["type"] == "state"]
    assert all(r["muted"] == (pressed_s <= r["t_s"] < pressed_s + 150.0) for r in states)
    # The daemon rebuilding its engine from the store (a crashed run resumed) is muted as the therapist left it.
    daemon = Daemon(DaemonConfig(session=SessionConfig(directory=str(tmp_path))), io.StringIO())
    daemon.t0_s = t0
    with SessionStore.open(muted, read_only=True) as store:
        daemon._rebuild(store)
    assert daemon.engine.policy.muted_for_s(pressed_s + 60.0) == pytest.approx(90.0)
    # The therapist ended the mute early (m pressed again: a mute of 0 min): nudges are back from then.
    ended = tmp_path / "ended.sqlite"
    shutil.copy(muted, ended)
    with SessionStore.open(ended) as store:
        store.add_link_event(t0 + pressed_s + 10.0, "therapist", "muted", "0 min")
    assert main(["replay", str(ended)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    states = [r for r in records if r["type"] == "state"]
    assert all(r["muted"] == (pressed_s <= r["t_s"] < pressed_s + 10.0) for r in states)


# -- bad input: damaged sessions, unusable outputs, bad labels ---------------------------------------


def tiny_session(path: Path, seconds: float = 3.0, nudge_at_s: float | None = None) -> Path:
    """A few seconds of both straps (fast to report on); optionally a nudge at ``nudge_at_s``."""
    n = round(seconds * RATE_HZ)
    with SessionStore.create(path, config={"engine": {"engine": {"min_locked_s": 20.0}, "policy": {}}}) as store:
        store.set_meta("created_unix_s", repr(CREATED_UNIX_S))
        for role in ("therapist", "client"):
            times = [HOST_T0_S + i / RATE_HZ for i in range(n)]
            values = [30000 + round(2000 * np.sin(2 * np.pi * t / 4.0)) for t in times]
            store.add_samples(role, range(100, 100 + n), times, values)
            store.set_strap(StrapInfo(role, "AA:BB", f"strap-{role}", "0.3.1", 1, RATE_HZ), HOST_T0_S)
        store.add_state(HOST_T0_S + 1.0, engine_state(1.0))
        if nudge_at_s is not None:
            store.add_nudge(HOST_T0_S + nudge_at_s, _nudge(nudge_at_s))
    return path


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory`` (hidden ones included) with its bytes; None for a directory."""
    return {str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes() for p in sorted(directory.rglob("*"))}


COMMANDS = [["report"], ["export", "--format", "csv"]]


@pytest.mark.parametrize("command", COMMANDS, ids=["report", "export"])
def test_report_and_export_change_nothing_they_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    (sessions / "empty.sqlite").touch()
    with closing(sqlite3.connect(sessions / "foreign.sqlite")) as db:
        db.execute("CREATE TABLE foo (x)")
        db.commit()
    tiny_session(sessions / "good.sqlite")
    before = snapshot(sessions)
    out = ["--out", str(tmp_path / "out")]
    for name in ("empty.sqlite", "foreign.sqlite"):
        _one_line_error(capsys, main([*command, str(sessions / name), *out]), "not a breathsync session")
    assert main([*command, str(sessions / "good.sqlite"), *out]) == 0
    # Not switched to WAL, not grown to a 4096-byte database, no -wal / -shm files beside them.
    assert snapshot(sessions) == before


DAMAGE = [
    ("DROP TABLE states", r"damaged session \(states table missing\)"),
    ("UPDATE meta SET value = 'abc' WHERE key = 'schema_version'", r"damaged session \(schema version 'abc'"),
    ("UPDATE meta SET value = '{bad' WHERE key = 'config'", r"damaged session \(meta config is not valid JSON\)"),
    ("UPDATE states SET state = '{bad'", r"damaged session \(states table: the state at t_s .* is not valid JSON\)"),
    ("UPDATE nudges SET detail = '{bad'", r"damaged session \(nudges table, nudge 1: detail is not valid JSON\)"),
    ("UPDATE straps SET rate_hz = 'x'", r"damaged session \(straps table, client rate_hz is 'x'"),
    ("UPDATE straps SET rate_hz = -25", r"damaged session \(straps table, client rate_hz is -25, not a sampling rate"),
    ("UPDATE samples SET value = 'abc' WHERE counter = 110", r"damaged session \(samples table, \w+ counter 110"),
    (  # a number of over 4300 digits: Python's int conversion limit, a traceback before
        "INSERT OR REPLACE INTO meta VALUES ('therapist_baseline', '{\"rate_bpm\": 1" + "0" * 5000 + "}')",
        r"stored therapist baseline is not valid JSON",
    ),
]


@pytest.mark.parametrize("command", COMMANDS, ids=["report", "export"])
@pytest.mark.parametrize(("sql", "message"), DAMAGE, ids=[d[0].split(" WHERE")[0][:60] for d in DAMAGE])
def test_damaged_session_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], sql: str, message: str
) -> None:
    path = tiny_session(tmp_path / "s.sqlite", nudge_at_s=2.0)
    with closing(sqlite3.connect(path)) as db:
        db.execute(sql)
        db.commit()
    before = snapshot(tmp_path)
    code = main([*command, str(path), "--out", str(tmp_path / "out")])
    _one_line_error(capsys, code, rf"^breathsync {command[0]}: {re.escape(str(path))}: {message}")
    assert snapshot(tmp_path) == before  # the session untouched, no output directory


def test_the_report_names_a_strap_found_by_role_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Found by role, a strap is stored by its address alone: the table read 'ED:97:2F:A8:21:38 (ED:97:2F:A8:21:38)'.
    path = tiny_session(tmp_path / "s.sqlite")
    with SessionStore.open(path) as store:
        store.set_strap(StrapInfo("client", "ED:97:2F:A8:21:38", "ED:97:2F:A8:21:38", "0.3.1", 1, RATE_HZ), HOST_T0_S)
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    page = (tmp_path / "out" / "s_report.html").read_text()
    assert "<td>ED:97:2F:A8:21:38</td>" in page and "(ED:97:2F:A8:21:38)" not in page
    assert "<td>strap-therapist (AA:BB)</td>" in page  # a name and an address: both


def test_the_report_says_a_mute_ended_rather_than_muted_for_0_min(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tiny_session(tmp_path / "s.sqlite")
    with SessionStore.open(path) as store:
        store.add_link_event(HOST_T0_S + 1.0, "therapist", "muted", "10 min")
        store.add_link_event(HOST_T0_S + 2.0, "therapist", "muted", "0 min")  # m pressed again
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    page = (tmp_path / "out" / "s_report.html").read_text()
    assert "<td>muted</td><td>10 min</td>" in page and "<td>mute ended</td><td>nudges back on</td>" in page
    assert "<td>0 min</td>" not in page


def test_the_report_dates_link_events_before_the_first_sample_before_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A strap searched for while the other had not yet sent a sample: its 'cannot connect' lines read 0:00, ahead
    # of the connect at 0:00 that they preceded by half a minute.
    path = tiny_session(tmp_path / "s.sqlite")
    with SessionStore.open(path) as store:
        store.add_link_event(HOST_T0_S - 31.0, "client", "connect-failed", "client: no strap named 'C' in range")
        store.add_link_event(HOST_T0_S + 0.2, "client", "connected", "CC:DD")
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    page = (tmp_path / "out" / "s_report.html").read_text()
    assert "<td>-0:31</td><td>client</td><td>connect-failed</td>" in page
    assert "<td>0:00</td><td>client</td><td>connected</td>" in page


def test_the_report_and_exports_keep_the_straps_battery_levels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A strap that ran low was said live only: once the terminal was closed nothing showed it. The daemon stores
    each change of level; the report's straps table shows first and last (and the lowest when it was charged in
    between), the link table leaves them out, BIDS lists them as 'battery' events and EDF+ annotates them."""
    path = tiny_session(tmp_path / "s.sqlite")
    with SessionStore.open(path) as store:
        for t_s, role, level in ((0.5, "therapist", "62%"), (1.0, "therapist", "61%"), (2.0, "therapist", "5%")):
            store.add_link_event(HOST_T0_S + t_s, role, "battery", level)
        for t_s, level in ((0.5, "40%"), (1.5, "10%"), (2.5, "30%")):  # put on the charger mid-session
            store.add_link_event(HOST_T0_S + t_s, "client", "battery", level)
        store.add_link_event(HOST_T0_S + 2.6, "client", "battery", "charging?")  # not a level: ignored
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    page = (tmp_path / "out" / "s_report.html").read_text()
    assert "<td>62 % \u2192 5 %</td>" in page and "<td>40 % \u2192 30 % (lowest 10 %)</td>" in page
    assert "<td>battery</td>" not in page  # no link-table rows for them
    session = load_session(path)
    names = default_bids_names(session, tmp_path / "bids", subject="s1", ses="1")
    export_bids(session, names)
    events_tsv = tmp_path / "bids" / "sub-s1" / "ses-1" / "beh" / "sub-s1_ses-1_task-therapy_events.tsv"
    with events_tsv.open() as handle:
        rows = [e for e in csv.DictReader(handle, delimiter="\t") if e["trial_type"] == "battery"]
    assert [(e["role"], e["value"]) for e in rows] == [
        ("therapist", "62"), ("client", "40"), ("therapist", "61"),
        ("client", "10"), ("therapist", "5"), ("client", "30"),
    ]  # fmt: skip
    with pyedflib.EdfReader(str(export_edf(session, tmp_path / "edf"))) as edf:
        texts = list(edf.readAnnotations()[2])
    assert [t for t in texts if t.startswith("battery therapist")] == [
        "battery therapist 62%", "battery therapist 61%", "battery therapist 5%"
    ]  # fmt: skip


def test_sample_times_far_apart_are_refused_only_where_one_time_base_is_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One strap's times years off (a clock gone wrong, a hand-edited file): the EDF and the report, which put both
    # straps on one time base, asked for 334 GiB (a traceback). A session continued days later is normal.
    far = tiny_session(tmp_path / "far.sqlite")
    later = tiny_session(tmp_path / "later.sqlite")
    with closing(sqlite3.connect(far)) as db, closing(sqlite3.connect(later)) as db2:
        db.execute("UPDATE samples SET host_t_s = host_t_s - 1.7e9 WHERE role = 'client'")
        db2.execute("UPDATE samples SET host_t_s = host_t_s + 2 * 86400 WHERE role = 'client'")
        db.commit()
        db2.commit()
    for command in (["report"], ["export", "--format", "edf"]):
        out = tmp_path / f"out-{command[-1]}"
        code = main([*command, str(far), "--out", str(out)])
        _one_line_error(capsys, code, r"far\.sqlite: its samples span 19676 days of host time .* too long for one")
        assert not out.exists()
    assert main(["export", str(far), "--format", "csv", "--out", str(tmp_path / "csv")]) == 0  # each strap's times
    assert main(["export", str(later), "--format", "edf", "--out", str(tmp_path / "edf")]) == 0  # two days: fine
    capsys.readouterr()


def test_report_output_problems_are_one_line_errors_and_keep_earlier_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tiny_session(tmp_path / "s.sqlite")
    out = tmp_path / "out"
    out.mkdir()
    (out / "s_summary.png").write_bytes(b"\x89PNG\r\n\x1a\nan earlier, good summary")
    (out / "s_report.html").mkdir()
    before = snapshot(tmp_path)
    _one_line_error(capsys, main(["report", str(path), "--out", str(out)]), r"s_report\.html: is a directory")
    assert snapshot(tmp_path) == before  # no PNG written over the earlier one, no temporary files left
    a_file = tmp_path / "afile"
    a_file.write_text("keep me\n")
    before = snapshot(tmp_path)
    _one_line_error(capsys, main(["report", str(path), "--out", str(a_file)]), r"--out .*afile: not a directory")
    _one_line_error(capsys, main(["report", str(path), "--out", str(a_file / "sub")]), r"afile is not a directory")
    _one_line_error(capsys, main(["report", str(path), "--out", ""]), r"--out is empty")
    assert snapshot(tmp_path) == before  # nothing beside the session either
    (out / "s_report.html").rmdir()
    assert main(["report", str(path), "--out", str(out)]) == 0
    assert (out / "s_summary.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in out.iterdir()) == ["s_report.html", "s_summary.png"]


@pytest.mark.parametrize("fmt", ["csv", "edf", "bids"])
def test_export_output_problems_are_one_line_errors_and_leave_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    path = tiny_session(tmp_path / "s.sqlite")
    a_file = tmp_path / "afile"
    a_file.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("not ours\n")
    # A name the export needs is taken by a directory (for BIDS: a directory it must create, by a file).
    blocker = {"csv": "states.csv", "edf": "s.edf", "bids": "sub-s"}[fmt]
    if fmt == "bids":
        (out / blocker).write_text("in the way\n")
    else:
        (out / blocker).mkdir()
    before = snapshot(tmp_path)
    export = ["export", str(path), "--format", fmt]
    _one_line_error(capsys, main([*export, "--out", str(a_file)]), r"--out .*afile: not a directory")
    _one_line_error(capsys, main([*export, "--out", ""]), r"--out is empty")
    reason = "is a file, cannot create the directory" if fmt == "bids" else "is a directory"
    _one_line_error(capsys, main([*export, "--out", str(out)]), rf"{re.escape(str(out / blocker))}: {reason}")
    assert snapshot(tmp_path) == before  # no partial export, no temporary directory, others' files kept
    (out / blocker).unlink() if fmt == "bids" else (out / blocker).rmdir()
    assert main([*export, "--out", str(out)]) == 0
    assert (out / "kept.txt").read_text() == "not ours\n"
    assert not [p for p in out.rglob(".*")]


def test_export_failing_midway_removes_what_it_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import breathsync.research.export_csv as export_module

    def disk_full(*args: object) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device", str(args[-1]))

    monkeypatch.setattr(export_module, "_dropouts_csv", disk_full)  # after most CSVs are written
    path = tiny_session(tmp_path / "s.sqlite")
    before = snapshot(tmp_path)
    code = main(["export", str(path), "--format", "csv", "--out", str(tmp_path / "new" / "deeper")])
    _one_line_error(capsys, code, r"new/deeper/dropouts\.csv: cannot write output \(No space left on device\)")
    assert snapshot(tmp_path) == before  # the directories it made are gone too


@pytest.mark.parametrize(
    ("option", "label"),
    [
        *(("--subject", label) for label in ("../evil", "a b", "sub-x", "ok_1", "")),
        *(("--bids-session", label) for label in ("ses-1", "2025-06-15")),
    ],
)
def test_bids_labels_are_used_as_given_or_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, label: str
) -> None:
    path = tiny_session(tmp_path / "s.sqlite")
    before = snapshot(tmp_path)
    code = main(["export", str(path), "--format", "bids", "--out", str(tmp_path / "bids"), option, label])
    _one_line_error(capsys, code, rf"{option} '{re.escape(label)}': a BIDS label may contain only letters and digits")
    assert snapshot(tmp_path) == before
    assert main(["export", str(path), "--format", "bids", "--out", str(tmp_path / "bids"), option, "Dyad7"]) == 0
    made = "sub-s/ses-Dyad7" if option == "--bids-session" else "sub-Dyad7"
    assert (tmp_path / "bids" / made).is_dir()


def test_bids_options_with_other_formats_are_noted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_session(tmp_path / "s.sqlite")
    assert main(["export", str(path), "--format", "csv", "--out", str(tmp_path / "csv"), "--subject", "foo"]) == 0
    assert capsys.readouterr().err == "breathsync export: note: --subject applies to --format bids only; ignored\n"


def test_report_on_a_few_seconds_prints_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The samples end after 3 s, the nudge comes later (a session cut short): its marker used to
    # collapse the figure layout, and matplotlib printed a two-line UserWarning.
    path = tiny_session(tmp_path / "s.sqlite", seconds=3.0, nudge_at_s=60.0)
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "report:" in captured.out


def test_an_edf_cut_short_by_a_file_size_limit_is_an_error_and_keeps_the_earlier_export(
    session_file: Path, tmp_path: Path
) -> None:
    # The EDF library ignores failed writes: a full disk or `ulimit -f` left a cut file, moved over the good
    # one, with 'wrote 1 file(s)' and exit 0.
    import resource
    import subprocess
    import sys

    out = tmp_path / "edf"
    assert main(["export", str(session_file), "--format", "edf", "--out", str(out)]) == 0
    [good] = out.glob("*.edf")
    before = good.read_bytes()

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, resource.RLIM_INFINITY))

    command = [sys.executable, "-m", "breathsync", "export", str(session_file), "--format", "edf", "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, preexec_fn=limit_file_size, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert re.fullmatch(
        rf"breathsync export: {re.escape(str(good))}: cannot write output \(the EDF file came out incomplete: "
        r"disk full, or a file size limit\?\)\n",
        proc.stderr,
    )
    assert good.read_bytes() == before and [p.name for p in out.iterdir()] == [good.name]


def test_replay_session_uses_the_settings_the_session_ran_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It used the built-in defaults: a session run with other settings (a shorter baseline, a stricter policy)
    # replayed as another engine, so 'compare with states.csv' compared two different engines.
    import json

    from breathsync.cli import main

    def replayed(*args: str) -> tuple[int, str]:
        assert main(["replay", *args]) == 0
        out, err = capsys.readouterr()
        return sum(json.loads(line)["type"] == "nudge" for line in out.splitlines()), err

    unset = _stored_dyad(tmp_path / "unset.sqlite")
    nudged, err = replayed(str(unset))
    assert nudged >= 1 and "stored no engine settings: the defaults were used" in err
    import dataclasses

    from breathsync.engine import Config

    settings = dataclasses.asdict(Config())  # as the daemon stores them: every key of both tables
    settings["policy"]["max_per_hour"] = 0
    strict = _stored_dyad(tmp_path / "strict.sqlite", {"engine": settings})
    assert replayed(str(strict)) == (0, "")
    defaults = tmp_path / "defaults.toml"
    defaults.write_text("")
    assert replayed(str(strict), "--config", str(defaults))[0] == nudged  # --config still overrides
    # An older version's settings: a key since removed is left out, one added since takes its default, both said.
    older = copy.deepcopy(settings)
    older["engine"]["min_window_breaths"] = 4
    del older["policy"]["max_per_episode"]
    nudged_then, err = replayed(str(_stored_dyad(tmp_path / "older.sqlite", {"engine": older})))
    assert nudged_then == 0
    assert "stored engine settings this version does not have, left out: min_window_breaths" in err
    assert "predates policy settings, at today's defaults: max_per_episode" in err
    damaged = tmp_path / "damaged.sqlite"
    with SessionStore.create(damaged, {"engine": {"policy": {"cooldown_s": "soon"}}}) as store:
        store.set_strap(StrapInfo("therapist", "AA:BB", "strap", "0.3.1", 1, RATE_HZ), HOST_T0_S)
    _one_line_error(
        capsys, main(["replay", str(damaged)]), r"stored engine settings.*cooldown_s.*give the settings with --config"
    )


def test_decision_shares_stay_within_the_session_when_the_engine_pauses_after_the_last_sample(
    tmp_path: Path,
) -> None:
    # Straps stopped at 20 s, the engine's 'paused' state 2 s later, the run ended later still: the paused state
    # was counted to the session's end, before it (-2 s), and the share table read -10 % / 110 %.
    path = tiny_session(tmp_path / "s.sqlite", seconds=20.0)
    with SessionStore.open(path) as store:
        store.add_state(HOST_T0_S + 10.0, {**engine_state(10.0), "decision": "no_lock", "plv": 0.4})
        store.add_state(HOST_T0_S + 22.0, {**engine_state(22.0), "decision": "paused", "plv": None})
    summary = summarise(load_session(path))
    assert all(s >= 0.0 for s in summary.decision_s.values())
    assert sum(summary.decision_s.values()) == pytest.approx(summary.duration_s)
    assert summary.decision_s.get("paused", 0.0) == 0.0 and summary.decision_s["no_lock"] == pytest.approx(10.0)


def test_replaying_a_session_with_a_damaged_stored_rate_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No strap registered and the stored configuration's rate unreadable: a ValueError traceback, exit 1.
    path = tmp_path / "s.sqlite"
    with SessionStore.create(path, {"straps": {"rate_hz": "fast"}}) as store:
        store.add_samples("therapist", range(10), [HOST_T0_S + i / RATE_HZ for i in range(10)], [30000] * 10)
    _one_line_error(capsys, main(["replay", str(path)]), r"damaged session: its stored strap rate 'fast' is not a")


def test_an_unclosed_session_on_storage_that_cannot_be_written_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crashed run's session (.sqlite + -wal) on a read-only mount was 'not a breathsync session (unable to open
    # database file)': SQLite must create a -shm file to read the -wal. (A read-only mount needs root here; the
    # folder's write permission is what the store asks the OS, so that answer is what this test changes.)
    path = tiny_session(tmp_path / "s.sqlite")
    path.with_name("s.sqlite-wal").write_bytes(b"")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    _one_line_error(
        capsys,
        main(["report", str(path)]),
        r"a session its run did not close, on storage that cannot be written: .* copy s\.sqlite and s\.sqlite-wal to",
    )
    assert not path.with_name("s.sqlite-shm").exists()


@pytest.mark.parametrize("fmt", ["csv", "bids"])
def test_an_earlier_export_s_file_for_a_strap_this_session_lacks_is_pointed_out(
    session_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    # A two-strap session exported, then a therapist-only one into the same place: the first one's client file
    # stayed beside the second's without a word (a glob of samples_*.csv read another session's client). A CSV
    # export is one session's folder: another session's export is refused there (session 27).
    out = tmp_path / "out"
    solo = build_session(tmp_path / "solo.sqlite", roles=("therapist",), engine=False)
    labels = ["--subject", "S1", "--bids-session", "one"] if fmt == "bids" else []
    assert main(["export", str(session_file), "--format", fmt, "--out", str(out), *labels]) == 0
    capsys.readouterr()
    if fmt == "csv":
        before = snapshot(out)
        assert main(["export", str(solo), "--format", fmt, "--out", str(out)]) == 2
        assert "exists and is not an earlier output of this session" in capsys.readouterr().err
        assert snapshot(out) == before
        return
    assert main(["export", str(solo), "--format", fmt, "--out", str(out), *labels]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "earlier export" in line]
    expected = ["client_physio.tsv.gz", "client_physio.json"]
    assert len(notes) == len(expected) and all(
        note.endswith(f"{name} is from an earlier export, not this session")
        for note, name in zip(notes, expected, strict=True)
    )


def test_bids_physio_timing_follows_the_strap_clock_not_its_roughly_dated_first_samples(tmp_path: Path) -> None:
    # The link's first clock fit, made from a few packets, dates a strap's first seconds up to ~60 ms late (a
    # probe: 3-60 ms, differently for each strap), and a strap's crystal is some ppm off. StartTime came from the
    # first sample and SamplingFrequency was the nominal rate: BIDS rows sat up to 69 ms from their host times.
    from breathsync.research.export_bids import counter_clock_line

    n, fast_ppm = 120 * RATE_HZ, 100.0
    counters = np.arange(500, 500 + n)
    true_s = HOST_T0_S + np.arange(n) / (RATE_HZ * (1 + fast_ppm * 1e-6))
    stored = true_s + np.where(np.arange(n) < 35, 0.05, 0.0)  # the first 35 samples dated 50 ms late
    path = tmp_path / "s.sqlite"
    with SessionStore.create(path) as store:
        store.add_samples("therapist", counters.tolist(), stored.tolist(), (30000 + np.arange(n)).tolist())
        store.set_strap(StrapInfo("therapist", "AA:BB", "strap-therapist", "0.3.1", 1, RATE_HZ), HOST_T0_S)
    start_s, rate_hz = counter_clock_line(counters, stored, RATE_HZ)
    assert rate_hz == pytest.approx(RATE_HZ * (1 + fast_ppm * 1e-6), abs=2e-6)
    assert abs(start_s - true_s[0]) < 0.005
    session = load_session(path)
    export_bids(session, default_bids_names(session, tmp_path / "bids", subject="s1", ses="1"))
    [sidecar] = (tmp_path / "bids").rglob("*_physio.json")
    meta = json.loads(sidecar.read_text())
    rows_s = session.t0_host_s + meta["StartTime"] + np.arange(n) / meta["SamplingFrequency"]
    assert np.max(np.abs(rows_s[35:] - stored[35:])) < 0.005  # was up to 50 ms + the drift
    # A rising signal stays rising through the step back (interpolating over times that go back was garbage).
    assert np.all(np.diff(resample(session.roles["therapist"], common_grid(session))[:60]) >= 0)


def test_a_replayed_session_s_sample_blocks_never_straddle_a_drop_out(tmp_path: Path) -> None:
    # Stored samples were cut into 7-sample blocks regardless of gaps: a block across a drop-out dated the samples
    # after it that much early (each block's samples are taken as consecutive from its first one's time).
    from breathsync.daemon.rebuild import stored_stream
    from breathsync.engine import StrapBlock

    counters = [*range(100, 110), *range(150, 170)]  # a 40-sample drop-out inside what would be the 2nd block
    times = [HOST_T0_S + c / RATE_HZ for c in counters]
    path = tmp_path / "s.sqlite"
    with SessionStore.create(path) as store:
        store.add_samples("therapist", counters, times, counters)
    with SessionStore.open(path, read_only=True) as store:
        blocks = [b for b in stored_stream(store, HOST_T0_S, RATE_HZ) if isinstance(b, StrapBlock)]
    placed = {
        int(value): block.first_t_s + i * block.period_s for block in blocks for i, value in enumerate(block.counts)
    }
    assert sorted(placed) == counters  # the stored values are the counters: each sample at its own time
    assert all(placed[c] == pytest.approx(c / RATE_HZ) for c in counters)


def test_a_replayed_session_keeps_the_stored_arrival_order_whatever_the_wall_clock_did(tmp_path: Path) -> None:
    # An outside review: arrival rows were ordered by their wall-clock time, so an NTP step back mid-session fed a
    # strap's later samples first; and a row over counters the file lacks joined the samples around the hole.
    from breathsync.daemon.rebuild import stored_stream
    from breathsync.engine import StrapBlock

    counters = [*range(0, 3), *range(5, 24)]  # 3 and 4 missing inside the first notification (a damaged file)
    path = tmp_path / "s.sqlite"
    with SessionStore.create(path) as store:
        store.add_samples("therapist", counters, [HOST_T0_S + c / RATE_HZ for c in counters], counters)
        for first, arrived_s in ((0, 0.33), (8, 0.65), (16, 0.30)):  # the clock stepped back 0.35 s
            store.add_arrival("therapist", "samples", first, first + 7, HOST_T0_S + arrived_s)
    with SessionStore.open(path, read_only=True) as store:
        blocks = [b for b in stored_stream(store, HOST_T0_S, RATE_HZ) if isinstance(b, StrapBlock)]
    assert [b.counts.tolist() for b in blocks] == [[0, 1, 2], [5, 6, 7], list(range(8, 16)), list(range(16, 24))]
    assert all(b.first_t_s == pytest.approx(b.counts[0] / RATE_HZ) for b in blocks)


@pytest.mark.parametrize(
    ("n", "late_n", "step_ppm"),
    [
        (50, 35, 0.0),  # 2 s, mostly dated by the first clock fit: a least-squares rate came out 3 % off
        (300, 35, 0.0),  # 12 s
        (3000, 35, 3000.0),  # a 'rate' no crystal has (a reboot's downtime misjudged): the nominal one
        (2, 0, 0.0),
        (1, 0, 0.0),
    ],
)
def test_the_bids_line_keeps_the_nominal_rate_where_it_cannot_measure_one(n: int, late_n: int, step_ppm: float) -> None:
    from breathsync.research.export_bids import counter_clock_line

    counters = np.arange(n)
    true_s = HOST_T0_S + counters / (RATE_HZ * (1 + step_ppm * 1e-6))
    stored = true_s + np.where(counters < late_n, 0.05, 0.0)
    start_s, rate_hz = counter_clock_line(counters, stored, RATE_HZ)
    assert rate_hz == RATE_HZ
    assert start_s == pytest.approx(true_s[0] if late_n < n else stored[0], abs=1e-9 if step_ppm == 0 else 0.5)
    same = counter_clock_line(np.arange(2000), np.full(2000, HOST_T0_S), RATE_HZ)  # no time passed: no division
    assert same[1] == RATE_HZ


def test_output_folders_made_by_parallel_exports_belong_to_the_one_that_made_them(tmp_path: Path) -> None:
    # Two exports creating the same new folder at once: the one that lost the race failed with 'File exists'.
    from concurrent.futures import ThreadPoolExecutor

    from breathsync.research.output import make_dirs

    for trial in range(30):
        target = tmp_path / f"t{trial}" / "dataset"
        with ThreadPoolExecutor(4) as pool:
            made = list(pool.map(make_dirs, [target] * 4))
        assert sorted(d for created in made for d in created) == [target.parent, target]  # each made once
