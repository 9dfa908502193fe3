"""The session daemon end to end: straps over a real BLE stack, real SQLite, kill -9 and resume."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import io
import itertools
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from open_files import open_descriptors
from strap_model import ModelStrap, served

from breathsync.cli import main
from breathsync.daemon import Daemon, DaemonConfig, SessionSummary, load_daemon_config, session_path
from breathsync.daemon.config import OutputsConfig, SessionConfig, StrapsConfig
from breathsync.daemon.session_files import SessionChoice
from breathsync.daemon.status import status_due
from breathsync.detector import detect_cpython
from breathsync.engine import Baseline, HapticPattern, Nudge, Output, StrapBlock, StreamItem
from breathsync.engine.baseline_file import read_baseline_file, stored_baseline, stored_calibration, write_baseline
from breathsync.engine.engine import _PendingEfficacy
from breathsync.engine.replay import live_block_samples
from breathsync.engine.state import EngineState
from breathsync.errors import BreathsyncError, InputError
from breathsync.link.ble import looks_like_address
from breathsync.link.session import LinkError
from breathsync.link.stream import SampleBlock, StrapEvent
from breathsync.protocol import Role, SensorState, StatusFlag, StatusPacket
from breathsync.roles import ROLES
from breathsync.store import LateData, SessionLock, SessionStore, StoreError


def breathing(seconds: float, rate_bpm: float, seed: int) -> list[int]:
    t = np.arange(int(seconds * 25)) / 25
    rng = np.random.default_rng(seed)
    wave = 20000 * np.sin(2 * np.pi * rate_bpm / 60 * t) + 300 * rng.standard_normal(len(t))
    return [int(v) for v in np.clip(32768 + wave, 0, 65535)]


@pytest.fixture
def served_pair() -> Iterator[tuple[str, dict[str, ModelStrap]]]:
    """Therapist and client model straps, real time, on a virtual link served over loopback HCI."""

    async def make(link: object) -> dict[str, ModelStrap]:
        return {
            "therapist": await ModelStrap("strap-T", breathing(900, 12, 1), speed=1.0, role=Role.THERAPIST).start(link),
            "client": await ModelStrap("strap-C", breathing(900, 16, 2), speed=1.0, role=Role.CLIENT).start(link),
        }

    with served(make) as pair:
        yield pair


def config_for(adapter: str, directory: Path, lsl: bool = False, baseline: str = "") -> DaemonConfig:
    return DaemonConfig(
        session=SessionConfig(directory=str(directory), therapist_baseline=baseline),
        straps=StrapsConfig(ble=adapter, therapist="ble:strap-T", client="ble:strap-C"),
        outputs=OutputsConfig(lsl=lsl, status_interval_s=0.5),
    )


def test_daemon_records_both_straps_and_shows_status(
    served_pair: tuple[str, dict[str, ModelStrap]], tmp_path: Path
) -> None:
    adapter, straps = served_pair
    out = io.StringIO()
    calibrated = Baseline(rate_bpm=11.5, rate_sd_bpm=0.9, depth=20000.0, n_breaths=23)
    write_baseline(tmp_path / "me.json", calibrated, source="ble:strap-T", duration_s=120.0)
    written = read_baseline_file(tmp_path / "me.json")

    async def go() -> SessionSummary:
        stop = asyncio.Event()
        daemon = Daemon(config_for(adapter, tmp_path, baseline=str(tmp_path / "me.json")), out)
        assert daemon.engine.baselines["therapist"] == calibrated
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.sleep(6)
        stop.set()
        summary = await asyncio.wait_for(task, 20)
        assert summary.samples["therapist"] > 25 * 3 and summary.samples["client"] > 25 * 3
        return summary

    summary = asyncio.run(go())
    [path] = tmp_path.glob("*.sqlite")
    from breathsync.research.session import load_session

    assert summary.duration_s == pytest.approx(load_session(path).duration_s, abs=0.05)  # the report's length
    with SessionStore.open(path) as store:
        assert store.meta("closed") == "1"
        for role, strap in straps.items():
            series = store.samples(role)
            assert store.missing_ranges(role) == []
            assert series.values.tolist() == strap.values[int(series.counters[0]) : int(series.counters[-1]) + 1]
        assert {e[2] for e in store.link_events()} >= {"connected"}
        # Sample host times are on the daemon's clock (the wall clock), within the run.
        created = float(store.meta("t0_unix_s") or 0)
        first = min(float(store.samples(r).host_t_s[0]) for r in straps)
        assert -1 < first - created < 10  # the first sample can be taken just before the session opens
        assert store.config()["straps"]["therapist"] == "ble:strap-T"
        assert stored_baseline(store) == calibrated  # a replay or a resume uses the session's own baseline
        assert stored_calibration(store) == written  # with what it was measured from, and when
    text = out.getvalue()
    assert "T: ok 90%" in text and "C: ok 90%" in text and "nudges 0" in text
    assert (
        f"therapist baseline 11.5/min (SD 0.9) from calibration (ble:strap-T, {written.created}); learning the"
        " client's over the first 120 s" in text
    )


def test_straps_at_another_rate_are_set_to_the_sessions_and_timed_at_it(tmp_path: Path) -> None:
    # Straps left at 50 Hz (`breathsync strap --rate 50`) streamed into a session of straps.rate_hz = 25 that timed
    # them at 25 Hz: the engine's sample blocks overlapped and breath intervals doubled, while the session file said
    # 50 Hz, so its replay decided otherwise (a link review). The daemon sets each strap to the session's rate.
    async def make(link: object) -> dict[str, ModelStrap]:
        return {
            "therapist": await ModelStrap(
                "strap-T", breathing(60, 12, 1), rate_hz=50.0, speed=1.0, role=Role.THERAPIST
            ).start(link),
            "client": await ModelStrap(
                "strap-C", breathing(60, 16, 2), rate_hz=50.0, speed=1.0, role=Role.CLIENT
            ).start(link),
        }

    out = io.StringIO()
    fed: list[StrapBlock] = []
    with served(make) as (adapter, straps):

        async def go() -> None:
            stop = asyncio.Event()
            daemon = Daemon(config_for(adapter, tmp_path), out)
            feed = daemon.engine.feed

            def watched(item: StreamItem) -> list[Output]:
                if isinstance(item, StrapBlock):
                    fed.append(item)
                return feed(item)

            daemon.engine.feed = watched  # type: ignore[method-assign]
            task = asyncio.create_task(daemon.run(stop))
            await asyncio.sleep(6)
            stop.set()
            await asyncio.wait_for(task, 20)

        asyncio.run(go())
        assert {role: strap.rate_hz for role, strap in straps.items()} == {"therapist": 25, "client": 25}
    for role in ROLES:
        assert f"{role} strap: set to the session's 25 Hz (it ran at 50 Hz)" in out.getvalue()
        blocks = [b for b in fed if b.role == role]
        assert len(blocks) > 10 and {round(b.period_s, 6) for b in blocks} == {0.04}
        assert all(a.last_t_s < b.first_t_s for a, b in itertools.pairwise(blocks))  # none overlaps the next
    [path] = tmp_path.glob("*.sqlite")
    with SessionStore.open(path, read_only=True) as store:
        assert {strap.role: strap.rate_hz for strap in store.straps()} == {"therapist": 25, "client": 25}
        assert float(np.median(np.diff(store.samples("client").host_t_s))) == pytest.approx(0.04, abs=0.002)


def test_a_continued_session_keeps_its_rate_under_a_configuration_of_another(
    served_pair: tuple[str, dict[str, ModelStrap]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: a 25 Hz session continued under straps.rate_hz = 50 had its straps set to 50 Hz, and its replay and
    # exports then timed its first part at 50 Hz too; and then its LSL outlets declared 50 Hz (a second review).
    adapter, straps = served_pair
    declared: list[float] = []

    class Outlets:
        def __init__(self, session_id: str, rate_hz: float, *args: object) -> None:
            declared.append(rate_hz)

        def push_samples(self, *args: object) -> None: ...

        def push_event(self, *args: object) -> None: ...

        def push_nudge(self, *args: object) -> None: ...

        def close(self) -> None: ...

    monkeypatch.setattr("breathsync.daemon.daemon.LslOutlets", Outlets)

    async def one(config: DaemonConfig, out: io.StringIO) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(Daemon(config, out).run(stop))
        await asyncio.sleep(4)
        stop.set()
        await asyncio.wait_for(task, 20)

    first = config_for(adapter, tmp_path, lsl=True)
    asyncio.run(one(first, io.StringIO()))
    [path] = tmp_path.glob("*.sqlite")
    at_50 = dataclasses.replace(first.straps, rate_hz=50)
    again = dataclasses.replace(first, session=dataclasses.replace(first.session, name=path.stem), straps=at_50)
    out = io.StringIO()
    asyncio.run(one(again, out))
    assert "differ in straps.rate_hz; they apply to a new session" in out.getvalue()
    assert {role: strap.rate_hz for role, strap in straps.items()} == {"therapist": 25, "client": 25}
    assert declared == [25, 25]
    with SessionStore.open(path, read_only=True) as store:
        assert {strap.rate_hz for strap in store.straps()} == {25}
        assert float(np.max(np.diff(store.samples("client").host_t_s)[-25:])) == pytest.approx(0.04, abs=0.005)


def _run_until_the_virtual_straps_go(
    make: Callable[[object], Awaitable[dict[str, ModelStrap]]],
    config_of: Callable[[str], DaemonConfig],
    after_s: float,
    message: str,
) -> DaemonConfig:
    """Run a session on ``make``'s straps, end their process after ``after_s``, and check the run ends with
    ``message``; returns the configuration it ran with."""
    virtual = contextlib.ExitStack()
    adapter, _ = virtual.enter_context(served(make))
    config = config_of(adapter)

    async def go() -> None:
        task = asyncio.create_task(Daemon(config, io.StringIO()).run(asyncio.Event()))
        await asyncio.sleep(after_s)
        await asyncio.to_thread(virtual.close)  # the virtual straps' process ends
        with pytest.raises(LinkError, match=message):
            await asyncio.wait_for(task, 30)

    try:
        asyncio.run(go())
    finally:
        virtual.close()
    return config


def test_the_virtual_straps_going_away_ends_the_session_and_saves_it_to_continue(tmp_path: Path) -> None:
    # A soak review: the virtual straps' process stopped and came back, and `run` said 'retrying' for ever (its
    # Bumble bench had lost its transport and never reaches anything again); Ctrl-C then closed the session and
    # the next run began a new one, learning both baselines again.
    async def pair(link: object) -> dict[str, ModelStrap]:
        return {
            "therapist": await ModelStrap("strap-T", breathing(900, 12, 1), speed=1.0, role=Role.THERAPIST).start(link),
            "client": await ModelStrap("strap-C", breathing(900, 16, 2), speed=1.0, role=Role.CLIENT).start(link),
        }

    kept = r"lost its HCI transport .*; the session is saved: `breathsync run --name"
    config = _run_until_the_virtual_straps_go(pair, lambda adapter: config_for(adapter, tmp_path), 5.0, kept)
    [path] = tmp_path.glob("*.sqlite")
    with SessionStore.open(path) as store:
        assert store.meta("closed") == "1" and len(store.samples("therapist").counters) > 25 * 2
    # Closed: the next plain run starts a new session (a data review: left open, the next run, on another sim's
    # straps, resumed it and appended that dyad to it); `--name` continues this one on purpose.
    assert session_path(config).resumed is False
    named = dataclasses.replace(config, session=dataclasses.replace(config.session, name=path.stem))
    assert session_path(named) == SessionChoice(path, True)

    # Gone while the straps were still being looked for: nothing recorded, nothing kept, and said so.
    async def none(link: object) -> dict[str, ModelStrap]:
        return {}

    def searching(adapter: str) -> DaemonConfig:
        return DaemonConfig(
            session=SessionConfig(directory=str(tmp_path / "new")),
            straps=StrapsConfig(ble=adapter, therapist="auto", client="auto"),
            outputs=OutputsConfig(lsl=False),
        )

    none_kept = r"lost its HCI transport .*; nothing had been recorded: no session kept$"
    _run_until_the_virtual_straps_go(none, searching, 2.0, none_kept)
    assert not (tmp_path / "new").exists()


WALL_CLOCK_STEP = """
import sys, threading, time
real_time = time.time
step_s = [0.0]
time.time = lambda: real_time() + step_s[0]  # the system's wall clock, as every module reads it from now on
threading.Timer(8.0, step_s.__setitem__, (0, 30.0)).start()  # NTP, or someone, sets it 30 s ahead
from breathsync.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_step_of_the_wall_clock_mid_session_is_not_a_strap_reboot(
    served_pair: tuple[str, dict[str, ModelStrap]], tmp_path: Path
) -> None:
    # Timed on the wall clock, a +30 s step mid-session made both straps' TIME_SYNC counters look 30 s behind their
    # clock fits: both were taken for rebooted, their rings fetched and stored again dated back in time, and the
    # engine paused (an outside review).
    adapter, straps = served_pair
    cmd = [sys.executable, "-c", WALL_CLOCK_STEP, *_run_command(adapter, tmp_path)[3:]]
    run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(15)  # the step at 8 s, then three TIME_SYNC pings
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    [path] = tmp_path.glob("*.sqlite")
    with SessionStore.open(path) as store:
        assert not [e for e in store.link_events() if "reboot" in e[2]], store.link_events()
        for role, strap in straps.items():
            series = store.samples(role)
            assert len(series.counters) > 25 * 8 and store.missing_ranges(role) == [], role
            assert not store.late(role).sample_ranges, role
            assert series.values.tolist() == strap.values[int(series.counters[0]) : int(series.counters[-1]) + 1]
            # No jump either way after the first clock fit (it may move the first seconds back by up to ~1 s on a
            # busy host, step or not); the step comes 5 s or more after the first sample.
            steps = np.diff(series.host_t_s[4 * 25 :])
            assert np.abs(steps - 1 / 25).max() < 0.5, (role, steps.min(), steps.max())


def test_steady_wall_clock_reads_unix_time_and_never_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from breathsync.link.clock import steady_wall_clock

    real_time = time.time
    clock = steady_wall_clock()
    assert abs(clock() - real_time()) < 0.01
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600.0)
    before = clock()
    time.sleep(0.05)
    assert 0.04 < clock() - before < 1.0


def test_straps_found_by_role_in_one_search_that_asks_each_strap_once(
    served_pair: tuple[str, dict[str, ModelStrap]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One role after another scanned and connected to every strap again (a stream's first line came ~7 s late).
    import breathsync.link.sources as sources

    adapter, straps = served_pair
    scans: list[int] = []
    asked: list[str] = []
    real_scan, real_describe = sources.scan, sources.describe

    async def counted_scan(*args: Any, **kwargs: Any) -> Any:
        found = await real_scan(*args, **kwargs)
        scans.append(len(found))
        return found

    async def counted_describe(found: Any, options: Any) -> Any:
        asked.append(found.name)
        return await real_describe(found, options)

    monkeypatch.setattr(sources, "scan", counted_scan)
    monkeypatch.setattr(sources, "describe", counted_describe)
    config = dataclasses.replace(
        config_for(adapter, tmp_path), straps=StrapsConfig(ble=adapter, therapist="auto", client="auto")
    )
    out = io.StringIO()

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(Daemon(config, out).run(stop))
        await asyncio.sleep(6)
        stop.set()
        summary = await asyncio.wait_for(task, 20)
        assert summary.samples["therapist"] > 25 and summary.samples["client"] > 25

    asyncio.run(go())
    assert scans == [2] and sorted(asked) == ["strap-C", "strap-T"]
    assert "looking for the therapist's and the client's straps..." in out.getvalue()
    [path] = tmp_path.glob("*.sqlite")
    with SessionStore.open(path) as store:  # each role's samples from the strap that reports that role
        for role, strap in straps.items():
            series = store.samples(role)
            assert series.values.tolist() == strap.values[int(series.counters[0]) : int(series.counters[-1]) + 1]
        # The session names each strap as it advertised, at the address its link connected to (both were the
        # address: a new-user review).
        recorded = {info.role: info for info in store.straps()}
        assert {role: info.name for role, info in recorded.items()} == {"therapist": "strap-T", "client": "strap-C"}
        assert all(looks_like_address(info.address) for info in recorded.values())


def _dyad_as_it_arrives(
    t0_s: float,
    late_from_s: float,
    late_until_s: float,
    resent: bool = True,
    follow_from_s: float | None = None,
    seconds: float = 300.0,
) -> list[tuple[float, SampleBlock | StrapEvent]]:
    """A therapist (13/min) and a client (16/min) as their straps' notifications reach the host, in arrival order;
    the client's strap out of range from ``late_from_s`` to ``late_until_s``: what it measured meanwhile arrives
    afterwards, as backfill (``resent`` False: held up on the way and then delivered, a stalled radio).
    ``follow_from_s``: from then on the therapist breathes as the client did 0.6 s before."""
    rate = 25
    arrivals: list[tuple[float, SampleBlock | StrapEvent]] = []
    client = breathing(seconds, 16.0, 2)
    therapist = breathing(seconds, 13.0, 1)
    if follow_from_s is not None:
        start, lag = int(follow_from_s * rate), int(0.6 * rate)
        therapist[start:] = client[start - lag : len(client) - lag]
    for role, values in (("therapist", therapist), ("client", client)):
        host = t0_s + np.arange(len(values)) / rate

        def arrival(counter: int, host: np.ndarray = host, away: bool = role == "client") -> tuple[float, bool]:
            measured = float(host[counter]) + 0.5 / rate
            if away and late_from_s <= measured - t0_s < late_until_s:
                if not resent:  # what was held goes out as soon as the radio moves again
                    return t0_s + late_until_s + 0.1 + counter * 1e-4, False
                return t0_s + late_until_s + 0.5 + counter * 1e-4, True  # sent again once the strap is back
            return measured, False

        per_block = live_block_samples(rate)  # the strap's notifications (as a replay cuts them)
        held: list[int] = []
        for start in range(0, len(values), per_block):
            end = min(start + per_block, len(values))
            at, late = arrival(end - 1)
            if at - float(host[end - 1]) > 0.1 and not resent:
                held += range(start, end)  # the strap sends what piled up in one larger block
                continue
            block = SampleBlock(role, start, np.array(values[start:end]), host[start:end], late)
            arrivals.append((at, block))
        if held:
            first, stop = held[0], held[-1] + 1
            block = SampleBlock(role, first, np.array(values[first:stop]), host[first:stop], False)
            arrivals.append((t0_s + late_until_s + 0.1, block))
        for e in detect_cpython(values, rate):
            at, late = arrival(e.confirmed_index)
            event = StrapEvent(
                role, e.kind, e.index, e.confirmed_index, e.depth_counts, e.interval_samples, float(host[e.index]), late
            )
            arrivals.append((at, event))
    arrivals.sort(key=lambda item: (item[0], isinstance(item[1], StrapEvent)))
    return arrivals


def _record_live(path: Path, arrivals: list[tuple[float, SampleBlock | StrapEvent]], t0_s: float) -> None:
    """A session recorded by the daemon from notifications reaching it at the given host times (its clock)."""
    now = [t0_s]

    async def live() -> None:
        daemon = Daemon(config_for("bumble:none", path.parent), io.StringIO(), clock=lambda: now[0])
        daemon.store = SessionStore.create(path, daemon.config.as_dict())
        daemon._start_session(daemon.store, path, resumed=False)
        for at, item in arrivals:
            now[0] = at
            if isinstance(item, SampleBlock):
                daemon.on_samples(item)
            else:
                daemon.on_event(item)
            if daemon._nudge_tasks:  # a nudge is sent as soon as the loop is free (no link here: it fails)
                await asyncio.sleep(0)
        await daemon._drain_nudges()
        daemon.store.close()

    asyncio.run(live())


def test_a_replayed_session_decides_as_live_after_a_drop_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Live, the engine never sees what a strap sends again after a drop-out; the replay fed it in where it was
    # measured, so its decisions parted from the stored ones from the drop-out on (an outside probe: 35 of 143
    # decisions, and the nudge 3.4 s later). What came late is now kept marked, and left out of a replay.
    t0_s = 1_000_000.0
    path = tmp_path / "s.sqlite"
    _record_live(path, _dyad_as_it_arrives(t0_s, 150.0, 180.0), t0_s)
    with SessionStore.open(path, read_only=True) as store:
        live_states = [(round(s.fields["t_s"], 3), s.decision) for s in store.states()]
        late = store.late("client")
        assert store.late("therapist") == LateData()
    # The client's 30 s away, in one merged range (a block's last sample decides when it was sent), and its events.
    assert len(late.sample_ranges) == 1 and late.events
    first, last = late.sample_ranges[0]
    assert abs(first / 25 - 150.0) < 0.3 and abs(last / 25 - 180.0) < 0.3
    assert sum(1 for _, d in live_states if d == "paused") >= 1 and len(live_states) > 100

    def replayed(*extra: str) -> list[tuple[float, str]]:
        assert main(["replay", str(path), *extra]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return [(round(r["t_s"], 3), r["decision"]) for r in lines if r["type"] == "state"]

    assert replayed() == live_states
    assert replayed("--include-late") != live_states  # as if nothing had come late: no pause, other windows


def test_a_replayed_session_decides_as_live_after_a_stall(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A stalled radio: the client's notifications held up for 6 s, then delivered, nothing sent again. Live, the
    # engine paused meanwhile; the replay had the samples where they were measured and did not (an outside probe: a
    # 4 s stall, 26 of 145 decisions differed, the nudge 6.7 s apart). The session now keeps when they arrived.
    t0_s = 1_000_000.0
    path = tmp_path / "s.sqlite"
    _record_live(path, _dyad_as_it_arrives(t0_s, 150.0, 156.0, resent=False), t0_s)
    with SessionStore.open(path, read_only=True) as store:
        live_states = [(round(s.fields["t_s"], 3), s.decision) for s in store.states()]
        arrivals = store.arrivals("client")
        assert store.late("client") == LateData() and len(store.arrivals("therapist").blocks) == 300 * 25 // 8 + 1
    paused = [t for t, d in live_states if d == "paused"]
    assert paused and all(151.5 <= t <= 156.2 for t in paused)  # > max_sample_gap_s (2 s) without the client
    # What the stall held up came in one larger block at its end, and the breath events with it.
    [(first, last, at_s, _)] = [b for b in arrivals.blocks if b[1] - b[0] + 1 > 8]
    assert abs(first / 25 - 150.0) < 0.4 and abs(last / 25 - 156.0) < 0.4 and abs(at_s - t0_s - 156.1) < 1e-6
    held = [at for (_, counter), (at, _) in arrivals.events.items() if 150 <= counter / 25 < 155.5]
    assert held and all(156.1 < at - t0_s < 156.6 for at in held)

    def replayed(*extra: str) -> list[tuple[float, str]]:
        assert main(["replay", str(path), *extra]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return [(round(r["t_s"], 3), r["decision"]) for r in lines if r["type"] == "state"]

    assert replayed() == live_states
    assert "paused" not in [d for _, d in replayed("--include-late")]  # where measured: no stall, no pause


def test_a_replayed_session_holds_back_what_live_held_back_after_a_nudge_that_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A nudge that never reached the strap holds nothing back from the moment it failed, so live the engine nudges
    # again once following has built up anew. A resumed run and `replay SESSION` applied the failures only after
    # replaying everything: until then the failed nudge held the cooldown and the cap per episode, the later nudges
    # were never re-made, and a resumed run could buzz the therapist again inside the cooldown (an outside review).
    t0_s = 1_000_000.0
    path = tmp_path / "s.sqlite"
    # No strap link here, so every nudge fails. Notifications reach the host 50 ms after their data: a nudge is
    # dated by the data that triggered it, and its failure comes on the arrival timeline.
    arrivals = _dyad_as_it_arrives(t0_s, 0.0, 0.0, follow_from_s=130.0, seconds=900.0)
    _record_live(path, [(at + 0.05, item) for at, item in arrivals], t0_s)
    with SessionStore.open(path, read_only=True) as store:
        live = [round(n.t_s - t0_s, 3) for n in store.nudges()]
        assert len(live) >= 2 and all(n.delivered is False for n in store.nudges()), live
        live_states = [(round(s.fields["t_s"], 3), s.decision) for s in store.states()]
    assert main(["replay", str(path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [round(r["t_s"], 3) for r in lines if r["type"] == "nudge"] == live
    assert [(round(r["t_s"], 3), r["decision"]) for r in lines if r["type"] == "state"] == live_states
    daemon = Daemon(config_for("bumble:none", tmp_path), io.StringIO(), clock=lambda: t0_s + 900.0)
    with SessionStore.open(path, read_only=True) as store:  # what a resumed run rebuilds from the session
        daemon.t0_s = t0_s
        daemon._rebuild(store)
    assert [round(n.t_s, 3) for n in daemon.engine.nudges] == live


def test_an_event_a_quick_restart_had_stored_is_not_fed_or_timed_again(tmp_path: Path) -> None:
    # Within seconds of a restart a strap sends live what the run before had stored: the event got a second arrival
    # row (the replay fed it at the second run's time, matching neither run) and went to the engine twice.
    now = [1_000_000.0]
    daemon = Daemon(config_for("bumble:none", tmp_path), io.StringIO(), clock=lambda: now[0])
    with SessionStore.create(tmp_path / "s.sqlite", daemon.config.as_dict()) as store:
        daemon.store = store
        daemon._start_session(store, tmp_path / "s.sqlite", resumed=False)
        times = now[0] + np.arange(100) / 25
        daemon.on_samples(SampleBlock("client", 0, np.full(100, 30000), times, False))
        seen = StrapEvent("client", "peak", 50, 60, 900, 0, float(times[50]), False)
        daemon.on_event(seen)
        now[0] += 5.0
        daemon.on_event(seen)  # the same, live again after the restart
        assert store.arrivals("client").events == {("peak", 50): (1_000_000.0, 2)}
        assert len(store.arrivals("client").blocks) == 1


def test_only_what_the_session_did_not_have_is_marked_late(tmp_path: Path) -> None:
    # After a crash the strap sends again what the run before had stored (and its engine had seen live): marked late,
    # the replay and the next rebuild dropped data the live engine had used (an outside review).
    now = [1_000_000.0]
    daemon = Daemon(config_for("bumble:none", tmp_path), io.StringIO(), clock=lambda: now[0])
    with SessionStore.create(tmp_path / "s.sqlite", daemon.config.as_dict()) as store:
        daemon.store = store
        daemon._start_session(store, tmp_path / "s.sqlite", resumed=False)
        times = now[0] + np.arange(120) / 25
        daemon.on_samples(SampleBlock("client", 0, np.full(100, 30000), times[:100], False))
        seen = StrapEvent("client", "peak", 50, 60, 900, 0, float(times[50]), False)
        daemon.on_event(seen)
        daemon.on_samples(SampleBlock("client", 90, np.full(30, 30000), times[90:120], True))
        daemon.on_event(dataclasses.replace(seen, backfilled=True))  # the same event, sent again
        daemon.on_event(StrapEvent("client", "trough", 105, 112, 800, 0, float(times[105]), True))
        late = store.late("client")
    assert late.sample_ranges == ((100, 119),) and late.events == {("trough", 105)}


def test_the_status_line_shows_each_rate_while_the_baselines_are_learned(tmp_path: Path) -> None:
    # Both straps breathing, and for the two minutes of learning the line showed '--' for both rates.
    t0_s = 1_000_000.0
    now = [t0_s]
    daemon = Daemon(config_for("bumble:none", tmp_path), io.StringIO(), clock=lambda: now[0])
    with SessionStore.create(tmp_path / "s.sqlite", daemon.config.as_dict()) as store:
        daemon.store = store
        daemon._start_session(store, tmp_path / "s.sqlite", resumed=False)
        for role in ROLES:
            daemon.on_link(role, "connected", "")
        for at, item in _dyad_as_it_arrives(t0_s, 1e9, 1e9):
            if at - t0_s > 60.0:
                break
            now[0] = at
            daemon.on_samples(item) if isinstance(item, SampleBlock) else daemon.on_event(item)
        line = daemon.status_line()
    assert daemon.state is None and "sync -- learning" in line
    rates = [float(r) for r in re.findall(r"(\d+\.\d)/min", line)]
    assert len(rates) == 2 and abs(rates[0] - 13.0) < 0.5 and abs(rates[1] - 16.0) < 0.5, line


class ConsoleThatGoes(io.StringIO):
    """A console whose reader goes away after a few lines (``breathsync run | tee log`` with tee killed)."""

    def write(self, text: str) -> int:
        if self.getvalue().count("\n") >= 2:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_a_console_that_goes_away_ends_the_output_not_the_session(
    served_pair: tuple[str, dict[str, ModelStrap]], tmp_path: Path
) -> None:
    adapter, _straps = served_pair
    out = ConsoleThatGoes()

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(Daemon(config_for(adapter, tmp_path), out).run(stop))
        await asyncio.sleep(5)
        assert not task.done()  # the failed status line did not end the session
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(go())
    assert out.getvalue().count("\n") == 2
    [path] = tmp_path.glob("*.sqlite")
    with SessionStore.open(path, read_only=True) as store:
        assert store.meta("closed") == "1"
        assert all(len(store.samples(role).counters) > 25 * 3 for role in ("therapist", "client"))


def test_config_defaults_and_errors(tmp_path: Path) -> None:
    assert load_daemon_config(None) == DaemonConfig()
    good = tmp_path / "good.toml"
    good.write_text('[straps]\nrate_hz = 50\nclient = "serial:/dev/ttyACM0"\n[policy]\ncooldown_s = 120\n')
    config = load_daemon_config(good)
    assert config.straps.rate_hz == 50 and config.engine.policy.cooldown_s == 120
    # Paths in a config file are relative to the file, not to where `breathsync run` was started.
    (tmp_path / "clinic").mkdir()
    paths = tmp_path / "clinic" / "paths.toml"
    paths.write_text(
        '[session]\ntherapist_baseline = "me.json"\ndirectory = "sessions"\n'
        '[straps]\ntherapist = "replay:old/s1.sqlite"\nclient = "ble:strap-C"\n'
    )
    loaded = load_daemon_config(paths)
    assert loaded.session.therapist_baseline == str(tmp_path / "clinic" / "me.json")
    assert loaded.session.directory == str(tmp_path / "clinic" / "sessions")
    assert loaded.straps.therapist == f"replay:{tmp_path / 'clinic' / 'old' / 's1.sqlite'}"
    assert loaded.straps.client == "ble:strap-C"
    paths.write_text(f'[session]\ntherapist_baseline = "{tmp_path}/me.json"\ndirectory = "~/s"\n')
    session = load_daemon_config(paths).session
    assert session.therapist_baseline == f"{tmp_path}/me.json" and session.directory == "~/s"
    assert load_daemon_config(good).session == SessionConfig()  # defaults as they are
    for text, message in [
        ("[straps]\nrate_hz = 30\n", "rate_hz must be 25 or 50"),
        ("[straps]\nclient = 'carrier:pigeon'\n", "straps.client"),
        ("[outputs]\nlsl = 'yes'\n", "outputs.lsl must be a bool"),
        ("[session]\nname = 3\n", "session.name must be a string"),
        ("[outputs]\nstatus_interval_s = inf\n", "must be a finite number"),
        ("[outputs]\nstatus_interval_s = 1" + "0" * 400 + "\n", "must be a finite number (got 100000000"),
        ("[straps]\nrate_hz = true\n", "straps.rate_hz must be a number"),
        ("[nonsense]\n", "unknown section"),
        ("[session\n", "invalid TOML"),
        ("[straps]\nclient = 'ble:'\n", "straps.client: bad source 'ble:'"),
        ("[straps]\ntherapist = 'auto:'\n", "straps.therapist: bad source 'auto:'"),
        ("[straps]\nble = 'carrier-pigeon'\n", "straps.ble: unknown BLE adapter"),
        ("[straps]\nble = 'bumble:'\n", "straps.ble: unknown BLE adapter"),
        ("[session]\nname = '../../etc/x'\n", "session.name must be a plain file name"),
        ("[session]\nname = '.hidden'\n", "session.name must be a plain file name"),
        ("[session]\nname = '  '\n", "session.name must be a plain file name"),
        ("[session]\ndirectory = ' '\n", "session.directory is empty"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(InputError, match=re.escape(message)):
            load_daemon_config(bad)
    with pytest.raises(InputError, match="no such file"):
        load_daemon_config(tmp_path / "missing.toml")
    (tmp_path / "baseline.json").write_text('{"format": "breathsync-baseline", "version": 1}')
    with pytest.raises(InputError, match="rate_bpm must be a finite number"):  # before any strap is touched
        Daemon(DaemonConfig(session=SessionConfig(therapist_baseline=str(tmp_path / "baseline.json"))))


def test_lsl_outlets_are_discoverable_on_this_machine(
    served_pair: tuple[str, dict[str, ModelStrap]], tmp_path: Path
) -> None:
    adapter, _ = served_pair
    from breathsync.daemon.lsl import load_pylsl

    found: dict[str, object] = {}

    # LSL discovery is machine-wide: another breathsync on this machine (a second test run) publishes outlets of
    # the same names, so look only for this session's (the outlets' source ids start with the session's name).
    config = config_for(adapter, tmp_path, lsl=True)
    session = f"lsl-{os.getpid()}-{time.time_ns()}"
    config = dataclasses.replace(config, session=dataclasses.replace(config.session, name=session))

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(Daemon(config, io.StringIO()).run(stop))
        await asyncio.sleep(3)
        pylsl = load_pylsl("machine")
        mine = f"type='RESP' and starts-with(source_id,'{session}-')"
        streams = await asyncio.to_thread(pylsl.resolve_bypred, mine, 2, 5.0)
        found["names"] = sorted(s.name() for s in streams)
        found["rates"] = {s.nominal_srate() for s in streams}
        inlet = pylsl.StreamInlet(streams[0])
        chunk, _stamps = await asyncio.to_thread(inlet.pull_chunk, 3.0)
        found["chunk"] = len(chunk)
        inlet.close_stream()
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(go())
    assert found["names"] == ["breathsync-client-resp", "breathsync-therapist-resp"]
    assert found["rates"] == {25.0}
    assert found["chunk"] > 0  # samples flow to an inlet


def test_kill_9_then_restart_loses_no_sample(served_pair: tuple[str, dict[str, ModelStrap]], tmp_path: Path) -> None:
    adapter, straps = served_pair
    write_baseline(tmp_path / "monday.json", Baseline(rate_bpm=11.5, rate_sd_bpm=0.9, depth=1.0, n_breaths=23))
    write_baseline(tmp_path / "tuesday.json", Baseline(rate_bpm=14.0, rate_sd_bpm=0.9, depth=1.0, n_breaths=23))
    cmd = [
        sys.executable,
        "-m",
        "breathsync",
        "run",
        "--ble",
        adapter,
        "--therapist",
        "ble:strap-T",
        "--client",
        "ble:strap-C",
        "--sessions",
        str(tmp_path),
        "--no-lsl",
    ]
    first = subprocess.Popen(
        [*cmd, "--therapist-baseline", str(tmp_path / "monday.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(8)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    time.sleep(3)  # the straps keep sampling while no host is there
    second = subprocess.Popen(
        [*cmd, "--therapist-baseline", str(tmp_path / "tuesday.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(10)
    second.send_signal(signal.SIGTERM)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert "resuming session" in out
    assert "therapist baseline 11.5/min" in out  # the resumed session keeps the baseline it started with
    # 8 s before the crash: not learned yet; and the period is one of breathing, not the wait for the straps
    assert "; learning the client's over the first 120 s of breathing from both straps" in out
    [path] = tmp_path.glob("*.sqlite")
    with SessionStore.open(path) as store:
        for role, strap in straps.items():
            series = store.samples(role)
            assert series.counters[0] == 0
            assert store.missing_ranges(role) == [], f"{role}: samples lost across kill -9"
            assert series.values.tolist() == strap.values[: len(series.values)]
            assert len(series.values) > 25 * 15


def _run_in_a_window(cmd: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a new session whose controlling terminal is a pty, as in a terminal window; its output
    goes to the pty, or to ``log`` (`run > log`). Returns once both straps stream; closing the window is
    closing ``proc.window``."""
    window, terminal = pty.openpty()

    def own_terminal() -> None:  # after setsid: the pty becomes the run's controlling terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        # A window's shell starts programs with the hangup signal at its default, whatever ran the tests: under
        # `nohup make test` it was inherited ignored, and the run (rightly) kept going when its window closed.
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    output = terminal if log is None else os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    proc = subprocess.Popen(
        cmd, stdin=terminal, stdout=output, stderr=output, start_new_session=True, preexec_fn=own_terminal
    )
    os.close(terminal)
    if log is not None:
        os.close(output)
    proc.window = window  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    seen = b""
    while b"T: ok" not in seen or b"C: ok" not in seen:
        assert time.monotonic() < deadline, seen.decode(errors="replace")
        if log is None:
            if select.select([window], [], [], 1.0)[0]:
                seen += os.read(window, 4096)
        else:
            time.sleep(0.5)
            seen = log.read_bytes()
    time.sleep(2)
    return proc


def _ended(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int | None:
    """Its exit status once it has ended by itself within ``timeout_s``; None (and killed: nothing left running
    into the next test) if it had not."""
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def test_closing_the_terminal_window_closes_the_session_like_ctrl_c(
    served_pair: tuple[str, dict[str, ModelStrap]], tmp_path: Path
) -> None:
    # Closing the window sends SIGHUP. Unhandled, it killed the run with its session unclosed, and the next
    # run within 15 minutes resumed that session: the next client recorded into the previous client's file.
    adapter, _straps = served_pair
    run = _run_in_a_window(_run_command(adapter, tmp_path / "sessions"))
    os.close(run.window)  # type: ignore[attr-defined]  # the kernel hangs the terminal up
    assert _ended(run) == 0  # not an error because its summary had no terminal to go to
    [path] = (tmp_path / "sessions").glob("*.sqlite")
    with SessionStore.open(path, read_only=True) as store:
        assert store.meta("closed") == "1"
        assert all(len(store.samples(role).counters) > 25 for role in ("therapist", "client"))
    assert not session_path(DaemonConfig(session=SessionConfig(directory=str(tmp_path / "sessions")))).resumed

    # `run > run.log` in a window that is then closed: the log keeps every line to the end (only a terminal's
    # output is dropped), and the keyboard reader on the dead terminal stops instead of failing on every pass.
    log = tmp_path / "run.log"
    run = _run_in_a_window(_run_command(adapter, tmp_path / "logged"), log)
    os.close(run.window)  # type: ignore[attr-defined]
    assert _ended(run) == 0
    text = log.read_text()
    assert "stopping..." in text and "session saved:" in text and "Traceback" not in text, text[-2000:]
    saved = re.search(r"session saved: (\S+)", text)
    assert saved and f"its report: breathsync report {saved.group(1)}" in text  # the next step, said


HANGUP_PROBE = """
import asyncio, os, signal, sys
from breathsync.commands.shutdown import stop_on_signals

async def main() -> int:
    stop = stop_on_signals()
    os.kill(os.getpid(), signal.SIGHUP)
    try:
        await asyncio.wait_for(stop.wait(), 2.0)
    except TimeoutError:
        return 3  # still running
    print("after the hangup")  # a pipe (here) keeps it; a hung-up terminal's output goes to /dev/null
    return 0

sys.exit(asyncio.run(main()))
"""


def test_a_hangup_stops_a_command_unless_it_runs_under_nohup() -> None:
    hung_up = subprocess.run(
        [sys.executable, "-c", HANGUP_PROBE],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),  # as from a terminal, even under nohup
    )
    assert hung_up.returncode == 0 and hung_up.stdout == "after the hangup\n" and "stopping" in hung_up.stderr
    nohup = subprocess.run(
        [sys.executable, "-c", HANGUP_PROBE],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    assert nohup.returncode == 3, nohup.stderr


def _run_command(adapter: str, directory: Path) -> list[str]:
    """`breathsync run` on the served pair, as a user starts it."""
    cmd = [sys.executable, "-m", "breathsync", "run", "--ble", adapter, "--therapist", "ble:strap-T"]
    return [*cmd, "--client", "ble:strap-C", "--sessions", str(directory), "--no-lsl"]


def _reboot(strap: ModelStrap, off_s: float) -> None:
    """The strap's radio goes off for ``off_s`` and the strap restarts 0.2 s into it (its counter from 0 again)."""

    async def reboot() -> None:
        assert strap.peripheral is not None
        off = asyncio.ensure_future(strap.peripheral.power_off(off_s))
        await asyncio.sleep(0.2)
        strap.reboot()
        await off

    asyncio.run_coroutine_threadsafe(reboot(), strap._task.get_loop()).result(10)


def _resume(cmd: list[str]) -> None:
    """Run ``cmd`` again after a crash for 10 s: it must resume the session and end cleanly."""
    second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(10)
    second.send_signal(signal.SIGTERM)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert "resuming session" in out


def test_kill_9_after_a_strap_reboot_resumes_without_storing_anything_twice(
    served_pair: tuple[str, dict[str, ModelStrap]], tmp_path: Path
) -> None:
    # The therapist's strap restarts mid-session (its counter begins at 0 again), then the host is killed.
    # The restarted run took the stored counters for the strap's own, saw its first TIME_SYNC as a second
    # reboot and fetched the strap's whole ring again under new counters: 192 samples stored twice.
    adapter, straps = served_pair
    therapist = straps["therapist"]
    cmd = _run_command(adapter, tmp_path)
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(8)
    _reboot(therapist, off_s=1.0)
    time.sleep(8)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    time.sleep(2)
    _resume(cmd)
    [path] = tmp_path.glob("*.sqlite")
    with SessionStore.open(path) as store:
        reboots = [e for e in store.link_events() if e[1] == "therapist" and e[2] == "strap-rebooted"]
        assert len(reboots) == 1, reboots  # the real one; none made up by the resumed run
        values = store.samples("therapist").values.tolist()
    # Each strap sample is stored at most once: 5-sample runs of the noisy signal identify where each stored
    # run was taken (runs straddling the samples the reboot lost match nowhere).
    runs = {tuple(therapist.values[i : i + 5]): i for i in range(len(therapist.values) - 5)}
    sources = [runs.get(tuple(values[k : k + 5])) for k in range(len(values) - 5)]
    found = [i for i in sources if i is not None]
    assert len(found) >= len(sources) - 10
    assert len(found) == len(set(found)), "strap samples stored more than once"
    assert len(values) > 25 * 20


def test_a_strap_rebooted_while_no_host_was_there_continues_after_the_time_it_was_away(
    served_pair: tuple[str, dict[str, ModelStrap]], tmp_path: Path
) -> None:
    # The host is killed, the therapist's strap restarts before the host is back: the resumed run mapped the new
    # boot's counter 0 right after the last stored counter, so counters showed no gap while time had moved on
    # (72-95 s in an outside probe: every later sample placed that much early against the breath events).
    adapter, straps = served_pair
    cmd = _run_command(adapter, tmp_path)
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(8)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    time.sleep(4)  # the strap samples on, unheard; then it restarts, and what it held is gone
    _reboot(straps["therapist"], off_s=0.5)
    _resume(cmd)
    [path] = tmp_path.glob("*.sqlite")
    with SessionStore.open(path) as store:
        reboots = [e for e in store.link_events() if e[1] == "therapist" and e[2] == "strap-rebooted"]
        series = store.samples("therapist")
        missing = store.missing_ranges("therapist")
    assert len(reboots) == 1, reboots
    # Counters track time across the reboot: the gap in them is the 4 s whose samples the reboot lost.
    assert len(missing) == 1 and missing[0][1] - missing[0][0] + 1 >= 25 * 3, missing
    # Sample times agree with counters on both sides of the join (they disagreed by the 4 s away, before).
    join = int(np.searchsorted(series.counters, missing[0][0]))
    drift_s = series.host_t_s - series.counters / 25.0
    assert abs(float(np.median(drift_s[join : join + 25]) - np.median(drift_s[join - 25 : join]))) < 0.25


def test_mirroring_on_purpose_mutes_and_resumes_by_itself(tmp_path: Path) -> None:
    out = io.StringIO()
    daemon = Daemon(DaemonConfig(session=SessionConfig(directory=str(tmp_path))), out, clock=lambda: 1100.0)
    daemon.t0_s = 1000.0
    daemon.engine.advance(100.0)
    daemon.mute()
    mute_s = daemon.config.engine.policy.mute_s
    assert daemon.engine.policy.is_muted(100.0 + mute_s - 1)
    assert "muted for 10 min" in out.getvalue()
    daemon._say_mute_over(1000.0 + 100.0 + mute_s - 1)
    assert "nudges are back on" not in out.getvalue()
    daemon._say_mute_over(1000.0 + 100.0 + mute_s + 1)  # the status tick after it ran out: said once
    daemon._say_mute_over(1000.0 + 100.0 + mute_s + 2)
    assert out.getvalue().count("the mute is over: nudges are back on") == 1
    assert not daemon.engine.policy.is_muted(100.0 + mute_s + 1)


def test_pressing_m_again_ends_the_mute_and_the_session_keeps_both(tmp_path: Path) -> None:
    from breathsync.store import mute_duration_s

    now = [1100.0]
    out = io.StringIO()
    daemon = Daemon(DaemonConfig(session=SessionConfig(directory=str(tmp_path))), out, clock=lambda: now[0])
    daemon.store = SessionStore.create(tmp_path / "s.sqlite", config={})
    daemon.t0_s = 1000.0
    daemon.engine.advance(100.0)
    daemon.mute()
    now[0] = 1160.0
    daemon.engine.advance(160.0)
    assert daemon.engine.policy.is_muted(160.0)
    daemon.mute()  # m + Enter again, a minute later
    assert not daemon.engine.policy.is_muted(160.0)
    assert "mute ended" in out.getvalue()
    daemon.mute()  # and once more: a new mute of the full length
    assert daemon.engine.policy.muted_for_s(160.0) == pytest.approx(daemon.config.engine.policy.mute_s)
    mutes = [(t, mute_duration_s(d)) for t, _, kind, d in daemon.store.link_events() if kind == "muted"]
    daemon.store.close()
    assert mutes == [(1100.0, 600.0), (1160.0, 0.0), (1160.0, 600.0)]


def test_paced_nudge_keeps_the_breath_period_within_strap_limits() -> None:
    from breathsync.daemon.daemon import device_haptic
    from breathsync.engine import HapticPattern

    for rate_bpm in (4, 6, 12, 20, 30):
        period_ms = round(60000 / rate_bpm)
        command = device_haptic(HapticPattern(4, period_ms // 2, period_ms - period_ms // 2, 60))
        assert command.on_ms + command.off_ms == period_ms  # still paced at the therapist's rate
        assert command.on_ms <= 1000 and 10 * command.on_ms <= 3 * period_ms  # duty stays under 30 %
        assert bytes(command)  # encodes: every field within the wire ranges
    single = device_haptic(HapticPattern(1, 5000, 0, 150))
    assert (single.pulses, single.on_ms, single.off_ms, single.intensity_pct) == (1, 1000, 0, 100)


@pytest.mark.parametrize(
    ("straps", "message"),
    [
        (StrapsConfig(therapist="replay:/nope.sqlite", client="replay:/nope.sqlite"), "no such session file"),
        (StrapsConfig(therapist="serial:/dev/no-such-strap", client="ble:x"), "no serial port"),
        (StrapsConfig(ble="carrier-pigeon", therapist="ble:a", client="ble:b"), "unknown BLE adapter"),
        (StrapsConfig(therapist="foo:bar", client="ble:b"), "unknown source kind"),
    ],
)
def test_bad_sources_fail_before_the_session_file_exists(straps: StrapsConfig, message: str, tmp_path: Path) -> None:
    """A typo must not leave an empty session behind (nor make a retry in the same second clash with it)."""
    sessions = tmp_path / "sessions"
    config = DaemonConfig(
        session=SessionConfig(directory=str(sessions)), straps=straps, outputs=OutputsConfig(lsl=False)
    )
    for _ in range(2):
        out = io.StringIO()
        with pytest.raises(InputError, match=message):
            asyncio.run(Daemon(config, out).run(asyncio.Event()))
        assert "new session" not in out.getvalue()
    assert not sessions.exists()


def test_a_replayed_source_plays_each_breath_when_it_was_confirmed_and_late_data_as_late(tmp_path: Path) -> None:
    # The replay: source gave the daemon each breath at its extremum's time, before the samples that confirmed it,
    # and what live received only after a drop-out as live data (a link review): a session re-run through the daemon
    # path did not see what live had seen.
    from breathsync.link.sources import ReplayLink

    path = tmp_path / "s.sqlite"
    with SessionStore.create(path, {}) as store:
        store.add_samples("client", list(range(100)), [1000.0 + c * 0.04 for c in range(100)], [30000] * 100)
        store.add_event(StrapEvent("client", "peak", 20, 35, 900, 0, 1000.8, False))
        store.add_event(StrapEvent("client", "trough", 60, 71, 900, 0, 1002.4, True))
        store.add_late_samples("client", 50, 69)
        store.add_late_event("client", "trough", 60)
        store.add_event(StrapEvent("client", "peak", 98, 104, 900, 0, 1003.92, False))  # its sample 104 not stored

    class Order:
        def __init__(self) -> None:
            self.seen: list[tuple[str, int, int, bool]] = []

        def on_samples(self, block: SampleBlock) -> None:
            self.seen.append(
                ("samples", block.first_counter, block.first_counter + len(block.values), block.backfilled)
            )

        def on_event(self, event: StrapEvent) -> None:
            self.seen.append(("event", event.counter, event.confirmed_counter, event.backfilled))

        def on_status(self, role: str, status: StatusPacket) -> None: ...

        def on_link(self, role: str, kind: str, detail: str) -> None: ...

    order = Order()
    asyncio.run(ReplayLink("client", path, order, speed=0).run())
    played_until = 0
    for kind, first, end, late in order.seen:
        if kind == "samples":
            assert late == (50 <= first < 70) and (late == (50 <= end - 1 < 70)), (first, end)  # split at its edges
            played_until = end
        else:
            assert first == 98 or end < played_until, order.seen  # after the sample that confirmed it
            assert late == (first == 60)
    assert [e[1] for e in order.seen if e[0] == "event"] == [20, 60, 98]


def test_config_accepts_every_kind_of_source_and_adapter(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[straps]\nble = 'bumble:tcp-client:127.0.0.1:7402'\ntherapist = 'replay:a.sqlite'\n")
    assert load_daemon_config(good).straps.therapist == f"replay:{tmp_path / 'a.sqlite'}"  # beside the file


def test_every_settings_block_in_the_docs_loads_as_written(tmp_path: Path) -> None:
    """A user copies these blocks into their config file: each must load, comments and all."""
    root = Path(__file__).resolve().parents[1]
    blocks = [
        block
        for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]
        for block in re.findall(r"```toml\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    ]
    assert blocks, "the docs show no settings block any more: drop this test or find them"
    for i, block in enumerate(blocks):
        path = tmp_path / f"block{i}.toml"
        path.write_text(block)
        load_daemon_config(path)


def test_replayed_sources_run_a_session_to_the_end(tmp_path: Path) -> None:
    """Links opened before the session file (to validate them) still feed it, in role order."""
    source = tmp_path / "source.sqlite"
    values = {role: breathing(3, 12, seed) for seed, role in enumerate(("therapist", "client"))}
    with SessionStore.create(source, {}) as store:
        for role, vals in values.items():
            store.add_samples(role, list(range(len(vals))), [50.0 + i / 25 for i in range(len(vals))], vals)
    config = DaemonConfig(
        session=SessionConfig(directory=str(tmp_path / "sessions")),
        straps=StrapsConfig(therapist=f"replay:{source}", client=f"replay:{source}"),
        outputs=OutputsConfig(lsl=False),
    )
    daemon = Daemon(config, io.StringIO())
    summary = asyncio.run(asyncio.wait_for(daemon.run(asyncio.Event()), 30))
    assert list(daemon.links) == ["therapist", "client"]
    assert summary.samples == {role: len(vals) for role, vals in values.items()}
    with SessionStore.open(summary.path) as store:
        assert store.meta("closed") == "1"
        assert store.samples("client").values.tolist() == values["client"]


def test_replayed_roles_keep_the_timing_between_the_two_people(tmp_path: Path) -> None:
    # An outside review: each role's replay started from its own first sample, so a client who connected 2.5 s after
    # the therapist was replayed 2.5 s early against them (another phase relation than the one recorded).
    from breathsync.link.sources import BleOptions, open_sources

    source = tmp_path / "source.sqlite"
    firsts = {"therapist": 100.0, "client": 102.49}
    with SessionStore.create(source, {}) as store:
        for role, first in firsts.items():
            n = 25 * 4
            store.add_samples(role, list(range(200, 200 + n)), [first + i / 25 for i in range(n)], [5] * n)
            store.add_event(StrapEvent(role, "peak", 250, 262, 900, 60, first + 50 / 25, False))

    class Sink:
        def __init__(self) -> None:
            self.blocks: dict[str, list[SampleBlock]] = {"therapist": [], "client": []}
            self.events: list[StrapEvent] = []

        def on_samples(self, block: SampleBlock) -> None:
            self.blocks[block.role].append(block)

        def on_event(self, event: StrapEvent) -> None:
            self.events.append(event)

        def on_status(self, role: Role, status: StatusPacket) -> None: ...

        def on_link(self, role: Role, kind: str, detail: str) -> None: ...

    async def play(stagger_s: float) -> Sink:
        sink = Sink()
        sources = {"therapist": f"replay:{source}", "client": f"replay:{source}"}
        links = await open_sources(sources, sink, BleOptions())
        for link in links.values():
            link.speed = 0.0  # type: ignore[attr-defined]  # as fast as possible
        therapist = asyncio.create_task(links["therapist"].run())
        await asyncio.sleep(stagger_s)  # the client's link starts later, as a strap that connects later
        await asyncio.gather(therapist, links["client"].run())
        return sink

    for stagger_s in (0.0, 0.3):
        sink = asyncio.run(play(stagger_s))
        first = {role: float(blocks[0].host_t_s[0]) for role, blocks in sink.blocks.items()}
        assert first["client"] - first["therapist"] == pytest.approx(2.49, abs=1e-9)
        client_peak, therapist_peak = sorted(sink.events, key=lambda e: e.role)
        assert client_peak.host_t_s - therapist_peak.host_t_s == pytest.approx(2.49, abs=1e-9)

    # A role played alone (calibration, `stream` with one role) starts with its own first sample, at once: not after
    # the time from the session's zero, which the daemon sets before the straps are found (a review: calibration timed
    # out on 'no samples').
    with SessionStore.open(source) as store:
        store.set_meta("t0_unix_s", "40.0")  # a minute before the first sample

    async def alone() -> float:
        sink = Sink()
        links = await open_sources({"client": f"replay:{source}"}, sink, BleOptions())
        started = time.monotonic()
        task = asyncio.create_task(links["client"].run())
        while not sink.blocks["client"] and time.monotonic() - started < 5.0:
            await asyncio.sleep(0.01)
        await links["client"].close()
        await task
        return time.monotonic() - started

    assert asyncio.run(alone()) < 1.0


def test_lsl_times_follow_the_daemon_clock_across_a_sleep(tmp_path: Path) -> None:
    # LSL's local_clock stops while the machine sleeps; the daemon's clock counts the sleep (straps keep counting).
    # With the offset taken once at the start, every LSL time after a suspend was off by the sleep's length.
    from breathsync.daemon.lsl import LslOutlets

    slept_s = [0.0]
    outlets = LslOutlets(f"sleep-{os.getpid()}", 25.0, {"therapist": "T"}, clock=lambda: time.time() + slept_s[0])
    try:
        local = outlets.pylsl.local_clock
        assert abs(outlets.lsl_time(time.time()) - local()) < 0.05
        slept_s[0] = 600.0  # ten minutes asleep: the daemon's clock moved on, local_clock did not
        assert abs(outlets.lsl_time(time.time() + 600.0) - local()) < 0.05
    finally:
        outlets.close()


def test_lsl_unavailable_is_one_line_before_the_session_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """pylsl without a loadable liblsl fails on import: say so (and how to go on) instead of a traceback."""
    source = tmp_path / "source.sqlite"
    with SessionStore.create(source, {}) as store:
        for role in ("therapist", "client"):
            store.add_samples(role, [0, 1], [1.0, 1.04], [5, 6])
    monkeypatch.setitem(sys.modules, "pylsl", None)  # import pylsl -> ImportError
    monkeypatch.setenv("LSLAPICFG", str(tmp_path / "lsl.cfg"))  # keep the user's LSL configuration alone
    config = DaemonConfig(
        session=SessionConfig(directory=str(tmp_path / "sessions")),
        straps=StrapsConfig(therapist=f"replay:{source}", client=f"replay:{source}"),
        outputs=OutputsConfig(lsl=True),
    )
    with pytest.raises(InputError, match=r"cannot open LSL outlets .*--no-lsl"):
        asyncio.run(Daemon(config, io.StringIO()).run(asyncio.Event()))
    assert not (tmp_path / "sessions").exists()
    assert open_descriptors(source) == 0  # and the replay links opened before it hold no file open


def _create_on_a_small_disk(monkeypatch: pytest.MonkeyPatch, spare_pages: int) -> None:
    """New sessions get SQLite's own 'database or disk is full' after ``spare_pages`` more pages."""
    create = SessionStore.create.__func__  # type: ignore[attr-defined]

    def small(cls: type[SessionStore], path: Path, config: object = None) -> SessionStore:
        store = create(cls, path, config)
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages + spare_pages}")
        return store

    monkeypatch.setattr(SessionStore, "create", classmethod(small))


def test_a_full_disk_ends_a_session_over_ble_too(
    served_pair: tuple[str, dict[str, ModelStrap]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Over BLE the samples are written from the Bluetooth library's notification callback, which logs
    and swallows what it raises: the failure must still end the session, not be lost packet by packet."""
    adapter, _ = served_pair
    _create_on_a_small_disk(monkeypatch, spare_pages=4)
    with pytest.raises(StoreError, match=r"cannot save to the session \(database or disk is full\)"):
        asyncio.run(asyncio.wait_for(Daemon(config_for(adapter, tmp_path), io.StringIO()).run(asyncio.Event()), 60))
    (path,) = tmp_path.glob("*.sqlite")
    with SessionStore.open(path, read_only=True) as kept:
        assert kept.meta("closed") is None and len(kept.samples("therapist").counters) > 0


def _replaying(tmp_path: Path, values: list[int]) -> DaemonConfig:
    """A daemon whose two straps replay ``values`` from a stored session (no radio), sessions in tmp_path/sessions."""
    source = tmp_path / "source.sqlite"
    with SessionStore.create(source, {}) as store:
        for role in ("therapist", "client"):
            store.add_samples(role, list(range(len(values))), [50.0 + i / 25 for i in range(len(values))], values)
    return DaemonConfig(
        session=SessionConfig(directory=str(tmp_path / "sessions")),
        straps=StrapsConfig(therapist=f"replay:{source}", client=f"replay:{source}"),
        outputs=OutputsConfig(lsl=False),
    )


def test_a_full_disk_ends_the_session_with_one_error_and_keeps_it_resumable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = breathing(120, 12, 3)
    config = _replaying(tmp_path, values)
    _create_on_a_small_disk(monkeypatch, spare_pages=8)
    with pytest.raises(StoreError, match=r"cannot save to the session \(database or disk is full\); what was saved"):
        asyncio.run(asyncio.wait_for(Daemon(config, io.StringIO()).run(asyncio.Event()), 30))
    (path,) = (tmp_path / "sessions").glob("*.sqlite")
    with SessionStore.open(path, read_only=True) as kept:
        saved = kept.samples("therapist").values.tolist()
        assert kept.meta("closed") is None  # not closed: the next run resumes it
    assert 0 < len(saved) < len(values) and saved == values[: len(saved)]


def test_a_disk_full_from_the_start_says_that_no_session_was_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A probe's 150 KB disk: the first samples could not be saved, the empty session was (rightly) removed, and the
    # error said 'what was saved before is kept'.
    from breathsync.store import SaveFailed

    config = _replaying(tmp_path, breathing(60, 12, 3))

    def full(self: SessionStore, *args: object) -> None:
        raise SaveFailed(f"{self.path}: cannot save to the session (database or disk is full)")

    monkeypatch.setattr(SessionStore, "add_samples", full)
    with pytest.raises(StoreError, match=r"disk is full\); nothing had been saved: no session kept$"):
        asyncio.run(asyncio.wait_for(Daemon(config, io.StringIO()).run(asyncio.Event()), 30))
    assert list((tmp_path / "sessions").glob("*.sqlite*")) == []


def test_stopping_while_searching_for_straps_ends_at_once_and_keeps_no_empty_session(tmp_path: Path) -> None:
    async def no_straps(link: object) -> dict[str, ModelStrap]:
        return {}

    with served(no_straps) as (adapter, _):
        config = DaemonConfig(
            session=SessionConfig(directory=str(tmp_path / "runs" / "sessions")),
            straps=StrapsConfig(ble=adapter, therapist="auto", client="auto"),
            outputs=OutputsConfig(lsl=False),
        )
        out = io.StringIO()

        async def go() -> tuple[float, bool]:
            stop = asyncio.Event()
            task = asyncio.create_task(Daemon(config, out).run(stop))
            await asyncio.sleep(2)  # searching by role (it would go on for 30 s)
            stop.set()
            stopped = time.monotonic()
            summary = await asyncio.wait_for(task, 20)
            return time.monotonic() - stopped, summary.kept

        took_s, kept = asyncio.run(go())
    assert "looking for the therapist's and the client's straps..." in out.getvalue()
    assert took_s < 10.0 and not kept  # not the 30 s a search by role would otherwise go on for
    assert list(tmp_path.iterdir()) == []  # nor the folders the run made for it (an input review)


def test_lsl_configuration_is_private_quiet_and_removed(tmp_path: Path) -> None:
    """liblsl's INFO lines stay off the therapist's terminal; the config file is the process's own
    (not a fixed name in a shared temp directory) and is gone when the process ends."""
    code = "from breathsync.daemon.lsl import LslOutlets; LslOutlets('s', 25, {'therapist': 'T'}).close(); print('ok')"
    env = {k: v for k, v in os.environ.items() if k != "LSLAPICFG"} | {"TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.stdout.strip() == "ok", proc.stderr
    assert "INFO|" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_resumed_session_stopped_while_searching_is_kept(tmp_path: Path) -> None:
    """Only a session this run created and that holds nothing is removed; one it resumed never is."""
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    earlier = sessions / "2026-11-22T09-00-00.sqlite"
    with SessionStore.create(earlier, {}) as store:  # a crashed run: samples, never closed
        store.add_samples("therapist", [0, 1], [1.0, 1.04], [5, 6])

    async def no_straps(link: object) -> dict[str, ModelStrap]:
        return {}

    with served(no_straps) as (adapter, _):
        config = DaemonConfig(
            session=SessionConfig(directory=str(sessions)),
            straps=StrapsConfig(ble=adapter, therapist="auto", client="auto"),
            outputs=OutputsConfig(lsl=False),
        )

        async def go() -> bool:
            stop = asyncio.Event()
            task = asyncio.create_task(Daemon(config, io.StringIO()).run(stop))
            await asyncio.sleep(2)
            stop.set()
            return (await asyncio.wait_for(task, 20)).kept

        assert asyncio.run(go())
    assert [p.name for p in sessions.glob("*.sqlite")] == [earlier.name]
    with SessionStore.open(earlier, read_only=True) as store:
        assert store.samples("therapist").values.tolist() == [5, 6]
        # The crash is on record (it left none: a researcher saw two 'connected' in a row).
        assert [(role, kind) for _t, role, kind, _d in store.link_events()] == [("therapist", "resumed")]


def _crashed_session(directory: Path, name: str, idle_s: float) -> Path:
    path = directory / name
    with SessionStore.create(path, {}) as store:  # samples, never closed
        store.add_samples("therapist", [0, 1], [1.0, 1.04], [5, 6])
    written = time.time() - idle_s
    os.utime(path, (written, written))
    return path


def test_only_a_recent_crash_is_resumed(tmp_path: Path) -> None:
    # A session left open yesterday was resumed today: the next client's breathing went into the previous
    # client's file, judged against the previous session's baselines.
    config = DaemonConfig(session=SessionConfig(directory=str(tmp_path)))
    crashed = _crashed_session(tmp_path, "2026-11-21T09-00-00.sqlite", idle_s=5 * 60)
    choice = session_path(config)
    assert choice.path == crashed and choice.resumed and not choice.note
    yesterday = time.time() - 24 * 3600
    os.utime(crashed, (yesterday, yesterday))
    choice = session_path(config)
    assert choice.path != crashed and not choice.resumed
    assert "ended without closing 1440 min ago" in choice.note and "--name 2026-11-21T09-00-00" in choice.note


def test_a_session_being_recorded_is_neither_resumed_nor_reopened(tmp_path: Path) -> None:
    # A second `breathsync run` took the first one's live session as a crash to resume, and marked it
    # closed on exit while the first was still recording.
    live = _crashed_session(tmp_path, "2026-11-22T09-00-00.sqlite", idle_s=1)
    lock = SessionLock(live).acquire()
    try:
        choice = session_path(DaemonConfig(session=SessionConfig(directory=str(tmp_path))))
        assert choice.path != live and not choice.resumed and "being recorded by another run" in choice.note
        named = DaemonConfig(session=SessionConfig(directory=str(tmp_path), name=live.stem))
        with pytest.raises(InputError, match="being recorded by another breathsync run"):
            session_path(named)
        with pytest.raises(StoreError, match="another breathsync run is recording this session"):
            SessionLock(live).acquire()
        # The refused run never touches the radio (it took a virtual controller over from the live run): the
        # adapter here cannot be opened, and the refusal comes first.
        unreachable = config_for("bumble:tcp-client:127.0.0.1:1", tmp_path)
        unreachable = dataclasses.replace(unreachable, session=named.session)
        with pytest.raises(InputError, match="being recorded by another breathsync run"):
            asyncio.run(Daemon(unreachable, io.StringIO()).run(asyncio.Event()))
    finally:
        lock.release()
    assert (
        not SessionLock.held(live)
        and session_path(DaemonConfig(session=SessionConfig(directory=str(tmp_path)))).resumed
    )


def _nudge_now(daemon: Daemon) -> float:
    """The engine nudges now, as it does when following has built up: cooldown, efficacy to judge, and the send."""
    t_s = daemon.session_s(daemon.clock())
    daemon.engine.policy.record(t_s)
    daemon.engine._pending_efficacy.append(_PendingEfficacy(t_s))
    daemon._handle([Nudge(t_s, HapticPattern(3, 200, 300, 60), "paced", 0.9, 1.0, 30.0, 15.0, 16.0, 12.0)])
    return t_s


def test_a_nudge_that_does_not_reach_the_strap_is_stored_as_such_and_holds_nothing_back(
    served_pair: tuple[str, dict[str, ModelStrap]], tmp_path: Path
) -> None:
    # It was stored like any other nudge (its failure only a separate link event), started the cooldown
    # and hourly count, and waited for an efficacy report on a nudge the therapist never felt.
    adapter, straps = served_pair
    therapist = straps["therapist"]
    out = io.StringIO()
    daemon = Daemon(config_for(adapter, tmp_path), out)

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.sleep(5)
        assert therapist.peripheral is not None
        away = asyncio.run_coroutine_threadsafe(therapist.peripheral.power_off(3.0), therapist._task.get_loop())
        await asyncio.sleep(0.05)
        lost = _nudge_now(daemon)
        await asyncio.sleep(0.5)
        assert daemon.engine.policy.check(lost + 1.0).allowed  # no cooldown from a nudge nobody felt
        assert not daemon.engine._pending_efficacy
        assert daemon.status_line().endswith("nudges 0")  # the therapist felt nothing (it said 1: a review)
        await asyncio.wrap_future(away)
        await asyncio.sleep(4)  # reconnected
        _nudge_now(daemon)
        await asyncio.sleep(1)
        assert daemon.status_line().endswith("nudges 1")
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(go())
    [path] = tmp_path.glob("*.sqlite")
    with SessionStore.open(path) as store:
        first, second = (n.detail for n in store.nudges())
    assert first["delivered"] is False and "not connected" in first["delivery_error"]
    assert second["delivered"] is True and "delivery_error" not in second
    assert len(therapist.haptics) == 1


def test_a_nudge_the_strap_played_without_an_answer_still_counts_as_given(
    served_pair: tuple[str, dict[str, ModelStrap]], tmp_path: Path
) -> None:
    # No answer within 3 s (the link lost after the strap ran the command) was taken for 'the therapist felt
    # nothing': the motor had run, the cooldown and the cap per episode were dropped, and a second nudge followed
    # in the same episode (an outside review). Unanswered, it is unknown: it holds back what a nudge holds back.
    adapter, straps = served_pair
    therapist = straps["therapist"]
    out = io.StringIO()
    daemon = Daemon(config_for(adapter, tmp_path), out)

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.sleep(5)
        therapist.answers_haptics = False
        t_s = _nudge_now(daemon)
        await asyncio.sleep(4)  # past the 3 s wait for an answer
        assert not daemon.engine.policy.check(t_s + 10.0).allowed  # the cooldown holds
        assert [p.nudge_s for p in daemon.engine._pending_efficacy] == [t_s]  # its efficacy is still measured
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(go())
    [path] = tmp_path.glob("*.sqlite")
    with SessionStore.open(path) as store:
        [nudge] = store.nudges()
        assert nudge.delivered is None and nudge.detail["delivered"] is None
        assert "no answer to HapticCommand within 3.0 s" in nudge.detail["delivery_error"]
        assert [e[2] for e in store.link_events() if e[2].startswith("nudge")] == ["nudge-unconfirmed"]
    assert len(therapist.haptics) == 1
    assert "NUDGE (paced) not confirmed, counted as given: therapist: no answer" in out.getvalue()
    from breathsync.research import load_session
    from breathsync.research.export_bids import default_bids_names, export_bids

    session = load_session(path)
    files = export_bids(session, default_bids_names(session, tmp_path / "bids", subject="01"))
    [events] = [f for f in files if f.name.endswith("_events.tsv")]
    rows = [line.split("\t") for line in events.read_text().splitlines()]
    assert [row[4] for row in rows if row[2] == "nudge"] == ["unconfirmed"]  # not n/a, as for older sessions


def test_the_status_line_shows_each_link_state_not_its_latest_event(tmp_path: Path) -> None:
    # After a strap reboot the line kept saying 'T: strap-rebooted' long after the link was fine again.
    daemon = Daemon(config_for("bumble:none", tmp_path), io.StringIO())
    for kind, shown in [
        ("connected", "ok"),
        ("strap-rebooted", "ok"),
        ("samples-lost", "ok"),
        ("disconnected", "LOST"),
    ]:
        daemon.on_link("therapist", kind, "")
        assert daemon.views["therapist"].link == shown


def test_why_a_strap_cannot_connect_is_told_once_per_reason(tmp_path: Path) -> None:
    # A probe's virtual straps died: the line said 'retrying' until Ctrl-C and the reason sat only in the store.
    # A strap back after it was said lost is said back (session 17: 'disconnected', 'retrying', then nothing).
    out = io.StringIO()
    now = [1000.0]
    daemon = Daemon(config_for("bumble:none", tmp_path), out, clock=lambda: now[0])
    daemon.on_link("client", "connected", "")  # the first connection: the status line shows it
    daemon.on_link("client", "disconnected", "supervision timeout")
    now[0] += 20.0
    for detail in ["the Bumble bench lost its HCI transport"] * 3 + ["not found", "not found"] * 2:
        daemon.on_link("client", "connect-failed", detail)
    daemon.on_link("client", "connect-failed", "the Bumble bench lost its HCI transport")  # alternating: told
    daemon.on_link("client", "connected", "")
    daemon.on_link("client", "connect-failed", "not found")
    daemon.on_link("therapist", "strap-rebooted", "counter back to 12")
    lines = out.getvalue().splitlines()
    assert [line for line in lines if "cannot connect" in line] == [
        "client strap: cannot connect (the Bumble bench lost its HCI transport); retrying",
        "client strap: cannot connect (not found); retrying",
        "client strap: cannot connect (not found); retrying",  # again after it had connected in between
    ]
    assert "therapist strap: restarted, carrying on (counter back to 12)" in lines  # not the link event's name
    assert [line for line in lines if "connected again" in line] == ["client strap: connected again after 20 s"]
    assert lines[0] == "client strap: disconnected (supervision timeout)"


def test_the_status_line_says_while_nudges_are_muted(tmp_path: Path) -> None:
    now = [1000.0]
    daemon = Daemon(config_for("bumble:none", tmp_path), io.StringIO(), clock=lambda: now[0])
    daemon.t0_s = 1000.0
    assert "muted" not in daemon.status_line()
    daemon.mute()  # m + Enter: 10 minutes by default
    now[0] += 30.0
    assert daemon.status_line().endswith("nudges 0 (muted, 10 min left)")
    now[0] += 600.0  # resumed by itself
    assert daemon.status_line().endswith("nudges 0")


def test_a_strap_signal_upside_down_is_told_once_when_the_baselines_are_learned(tmp_path: Path) -> None:
    """The engine reads it inverted (tests/test_polarity.py); the therapist at the screen is told to check the strap."""
    from breathsync.datasets import bundled_path
    from breathsync.engine import dyad_stream
    from breathsync.recording import read_column

    out = io.StringIO()
    daemon = Daemon(config_for("usb:0", tmp_path), out)
    therapist = read_column(bundled_path("bidmc_04_resp.csv.gz"))[: 200 * 125]
    client = -read_column(bundled_path("bidmc_18_resp.csv.gz"))[: 200 * 125]
    daemon._replaying = True  # as when a crashed session is rebuilt: nothing to store or send
    for item in dyad_stream(therapist, client, 125.0):
        daemon._handle(daemon.engine.feed(item))
    assert daemon.state is not None
    text = out.getvalue()
    assert text.count("upside down") == 1
    assert "the client's strap signal looks upside down (inspiration pointing down)" in text


def test_the_status_line_keeps_the_reports_session_clock_and_shows_nothing_stale(tmp_path: Path) -> None:
    # The line counted from the run's start while the report counts from the first sample: a nudge seen at 03:19
    # was at 2:40 in the report (the straps took 39 s to connect). A lost strap kept its last battery and rate.
    now = [1000.0]
    daemon = Daemon(config_for("bumble:none", tmp_path), io.StringIO(), clock=lambda: now[0])
    daemon.store = SessionStore.create(tmp_path / "s.sqlite", {})
    try:
        assert daemon.status_line().startswith("--:-- | T: searching -- |")
        now[0] = 1039.0  # the first samples arrive 39 s after the run began
        block = SampleBlock("therapist", 0, np.zeros(7, dtype=np.int64), 1039.0 + np.arange(7) / 25, False)
        daemon.on_link("therapist", "connected", "")
        daemon.on_samples(block)
        daemon.views["therapist"].rate_bpm, daemon.views["therapist"].battery_pct = 13.4, 61
        now[0] = 1039.0 + 160.0
        later = SampleBlock("therapist", 4000, np.zeros(7, dtype=np.int64), now[0] + np.arange(7) / 25, False)
        daemon.on_samples(later)
        assert daemon.status_line().startswith("02:40 | T: ok 61% 13.4/min")
        daemon.on_link("therapist", "disconnected", "supervision timeout")
        assert daemon.status_line().startswith("02:40 | T: LOST -- |")
    finally:
        daemon.store.close()


@pytest.mark.parametrize("tick_s", [0.25, 0.26, 0.3])
def test_the_status_lines_clock_shows_every_second_once(tick_s: float) -> None:
    # 'A second since the last line' drifted by up to a tick per line (the daemon looks every 0.25 s and a busy
    # loop runs late), so the clock shown skipped a second now and then: 02:04, 02:06 (a probe).
    zero_s, last_s, shown = 1039.37, None, []
    for k in range(1, 2000):
        now_s = 1000.0 + k * tick_s
        if status_due(now_s, last_s, zero_s if now_s >= zero_s else None, 1.0):
            last_s = now_s
            if now_s >= zero_s:
                shown.append(int(now_s - zero_s))
    assert shown == list(range(len(shown))) and len(shown) > 400


def test_continuing_a_cleanly_ended_session_says_so_and_reopens_it(tmp_path: Path) -> None:
    # A session ended with q and continued later with --name: the report said 'the run before ended without
    # closing it' (a crash), and the session stayed marked closed while recorded again, so a crash of the
    # continued run was not resumed.
    ended = tmp_path / "ended.sqlite"
    with SessionStore.create(ended, {}) as store:
        store.add_samples("therapist", [0, 1], [1000.0, 1000.04], [5, 6])
        store.set_meta("t0_unix_s", "995.0")
        store.set_meta("closed", "1")
    crashed = tmp_path / "crashed.sqlite"
    with SessionStore.create(crashed, {}) as store:
        store.add_samples("therapist", [0, 1], [1000.0, 1000.04], [5, 6])
        store.set_meta("t0_unix_s", "995.0")
    for path, why in [
        (ended, "continued after the run before had ended it"),
        (crashed, "the run before ended without closing it"),
    ]:
        daemon = Daemon(config_for("bumble:none", tmp_path), io.StringIO(), clock=lambda: 2000.0)
        with SessionStore.open(path) as store:
            daemon._start_session(store, path, resumed=True)
            assert store.meta("closed") == "0"  # recorded again: a crash from here is one to resume
            assert [(r, k, d) for _, r, k, d in store.link_events()] == [("therapist", "resumed", why)]
        assert daemon.status_line().startswith("16:40 |")  # the session clock runs from its first sample


def test_a_continued_session_keeps_its_own_settings_and_baseline_and_says_so(tmp_path: Path) -> None:
    # An input review: a session continued with another --config ran on those settings while it said (meta config,
    # `replay SESSION`, the exports) it ran with its own; a --therapist-baseline given was dropped without a word;
    # and a session whose stored settings were damaged was recorded into, then refused by every export.
    started = config_for("bumble:none", tmp_path)
    path = tmp_path / "monday.sqlite"
    with SessionStore.create(path, started.as_dict()) as store:
        store.add_samples("therapist", [0, 1], [1000.0, 1000.04], [5, 6])
        store.set_meta("t0_unix_s", "995.0")
    write_baseline(tmp_path / "me.json", Baseline(rate_bpm=11.5, rate_sd_bpm=0.9, depth=2.0, n_breaths=23))
    engine = dataclasses.replace(
        started.engine,
        engine=dataclasses.replace(started.engine.engine, plv_min=0.99),
        policy=dataclasses.replace(started.engine.policy, cooldown_s=7000.0),
    )
    other = dataclasses.replace(config_for("bumble:none", tmp_path, baseline=str(tmp_path / "me.json")), engine=engine)
    out = io.StringIO()
    daemon = Daemon(other, out, clock=lambda: 2000.0)
    with SessionStore.open(path) as store:
        daemon._start_session(store, path, resumed=True)
    assert daemon.config.engine == started.engine and daemon.engine.config == started.engine
    lines = out.getvalue().splitlines()
    assert lines[:2] == [
        "continuing with the settings the session started with (the given ones differ in engine.plv_min, "
        "policy.cooldown_s; they apply to a new session)",
        "--therapist-baseline not used: a continued session keeps the baseline it started with",
    ]
    assert daemon.calibration is None  # learned, as the session started
    with SessionStore.open(path) as store:
        store.set_meta("config", "{not json")
    with SessionStore.open(path) as store, pytest.raises(BreathsyncError, match="meta config is not valid JSON"):
        Daemon(started, io.StringIO(), clock=lambda: 2000.0)._start_session(store, path, resumed=True)


def test_a_strap_battery_running_low_is_said_once_per_level(tmp_path: Path) -> None:
    # At 2 % the line showed 'T: ok 2%' for a whole session and nothing else: a strap about to go flat mid-session.
    out = io.StringIO()
    daemon = Daemon(config_for("bumble:none", tmp_path), out)

    def status(battery_pct: int) -> StatusPacket:
        return StatusPacket((0, 1, 0), SensorState.OK, 25, Role.THERAPIST, StatusFlag.STREAMING, battery_pct, 0, 0, 0)

    for battery_pct in (40, 16, 14, 13, 12, 4, 3, 2):
        daemon.on_status("therapist", status(battery_pct))
    assert out.getvalue().splitlines() == [
        "the therapist's strap battery is at 14%: charge it after this session",
        "the therapist's strap battery is at 4%: it may stop within minutes: charge it now if you can",
    ]
    daemon.on_status("client", status(3))  # a strap already low when it connects: only the most severe line
    assert out.getvalue().splitlines()[-1] == "the client's strap battery is at 3%: it may stop within minutes: " + (
        "charge it now if you can"
    )
    assert len(out.getvalue().splitlines()) == 3


def test_each_change_of_a_straps_battery_level_is_recorded_once(tmp_path: Path) -> None:
    # Warnings were said live only and status packets were not stored: a report could not tell that a strap ran low.
    now = [1000.0]
    daemon = Daemon(config_for("bumble:none", tmp_path), io.StringIO(), clock=lambda: now[0])
    daemon.store = SessionStore.create(tmp_path / "s.sqlite", {})

    def status(battery_pct: int | None) -> StatusPacket:
        return StatusPacket((0, 1, 0), SensorState.OK, 25, Role.THERAPIST, StatusFlag.STREAMING, battery_pct, 0, 0, 0)

    try:
        for level in (62, 62, 61, None, 61, 60, 60, 5):  # one status a second; None: the gauge could not be read
            daemon.on_status("therapist", status(level))
            now[0] += 1.0
        daemon.on_status("client", status(40))
        assert [(t, r, d) for t, r, k, d in daemon.store.link_events() if k == "battery"] == [
            (1000.0, "therapist", "62%"),
            (1002.0, "therapist", "61%"),
            (1005.0, "therapist", "60%"),
            (1007.0, "therapist", "5%"),
            (1008.0, "client", "40%"),
        ]
    finally:
        daemon.store.close()


def test_the_status_line_shows_a_connected_strap_that_sends_nothing(tmp_path: Path) -> None:
    # A virtual strap's firmware died while its link stayed up: for 100 minutes the line said 'T: ok 61% 13.4/min',
    # the rate frozen at its last breath.
    now = [1000.0]
    daemon = Daemon(config_for("bumble:none", tmp_path), io.StringIO(), clock=lambda: now[0])
    daemon.on_link("therapist", "connected", "")
    daemon.views["therapist"].rate_bpm = 13.4
    block = SampleBlock("therapist", 0, np.zeros(7, dtype=np.int64), np.full(7, 1000.0), False)
    daemon.on_samples(block)
    assert "T: ok ? 13.4/min" in daemon.status_line()
    now[0] += 1.5
    assert "T: ok ? 13.4/min" in daemon.status_line()  # radio jitter is not silence
    now[0] += 1.5
    # Silent for longer than the engine waits before it pauses its decisions (2 s): 'sync -- paused' had no reason
    # on the line until the silence reached 5 s.
    assert "T: no data 3s ? --" in daemon.status_line()
    now[0] += 9.0
    assert "T: no data 12s ? --" in daemon.status_line()
    daemon.on_samples(block)
    assert "T: ok ? 13.4/min" in daemon.status_line()


def test_the_status_line_says_every_engine_decision_in_words() -> None:
    from typing import get_args

    from breathsync.daemon.status import DECISION_WORDS
    from breathsync.engine.state import Decision

    assert set(DECISION_WORDS) == set(get_args(Decision))  # a new decision gets its words, not its code name
    assert all("_" not in words for words in DECISION_WORDS.values())


def test_the_status_line_through_a_drop_out_shows_no_stale_reading_or_silence(tmp_path: Path) -> None:
    # Its last samples came before the drop-out: for the first second after it was back the line said
    # 'T: no data 20s'.
    now = [1000.0]
    daemon = Daemon(config_for("bumble:none", tmp_path), io.StringIO(), clock=lambda: now[0])
    daemon.on_link("therapist", "connected", "")
    daemon.on_samples(SampleBlock("therapist", 0, np.zeros(7, dtype=np.int64), np.full(7, 1000.0), False))
    daemon.on_link("client", "connected", "")
    values: dict[str, Any] = {f.name: None for f in dataclasses.fields(EngineState)}
    values.update(t_s=1.0, decision="no_lock", plv=0.65, plv_chance=0.66, plv_breaths=7, locked_for_s=0.0, muted=False)
    daemon.state = EngineState(**values)
    assert "sync 0.65 (chance 0.66) no lock" in daemon.status_line()
    daemon.state = EngineState(**(values | {"plv_chance": None}))  # too little history since a drop-out
    assert "sync 0.65 (chance --) no lock" in daemon.status_line()
    # Locked by the breaths' timing, its phase value below the chance level: the line says on what ground.
    timed = dict(values, decision="therapist_follows", plv=0.91, plv_chance=0.95, plv_p=0.3, beat_cycles=0.5)
    daemon.state = EngineState(**(timed | {"lag_locking": 0.96, "lag_locking_p": 0.02}))
    assert "sync 0.91 (chance 0.95; locked in breath timing) you follow" in daemon.status_line()
    daemon.state = EngineState(**values)
    daemon.on_link("therapist", "disconnected", "")
    # The last reading is not live while a strap is gone (the engine pauses only 2 s later).
    assert "T: LOST" in daemon.status_line() and "sync -- paused" in daemon.status_line()
    now[0] += 20.0
    assert "T: LOST" in daemon.status_line()
    daemon.on_link("therapist", "connected", "")
    now[0] += 1.0
    assert "T: ok" in daemon.status_line()
    now[0] += 2.0  # connected, and still nothing: silent since it connected
    assert "T: no data 3s" in daemon.status_line()
    # Back with samples: until the engine has a new phase window its updates carry no reading, which is not a
    # verdict that the pair is apart (the line said 'sync -- no_lock' for ~10 s after a 4 s stall).
    daemon.on_samples(SampleBlock("therapist", 7, np.zeros(7, dtype=np.int64), np.full(7, now[0]), False))
    values.update(t_s=25.0, decision="no_lock", plv=None, plv_chance=None, plv_breaths=0)
    daemon.state = EngineState(**values)
    assert "sync -- gathering" in daemon.status_line()
